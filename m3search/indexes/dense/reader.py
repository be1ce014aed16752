"""Searching one dense segment: FAISS (flat, HNSW or IVF-PQ) for candidates, the fp16 store for exact scores."""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import faiss
import numpy as np

from m3search.errors import InputError
from m3search.indexes.base import DenseReader
from m3search.indexes.dense.config import Structure
from m3search.indexes.faiss_support import GpuClone, LiveSelector, faiss_threads, threads_for, want_gpu
from m3search.indexes.inputs import check_ids

logger = logging.getLogger(__name__)

_ROWS = 65536  # rows of the fp16 store converted to float32 at a time
_GPU_MAX_K = 2048  # the largest k GPU FAISS searches
REFINE_PER_K = 4  # re-rank at least this many candidates per result asked for
EXACT_LIVE_WORK = 1 << 20  # live docs x dim below which a filtered IVF search scores every live doc exactly
_MIN_RERANK_ROWS = 4  # queries per re-rank thread, at least


def check_queries(xq: np.ndarray, d: int) -> np.ndarray:
    xq = np.asarray(xq)
    if xq.ndim != 2 or xq.shape[1] != d:
        raise InputError(f"dense queries must have shape (m, {d}), got {xq.shape}")
    return np.ascontiguousarray(xq, dtype=np.float32)


def check_deleted(deleted: np.ndarray | None, n: int) -> np.ndarray | None:
    """The mask as bool (n,), or None when nothing is deleted."""
    if deleted is None:
        return None
    deleted = np.asarray(deleted)
    if deleted.shape != (n,) or deleted.dtype != np.bool_:
        raise InputError(f"deleted must be a bool mask of shape ({n},), got {deleted.dtype} {deleted.shape}")
    return deleted if deleted.any() else None


