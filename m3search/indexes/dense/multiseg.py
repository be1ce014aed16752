"""Dense search over all the segments of a snapshot in one pass.

Flat segments (small ones, see config.FLAT_WORK) are searched together as one exact scan: their fp16
stores are copied once into one FAISS SQfp16 index (`FlatGroup`, kept on the largest of them, rebuilt when
the set of flat segments changes), so s flat segments cost one scan of their total size instead of s FAISS
calls (measured 0.22 ms vs 0.39 ms for 5 segments, 14,000 x 384). The scan is exact, so the merged top-k
equals the per-segment one (up to the order of exactly equal scores).

The per-segment path (segments._search_each) calls every segment's `search`, which checks the queries and
parameters again and enters and leaves its own FAISS/numba thread setting (~25 us per segment, as much as
scanning a 1,000-doc flat segment). Here the queries and parameters are checked once, each segment's
structure is searched through `DenseSegmentReader.search_checked`, and consecutive segments that want the
same thread count share one thread setting. Results are those of the per-segment path (same calls into
FAISS, same merge), so a multi-segment index returns what it did before, only with less overhead.

A query small enough to run each segment on one thread (one query: FAISS parallelizes over queries, so a
graph walk is serial) searches two or more graph/IVF segments at once on a small pool of threads, one
segment per thread, as Lucene's concurrent segment search does: a CLI-built index with two HNSW graphs
answers in about the time of the slower one rather than the sum (bench/results/query_latency_cli_concurrent_*).
Only when no thread count is configured or asked for; the calls and the merge are the same.
"""
from __future__ import annotations

import contextlib
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from m3search.errors import InputError
from m3search.indexes.dense.reader import DenseSegmentReader, check_queries
from m3search.indexes.faiss_support import LiveSelector, faiss_threads, gpu_count, threads_for

PARAMS = frozenset({"nprobe", "refine", "threads", "ef_search"})


def can_search(readers: Sequence[object], params: dict) -> bool:
    """Whether the one-pass search takes these readers and parameters (else: the per-segment path)."""
    return bool(readers) and set(params) <= PARAMS and all(type(r) is DenseSegmentReader for r in readers)


