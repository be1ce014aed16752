"""A frozen backbone's last hidden states for a fixed set of texts, computed once, memory-mapped afterwards.

Heads-only training (and evaluating head variants over a frozen backbone) needs the backbone only once per
text. A cache folder holds
- `cache.json`: format + version, kind (query/passage), the prefix and max length used, the model's name,
  tokenizer hash and backbone fingerprint, hidden size, counts;
- `texts.jsonl.gz`: the texts, one JSON string per line, row i = text i;
- `offsets.npy` (n + 1,) int64: row i's tokens are [offsets[i], offsets[i+1]) of the flat arrays;
- `input_ids.npy` (T,) int32 and `states.npy` (T, h) float16: token ids and hidden states, all texts back to
  back, no padding;
- `dense.npy` (n, h) float32: the model's dense vectors (pooled from the fp32 states, normalised).

Texts longer than the backbone's window (`identity["window_tokens"]`, set when the max length exceeds the
model's limit, e.g. 8192-token documents on a 512-position backbone) are cut into overlapping windows exactly as
`M3Encoder` cuts them at inference (`encoder/windows.py`), and each window runs through the backbone alone.
Their rows hold the first window whole and every later window without its leading `<s>`, so every state after
a row's first is a token vector as the encoder gives it (all windows' vectors, in order), lexical weights are
the max per token id over all windows, and the dense vector is the renormalised mean of the windows'.
Nothing is pickled; the folder is built under a temporary name and published with os.replace.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from m3search.data.lines import iter_lines
from m3search.encoder.model import M3Model, pool
from m3search.encoder.tokenizer import M3Tokenizer
from m3search.encoder.windows import DEFAULT_OVERLAP, Piece, make_pieces
from m3search.errors import IndexFormatError, InputError
from m3search.trainer.encoding import Side

logger = logging.getLogger(__name__)

CACHE_FORMAT = "m3search.hidden_states"
CACHE_VERSION = 1
META_FILE = "cache.json"


def backbone_fingerprint(model: M3Model) -> str:
    """A cheap hash of the backbone's weights (~4k evenly spaced values of each tensor), to catch a stale cache."""
    h = hashlib.sha256()
    for name, p in sorted(model.backbone.named_parameters()):
        flat = p.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 4096)]
        h.update(name.encode())
        h.update(sample.to("cpu", torch.float32).numpy().tobytes())
    return h.hexdigest()[:16]


def cache_identity(model: M3Model, tokenizer: M3Tokenizer, model_name: str, kind: str, prefix: str,
                   max_length: int, window_tokens: int | None = None) -> dict:
    """What a cache was built with. window_tokens: the backbone's limit; only when max_length exceeds it are
    texts windowed, and only then is the window recorded (so caches of short texts keep their identity)."""
    windows = {}
    if window_tokens is not None and max_length > window_tokens:
        windows = {"window_tokens": int(window_tokens), "window_overlap": DEFAULT_OVERLAP}
    return {
        "model": model_name,
        "tokenizer_sha256": tokenizer.sha256,
        "backbone_fingerprint": backbone_fingerprint(model),
        "pooling": model.pooling,
        "kind": kind,
        "prefix": prefix,
        "max_length": int(max_length),
        **windows,
    }


