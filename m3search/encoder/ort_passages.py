"""Passages in batches through ONNX Runtime without torch or tokenizers' Unigram model: the indexing path of
`FastQueryEncoder` (`fast_query.py`).

Why: encoding passages with the torch `M3Encoder` keeps three things loaded that its ONNX Runtime layers
don't need: torch (~190 MB RSS and ~1.1 s to import), tokenizers' Unigram over the 250k-piece vocabulary
(~282 MB: its trie and maps) and torch's copies of the embeddings and heads. On 2,000 passages those set
`m3search index`'s peak RSS (bench/results/index_rss_profile_n2000.md). Here:
- tokenization: tokenizers' normalizer and pre-tokenizer (the query cache's pipeline, no vocabulary) and the
  exact Unigram search of `unigram_fast.py` over the cache's compact vocabulary (~6 MB). A text holding an
  added token (`<mask>`, `<s>`, ...) is tokenized by the full tokenizer, loaded on first need.
- embeddings: numpy, word rows read from model.safetensors with pread (`FileRows`), positions and
  LayerNorm as `numpy_backbone.py`;
- layers: `ort_backbone.OrtLayers`, the same graph as the torch encoder's, over the mapped weights (or, with
  M3SEARCH_LAYERS=torch, torch's `native._Layer`s over the same weights: `layer_runtime.py`);
- heads and post-processing: numpy, `M3Encoder._forward`'s arithmetic (heads from the query cache).
Pieces, windows, batching and merging are `M3Encoder`'s (`windows.py`, `batching.py`, `postprocess.py`).
Batches of at most `SINGLE_THREAD_TOKENS` padded tokens run in the numpy backbone, one piece at a time on
one BLAS thread, as the torch encoder runs them on one thread.

Outputs match the torch encoder to 1e-4 (`tests/encoder/test_ort_passages.py`; measured ~1e-6).
Not handled here (the torch encoder serves them): MCLS, int8, onnx=False, a device other than the CPU.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from m3search.encoder.batching import plan_batches
from m3search.encoder.limits import check_token_counts
from m3search.encoder.numpy_backbone import read_rows, tensor_offsets
from m3search.encoder.postprocess import merge_pieces
from m3search.encoder.windows import DEFAULT_OVERLAP, make_pieces

# as m3.py (not imported from there: it imports torch)
DEFAULT_BATCH_TOKENS = 2048
SINGLE_THREAD_TOKENS = 256
# options of the torch encoder this path reproduces, with the values it accepts (None: any)
HANDLED = {"batch_tokens": None, "window_tokens": None, "window_overlap": None, "long_dense": None,
           "max_doc_tokens": None, "progress": None, "onnx": (None, True), "mcls": (False, None),
           "quantize": (None,), "sparse_terms": None}


def handles(options: dict) -> bool:
    """Whether these M3Encoder options are all ones this path reproduces."""
    return all(k in HANDLED and (HANDLED[k] is None or v in HANDLED[k]) for k, v in options.items())


class FileRows:
    """Rows of a 2-d fp32 tensor of a safetensors file, read with pread: a read fault on the mapping would
    map its neighbouring cached pages too (fault-around), and after a few hundred passages most of the
    250k-row word table would count in RSS (see `native.WordRows`, the torch twin)."""

    def __init__(self, file: Path, name_suffix: str, shape: tuple[int, int]):
        found = [off for off, dtype, shp in tensor_offsets(file, name_suffix) if dtype == "F32" and shp == tuple(shape)]
        if not found:
            raise ValueError(f"{file}: no fp32 tensor *{name_suffix} of shape {shape}")
        self.offset = found[0]
        self.file, (self.rows, self.width) = file, shape
        self.row_bytes = self.width * 4
        self._fd: int | None = None

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(ids, return_inverse=True)
        if self._fd is None:
            self._fd = os.open(self.file, os.O_RDONLY)
        buf = read_rows(self._fd, self.file, self.offset, self.rows, self.row_bytes, unique.tolist())
        table = np.frombuffer(buf, dtype=np.float32).reshape(len(unique), self.width)
        return table[inverse.reshape(np.shape(ids))]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # OSError; or `os` already torn down at interpreter exit
            pass


def _numpy_layers(backbone) -> list:
    """`numpy_backbone` layers as the attribute tree `ort_backbone.build_graph` reads ([out, in] weights)."""
    from types import SimpleNamespace as NS

    out = []
    for (wq, wk, wv), (bq, bk, bv), (wo, bo), ln1, (wi, bi), (wf, bf), ln2 in backbone.layers:
        out.append(NS(
            qkv=NS(weight=np.concatenate([wq.T, wk.T, wv.T]), bias=np.concatenate([bq, bk, bv])),
            attn_out=NS(weight=wo.T, bias=bo), attn_norm=NS(weight=ln1[0], bias=ln1[1]),
            ffn_in=NS(weight=wi.T, bias=bi), ffn_out=NS(weight=wf.T, bias=bf), ffn_norm=NS(weight=ln2[0], bias=ln2[1]),
        ))
    return out


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    x = x - mean
    var = np.mean(x * x, axis=-1, keepdims=True)
    x /= np.sqrt(var + np.float32(eps))
    x *= w
    x += b
    return x


def _normalize(x: np.ndarray) -> np.ndarray:
    """torch's F.normalize: x / max(|x|, 1e-12) per row."""
    return x / np.maximum(np.sqrt(np.einsum("...d,...d->...", x, x))[..., None], np.float32(1e-12))


