"""SparseSegmentReader: search, exact re-scoring and stored weights of one sparse segment."""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from m3search.errors import ConfigError, IndexFormatError, InputError
from m3search.indexes.base import SparseReader
from m3search.indexes.sparse import forward, search as kernels, search_packed as packed_kernels
from m3search.indexes.sparse.quantize import Quantizer
from m3search.indexes.sparse.segment import INVERTED_ARRAYS, Segment

# exact=False without explicit settings: measured on BGE-M3-shaped data (bench/index_bench_sparse.py)
APPROX_ALPHA = 0.9
APPROX_BETA = 1.0
WARMUP_BLOCKS = 16
_PARAMS = ("exact", "alpha", "beta", "warmup", "threads", "floor")


class SparseSegmentReader(SparseReader):
    """Reads a segment written by `SparseComponent`; ids are the segment's local ids 0..n_docs-1."""

    def __init__(self, segment: Segment):
        self._seg = segment
        mw = segment.max_weight
        self._quantizer = Quantizer(mw) if mw is not None else None
        # work counters of the latest search call, for diagnostics and benchmarks
        self.last_search_counters: dict[str, int] = {}

    # -- facts -------------------------------------------------------------------------------------
    @property
    def n_docs(self) -> int:
        return self._seg.n_docs

    @property
    def vocab_size(self) -> int:
        return self._seg.header["vocab_size"]

    @property
    def n_postings(self) -> int:
        return self._seg.header["n_postings"]

    @property
    def quantizer(self) -> Quantizer | None:
        """The impact scale (None for a segment without any weight)."""
        return self._quantizer

    def nbytes(self) -> int:
        return self._seg.nbytes

    @property
    def _half(self) -> bool:
        return self._seg.header["forward_dtype"] == "float16"

    def stats(self) -> dict:
        """Sizes of the parts, for `info` and benchmarks."""
        rec = self._seg.header["arrays"]
        inverted = sum(rec[n]["nbytes"] for n in INVERTED_ARRAYS)
        fwd = sum(r["nbytes"] for n, r in rec.items() if n not in INVERTED_ARRAYS)
        h = self._seg.header
        return {
            "version": h["version"], "n_docs": h["n_docs"], "n_postings": h["n_postings"], "n_terms": h["n_terms"],
            "n_dense_terms": h["n_dense_terms"], "block_docs": h["block_docs"], "max_weight": h["max_weight"],
            "inverted_bytes": inverted, "forward_bytes": fwd, "total_bytes": self.nbytes(),
        }

    def close(self) -> None:
        self._seg.arrays.clear()

    # -- search ------------------------------------------------------------------------------------
    def search(self, q: sp.csr_matrix, k: int, deleted: np.ndarray | None = None, **params: Any):
        """(D, I) of shape (m, k): the k best documents by sum of w_q * impact over shared tokens.

        params: exact (default True: equals scoring every document over the quantized impacts);
        alpha in (0, 1] (approximate: skip a block when alpha * its bound is below the k-th score),
        beta in (0, 1] (approximate: drop the query tokens whose score bounds add up to at most
        1 - beta of the query's); warmup (blocks scored first, default 16); threads (default 1:
        one query after the other on the calling thread; > 1: queries split over that many threads);
        floor ((m,) float32: per query, a score the caller already holds k results at or above, e.g. from
        other segments; documents below it are left out and blocks bounded below it skipped).
        Only documents sharing a token with the query qualify; rows are padded with (-inf, -1).
        """
        opts = self._search_options(params)
        k = _check_k(k)
        qptr, qt, qw = self._prepare_queries(q)
        m = len(qptr) - 1
        D = np.full((m, k), -np.inf, np.float32)
        I = np.full((m, k), -1, np.int64)
        if m == 0 or k == 0 or self.n_docs == 0 or self._quantizer is None:
            return D, I
        dmask = self._deleted_mask(deleted)
        s = self._seg
        postings, dense_max = self._verified_streams(qt)
        args = (qptr, qt, qw, s.term_max, k, np.float32(opts["alpha"]), float(opts["beta"]), int(opts["warmup"]),
                dmask, self.n_docs, s.shift, s.header["n_blocks"], s.term_ptr, s.term_dense, s.term_entries,
                postings, dense_max, s.group_ptr, D, I)
        floors = opts["floor"]
        if len(floors) not in (0, m):
            raise InputError(f"floor must hold one score per query ({m}), got {len(floors)}")
        threads = min(opts["threads"], m)
        counters = np.zeros((threads, 4), np.int64)
        if s.packed:  # versions 3 and 4 differ only in the non-dense tokens' chunks
            run = packed_kernels.search_batch_parallel if threads > 1 else packed_kernels.search_batch
            run(*args, counters, floors, s.version >= 4)
        else:
            (kernels.search_batch_parallel if threads > 1 else kernels.search_batch)(*args, counters, floors)
        self.last_search_counters = dict(zip(("blocks_above_threshold", "blocks_fully_scored", "entries_decoded",
                                              "queries"), counters.sum(axis=0).tolist()))
        return D, I

    def _verified_streams(self, qt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """postings and dense_max with the blocks of the query tokens' spans checked (segment_files.py)."""
        s = self._seg
        qt = np.unique(qt)
        if s.packed:  # bit pointers; a read at bit p loads words p // 32 and p // 32 + 1
            postings = s.verified("postings", s.term_ptr[qt] >> 5, (s.term_ptr[qt + 1] >> 5) + 2)
        else:
            postings = s.verified("postings", s.term_ptr[qt], s.term_ptr[qt + 1])
        dense = s.term_dense[qt]
        dense = dense[dense >= 0].astype(np.int64)
        n_blocks = s.header["n_blocks"]
        dense_max = s.verified("dense_max", dense * n_blocks, (dense + 1) * n_blocks)
        return postings, dense_max

    def _verified_forward(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """fwd_ids and fwd_weights with the blocks of these documents' spans checked."""
        s = self._seg
        if s.packed:  # bit pointers; a read at bit p loads words p // 32 and p // 32 + 1
            fwd_ids = s.verified("fwd_ids", s.fwd_bptr[ids] >> 5, (s.fwd_bptr[ids + 1] >> 5) + 2)
            fwd_weights = s.verified("fwd_weights", s.fwd_wbptr[ids] >> 5, (s.fwd_wbptr[ids + 1] >> 5) + 2)
        else:
            fwd_ids = s.verified("fwd_ids", s.fwd_bptr[ids], s.fwd_bptr[ids + 1])
            fwd_weights = s.verified("fwd_weights", s.fwd_wptr[ids], s.fwd_wptr[ids + 1])
        return fwd_ids, fwd_weights

    def _search_options(self, params: dict) -> dict:
        unknown = sorted(set(params) - set(_PARAMS))
        if unknown:
            raise ConfigError(f"unknown sparse search parameter(s) {unknown}; valid: {list(_PARAMS)}")
        exact = params.get("exact", True)
        if not isinstance(exact, (bool, np.bool_)):
            raise ConfigError(f"exact must be True or False, got {exact!r}")
        alpha, beta = params.get("alpha"), params.get("beta")
        if exact:
            for name, value in (("alpha", alpha), ("beta", beta)):
                if value is not None and value != 1:
                    raise ConfigError(f"{name}={value} prunes results: pass exact=False with it")
            alpha = beta = 1.0
        else:
            alpha = APPROX_ALPHA if alpha is None else alpha
            beta = APPROX_BETA if beta is None else beta
        for name, value in (("alpha", alpha), ("beta", beta)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ConfigError(f"{name}={value!r} must be a number in (0, 1]")
        warmup = params.get("warmup", WARMUP_BLOCKS)
        threads = params.get("threads", 1)
        for name, value in (("warmup", warmup), ("threads", threads)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (1 if name == "threads" else 0):
                raise ConfigError(f"{name}={value!r} must be an integer >= {1 if name == 'threads' else 0}")
        floor = params.get("floor")
        floor = np.zeros(0, np.float32) if floor is None else np.ascontiguousarray(floor, dtype=np.float32).ravel()
        return {"alpha": alpha, "beta": beta, "warmup": int(warmup), "threads": int(threads), "floor": floor}

    def _prepare_queries(self, q) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-query local token indices and weights times the impact step, in token id order."""
        q = _query_matrix(q, self.vocab_size)
        ids = self._seg.term_ids
        if len(ids) == 0:
            return np.zeros(q.shape[0] + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        pos = np.searchsorted(ids, q.indices)
        found = (ids[np.minimum(pos, len(ids) - 1)] == q.indices) & (q.data > 0)
        step = self._quantizer.step if self._quantizer is not None else 0.0
        if found.all():
            return q.indptr.astype(np.int64), pos.astype(np.int64), (q.data * np.float64(step)).astype(np.float32)
        kept = np.zeros(len(found) + 1, np.int64)
        np.cumsum(found, out=kept[1:])
        return kept[q.indptr], pos[found].astype(np.int64), (q.data[found] * np.float64(step)).astype(np.float32)

    def _deleted_mask(self, deleted) -> np.ndarray:
        if deleted is None:
            return np.zeros(0, np.bool_)
        deleted = np.asarray(deleted)
        if deleted.dtype != np.bool_ or deleted.shape != (self.n_docs,):
            raise InputError(
                f"deleted must be a bool array of shape ({self.n_docs},), got {deleted.dtype} {deleted.shape}")
        return np.ascontiguousarray(deleted)

    # -- stored weights ----------------------------------------------------------------------------
    def score_pairs(self, q: sp.csr_matrix, q_index: np.ndarray, ids: np.ndarray) -> np.ndarray:
        q = _query_matrix(q, self.vocab_size)
        q_index = np.asarray(q_index, dtype=np.int64).reshape(-1)
        ids = self._check_ids(ids)
        if len(q_index) != len(ids):
            raise InputError(f"q_index has {len(q_index)} entries but ids has {len(ids)}; pass one per pair")
        if len(q_index) and (q_index.min() < 0 or q_index.max() >= q.shape[0]):
            raise InputError(f"q_index has entries outside 0..{q.shape[0] - 1}")
        s = self._seg
        fwd_ids, fwd_weights = self._verified_forward(ids)
        if s.packed:
            return forward.score_pairs_packed(q.indptr.astype(np.int64), q.indices.astype(np.int64), q.data, q_index,
                                              ids, s.fwd_wptr, s.fwd_bptr, s.fwd_width, fwd_ids, s.fwd_wbptr,
                                              s.fwd_wbase, s.fwd_wwidth, fwd_weights, self._half)
        return forward.score_pairs(q.indptr.astype(np.int64), q.indices.astype(np.int64), q.data, q_index, ids,
                                   s.fwd_wptr, s.fwd_bptr, fwd_ids, forward.as_kernel_weights(fwd_weights))

    def doc_weights(self, ids: np.ndarray) -> sp.csr_matrix:
        ids = self._check_ids(ids)
        s = self._seg
        fwd_ids, fwd_weights = self._verified_forward(ids)
        try:
            if s.packed:
                indptr, indices = forward.decode_ids_packed(ids, s.fwd_wptr, s.fwd_bptr, s.fwd_width, fwd_ids,
                                                            self.vocab_size)
            else:
                indptr, indices = forward.decode_ids(ids, s.fwd_wptr, s.fwd_bptr, fwd_ids, self.vocab_size)
        except ValueError as e:
            raise IndexFormatError(f"{s.path}: {e}; rebuild the segment or restore it from a backup") from e
        if s.packed:
            data = forward.gather_weights_packed(ids, s.fwd_wptr, s.fwd_wbptr, s.fwd_wbase, s.fwd_wwidth, fwd_weights,
                                                 self._half, indptr)
        else:
            data = forward.gather_weights(ids, s.fwd_wptr, forward.as_kernel_weights(fwd_weights), indptr)
        return sp.csr_matrix((data, indices, indptr), shape=(len(ids), self.vocab_size))

    def quantized_weights(self, ids: np.ndarray) -> sp.csr_matrix:
        """(len(ids), vocab) float32 impacts the search scores with (code * step), from the stored weights."""
        x = self.doc_weights(ids)
        if self._quantizer is not None and x.nnz:
            codes, _ = self._quantizer.codes(x.data)
            x.data = self._quantizer.dequantize(codes).astype(np.float32)
        return x

    def _check_ids(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.n_docs):
            raise InputError(f"document ids must lie in 0..{self.n_docs - 1}, got {ids.min()}..{ids.max()}")
        return ids


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise InputError(f"k must be a non-negative integer, got {k!r}")
    return int(k)


def _query_matrix(q, vocab_size: int) -> sp.csr_matrix:
    if not sp.issparse(q):
        raise InputError(f"queries must be a scipy CSR matrix of lexical weights, got {type(q).__name__}")
    if q.format != "csr" or q.dtype != np.float32:
        q = sp.csr_matrix(q, dtype=np.float32)
    if q.shape[1] != vocab_size:
        raise InputError(
            f"queries have {q.shape[1]} token columns but the index vocabulary has {vocab_size}: "
            "encode queries with the index's encoder")
    if not q.has_canonical_format:
        q = q.copy()
        q.sum_duplicates()
    if len(q.data) and not (np.isfinite(q.data).all() and q.data.min() >= 0):
        raise InputError("query lexical weights must be finite and >= 0 (BGE-M3's sparse head applies relu)")
    return q