def search(views_masks: Sequence[tuple[Any, tuple[np.ndarray | None, int]]], xq: np.ndarray, k: int,
           params: dict) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per segment (view, (mask, n_live)) with live documents: its top-min(k, n_live) in global ids, for
    segments.merge_topk. `mask` is None or a bool mask with at least one document to skip."""
    live = [(view, mask, n_live) for view, (mask, n_live) in views_masks if n_live > 0]
    if not live or k == 0:
        return [], []
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    first = live[0][0].readers["dense"]
    xq = check_queries(xq, first.d)
    nprobe, refine, ef, threads = first.search_params(**params)
    m = len(xq)
    Ds, Is = [], []
    flats = [(v, mask, n) for v, mask, n in live if _joins_flat_group(v.readers["dense"])]
    if len(flats) >= 2:
        live = [x for x in live if not any(x[0] is f[0] for f in flats)]
        D, I = _search_flat_group(flats, xq, k, threads)
        Ds.append(D)
        Is.append(I)
    for reader in (view.readers["dense"] for view, _, _ in live):
        if reader.d != first.d:
            raise InputError(f"dense segments of one index have different dimensions ({first.d}, {reader.d})")
    if _concurrent(live, m, k, nprobe, refine, ef, threads, first):
        for D, I in _search_concurrently(live, xq, k, nprobe, refine, ef):
            Ds.append(D)
            Is.append(I)
        return Ds, Is
    current: object = ()  # the thread count in force; () = none set yet
    with contextlib.ExitStack() as stack:
        for view, mask, n_live in live:
            reader: DenseSegmentReader = view.readers["dense"]
            kk = min(int(k), n_live)
            configured = reader.config["threads"] if threads is None else threads
            want = reader.search_threads(m, kk, n_live, nprobe, refine, ef, configured)
            if want != current:
                stack.close()
                stack.enter_context(faiss_threads(want))
                current = want
            D, I = reader.search_checked(xq, kk, mask, n_live, nprobe, refine, ef, threads)
            valid = I >= 0
            Ds.append(D)
            Is.append(np.where(valid, view.global_ids(np.where(valid, I, 0)), -1))
    return Ds, Is


def _concurrent(live, m: int, k: int, nprobe: int, refine: int, ef: int, threads: int | None,
                first: DenseSegmentReader) -> bool:
    """Whether to search these segments at once: two or more, each wanting one thread, none configured."""
    if len(live) < 2 or threads is not None or first.config["threads"] is not None or (os.cpu_count() or 1) < 2:
        return False
    return all(view.readers["dense"].search_threads(m, min(int(k), n), n, nprobe, refine, ef, None) == 1
               for view, _, n in live)


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:  # the caller's thread takes one segment itself
            _POOL = ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1) - 1),
                                       thread_name_prefix="m3search-dense")
        return _POOL


def _search_concurrently(live, xq: np.ndarray, k: int, nprobe: int, refine: int,
                         ef: int) -> list[tuple[np.ndarray, np.ndarray]]:
    def one(item) -> tuple[np.ndarray, np.ndarray]:
        view, mask, n_live = item
        with faiss_threads(1):  # OpenMP's and numba's thread counts are per thread: this one only
            D, I = view.readers["dense"].search_checked(xq, min(int(k), n_live), mask, n_live, nprobe, refine, ef)
        valid = I >= 0
        return D, np.where(valid, view.global_ids(np.where(valid, I, 0)), -1)

    futures = [_pool().submit(one, item) for item in live[1:]]
    return [one(live[0])] + [f.result() for f in futures]


def score_pairs(groups, xq: np.ndarray, q_index: np.ndarray, d: int) -> np.ndarray:
    """Exact scores of (query, document) pairs over several segments: each segment's stored rows gathered
    into one array, one product (segment reader score_pairs' values, without its per-call checks).
    groups: SegmentSet.locate's [(view, positions, local ids)]."""
    from m3search.indexes.dense.reader import _ROWS

    xq = check_queries(xq, d)
    if len(q_index) and (q_index.min() < 0 or q_index.max() >= len(xq)):
        raise InputError(f"q_index must lie in 0..{len(xq) - 1}")
    rows = np.empty((len(q_index), d), np.float32)
    for view, pos, local in groups:
        rows[pos] = view.readers["dense"]._rows(local)
    out = np.empty(len(q_index), np.float32)
    step = max(1, _ROWS // 4)
    for lo in range(0, len(q_index), step):
        sl = slice(lo, lo + step)
        out[sl] = np.einsum("pd,pd->p", rows[sl], xq[q_index[sl]])
    return out


def _joins_flat_group(reader: DenseSegmentReader) -> bool:
    # GPU FAISS searches its own clone of each segment (see DenseSegmentReader._searcher)
    return reader.structure.kind == "flat" and (reader.config["gpu"] is False or gpu_count() == 0)


class FlatGroup:
    """One exact SQfp16 index over the fp16 stores of several flat segments (lossless: it holds exactly the
    stored values), with each segment's first row in it."""

    def __init__(self, readers: Sequence[DenseSegmentReader]):
        import faiss

        from m3search.indexes.dense.reader import _ROWS

        self.members = [weakref.ref(r) for r in readers]
        self.starts = np.cumsum([0] + [r.n_docs for r in readers])
        d = readers[0].d
        self.index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        for r in readers:
            store = r._store
            for lo in range(0, r.n_docs, _ROWS):
                self.index.add(np.asarray(store[lo : lo + _ROWS], dtype=np.float32))

    def serves(self, readers: Sequence[DenseSegmentReader]) -> bool:
        return len(readers) == len(self.members) and all(w() is r for w, r in zip(self.members, readers))


def _flat_group(readers: list[DenseSegmentReader]) -> FlatGroup:
    """The group over these readers, kept on the largest one (one group per reader: a new set of flat
    segments, after a commit or merge, replaces it)."""
    lead = max(readers, key=lambda r: r.n_docs)
    group = getattr(lead, "_flat_group", None)
    if group is None or not group.serves(readers):
        group = FlatGroup(readers)
        lead._flat_group = group
    return group


def _search_flat_group(flats, xq: np.ndarray, k: int, threads: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-min(k, live) over the flat segments together, in global ids (-1 / -inf padded)."""
    import faiss

    readers = [v.readers["dense"] for v, _, _ in flats]
    group = _flat_group(readers)
    n_live = sum(n for _, _, n in flats)
    kk = min(int(k), n_live)
    params = faiss.SearchParameters()
    if any(mask is not None for _, mask, _ in flats):
        deleted = np.concatenate([mask if mask is not None else np.zeros(v.n, bool) for v, mask, _ in flats])
        live_sel = LiveSelector(deleted)  # keeps the bitmap alive through the search
        params.sel = live_sel.sel
    configured = readers[0].config["threads"] if threads is None else threads
    with faiss_threads(threads_for(len(xq) * int(group.starts[-1]) * readers[0].d, configured)):
        D, P = group.index.search(xq, kk, params=params)
    valid = P >= 0
    pos = np.where(valid, P, 0)
    seg = np.searchsorted(group.starts, pos, side="right") - 1
    I = np.full(P.shape, -1, np.int64)
    for s, (view, _, _) in enumerate(flats):
        sel = valid & (seg == s)
        if sel.any():
            I[sel] = view.global_ids(pos[sel] - group.starts[s])
    D = np.where(valid, D, -np.inf).astype(np.float32)
    return D, I
