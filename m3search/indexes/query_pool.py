"""A second core for one query: kernels split into chunks that the caller and a small pool of helper threads
claim as they come free.

A query's multi-vector stages are one-thread numba kernels by design (an OpenMP team per kernel cost 2.3x the
wall time on shared cores, see multivec/reader.py). On an otherwise idle machine that leaves the other cores
unused while one query takes 20+ ms. Here a kernel's documents are cut into chunks; the caller starts on
them at once, and an idle helper thread (the kernels release the GIL) takes chunks too when it wakes. A
helper that wakes late, or is busy with another query, takes nothing: the caller then does every chunk
itself, so a split never waits on a sleeping thread. Results are the chunks' results in order, the same
values as one call over all documents.

Splitting happens only where the search runs with its default thread settings (`allow_split`); a caller
that configures a thread count gets exactly that.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

T = TypeVar("T")

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_LOCAL = threading.local()
_OUTSTANDING = [0]  # helper tasks submitted and not finished, under _POOL_LOCK


def _forget_pool_in_child() -> None:  # a forked child has none of the parent's threads
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK, _OUTSTANDING[0] = None, threading.Lock(), 0


os.register_at_fork(after_in_child=_forget_pool_in_child)


_HELPERS = max(0, min(3, (os.cpu_count() or 1) - 1))  # read once: os.cpu_count() reads sysfs, ~8 us a call


def helpers() -> int:
    """Helper threads: one per core beyond the caller's, at most 3."""
    return _HELPERS


def _one_thread_each() -> None:
    import numba

    numba.set_num_threads(1)  # numba's thread count is per thread: the helpers run single-threaded kernels


def pool() -> ThreadPoolExecutor | None:
    """The process's helper pool (None on one core), made on first use."""
    global _POOL
    if helpers() == 0:
        return None
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=helpers(), thread_name_prefix="m3search-query",
                                       initializer=_one_thread_each)
        return _POOL


@contextlib.contextmanager
def allow_split(allowed: bool = True) -> Iterator[None]:
    """Within the block, `split_run` on this thread may hand chunks to the helpers."""
    before = getattr(_LOCAL, "allowed", False)
    _LOCAL.allowed = allowed
    try:
        yield
    finally:
        _LOCAL.allowed = before


def split_allowed() -> bool:
    return getattr(_LOCAL, "allowed", False) and helpers() > 0


def chunk_bounds(weights: Sequence[int] | None, n: int, chunks: int) -> list[tuple[int, int]]:
    """(lo, hi) ranges cutting n items into about `chunks` runs of equal total weight (items' costs;
    equal costs when None)."""
    chunks = max(1, min(int(chunks), n))
    if weights is None:
        cuts = [round(i * n / chunks) for i in range(chunks + 1)]
    else:
        cum = np.cumsum(np.asarray(weights, dtype=np.float64))
        total = float(cum[-1]) if n else 0.0
        cuts = [0] + [int(np.searchsorted(cum, total * i / chunks)) + 1 for i in range(1, chunks)] + [n]
        cuts = sorted(set(min(max(c, 0), n) for c in cuts))
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def split_run(fn: Callable[[int, int], T], bounds: Sequence[tuple[int, int]]) -> list[T]:
    """[fn(lo, hi) for each range], run by the caller and any idle helper, in range order.

    fn must be safe to call from several threads at once (numba kernels with nogil, numpy)."""
    return run_shared([functools.partial(fn, lo, hi) for lo, hi in bounds])


def run_shared(tasks: Sequence[Callable[[], T]],
               setting: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> list[T]:
    """[task() for task in tasks]: the caller takes them in order, and idle helpers (where splitting is
    allowed) take the next ones as they wake. Returns only once no helper is running one of them, also when
    a task raises (the first error is raised): the tasks may read memory maps the caller closes after.
    setting: a context (e.g. a thread count) each thread enters once around the tasks it takes."""
    if len(tasks) < 2 or not split_allowed():
        with setting():
            return [task() for task in tasks]
    out: list = [None] * len(tasks)
    claim = itertools.count()  # next() is atomic under the GIL: each task is taken once
    stop = [False]

    def work() -> None:
        with setting():
            while not stop[0] and (i := next(claim)) < len(tasks):
                out[i] = tasks[i]()

    def helped() -> None:
        try:
            work()
        except BaseException:
            stop[0] = True  # the caller takes nothing more either
            raise
        finally:
            with _POOL_LOCK:
                _OUTSTANDING[0] -= 1

    # only as many helper tasks as there are idle helpers: with several searches at once (a server's
    # workers) the helpers are busy, and a task queued behind another search's would only be cancelled
    executor = pool()
    with _POOL_LOCK:
        n = max(0, min(helpers() - _OUTSTANDING[0], len(tasks) - 1))
        _OUTSTANDING[0] += n
    futures = [executor.submit(helped) for _ in range(n)]
    try:
        work()
    finally:
        stop[0] = True  # after an error, helpers take nothing more
        errors = []
        for f in futures:
            if f.cancel():  # never started: it takes nothing, and will not run to count itself off
                with _POOL_LOCK:
                    _OUTSTANDING[0] -= 1
            elif f.exception() is not None:  # started: waited for
                errors.append(f.exception())
    if errors:
        raise errors[0]
    return out