class OrtPassageEncoder:
    """`encode(texts, kind, max_length)` for `FastQueryEncoder`: see the module doc. `lite` is its
    `_LitePath` (mapped backbone, compact vocabulary, heads, pipeline); options as M3Encoder's; terms: the
    `terms.SparseTerms` of the sparse rows (None: pieces); runtime: what runs the layers, "onnxruntime" or
    "torch" (`layer_runtime.py`)."""

    def __init__(self, folder: Path, lite, manifest: dict, options: dict, terms=None, runtime: str = "onnxruntime"):
        from m3search.encoder.unigram_fast import FastUnigram

        self.folder, self.lite = Path(folder), lite
        spec = manifest["spec"]
        self.prefix = {"query": spec.get("query_prefix", ""), "passage": spec.get("passage_prefix", "")}
        self.pad_id = int(manifest["special_ids"]["pad"])
        self.vocab_size = int(manifest["identity"]["vocab_size"])
        self.colbert_dim = int(manifest["identity"]["multivec_dim"])
        self.batch_tokens = int(options.get("batch_tokens") or DEFAULT_BATCH_TOKENS)
        self.window_tokens = int(options.get("window_tokens") or spec["max_positions"])
        self.window_overlap = int(options.get("window_overlap", DEFAULT_OVERLAP))
        self.long_dense = options.get("long_dense", "mean")
        self.progress = bool(options.get("progress"))
        self.terms = terms
        t = lite._tensors
        self.unigram = FastUnigram(t["vocab_sorted"], t["vocab_offsets"], t["vocab_order"], t["vocab_scores"],
                                   manifest["unigram_unk_id"], manifest["max_piece_chars"])
        bb = lite.backbone
        self.word_rows = FileRows(self.folder / "model.safetensors", "word_embeddings.weight", bb.word.shape)
        self._full_tokenizer = None
        from m3search.encoder.layer_runtime import make_layers

        self.runtime = runtime
        self.layers = make_layers(runtime, _numpy_layers(bb), bb.hidden, bb.heads, bb.eps)

    # -- tokens -----------------------------------------------------------------------------------

    def content_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids without special tokens, as M3Tokenizer.content_ids."""
        lite, out, special = self.lite, [], []
        normalizer, pre = lite.pipeline.normalizer, lite.pipeline.pre_tokenizer
        for i, text in enumerate(texts):
            if lite.added and any(a in text for a in lite.added):
                special.append(i)
                out.append(None)
                continue
            normalized = normalizer.normalize_str(text) if normalizer else text
            if lite.added and any(a in normalized for a in lite.added):
                special.append(i)
                out.append(None)
                continue
            words = [w for w, _ in pre.pre_tokenize_str(normalized)] if pre else [normalized]
            out.append(self.unigram.segment(words))
        if special:  # added tokens are split out by the full tokenizer first
            if self._full_tokenizer is None:
                from m3search.encoder.tokenizer import M3Tokenizer

                self._full_tokenizer = M3Tokenizer.from_folder(self.folder)
            for i, ids in zip(special, self._full_tokenizer.content_ids([texts[i] for i in special])):
                out[i] = np.asarray(ids, dtype=np.int64)
        return out

    def encode(self, texts: Sequence[str], kind: str, max_length: int | None, max_doc_tokens: int):
        from m3search.types import EncodedBatch

        prefix = self.prefix[kind]
        content = self.content_ids([prefix + t for t in texts] if prefix else list(texts))
        if max_length is not None:
            content = [ids[: max_length - 2] for ids in content]
        check_token_counts([len(ids) + 2 for ids in content], max_doc_tokens)
        pieces = make_pieces(content, self.lite.cls_id, self.lite.eos_id, self.window_tokens, self.window_overlap, None)
        dense, weights, vectors = self._run(pieces)
        return EncodedBatch(*merge_pieces(len(texts), pieces, dense, weights, vectors, self.long_dense,
                                          self.vocab_size, self.colbert_dim, self.lite.unused, self.terms))

    # -- model passes -----------------------------------------------------------------------------

    def _run(self, pieces):
        n = len(pieces)
        dense = np.zeros((n, self.lite.backbone.hidden), dtype=np.float32)
        weights: list = [None] * n
        vectors: list = [None] * n
        lengths = np.asarray([len(p) for p in pieces], dtype=np.int64)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="encoding", unit="piece")
        try:
            for idx in plan_batches(lengths, self.batch_tokens):
                batch = [pieces[i] for i in idx]
                # (the numpy backbone numbers positions 0..n-1: not for a text holding a literal pad token)
                if len(batch) * int(lengths[idx].max()) <= SINGLE_THREAD_TOKENS and not any(
                        (p.ids == self.pad_id).any() for p in batch):
                    with self.lite.blas.limit(limits=1, user_api="blas"):
                        for j, p in enumerate(batch):
                            dense[idx[j]], weights[idx[j]], vectors[idx[j]] = self.lite.forward(
                                np.asarray(p.ids, dtype=np.int64))
                else:
                    d, w, v = self._forward(batch)
                    dense[idx] = d
                    for j, i in enumerate(idx):
                        weights[i], vectors[i] = w[j], v[j]
                if bar is not None:
                    bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()
        return dense, weights, vectors

    def embed(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(B, L) padded ids -> (B, L, hidden) embedded, as NativeEncoder.embed."""
        bb = self.lite.backbone
        if bb.roberta_positions:  # as RoBERTa: by id, so a literal pad token in a text takes padding_idx too
            real = (ids != bb.padding_idx).astype(np.int64)
            positions = np.cumsum(real, axis=1) * real + bb.padding_idx
        else:
            positions = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
        x = self.word_rows(ids)
        x += bb.position[positions]
        x += bb.token_type
        return _layer_norm(x, *bb.emb_norm, bb.eps)

    def _forward(self, batch):
        lite = self.lite
        width = max(len(p) for p in batch)
        ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for i, p in enumerate(batch):
            ids[i, : len(p)] = p.ids
            mask[i, : len(p)] = 1
        h = self.layers(self.embed(ids, mask), mask)
        if lite.pooling == "cls":
            pooled = h[:, 0]
        else:
            m = mask[..., None].astype(np.float32)
            pooled = (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1)
        dense = _normalize(pooled)
        token_weights = np.maximum(h @ lite.sparse_w[0] + lite.sparse_b[0], 0)  # (B, L)
        lengths = mask.sum(axis=1)
        rows = h[:, 1:][mask[:, 1:].astype(bool)]  # every piece's positions 1..len-1, piece by piece
        vecs = _normalize(rows @ lite.colbert_w.T + lite.colbert_b)
        weights, vectors, at = [], [], 0
        for j, p in enumerate(batch):
            n = int(lengths[j])
            weights.append((np.asarray(p.ids), token_weights[j, :n]))  # every position; merge_pieces filters
            vectors.append(vecs[at : at + n - 1])
            at += n - 1
        return dense, weights, vectors