class StateCache:
    """Read side of a cache folder; `build` writes one."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta_file = self.folder / META_FILE
        if not meta_file.is_file():
            raise IndexFormatError(f"{self.folder} is not a hidden-state cache: {META_FILE} is missing")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != CACHE_FORMAT:
            raise IndexFormatError(f"{meta_file}: format {meta.get('format')!r} is not {CACHE_FORMAT!r}")
        if not isinstance(meta.get("version"), int) or meta["version"] > CACHE_VERSION:
            raise IndexFormatError(f"{meta_file}: version {meta.get('version')!r} is newer than this m3search "
                                   f"reads ({CACHE_VERSION}); upgrade m3search or rebuild the cache")
        self.meta = meta
        self.texts = [json.loads(line) for _, line in iter_lines(self.folder / "texts.jsonl.gz")]
        self.row_of = {t: i for i, t in enumerate(self.texts)}
        self.offsets = np.load(self.folder / "offsets.npy")
        self.input_ids = np.load(self.folder / "input_ids.npy", mmap_mode="r")
        self.states = np.load(self.folder / "states.npy", mmap_mode="r")
        self.dense = np.load(self.folder / "dense.npy", mmap_mode="r")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def identity(self) -> dict:
        return self.meta["identity"]

    def check_identity(self, expected: dict) -> None:
        # the model's name is informative only: a fine-tuned checkpoint of a frozen backbone keeps its states
        diffs = [f"{k}: cache has {self.identity.get(k)!r}, run needs {v!r}"
                 for k, v in expected.items() if k != "model" and self.identity.get(k) != v]
        if diffs:
            raise InputError(f"the hidden-state cache {self.folder} was built differently ({'; '.join(diffs)}): "
                             "point --cache-dir at a new folder to rebuild it")

    def rows(self, texts: Sequence[str]) -> list[int]:
        try:
            return [self.row_of[t] for t in texts]
        except KeyError as e:
            raise InputError(f"text {str(e)[:80]} is not in the hidden-state cache {self.folder}: rebuild the "
                             "cache for this training data (a new --cache-dir)") from None

    def side(self, rows: Sequence[int], pad_id: int, packed: bool = True) -> Side:
        """Padded ids and mask of the given rows, with their float32 hidden states: packed (T, h), the real
        tokens text by text (what the training heads take), or padded (n, L, h) with zeros at pads."""
        lengths = [int(self.offsets[r + 1] - self.offsets[r]) for r in rows]
        width = max(lengths, default=0)
        n, h = len(rows), self.states.shape[1]
        ids = np.full((n, width), pad_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        parts = []
        for i, (r, length) in enumerate(zip(rows, lengths)):
            a = int(self.offsets[r])
            ids[i, :length] = self.input_ids[a : a + length]
            mask[i, :length] = 1
            parts.append(self.states[a : a + length])
        flat = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, h), np.float32)
        hidden = torch.from_numpy(flat)
        if not packed:
            padded = torch.zeros(n, width, h)
            padded[torch.from_numpy(mask).bool()] = hidden
            hidden = padded
        return Side(torch.from_numpy(ids), torch.from_numpy(mask), hidden)


def _unique(texts: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def build_cache(
    folder: str | Path,
    texts: Sequence[str],
    model: M3Model,
    tokenizer: M3Tokenizer,
    identity: dict,
    *,
    tokens_per_batch: int = 8192,
    progress: Callable[[int], None] | None = None,
    backbone: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> StateCache:
    """Encode the distinct texts with the model's backbone and write the cache folder.

    identity: from `cache_identity` (kind, prefix and max length are read from it).
    progress: called with the number of texts just encoded.
    backbone: (input_ids, attention_mask) -> last hidden states, to run instead of `model.backbone` (the same
    weights in a faster runtime, e.g. `onnx_backbone`); the identity still describes `model`.
    """
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise InputError(f"{folder} already exists and is not empty: give a new folder for the cache")
    texts = _unique(texts)
    pieces = _pieces(texts, tokenizer, identity)
    # a row: the first window whole, later windows without their leading <s> (see the module docstring)
    stored = [piece.ids if piece.window == 0 else piece.ids[1:] for piece in pieces]
    lengths = np.bincount([p.text for p in pieces], weights=[len(s) for s in stored], minlength=len(texts)).astype(np.int64)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    starts = offsets[:-1].copy()  # where each piece's stored tokens go, filled window by window
    piece_at = np.empty(len(pieces), dtype=np.int64)
    for j, (piece, ids) in enumerate(zip(pieces, stored)):
        piece_at[j] = starts[piece.text]
        starts[piece.text] += len(ids)
    hidden_size = model.hidden_size
    device = next(model.parameters()).device

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        flat_ids = np.lib.format.open_memmap(tmp / "input_ids.npy", mode="w+", dtype=np.int32, shape=(int(offsets[-1]),))
        states = np.lib.format.open_memmap(tmp / "states.npy", mode="w+", dtype=np.float16,
                                           shape=(int(offsets[-1]), hidden_size))
        dense = np.lib.format.open_memmap(tmp / "dense.npy", mode="w+", dtype=np.float32, shape=(len(texts), hidden_size))
        piece_dense = np.zeros((len(texts), hidden_size), dtype=np.float64)
        piece_lengths = np.array([len(p.ids) for p in pieces], dtype=np.int64)
        order = np.argsort(-piece_lengths, kind="stable")  # longest first: similar lengths share a batch
        done = np.zeros(len(texts), dtype=np.int64)
        n_pieces = np.bincount([p.text for p in pieces], minlength=len(texts))
        was_training = model.training
        model.eval()
        with torch.no_grad():
            start = 0
            while start < len(order):
                width = int(piece_lengths[order[start]])
                size = max(1, tokens_per_batch // max(width, 1))
                batch = order[start : start + size]
                ids, mask = tokenizer.pad([pieces[j].ids.tolist() for j in batch])
                ids_t, mask_t = torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)
                if backbone is not None:
                    hidden = backbone(ids_t, mask_t).float()
                else:
                    hidden = model.backbone(input_ids=ids_t, attention_mask=mask_t).last_hidden_state.float()
                vecs = F.normalize(pool(hidden, mask_t, model.pooling), dim=-1).cpu().numpy()
                hidden = hidden.cpu().numpy()
                finished = 0
                for row, j in enumerate(batch):
                    piece, skip = pieces[j], 0 if pieces[j].window == 0 else 1
                    a, n = int(piece_at[j]), len(stored[j])
                    states[a : a + n] = hidden[row, skip : skip + n]
                    flat_ids[a : a + n] = stored[j]
                    piece_dense[piece.text] += vecs[row]
                    done[piece.text] += 1
                    if done[piece.text] == n_pieces[piece.text]:
                        v = piece_dense[piece.text]
                        dense[piece.text] = v / max(np.linalg.norm(v), 1e-12) if n_pieces[piece.text] > 1 else v
                        finished += 1
                start += len(batch)
                if progress is not None and finished:
                    progress(finished)
        model.train(was_training)
        for arr in (flat_ids, states, dense):
            arr.flush()
        del flat_ids, states, dense
        np.save(tmp / "offsets.npy", offsets)
        with gzip.open(tmp / "texts.jsonl.gz", "wt", encoding="utf-8") as f:
            for t in texts:
                f.write(json.dumps(t, ensure_ascii=False) + "\n")
        meta = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "identity": identity,
            "n_texts": len(texts),
            "n_tokens": int(offsets[-1]),
            "hidden_size": hidden_size,
            "states_dtype": "float16",
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1, ensure_ascii=False))
        if folder.exists():
            folder.rmdir()  # the empty folder the caller made; nothing of theirs is lost
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # only our own temporary folder
        raise
    logger.info("cached hidden states of %d texts (%d tokens) in %s", len(texts), int(offsets[-1]), folder)
    return StateCache(folder)


def onnx_backbone(model_path: str | Path):
    """The backbone of the BGE-M3 folder `model_path` as inference runs it on CPU: `native.py` with its layers in
    ONNX Runtime (the same fp32 arithmetic as the torch backbone to ~1e-6, several times faster on CPU), as a
    `backbone` for `build_cache`; None when ONNX Runtime is not installed or the backbone is not one
    `native.py` runs."""
    from m3search.encoder import ort_backbone
    from m3search.encoder.checkpoint import load_m3_model
    from m3search.encoder.native import NativeEncoder

    if not ort_backbone.available():
        return None
    native = load_m3_model(model_path, device="cpu", dtype=torch.float32, native=True).model.backbone
    if not isinstance(native, NativeEncoder):
        return None
    native.enable_onnx()

    def run(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return native(input_ids.cpu(), attention_mask.cpu(), onnx=True).last_hidden_state

    run.native = native  # type: ignore[attr-defined]  # for checks: `native._onnx_layers` once it has run
    return run


def _pieces(texts: Sequence[str], tokenizer: M3Tokenizer, identity: dict):
    """The backbone inputs of `texts`: one `[<s>] + tokens + [</s>]` piece each, or M3Encoder's windows
    when the identity has a window and the text is longer."""
    prefix, max_length = identity["prefix"], identity["max_length"]
    window = identity.get("window_tokens")
    if window is None:
        token_ids = tokenizer.encode([prefix + t for t in texts], max_length)
        return [Piece(text=i, window=0, ids=np.asarray(ids, dtype=np.int64)) for i, ids in enumerate(token_ids)]
    content = [ids[: max_length - 2] for ids in tokenizer.content_ids([prefix + t for t in texts])]
    return make_pieces(content, tokenizer.cls_id, tokenizer.eos_id, window, identity["window_overlap"])


def open_or_build(
    folder: str | Path,
    texts: Sequence[str],
    model: M3Model,
    tokenizer: M3Tokenizer,
    identity: dict,
    **options,
) -> StateCache:
    """Reuse the cache in `folder` if it was built the same way and holds every text, else build it."""
    folder = Path(folder)
    if (folder / META_FILE).is_file():
        cache = StateCache(folder)
        cache.check_identity(identity)
        missing = [t for t in _unique(texts) if t not in cache.row_of]
        if missing:
            raise InputError(f"the hidden-state cache {folder} lacks {len(missing)} of the texts (e.g. "
                             f"{missing[0][:60]!r}): it was built for other data; give a new cache folder")
        return cache
    return build_cache(folder, texts, model, tokenizer, identity, **options)


def encode_from_cache(cache: StateCache, model: M3Model, unused_token_ids, vocab_size: int,
                      rows: Sequence[int] | None = None, texts_per_batch: int = 256):
    """The `EncodedBatch` the model's heads give on the cached states, post-processed as `M3Encoder` does:
    dense from the cache; lexical weights > 0 of non-special tokens, max per token id; token vectors for every
    position after the first up to the final `</s>`. Lets several head variants be evaluated over one
    backbone pass."""
    import scipy.sparse as sp

    from m3search.types import EncodedBatch

    rows = list(range(len(cache))) if rows is None else list(rows)
    unused = np.fromiter(unused_token_ids, dtype=np.int64)
    dtype = next(model.parameters()).dtype
    sparse_rows, vectors = [], []
    with torch.inference_mode():
        for start in range(0, len(rows), texts_per_batch):
            chunk = rows[start : start + texts_per_batch]
            side = cache.side(chunk, pad_id=1, packed=False)
            out = model.apply_heads(side.hidden.to(dtype), side.attention_mask)
            weights = out.token_weights.float().numpy()
            colbert = out.colbert.float().numpy()
            lengths = side.attention_mask.sum(-1).numpy()
            for j, n in enumerate(lengths):
                ids, w = side.input_ids[j, :n].numpy(), weights[j, :n]
                keep = (w > 0) & ~np.isin(ids, unused)
                best: dict[int, float] = {}
                for t, v in zip(ids[keep].tolist(), w[keep].tolist()):
                    if v > best.get(t, 0.0):
                        best[t] = v
                sparse_rows.append(best)
                vectors.append(colbert[j, : n - 1])
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in sparse_rows], out=indptr[1:])
    cols = np.fromiter((t for r in sparse_rows for t in sorted(r)), dtype=np.int32, count=int(indptr[-1]))
    vals = np.fromiter((r[t] for r in sparse_rows for t in sorted(r)), dtype=np.float32, count=int(indptr[-1]))
    sparse = sp.csr_matrix((vals, cols, indptr), shape=(len(rows), vocab_size), dtype=np.float32)
    multivec = np.concatenate(vectors).astype(np.float32) if vectors else np.zeros((0, model.colbert_dim), np.float32)
    return EncodedBatch(
        dense=np.ascontiguousarray(cache.dense[rows], dtype=np.float32),
        sparse=sparse,
        multivec=np.ascontiguousarray(multivec),
        multivec_lengths=np.array([len(v) for v in vectors], dtype=np.int64),
    )