def _padded(m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((m, k), -np.inf, np.float32), np.full((m, k), -1, np.int64)


class DenseSegmentReader(DenseReader):
    """One dense segment. `vectors` is the memory-mapped (n, d) float16 store; `ivf` the FAISS index of
    an IVF segment (None for flat segments, whose exact searcher is built from the store on first use)."""

    def __init__(self, path: Path, header: dict, vectors: np.ndarray, ivf: faiss.Index | None, config: dict):
        self.path = path
        self.header = header
        self.structure = Structure(**header["structure"])
        self.config = config
        self._store = vectors
        self._ivf = ivf
        self._flat: faiss.Index | None = None
        self._gpu: GpuClone | None = None
        self._gpu_tried = False
        self._lock = threading.Lock()
        self._flat_group = None  # multiseg.FlatGroup led by this segment, if any

    # -- SegmentReader ----------------------------------------------------------------------------
    @property
    def n_docs(self) -> int:
        return int(self.header["n"])

    @property
    def d(self) -> int:
        return int(self.header["d"])

    def nbytes(self) -> int:
        return int(self.header["nbytes"])

    def close(self) -> None:
        self._store = None
        self._ivf = self._flat = self._gpu = self._flat_group = None

    def describe(self) -> dict:
        """Structure and sizes, for `info`."""
        s = self.structure
        return {"structure": s.kind, "factory": s.factory, "nlist": s.nlist, "pq_m": s.pq_m,
                "n": self.n_docs, "d": self.d, "bytes": self.nbytes(),
                "bytes_per_doc": self.nbytes() / max(1, self.n_docs)}

    def graph_copy(self) -> faiss.Index | None:
        """A copy of this segment's HNSW index (graph and fp16 codes) that a merge may extend; None when
        the segment has no graph."""
        if self.structure.kind != "hnsw" or self._ivf is None:
            return None
        return faiss.clone_index(self._ivf)

    def fidelity(self) -> dict:
        """What `info` reports: search structure, and that exact scores come from the fp16 store."""
        return {"structure": self.structure.factory, "stored": "fp16", "refine": self.config["refine"],
                "nprobe": self.config["nprobe"] if self._ivf is not None else None,
                "bytes_per_doc": self.nbytes() / max(1, self.n_docs)}

    # -- DenseReader ------------------------------------------------------------------------------
    def search_params(self, nprobe=None, refine=None, threads=None, ef_search=None) -> tuple[int, int, int, int | None]:
        """(nprobe, refine, ef_search, threads) of a search call: the call's values, else the config's; checked."""
        nprobe = self.config["nprobe"] if nprobe is None else nprobe
        refine = self.config["refine"] if refine is None else refine
        if isinstance(nprobe, bool) or not isinstance(nprobe, (int, np.integer)) or nprobe < 1:
            raise InputError(f"nprobe must be a positive integer, got {nprobe!r}")
        if isinstance(refine, bool) or not isinstance(refine, (int, np.integer)) or refine < 0:
            raise InputError(f"refine must be an integer >= 0, got {refine!r}")
        ef = self.config.get("ef_search", 256) if ef_search is None else ef_search
        if isinstance(ef, bool) or not isinstance(ef, (int, np.integer)) or ef < 1:
            raise InputError(f"ef_search must be a positive integer, got {ef!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))
                                    or threads < 1):
            raise InputError(f"threads must be a positive integer, got {threads!r}")
        return int(nprobe), int(refine), int(ef), (None if threads is None else int(threads))

    def search(self, xq, k, deleted=None, nprobe=None, refine=None, threads=None, ef_search=None):
        """Top-k by inner product. Flat segments are exact over the fp16 store; HNSW segments walk the graph
        with a candidate list of max(ef_search, k) and score with the store's exact values. IVF segments visit
        `nprobe` lists and, unless refine=0, re-rank the best max(refine, 4k) candidates exactly against
        the fp16 store, so their scores equal score_pairs'. Deleted documents are never returned."""
        xq = check_queries(xq, self.d)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        nprobe, refine, ef, threads = self.search_params(nprobe, refine, threads, ef_search)
        deleted = check_deleted(deleted, self.n_docs)
        n_live = self.n_docs - (int(deleted.sum()) if deleted is not None else 0)
        t = self.config["threads"] if threads is None else threads
        with faiss_threads(self.search_threads(len(xq), int(k), n_live, nprobe, refine, ef, t)):
            return self.search_checked(xq, int(k), deleted, n_live, nprobe, refine, ef, threads)

    def search_threads(self, m: int, k: int, n_live: int, nprobe: int, refine: int, ef: int,
                       configured: int | None) -> int | None:
        """The thread count `search` runs a call with (threads_for its work)."""
        return threads_for(self.search_work(m, k, n_live, nprobe, refine, ef), configured)

    def search_work(self, m: int, k: int, n_live: int, nprobe: int, refine: int, ef: int) -> float:
        """A search call's multiply-adds, roughly: what its thread count (and the multi-segment pass's
        scheduling) is chosen by."""
        flat = self.structure.exact_scores
        depth = min(n_live, k if flat or refine == 0 else max(refine, REFINE_PER_K * k))
        if self.structure.kind == "hnsw":
            return m * max(ef, depth) * self.structure.hnsw_m * self.d
        if flat:
            return m * self.n_docs * self.d
        st = self.structure
        return m * (min(nprobe, st.nlist) * (self.n_docs / max(1, st.nlist)) * (st.pq_m or self.d) + st.nlist * self.d)

    def search_checked(self, xq: np.ndarray, k: int, deleted: np.ndarray | None, n_live: int, nprobe: int,
                       refine: int, ef: int, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`search` on checked arguments (float32 (m, d) queries, k >= 1, a bool mask with something deleted
        or None, its live count), in the caller's FAISS thread setting: the multi-segment pass
        (dense/multiseg.py) sets threads once for all the segments that want the same count."""
        m = len(xq)
        D, I = _padded(m, k)
        if m == 0 or n_live == 0:
            return D, I
        flat = self.structure.exact_scores
        depth = min(n_live, k if flat or refine == 0 else max(refine, REFINE_PER_K * k))
        if not flat and deleted is not None and n_live * self.d <= EXACT_LIVE_WORK:
            # few documents pass (a selective filter): score them all exactly rather than probe IVF
            # lists (or walk a graph) that may hold fewer than k of them
            Dc, Ic = self._exact_live(xq, min(k, n_live), deleted)
            kk = Dc.shape[1]
            D[:, :kk], I[:, :kk] = Dc, Ic
            return D, I
        Dc, Ic = self._candidates(xq, depth, deleted, nprobe, ef)
        probe = nprobe
        # a filter can leave the probed IVF lists with fewer than `depth` live documents: probe more
        while (not flat and self.structure.kind != "hnsw" and deleted is not None and probe < self.structure.nlist
               and (Ic[:, -1] < 0).any()):
            probe = min(self.structure.nlist, probe * 4)
            Dc, Ic = self._candidates(xq, depth, deleted, probe, ef)
        if not flat and refine:
            n_threads = threads if threads is not None else self.config["threads"] or faiss.omp_get_max_threads()
            Dc, Ic = self._rerank_parallel(xq, Ic, k, int(n_threads))
        kk = min(k, Dc.shape[1])
        D[:, :kk], I[:, :kk] = Dc[:, :kk], Ic[:, :kk]
        D[I < 0] = -np.inf
        return D, I

    def score_pairs(self, xq, q_index, ids):
        xq = check_queries(xq, self.d)
        q_index = check_ids(q_index, len(xq), "q_index")
        ids = check_ids(ids, self.n_docs)
        if len(q_index) != len(ids):
            raise InputError(f"q_index has {len(q_index)} entries but ids has {len(ids)}")
        out = np.empty(len(ids), np.float32)
        step = max(1, _ROWS // 4)
        for lo in range(0, len(ids), step):
            sl = slice(lo, lo + step)
            out[sl] = np.einsum("pd,pd->p", self._rows(ids[sl]), xq[q_index[sl]])
        return out

    def vectors(self, ids):
        return self._rows(check_ids(ids, self.n_docs))

    # -- internals --------------------------------------------------------------------------------
    def _rows(self, ids: np.ndarray) -> np.ndarray:
        """float32 copies of stored rows, read in ascending order (sequential on the memory map)."""
        if not len(ids):
            return np.zeros((0, self.d), np.float32)
        order = np.argsort(ids, kind="stable")
        out = np.empty((len(ids), self.d), np.float32)
        out[order] = self._store[ids[order]]
        return out

    def _searcher(self) -> tuple[faiss.Index, bool]:
        """(index to search, whether it is the CPU index, which takes id selectors and parameters)."""
        with self._lock:
            cpu = self._ivf if self._ivf is not None else self._flat_index()
            if not self._gpu_tried:
                self._gpu_tried = True
                if self.structure.kind != "hnsw" and want_gpu(self.config["gpu"]):  # GPU FAISS has no HNSW
                    self._gpu = GpuClone(self._gpu_source(cpu))
            if self._gpu is not None and self._gpu.index is not None:
                return self._gpu.index, False
            return cpu, True

    def _flat_index(self) -> faiss.Index:
        if self._flat is None:
            # fp16 -> fp32 -> fp16 is lossless: the searcher holds exactly the stored values
            index = faiss.IndexScalarQuantizer(self.d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
            for lo in range(0, self.n_docs, _ROWS):
                index.add(np.asarray(self._store[lo : lo + _ROWS], dtype=np.float32))
            self._flat = index
        return self._flat

    def _gpu_source(self, cpu: faiss.Index) -> faiss.Index:
        if self._ivf is not None:
            return cpu
        flat = faiss.IndexFlatIP(self.d)  # GPU FAISS has no flat fp16 SQ; same values in float32
        for lo in range(0, self.n_docs, _ROWS):
            flat.add(np.asarray(self._store[lo : lo + _ROWS], dtype=np.float32))
        return flat

    def _candidates(self, xq, depth, deleted, nprobe, ef=0):
        index, on_cpu = self._searcher()
        hnsw = self.structure.kind == "hnsw"
        ivf = self._ivf is not None and not hnsw
        nprobe = min(nprobe, self.structure.nlist) if ivf else 0
        if on_cpu:
            if hnsw:
                params = faiss.SearchParametersHNSW(efSearch=max(ef, depth))
            else:
                params = faiss.SearchParametersIVF(nprobe=nprobe) if ivf else faiss.SearchParameters()
            if deleted is not None:
                live = LiveSelector(deleted)  # keeps the bitmap alive through the search
                params.sel = live.sel
            return index.search(xq, depth, params=params)
        # GPU FAISS takes neither id selectors nor per-call parameters: set nprobe, over-fetch by the
        # number of deleted documents (up to GPU FAISS's largest k), filter
        if ivf:
            index.nprobe = nprobe
        n_deleted = int(deleted.sum()) if deleted is not None else 0
        fetch = min(self.n_docs, depth + n_deleted, _GPU_MAX_K)
        if fetch < depth + n_deleted and fetch < self.n_docs:
            logger.info("GPU search capped at k=%d; some of the %d results asked for may be missing", fetch, depth)
        D, I = index.search(xq, fetch)
        dead = I < 0
        if deleted is not None:
            dead |= deleted[np.maximum(I, 0)]
        order = np.argsort(dead, axis=1, kind="stable")[:, :depth]  # live ones first, in score order
        D, I = np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)
        gone = np.take_along_axis(dead, order, 1)
        D[gone], I[gone] = -np.inf, -1
        return D, I

    def _exact_live(self, xq: np.ndarray, k: int, deleted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over the documents not in `deleted`, from the fp16 store."""
        live = np.flatnonzero(~deleted)
        S = xq @ self._rows(live).T
        part = np.argpartition(-S, k - 1, axis=1)[:, :k] if k < len(live) else np.tile(np.arange(len(live)), (len(xq), 1))
        Sk = np.take_along_axis(S, part, 1)
        order = np.lexsort((live[part], -Sk), axis=1)  # ties to the smaller id, as merge_topk does
        return np.take_along_axis(Sk, order, 1).astype(np.float32), live[np.take_along_axis(part, order, 1)]

    def _rerank_parallel(self, xq: np.ndarray, I: np.ndarray, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        """`_rerank` over slices of the queries on `threads` threads: numpy's gathers, fp16 conversions and
        products release the GIL, so a batch re-ranks ~threads times faster (it was serial before)."""
        m = len(xq)
        threads = min(threads, m // _MIN_RERANK_ROWS)
        if threads < 2:
            return self._rerank(xq, I, k)
        from concurrent.futures import ThreadPoolExecutor

        parts = np.array_split(np.arange(m), threads)
        with ThreadPoolExecutor(threads) as pool:
            done = list(pool.map(lambda p: self._rerank(xq[p], I[p], k), parts))
        return np.concatenate([d for d, _ in done]), np.concatenate([i for _, i in done])

    def _rerank(self, xq: np.ndarray, I: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of each query's candidates from the fp16 store, best k first."""
        m, depth = I.shape
        S = np.full((m, depth), -np.inf, np.float32)
        valid = I >= 0
        rows_per_chunk = max(1, _ROWS // max(1, depth))
        for lo in range(0, m, rows_per_chunk):
            hi = min(m, lo + rows_per_chunk)
            v = valid[lo:hi]
            q_of = np.nonzero(v)[0] + lo
            S[lo:hi][v] = np.einsum("pd,pd->p", self._rows(I[lo:hi][v]), xq[q_of])
        order = np.argsort(-S, axis=1, kind="stable")[:, :k]
        D, Ir = np.take_along_axis(S, order, 1), np.take_along_axis(I, order, 1)
        Ir[~np.isfinite(D)] = -1
        return D, Ir
