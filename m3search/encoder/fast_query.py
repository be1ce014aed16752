"""`FastQueryEncoder`: an M3 encoder whose short inputs (queries) run in numpy, without importing torch.

Loading an `M3Encoder` costs `import torch` (~1.1 s, ~220 MB) and tokenizers' 250k-piece Unigram (~1-1.4 s,
~300 MB) before the first query is encoded. This encoder answers small calls (at most `LITE_TOKENS` tokens
in all, every text in one window, no MCLS or int8) from the query-encoder cache (`query_cache.py`):
tokenizers' normalizer and pre-tokenizer, the exact Unigram search of `unigram.py`, the numpy backbone of
`numpy_backbone.py` over the mapped weights, and the heads. Larger calls (indexing, long texts) go to the
ONNX Runtime batch path of `ort_passages.py` when `m3search[onnx]` is installed, still without torch.
Everything else (other options, no ONNX Runtime, a torch encoder already loaded) goes to the torch
`M3Encoder`, loaded on first need; so do attribute reads this class does not answer itself (`model`,
`tokenizer`, ...). Outputs match the torch encoder to 1e-4 (`tests/encoder/test_query_numpy.py`,
`tests/encoder/test_ort_passages.py`).

The cache is written the first time a folder is used (that one process pays torch); a folder the numpy
path can't run (sharded or non-fp32 weights, a non-Unigram tokenizer) simply uses torch.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from m3search.encoder.base import Encoder, Kind, check_kind, validate_texts
from m3search.encoder.limits import DEFAULT_MAX_DOC_TOKENS, check_limit, check_token_counts
from m3search.encoder.terms import SparseTerms
from m3search.errors import InputError
from m3search.types import EncodedBatch, EncoderIdentity

logger = logging.getLogger(__name__)

# Calls of at most this many texts and tokens run in numpy (one sequence at a time, no padding); larger
# ones (a queries file, a server's batch of many clients) batch better in torch.
LITE_TOKENS = 2048
LITE_TEXTS = 8
# Options that change what the torch encoder computes in ways the numpy path does not reproduce.
_TORCH_ONLY = {"mcls": (False, None), "quantize": (None,)}


class _LitePath:
    """The numpy pieces built from a QueryArtifact."""

    def __init__(self, folder: Path, artifact):
        from tokenizers import Tokenizer

        from m3search.encoder import numpy_backbone
        from m3search.encoder.tokenizer import sentencepiece_whitespace
        from m3search.encoder.unigram import UnigramVocab

        m = artifact.manifest
        self.backbone = numpy_backbone.load(folder, m["config"])
        if self.backbone is None:
            raise ValueError(f"{folder}: the numpy backbone can't map its weights")
        t = artifact.tensors
        self._tensors = t
        self.vocab = UnigramVocab.from_sorted(
            t["vocab_sorted"].tobytes(), memoryview(t["vocab_offsets"]), memoryview(t["vocab_order"]),
            memoryview(t["vocab_scores"]), m["unigram_unk_id"], m["max_piece_chars"])
        self.pipeline = Tokenizer.from_str(artifact.pipeline_json)
        sentencepiece_whitespace(self.pipeline)  # a no-op for files written by M3Tokenizer.save
        self.added = [a for a in m["added_tokens"] if a]
        ids = m["special_ids"]
        self.cls_id, self.eos_id, self.unused = ids["cls"], ids["eos"], np.asarray(ids["unused"], dtype=np.int64)
        self.colbert_w, self.colbert_b = t["colbert_linear.weight"], t["colbert_linear.bias"]
        self.sparse_w, self.sparse_b = t["sparse_linear.weight"], t["sparse_linear.bias"]
        self.pooling = m["spec"]["pooling"]
        from threadpoolctl import ThreadpoolController

        # Query-sized matmuls run on one BLAS thread: on busy cores each 2-thread call waited for its second
        # thread (a 9-token forward: ~1 s on 2 threads, 30 ms on 1; bench/cold_start.py)
        self.blas = ThreadpoolController()

    def token_string(self, token_id: int) -> str | None:
        t = self._tensors
        if not 0 <= token_id < len(t["vocab_order"]):
            return None
        if "vocab_rank" not in t:  # id -> position in code-point order, built on first use
            t["vocab_rank"] = np.argsort(t["vocab_order"])
        i = int(t["vocab_rank"][token_id])
        a, b = int(t["vocab_offsets"][i]), int(t["vocab_offsets"][i + 1])
        return t["vocab_sorted"][a:b].tobytes().decode("utf-8")

    def content_ids(self, text: str) -> list[int] | None:
        """Token ids without special tokens; None when the text holds an added token (the full tokenizer
        splits those out first)."""
        if any(a in text for a in self.added):
            return None
        normalized = self.pipeline.normalizer.normalize_str(text) if self.pipeline.normalizer else text
        if any(a in normalized for a in self.added):
            return None
        words = self.pipeline.pre_tokenizer.pre_tokenize_str(normalized) if self.pipeline.pre_tokenizer else [
            (normalized, None)]
        return [i for w, _ in words for i in self.vocab.segment(w)]

    def forward(self, ids: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]:
        """M3Encoder._forward for one unpadded piece: dense row, (ids, weights) at every position, token vectors."""
        h = self.backbone.forward(ids)
        pooled = h[0] if self.pooling == "cls" else h.mean(axis=0)
        dense = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
        w = np.maximum(h @ self.sparse_w.T + self.sparse_b, 0).reshape(-1)
        vecs = h[1:] @ self.colbert_w.T + self.colbert_b
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return dense.astype(np.float32), (ids, w), vecs.astype(np.float32)


class FastQueryEncoder(Encoder):
    """See the module doc. Build with `load_fast(folder, device, **options)`."""

    def __init__(self, folder: Path, artifact, device=None, options: dict | None = None):
        self.folder = Path(folder)
        self._device = device
        self._options = dict(options or {})
        self._artifact = artifact
        self._lite: _LitePath | None = None
        self._full = None
        self._ort = None  # ort_passages.OrtPassageEncoder, built on first need
        self._ort_allowed = True
        spec = artifact.manifest["spec"]
        self.heads_trained = bool(spec.get("heads_trained", True))
        self._prefix = {"query": spec.get("query_prefix", ""), "passage": spec.get("passage_prefix", "")}
        self.window_tokens = int(self._options.get("window_tokens") or spec["max_positions"])
        self.max_doc_tokens = check_limit(self._options.get("max_doc_tokens", DEFAULT_MAX_DOC_TOKENS))
        self.terms = SparseTerms(self._options.get("sparse_terms"), artifact.identity.vocab_size, self.token_strings)
        self._lite_allowed = all(self._options.get(k) in ok for k, ok in _TORCH_ONLY.items()) and (
            device is None or str(device) == "cpu")

    # -- the torch encoder, on first need ----------------------------------------------------------

    @property
    def full(self):
        if self._full is None:
            from m3search.encoder.m3 import M3Encoder

            self._full = M3Encoder.from_pretrained(self.folder, device=self._device, **self._options)
        return self._full

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("_full", "_lite", "_ort", "_ort_allowed", "_artifact", "_options", "_device",
                                             "folder"):
            raise AttributeError(name)
        return getattr(self.full, name)

    # -- Encoder interface --------------------------------------------------------------------------

    @property
    def identity(self) -> EncoderIdentity:
        return dataclasses.replace(self._artifact.identity, sparse_terms=self.terms.scheme, sparse_width=self.terms.width)

    @property
    def vocab_size(self) -> int:
        return self._artifact.identity.vocab_size

    def fingerprint(self) -> str:
        """What determines the outputs, without loading torch (for evaluation caches)."""
        return f"{self._artifact.manifest['key']}:{sorted(self._options.items())!r}"

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        lite = self._lite_path()
        if lite is None:
            return self.full.token_strings(token_ids)
        return [s if (s := lite.token_string(int(t))) is not None else f"#{int(t)}" for t in token_ids]

    def encode(self, texts: Sequence[str] | str, kind: Kind = "passage", max_length: int | None = None) -> EncodedBatch:
        check_kind(kind)
        texts = validate_texts(texts)
        if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
            raise InputError(f"max_length must be an int >= 2 (room for the special tokens), got {max_length!r}")
        # passages go to torch once it is loaded anyway (it batches; the pure-Python Unigram search is
        # meant for query-sized text)
        small = 0 < len(texts) <= LITE_TEXTS and sum(len(t) for t in texts) <= 8 * LITE_TOKENS
        lite = self._lite_path() if small and (kind == "query" or self._full is None) else None
        if lite is not None:
            prefix = self._prefix[kind]
            content = [lite.content_ids(prefix + t) for t in texts]
            if all(c is not None for c in content):
                if max_length is not None:
                    content = [c[: max_length - 2] for c in content]
                lengths = [len(c) + 2 for c in content]
                if max(lengths) <= self.window_tokens and sum(lengths) <= LITE_TOKENS:
                    check_token_counts(lengths, self.max_doc_tokens)
                    return self._encode_lite(lite, content)
        batches = self._ort_path() if self._full is None else None
        if batches is not None:
            return batches.encode(texts, kind, max_length, self.max_doc_tokens)
        return self.full.encode(texts, kind=kind, max_length=max_length)

    def _ort_path(self):
        """The torch-free batch path (`ort_passages.py`) when ONNX Runtime is installed and the options are
        ones it reproduces; None otherwise (then the torch encoder serves the call)."""
        if self._ort is None and self._ort_allowed:
            from m3search.encoder import layer_runtime, ort_backbone, ort_passages

            runtime = layer_runtime.configured()  # a misspelt M3SEARCH_LAYERS is an error, not a silent fallback
            self._ort_allowed = False
            lite = self._lite_path() if ort_passages.handles(self._options) and ort_backbone.available() else None
            if lite is not None:
                try:
                    self._ort = ort_passages.OrtPassageEncoder(self.folder, lite, self._artifact.manifest, self._options,
                                                               self.terms, runtime)
                    self._ort_allowed = True
                except Exception as e:  # an install that finds but can't load or run it: torch, said once
                    logger.warning("passages of %s: the ONNX Runtime path is unavailable (%s: %s); using torch",
                                   self.folder, type(e).__name__, e)
        return self._ort

    def _lite_path(self) -> _LitePath | None:
        if not self._lite_allowed:
            return None
        if self._lite is None:
            try:
                self._lite = _LitePath(self.folder, self._artifact)
            except (ValueError, KeyError, OSError) as e:
                logger.warning("query encoder of %s: the numpy path is unavailable (%s); using torch", self.folder, e)
                self._lite_allowed = False
                return None
        return self._lite

    def _encode_lite(self, lite: _LitePath, content: list[list[int]]) -> EncodedBatch:
        n = len(content)
        ident = self.identity
        dense = np.zeros((n, ident.dense_dim), dtype=np.float32)
        weights, vectors = [], []
        with lite.blas.limit(limits=1, user_api="blas"):
            for i, c in enumerate(content):
                ids = np.asarray([lite.cls_id, *c, lite.eos_id], dtype=np.int64)
                dense[i], w, v = lite.forward(ids)
                weights.append(w)
                vectors.append(v)
        sparse = self.terms.rows(n, np.arange(n), weights, lite.unused)
        lengths = np.asarray([len(v) for v in vectors], dtype=np.int64)
        multivec = np.ascontiguousarray(np.concatenate(vectors).astype(np.float32, copy=False))
        return EncodedBatch(dense, sparse, multivec, lengths)


def load_fast(folder: str | Path, device=None, cache_dir: str | Path | None = None, **options) -> Encoder:
    """A FastQueryEncoder over the folder's query-encoder cache (built now, with torch, if missing), or the
    torch M3Encoder when the folder can't use the numpy path."""
    from m3search.encoder.query_cache import CacheUnavailable, Unsupported, build_artifact, load_artifact

    folder = Path(folder).expanduser()
    try:
        artifact = load_artifact(folder, cache_dir)
    except CacheUnavailable as e:
        (logger.debug if isinstance(e, Unsupported) else logger.warning)("%s; queries go through torch", e)
        artifact = None
        unusable = True
    else:
        unusable = False
    if artifact is not None:
        return FastQueryEncoder(folder, artifact, device, options)
    from m3search.encoder.m3 import M3Encoder

    full = M3Encoder.from_pretrained(folder, device=device, **options)
    if unusable or full.device.type != "cpu" and device is not None:
        return full
    try:
        from m3search.encoder.checkpoint import LoadedModel

        loaded = LoadedModel(model=full.model, tokenizer=full.tokenizer, spec=full.spec)
        artifact = build_artifact(folder, loaded, cache_dir)
    except CacheUnavailable as e:
        logger.debug("%s; queries go through torch", e)
        return full
    except OSError as e:  # a read-only cache: only later cold starts lose
        logger.warning("can't write the query-encoder cache (%s); queries go through torch", e)
        return full
    encoder = FastQueryEncoder(folder, artifact, device, options)
    encoder._full = full
    return encoder
