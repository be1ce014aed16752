"""Micro-batching: concurrent search requests share one encoder pass and one search call per index.

Requests go into a queue; one worker takes whatever is queued (up to `max_batch` queries), groups it by
search options (requests with the same k, mode, filter, ... can share a call) and runs each group as ONE
`index.search_many(queries, **options)` on a single search thread. While a batch runs, new requests
queue up and form the next batch, so the batch size follows the load without a fixed wait: an idle
server answers a lone query at once, a busy one encodes dozens together.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)


def search_queries(index: Any, queries: list[str], options: dict) -> list[list[Any]]:
    """The one place the server calls the index: a list of queries in, one list of hits per query out."""
    return index.search_many(queries, **options)


@dataclasses.dataclass
class _Request:
    queries: list[str]
    options: dict
    key: str
    future: asyncio.Future


class SearchBatcher:
    """Owns the search thread. `await batcher.search(queries, options)` -> list[list[Hit]]."""

    def __init__(self, index: Any, max_batch: int = 256, max_wait_s: float = 0.0,
                 run: Callable[[Any, list[str], dict], list[list[Any]]] = search_queries):
        self.index = index
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._run = run
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="m3search-search")
        self.batches = 0  # counters, reported by /health
        self.queries = 0
        self.busy_s = 0.0  # seconds the search thread spent on batches

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def search(self, queries: Sequence[str], options: dict) -> list[list[Any]]:
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        key = json.dumps(options, sort_keys=True, default=str)
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(list(queries), options, key, fut))
        return await fut

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            if self.max_wait_s:
                await asyncio.sleep(self.max_wait_s)
            n = len(batch[0].queries)
            while n < self.max_batch and not self._queue.empty():
                req = self._queue.get_nowait()
                batch.append(req)
                n += len(req.queries)
            groups: dict[str, list[_Request]] = {}
            for req in batch:
                groups.setdefault(req.key, []).append(req)
            for reqs in groups.values():
                await self._run_group(loop, reqs)

    async def _run_group(self, loop, reqs: list[_Request]) -> None:
        texts = [q for r in reqs for q in r.queries]
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._run, self.index, texts, reqs[0].options)
        except Exception as e:  # every request of the group asked for the same options: same answer
            for r in reqs:
                if not r.future.done():
                    r.future.set_exception(e)
            return
        self.batches += 1
        self.queries += len(texts)
        self.busy_s += time.perf_counter() - started
        pos = 0
        for r in reqs:
            if not r.future.done():  # the client may have gone away
                r.future.set_result(results[pos : pos + len(r.queries)])
            pos += len(r.queries)
