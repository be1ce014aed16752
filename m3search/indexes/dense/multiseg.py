"""Dense search over all the segments of a snapshot in one pass.

The per-segment path (segments._search_each) calls every segment's `search`, which checks the queries and
parameters again and enters and leaves its own FAISS/numba thread setting (~25 us per segment, as much as
scanning a 1,000-doc flat segment). Here the queries and parameters are checked once, each segment's
structure is searched through `DenseSegmentReader.search_checked`, and consecutive segments that want the
same thread count share one thread setting. Results are those of the per-segment path (same calls into
FAISS, same merge), so a multi-segment index returns what it did before, only with less overhead.
"""
from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np

from m3search.errors import InputError
from m3search.indexes.dense.reader import DenseSegmentReader, check_queries
from m3search.indexes.faiss_support import faiss_threads

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
    current: object = ()  # the thread count in force; () = none set yet
    with contextlib.ExitStack() as stack:
        for view, mask, n_live in live:
            reader: DenseSegmentReader = view.readers["dense"]
            if reader.d != first.d:
                raise InputError(f"dense segments of one index have different dimensions ({first.d}, {reader.d})")
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
