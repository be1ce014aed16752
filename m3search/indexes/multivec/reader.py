"""Scoring one multi-vector segment: MaxSim over memory-mapped token codes, grouped by query."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from m3search.errors import InputError
from m3search.indexes.base import MultivecReader
from m3search.indexes.faiss_support import faiss_threads, threads_for
from m3search.indexes.inputs import check_ids
from m3search.indexes.multivec.codecs import Codec
from m3search.indexes.multivec.maxsim import maxsim_decoded, maxsim_lut, token_rows

logger = logging.getLogger(__name__)


class MultivecSegmentReader(MultivecReader):
    """One segment: `codes` (T, code_size) uint8 memory-mapped, `offsets` (n + 1,) int64 token offsets."""

    def __init__(self, path: Path, header: dict, codec: Codec, codes: np.ndarray, offsets: np.ndarray,
                 config: dict):
        self.path = path
        self.header = header
        self.codec = codec
        self.codes = codes
        self.offsets = offsets
        self.config = config
        # unit-norm inputs (BGE-M3's are) get unit-norm reconstructions, where the codec can do it for free
        self.rescale = bool(header.get("unit_norm")) and config.get("rescale", True) and codec.rescales
        self._sq_norms = codec.sub_sq_norms() if self.rescale and codec.supports_lut else None

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def dim(self) -> int:
        return self.codec.dim

    def nbytes(self) -> int:
        return int(self.header["nbytes"])

    def close(self) -> None:
        self.codes = None

    def doc_lengths(self, ids: np.ndarray) -> np.ndarray:
        ids = check_ids(ids, self.n_docs, "ids")
        return self.offsets[ids + 1] - self.offsets[ids]

    def fidelity(self) -> dict:
        """Compression, bytes per token on disk, and the codec's reconstruction quality on held-out tokens."""
        return {
            "compression": self.codec.name,
            "codec_id": self.codec.codec_id,
            "bytes_per_token": self.codec.code_size,
            "disk_bytes_per_token": self.nbytes() / max(1, self.n_tokens),
            "rescaled_to_unit_norm": self.rescale,
            **{k: v for k, v in self.header.get("fidelity", {}).items() if k != "bytes_per_token"},
        }

    def score_pairs(self, q_vecs, q_lengths, q_index, ids, scorer=None, threads=None):
        """MaxSim per (query, document) pair; all pairs of one query are scored in one pass over their
        documents' codes (lookup tables for PQ codes, else one decompression + one matrix product)."""
        q_vecs = np.asarray(q_vecs)
        if q_vecs.ndim != 2 or q_vecs.shape[1] != self.dim:
            raise InputError(f"q_vecs must have shape (T, {self.dim}), got {q_vecs.shape}")
        q_vecs = np.ascontiguousarray(q_vecs, dtype=np.float32)
        q_lengths = np.asarray(q_lengths, dtype=np.int64)
        if q_lengths.ndim != 1 or q_lengths.sum() != len(q_vecs) or (q_lengths.size and q_lengths.min() < 0):
            raise InputError(f"q_lengths must be (m,) non-negative counts summing to {len(q_vecs)}")
        q_index = check_ids(q_index, len(q_lengths), "q_index")
        ids = check_ids(ids, self.n_docs, "ids")
        if len(q_index) != len(ids):
            raise InputError(f"q_index has {len(q_index)} entries but ids has {len(ids)}")
        scorer = scorer or self.config.get("scorer", "auto")
        if scorer not in ("auto", "lut", "decode"):
            raise InputError(f"scorer must be 'auto', 'lut' or 'decode', got {scorer!r}")
        use_lut = self.codec.supports_lut and scorer != "decode"
        if scorer == "lut" and not self.codec.supports_lut:
            raise InputError(f"scorer 'lut' needs a PQ-family compression, this segment stores {self.codec.name}")
        work = float(self.doc_lengths(ids).sum()) * max(1.0, len(q_vecs) / max(1, len(q_lengths))) * self.dim
        with faiss_threads(threads_for(work, self.config.get("threads") if threads is None else threads)):
            return self._score(q_vecs, q_lengths, q_index, ids, use_lut)

    def _score(self, q_vecs, q_lengths, q_index, ids, use_lut):
        q_off = np.zeros(len(q_lengths) + 1, np.int64)
        np.cumsum(q_lengths, out=q_off[1:])
        out = np.zeros(len(ids), np.float32)
        order = np.argsort(q_index, kind="stable")
        bounds = np.searchsorted(q_index[order], np.arange(len(q_lengths) + 1))
        for qi in np.nonzero(np.diff(bounds))[0]:
            pairs = order[bounds[qi] : bounds[qi + 1]]
            q = q_vecs[q_off[qi] : q_off[qi + 1]]
            if not len(q):
                continue  # a query without tokens scores 0, as in m3search.scoring.maxsim
            if use_lut:
                tables, coarse = self.codec.lut_tables(q)
                out[pairs] = maxsim_lut(tables, coarse, self.codes, self.offsets, ids[pairs],
                                        self.codec.spec["residual"], self._sq_norms)
            else:
                out[pairs] = maxsim_decoded(q, self.codes, self.offsets, ids[pairs], self._decode)
        return out

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        x = self.codec.decode(codes)
        if self.rescale:
            x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)
        return x

    def token_vectors(self, ids):
        """Decoded token vectors (rescaled like the scores are: the best estimate of the originals)."""
        ids = check_ids(ids, self.n_docs, "ids")
        rows, lengths = token_rows(self.offsets, ids)
        return self._decode(np.asarray(self.codes[rows])), lengths

    def token_codes(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(codes of the documents' tokens, lengths) as stored, for merges that keep the codec."""
        ids = check_ids(ids, self.n_docs, "ids")
        rows, lengths = token_rows(self.offsets, ids)
        return np.asarray(self.codes[rows]), lengths
