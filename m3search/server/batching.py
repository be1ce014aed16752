"""Micro-batching: concurrent search requests share one encoder pass and one search call per options group.

Requests go into a queue. One worker takes a batch from it and runs it as ONE call on the search thread:
`index.search_groups([(queries, options), ...])` encodes every query of the batch in one encoder pass, then
searches each group of requests with identical options (k, mode, filter, ...) with one planner call. An
index without `search_groups` (a sharded or remote one) gets one `search_many` per group instead.

How a batch forms. The encoder is most of a query's cost and is several times cheaper per query in a batch
of 32 than alone, so on a busy server a bigger batch is a faster server. While a batch runs, new requests
queue up; when it ends the worker takes everything queued (up to `max_batch` queries). It also waits, at
most `max_wait_s`, for the search requests the server has already begun to read but not yet queued (the
app counts them: `arriving`), so requests whose bytes are in already do not miss the batch by a few
hundred microseconds of parsing and wait a whole batch longer. An idle server answers a lone query at once:
nothing is arriving, so nothing is waited for.

Per request, results are exactly what `index.search_many(queries, **options)` returns: a request whose
options fail gets its own error, and the other requests of its batch are still answered.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

Groups = list[tuple[list[str], dict]]


def name_os_thread(name: str) -> None:
    """Give the calling thread an OS-level name (Linux; 15 bytes), so `top -H` and /proc show which of the
    server's threads spends the CPU. Threads it starts (e.g. OpenMP teams) inherit the name."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def torch_threads_here(n: int | None) -> None:
    """Give the calling thread n intra-op torch threads (OpenMP's thread count is per thread), if torch is in
    use and n is set. The server's search workers and writer call it: with several workers, each runs its
    batches on one thread and the workers use the cores side by side, instead of one OpenMP team that stalls
    whenever another thread (the event loop, the writer) takes one of its cores."""
    if n is None or "torch" not in sys.modules:
        return
    torch = sys.modules["torch"]
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def search_queries(index: Any, queries: list[str], options: dict) -> list[list[Any]]:
    """One group: a list of queries in, one list of hits per query out."""
    return index.search_many(queries, **options)


def search_groups(index: Any, groups: Groups) -> list[Any]:
    """The one place the server calls the index: (queries, options) groups in; per group its hit lists, or
    the exception that group raised. One encoder pass for all groups when the index offers `search_groups`."""
    shared = getattr(index, "search_groups", None)
    if shared is not None:
        return shared(groups, return_exceptions=True)
    out: list[Any] = []
    for queries, options in groups:
        try:
            out.append(search_queries(index, queries, options))
        except Exception as e:
            out.append(e)
    return out


def _key(options: dict) -> str:
    return json.dumps(options, sort_keys=True, default=lambda o: o.to_json() if hasattr(o, "to_json") else str(o))


@dataclasses.dataclass
class _Request:
    queries: list[str]
    options: dict
    key: str
    future: asyncio.Future


class Arrival:
    """A search request the server is reading: counted from its first byte until it is queued (or fails)."""

    def __init__(self, batcher: "SearchBatcher"):
        self._batcher = batcher
        self._open = True
        batcher.arriving += 1

    def done(self) -> None:
        if self._open:
            self._open = False
            self._batcher.arriving -= 1
            self._batcher._wake()


