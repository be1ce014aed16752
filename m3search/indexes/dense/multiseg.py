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

A query small enough to run each search on one thread (one query: FAISS parallelizes over queries, so a
graph walk is serial) runs its searches (graph/IVF segments, the flat group) at once, as Lucene's
concurrent segment search does: the caller's thread takes the largest, the idle helper threads of
m3search.indexes.query_pool (one task per helper and query) and then the caller take the rest in turn,
so a CLI-built index with two HNSW graphs and a flat tail answers in about the time of its largest graph
rather than the sum, and a helper that starts late costs no more than searching one by one (bench/results/query_latency_cli_*_s6.md). Only
when no thread count is configured or asked for, and when the searches besides the largest are worth a
hand-off to another thread (HANDOFF_WORK); the calls are the same, and the merge (`merge`) returns what
merge_topk returns.
"""
from __future__ import annotations

import contextlib
import weakref
from typing import Any, Sequence

import numpy as np

from m3search.errors import InputError
from m3search.indexes.dense.reader import DenseSegmentReader, check_queries
from m3search.indexes import query_pool
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
    jobs = []
    flats = [(v, mask, n) for v, mask, n in live if _joins_flat_group(v.readers["dense"])]
    if len(flats) >= 2:
        live = [x for x in live if not any(x[0] is f[0] for f in flats)]
        jobs.append(_flat_group_job(flats, xq, k, threads))
    for view, mask, n_live in live:
        reader: DenseSegmentReader = view.readers["dense"]
        if reader.d != first.d:
            raise InputError(f"dense segments of one index have different dimensions ({first.d}, {reader.d})")
        jobs.append(_segment_job(view, mask, n_live, xq, k, nprobe, refine, ef, threads))
    if _concurrent(jobs, threads, first):
        results = _search_concurrently(jobs)
    else:
        results = []
        current: object = ()  # the thread count in force; () = none set yet
        with contextlib.ExitStack() as stack:
            for job in jobs:
                if job.threads != current:
                    stack.close()
                    stack.enter_context(faiss_threads(job.threads))
                    current = job.threads
                results.append(job.run())
    return [D for D, _ in results], [I for _, I in results]


class _Job:
    """One search of the pass: a segment, or the flat segments' group. `work`: its multiply-adds (the
    thread-count model's, see DenseSegmentReader.search_threads), `threads`: the count it runs with,
    `run()`: its (D, I) in global ids, in the caller's thread setting."""

    __slots__ = ("work", "size", "threads", "run")

    def __init__(self, work: float, size: int, threads: int | None, run):
        self.work, self.size, self.threads, self.run = work, size, threads, run


def _segment_job(view, mask, n_live: int, xq: np.ndarray, k: int, nprobe: int, refine: int, ef: int,
                 threads: int | None) -> _Job:
    reader: DenseSegmentReader = view.readers["dense"]
    kk = min(int(k), n_live)
    configured = reader.config["threads"] if threads is None else threads
    work = reader.search_work(len(xq), kk, n_live, nprobe, refine, ef)

    def run() -> tuple[np.ndarray, np.ndarray]:
        D, I = reader.search_checked(xq, kk, mask, n_live, nprobe, refine, ef, threads)
        return D, _global_ids(view, I)

    return _Job(work, reader.n_docs, threads_for(work, configured), run)


def _global_ids(view, I: np.ndarray) -> np.ndarray:
    """A segment's local result ids as global ids, -1 (padding) kept."""
    if view.ids is None:  # local id i is internal id lo + i
        return np.where(I >= 0, I + view.info.lo, -1)
    valid = I >= 0
    return np.where(valid, view.global_ids(np.where(valid, I, 0)), -1)


# Below this many multiply-adds the searches besides the largest run on the caller's thread, after it:
# handing them to the pool and waiting for the result costs ~30-50 us (a thread wake-up each way), what a
# ~1,500-document flat scan at 384-d costs.
HANDOFF_WORK = 1 << 19

def _concurrent(jobs: Sequence[_Job], threads: int | None, first: DenseSegmentReader) -> bool:
    """Whether to run these searches at once: two or more, each wanting one thread, no thread count
    configured or asked for, and the ones besides the largest worth more than the hand-off."""
    if len(jobs) < 2 or threads is not None or first.config["threads"] is not None or query_pool.helpers() == 0:
        return False
    if any(job.threads != 1 for job in jobs):
        return False
    return sum(job.work for job in jobs) - max(job.work for job in jobs) >= HANDOFF_WORK