class SearchBatcher:
    """Owns the search thread. `await batcher.search(queries, options)` -> list[list[Hit]]."""

    def __init__(self, index: Any, max_batch: int = 256, max_wait_s: float = 0.005,
                 run: Callable[[Any, Groups], list[Any]] = search_groups, workers: int = 1,
                 torch_threads: int | None = None, split: bool = False):
        self.index = index
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.workers = workers
        self.split = split and workers > 1  # one batch at a time, its requests split over the workers
        self.torch_threads = torch_threads
        self._run = run
        self._queue: collections.deque[_Request] = collections.deque()
        self._moved: asyncio.Event | None = None  # set when a request is queued or an arrival ends
        self._worker: asyncio.Task | None = None
        self._free: asyncio.Semaphore | None = None  # idle search workers
        self._running: set[asyncio.Task] = set()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="m3search-search",
                                            initializer=name_os_thread, initargs=("m3s-search",))
        self._local = threading.local()
        self.arriving = 0  # search requests begun but not queued yet (see Arrival)
        self.batches = 0  # counters, reported by /health
        self.queries = 0
        self.busy_s = 0.0  # seconds the search thread spent on batches
        self.largest = 0

    def arrival(self) -> Arrival:
        return Arrival(self)

    async def start(self) -> None:
        self._moved = asyncio.Event()
        self._free = asyncio.Semaphore(1 if self.split else self.workers)
        self._worker = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self._executor.shutdown(wait=True)

    def _wake(self) -> None:
        if self._moved is not None:
            self._moved.set()

    async def search(self, queries: Sequence[str], options: dict, arrival: Arrival | None = None) -> list[list[Any]]:
        if self._moved is None:
            raise RuntimeError("the batcher is not started")
        fut = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(list(queries), options, _key(options), fut))
        if arrival is not None:
            arrival.done()
        self._wake()
        return await fut

    def _take(self, batch: list[_Request], n: int) -> int:
        while self._queue and (not batch or n + len(self._queue[0].queries) <= self.max_batch):
            req = self._queue.popleft()
            if not req.future.done():  # not cancelled (its client went away)
                batch.append(req)
                n += len(req.queries)
        return n

    async def _loop(self) -> None:
        assert self._moved is not None and self._free is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._free.acquire()  # a batch forms only when a worker can take it at once
            batch: list[_Request] = []
            n = 0
            while not batch:
                self._moved.clear()
                n = self._take(batch, n)
                if not batch:
                    await self._moved.wait()
            deadline = loop.time() + self.max_wait_s
            while self.arriving and n < self.max_batch:  # requests being read now join this batch
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._moved.clear()
                try:
                    await asyncio.wait_for(self._moved.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                n = self._take(batch, n)
            task = asyncio.create_task(self._run_batch(loop, batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        assert self._free is not None
        self._free.release()

    def _call(self, work: Groups) -> list[Any]:
        """On a search worker: set its torch threads once, then run the batch."""
        if not getattr(self._local, "ready", False):
            torch_threads_here(self.torch_threads)
            self._local.ready = "torch" in sys.modules
        return self._run(self.index, work)

    async def _run_batch(self, loop, batch: list[_Request]) -> None:
        if not self.split or len(batch) < 2:
            return await self._run_part(loop, batch)
        # split: the batch's requests in `workers` parts of about equal query counts, run side by side (each
        # worker single-threaded: one sync per batch instead of an OpenMP barrier per op); batches stay whole
        sizes = [len(r.queries) for r in batch]
        total, parts, part, acc = sum(sizes), [], [], 0
        for r, size in zip(batch, sizes):
            part.append(r)
            acc += size
            if acc * self.workers >= total * (len(parts) + 1) and len(parts) < self.workers - 1:
                parts.append(part)
                part = []
        if part:
            parts.append(part)
        await asyncio.gather(*(self._run_part(loop, p) for p in parts))

    async def _run_part(self, loop, batch: list[_Request]) -> None:
        groups: dict[str, list[_Request]] = {}
        for req in batch:
            groups.setdefault(req.key, []).append(req)
        members = list(groups.values())
        work = [([q for r in reqs for q in r.queries], reqs[0].options) for reqs in members]
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._call, work)
        except Exception as e:  # the runner itself failed: every request gets the error
            results = [e] * len(members)
        self.batches += 1
        self.queries += sum(len(q) for q, _ in work)
        self.largest = max(self.largest, sum(len(q) for q, _ in work))
        self.busy_s += time.perf_counter() - started
        for reqs, result in zip(members, results):
            pos = 0
            for r in reqs:
                if not r.future.done():  # the client may have gone away
                    if isinstance(result, BaseException):
                        r.future.set_exception(result)
                    else:
                        r.future.set_result(result[pos : pos + len(r.queries)])
                pos += len(r.queries)