def _search_concurrently(jobs: Sequence[_Job]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The jobs, largest first, taken in turn by the caller's thread and the idle helpers of
    m3search.indexes.query_pool (each woken once per query). The caller takes the largest before any
    helper wakes; when it is done it takes what is left, so a helper that starts late (its core busy
    elsewhere) costs at most the serial time rather than waiting for it, and none is still searching this
    snapshot's segments when the call returns."""
    order = sorted(range(len(jobs)), key=lambda j: (-jobs[j].work, -jobs[j].size))
    with query_pool.allow_split():  # OpenMP's and numba's thread counts are per thread: each one's only
        done = query_pool.run_shared([jobs[j].run for j in order], setting=lambda: faiss_threads(1))
    results: list = [None] * len(jobs)
    for j, result in zip(order, done):
        results[j] = result
    return results


def score_pairs(groups, xq: np.ndarray, q_index: np.ndarray, d: int) -> np.ndarray:
    """Exact scores of (query, document) pairs over several segments: each segment's stored rows gathered
    into one array, one product (segment reader score_pairs' values, without its per-call checks).
    groups: SegmentSet.locate's [(view, positions, local ids)]."""
    from m3search.indexes.dense.reader import _ROWS

    xq = check_queries(xq, d)
    if len(q_index) and (q_index.min() < 0 or q_index.max() >= len(xq)):
        raise InputError(f"q_index must lie in 0..{len(xq) - 1}")
    rows = np.empty((len(q_index), d), np.float32)
    for view, pos, local in groups:  # straight into place (reader._rows would copy each group twice)
        order = np.argsort(local, kind="stable")  # ascending reads on the memory map
        rows[pos[order]] = view.readers["dense"]._store[local[order]]
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


def _flat_group_job(flats, xq: np.ndarray, k: int, threads: int | None) -> _Job:
    readers = [v.readers["dense"] for v, _, _ in flats]
    group = _flat_group(readers)
    configured = readers[0].config["threads"] if threads is None else threads
    work = len(xq) * int(group.starts[-1]) * readers[0].d
    return _Job(work, int(group.starts[-1]), threads_for(work, configured),
                lambda: _search_flat_group(group, flats, xq, k))


def _search_flat_group(group: FlatGroup, flats, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-min(k, live) over the flat segments together, in global ids (-1 / -inf padded), in the
    caller's thread setting."""
    import faiss

    n_live = sum(n for _, _, n in flats)
    kk = min(int(k), n_live)
    params = faiss.SearchParameters()
    if any(mask is not None for _, mask, _ in flats):
        deleted = np.concatenate([mask if mask is not None else np.zeros(v.n, bool) for v, mask, _ in flats])
        live_sel = LiveSelector(deleted)  # keeps the bitmap alive through the search
        params.sel = live_sel.sel
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


def merge(Ds: list[np.ndarray], Is: list[np.ndarray], m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """segments.merge_topk of the pass's per-segment lists (padding is (-inf, -1) in them), cheaper for two
    or more lists (a third of its time at 3 x 100): one sort on the score alone orders them as merge_topk
    does except among equal scores, where merge_topk puts the smaller id first; a query with two equal
    finite scores in its top k + 1 is rare and goes to merge_topk."""
    from m3search.indexes.segments import merge_topk

    if len(Ds) < 2:
        return merge_topk(Ds, Is, m, k)
    D = np.concatenate(Ds, axis=1)
    if D.shape[1] <= k:
        return merge_topk(Ds, Is, m, k)
    I = np.concatenate(Is, axis=1)
    order = np.argsort(-D, axis=1, kind="stable")[:, : k + 1]
    rows = np.arange(m)[:, None]
    Dk = D[rows, order]
    tied = Dk[:, 1:] == Dk[:, :-1]
    if tied.any() and (tied & np.isfinite(Dk[:, 1:])).any():
        return merge_topk(Ds, Is, m, k)
    return Dk[:, :k], I[rows, order[:, :k]]
