"""The FastAPI app: HTTP/JSON in, the same public API calls embedded users make, JSON out.

`create_app(index)` takes any object with SearchIndex's surface: `search_many(list[str], **options)`,
`add`, `upsert`, `delete`, `info`, and `encoder` for /v1/encode. It holds no search logic: searches go through the micro-batcher (one encoder pass for concurrent queries), writes through one
writer thread (acknowledged once committed; searches go on meanwhile and see each commit as it lands).
"""
from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from m3search import __version__
from m3search.errors import (
    ConfigError,
    EncoderMismatchError,
    IndexLockedError,
    InputError,
    M3SearchError,
)
from m3search.planner.candidates import SOURCES
from m3search.planner.filters import Filter
from m3search.planner.planner import hit_fields
from m3search.server import schemas
from m3search.server.batching import SearchBatcher, name_os_thread, torch_threads_here

log = logging.getLogger(__name__)

API_KEY_ENV = "M3SEARCH_API_KEY"
ARRIVAL = "m3search.arrival"  # scope key of a search request's Arrival (see batching.py)


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """Limits and access. api_key: required as `Authorization: Bearer KEY` or `X-API-Key` on /v1/*."""

    api_key: str | None = None
    max_body_bytes: int = 32 << 20
    max_k: int = 1000
    max_offset: int = 10_000
    max_depth: int = 10_000  # candidates per source and query
    max_queries: int = 1024  # per request
    max_documents: int = 10_000  # per request
    max_query_chars: int = 20_000
    max_batch: int = 256  # queries per encoder pass
    batch_wait_ms: float = 5.0  # longest wait for search requests being read to join a batch (0: never wait)
    # Search threads (None: one per usable core), each encoding and searching on `torch_threads` threads;
    # with split_batches one batch forms at a time and is split over them. Measured on 2 cores, 100k passages,
    # 32 clients, a writer adding 20 docs/s (bench/results/server_load_quiet_s2.md): one worker with a 2-thread
    # OpenMP team 33 q/s (the team stalls whenever the writer holds a core), one 1-thread worker 67 q/s, two
    # 1-thread workers sharing each batch 115 q/s.
    search_workers: int | None = None
    split_batches: bool = True
    torch_threads: int | None = 1  # intra-op torch threads of each search worker (None: torch's count)
    # the writer encodes on one thread: documents are background work, and a second OpenMP team would fight
    # the search worker's for the same cores (each stalls whenever the other holds a core it waits on)
    writer_torch_threads: int | None = 1


class ApiError(Exception):
    def __init__(self, status: int, field: str | None, message: str, kind: str = "InputError"):
        super().__init__(message)
        self.status, self.field, self.message, self.kind = status, field, message, kind


def _error(status: int, kind: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"type": kind, "message": message, "field": field}})


_STATUS = {InputError: 400, ConfigError: 400, EncoderMismatchError: 400, IndexLockedError: 409}
_FIELD_PREFIX = re.compile(r"^(filter[^\s:]*|--filter[^\s:]*):")


def _status_of(e: M3SearchError) -> int:
    for cls, status in _STATUS.items():
        if isinstance(e, cls):
            return status
    return 500


class _Guard:
    """ASGI middleware: the API key on /v1/* (compared in constant time) and the request size limit
    (by Content-Length, or counted as a chunked body arrives, before the app sees any of it)."""

    def __init__(self, app, settings: ServerSettings, batcher: SearchBatcher | None = None):
        self.app = app
        self.settings = settings
        self.batcher = batcher

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        s = self.settings
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if scope["path"].startswith("/v1/") and s.api_key is not None:
            given = headers.get("x-api-key")
            auth = headers.get("authorization", "")
            if given is None and auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if given is None or not hmac.compare_digest(given.encode(), s.api_key.encode()):
                return await _error(401, "Unauthorized", "missing or wrong API key: send it as 'Authorization: "
                                    "Bearer KEY' or 'X-API-Key: KEY'", "authorization")(scope, receive, send)
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > s.max_body_bytes:
            return await self._too_large(scope, receive, send)
        if scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        if scope["path"] == "/v1/search" and self.batcher is not None:
            # the micro-batcher waits (briefly) for search requests being read, so they join its next batch
            arrival = scope[ARRIVAL] = self.batcher.arrival()
            try:
                return await self._post(scope, receive, send)
            finally:
                arrival.done()
        return await self._post(scope, receive, send)

    async def _post(self, scope, receive, send):
        s = self.settings
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > s.max_body_bytes:
                return await self._too_large(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send):
        return await _error(413, "RequestTooLarge", f"the request body exceeds {self.settings.max_body_bytes} bytes: "
                            "send fewer documents or queries per request", "body")(scope, receive, send)


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def create_app(index: Any, settings: ServerSettings | None = None) -> FastAPI:
    """The app serving `index`. It does not close the index: whoever opened it does."""
    settings = settings or ServerSettings(api_key=os.environ.get(API_KEY_ENV) or None)
    search_threads = settings.torch_threads
    if search_threads is None:  # pinned now: the writer's setting changes torch's default
        # torch may load later (queries of a few texts run without it): its default is the usable cores
        search_threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else _usable_cores()
    batcher = SearchBatcher(index, max_batch=settings.max_batch, max_wait_s=settings.batch_wait_ms / 1000,
                            workers=settings.search_workers or _usable_cores(), torch_threads=search_threads,
                            split=settings.split_batches)

    def writer_thread() -> None:
        name_os_thread("m3s-writer")
        torch_threads_here(settings.writer_torch_threads)

    def in_writer(fn, *args):
        """Run on the writer thread with its torch threads set: torch may have loaded since the thread
        started (the first documents load it), and two OpenMP teams on the same cores stall each other."""
        torch_threads_here(settings.writer_torch_threads)
        return fn(*args)

    def side_thread() -> None:
        name_os_thread("m3s-side")
        torch_threads_here(search_threads)

    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="m3search-writer", initializer=writer_thread)  # the single writer
    side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="m3search-encode", initializer=side_thread)  # /v1/encode, /v1/info

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            writer.shutdown(wait=True)
            side.shutdown(wait=True)

    app = FastAPI(title="m3search", version=__version__, lifespan=lifespan,
                  description="Multilingual hybrid search (dense + sparse + multi-vector) on M3 embeddings.")
    app.state.index = index
    app.state.settings = settings
    app.state.batcher = batcher

    # -- errors: one JSON shape, the field named --------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return _error(e.status, e.kind, e.message, e.field)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        field = "body" if first.get("type") == "json_invalid" else (".".join(loc) or None)
        return _error(422, "ValidationError", f"{field or 'body'}: {first.get('msg')}", field)

    @app.exception_handler(M3SearchError)
    async def _m3_error(request: Request, e: M3SearchError):
        m = _FIELD_PREFIX.match(str(e))
        return _error(_status_of(e), type(e).__name__, str(e), m.group(1) if m else None)

    app.add_middleware(_Guard, settings=settings, batcher=batcher)

    def _limit(value: int, limit: int, field: str, what: str) -> None:
        if value > limit:
            raise ApiError(400, field, f"{field}: {value} {what}; this server allows at most {limit}")

    # -- endpoints --------------------------------------------------------------------------------------
    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "version": __version__, "batches": batcher.batches, "queries": batcher.queries,
                "largest_batch": batcher.largest, "search_busy_s": round(batcher.busy_s, 3)}

    @app.get("/v1/info")
    async def info() -> dict:
        return await asyncio.get_running_loop().run_in_executor(side, index.info)

    @app.post("/v1/search", response_model=schemas.SearchResponse, response_model_exclude_none=True,
              responses={400: {"model": schemas.ErrorResponse}, 422: {"model": schemas.ErrorResponse}})
    async def search(body: schemas.SearchRequest, request: Request) -> Response:
        _limit(len(body.queries), settings.max_queries, "queries", "queries")
        _limit(body.k, settings.max_k, "k", "hits asked for")
        _limit(body.offset, settings.max_offset, "offset", "hits skipped")
        depths = body.depths if isinstance(body.depths, dict) else {"all": body.depths or 0}
        for name, depth in depths.items():
            _limit(depth, settings.max_depth, "depths" if name == "all" else f"depths.{name}", "candidates")
        for i, q in enumerate(body.queries):
            _limit(len(q), settings.max_query_chars, f"queries.{i}", "characters")
        if body.mode is not None and body.weights is not None:
            raise ApiError(400, "mode", "give mode or weights, not both")
        try:
            flt = Filter.parse(body.filter)
            fields = sorted(hit_fields(body.fields)) if body.fields is not None else None
        except (InputError, ConfigError) as e:
            m = _FIELD_PREFIX.match(str(e))
            raise ApiError(400, m.group(1) if m else "fields", str(e) if m else f"fields: {e}",
                           type(e).__name__) from None
        options: dict[str, Any] = dict(k=body.k, offset=body.offset, explain=body.explain, fusion=body.fusion,
                                       rrf_k=body.rrf_k, all_scores=body.all_scores, with_text=body.with_text)
        for source, knobs in (body.params or {}).items():
            if source not in SOURCES:
                raise ApiError(400, "params", f"params: unknown source {source!r}; valid: {', '.join(SOURCES)}")
            if "mean_candidates" in knobs:  # checked here too, so the error names its field
                from m3search.indexes.multivec.means import check_mean_candidates  # numba: only when asked

                try:
                    check_mean_candidates(knobs["mean_candidates"])
                except InputError as e:
                    raise ApiError(400, f"params.{source}.mean_candidates", f"params.{source}.mean_candidates: {e}",
                                   type(e).__name__) from None
        for name in ("mode", "weights", "depths", "params"):
            if getattr(body, name) is not None:
                options[name] = getattr(body, name)
        if flt is not None:
            options["filter"] = flt
        if fields is not None:
            options["fields"] = fields
        results = await batcher.search(body.queries, options, request.scope.get(ARRIVAL))
        start = body.offset + 1
        # serialized here, not through the response model: the hits are plain JSON already, and validating
        # them again costs the event loop more than the search (the model still documents the shape)
        return _json_response({"results": [
            {"qid": str(i + 1), "query": q,
             "hits": [{"rank": r, **h.to_dict()} for r, h in enumerate(hits, start=start)]}
            for i, (q, hits) in enumerate(zip(body.queries, results))
        ]})

    @app.post("/v1/documents", response_model=schemas.DocumentsResponse,
              responses={400: {"model": schemas.ErrorResponse}, 422: {"model": schemas.ErrorResponse}})
    async def documents(body: schemas.DocumentsRequest) -> dict:
        _limit(len(body.documents), settings.max_documents, "documents", "documents")
        docs = [d.model_dump(exclude_none=True) for d in body.documents]
        write = index.upsert if body.upsert else index.add
        result = await asyncio.get_running_loop().run_in_executor(writer, in_writer, write, docs)
        return dataclasses.asdict(result)

    @app.post("/v1/documents/delete", response_model=schemas.DeleteResponse)
    async def delete(body: schemas.DeleteRequest) -> dict:
        _limit(len(body.ids), settings.max_documents, "ids", "ids")
        n = await asyncio.get_running_loop().run_in_executor(writer, in_writer, index.delete, list(body.ids))
        return {"deleted": int(n)}

    @app.post("/v1/encode", response_model=schemas.EncodeResponse, response_model_exclude_none=True)
    async def encode(body: schemas.EncodeRequest) -> dict:
        _limit(len(body.texts), settings.max_queries, "texts", "texts")
        for i, t in enumerate(body.texts):
            _limit(len(t), settings.max_query_chars * 10, f"texts.{i}", "characters")

        def run() -> list[dict]:
            encoder = index.encoder
            batch = encoder.encode(body.texts, kind=body.kind, max_length=body.max_length)
            return _encoded(encoder, batch, set(body.outputs))

        results = await asyncio.get_running_loop().run_in_executor(side, run)
        return {"model": getattr(index, "model", None), "results": results}

    return app


def _json_response(content: Any) -> Response:
    try:
        import orjson

        body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    except ImportError:
        import json

        body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    return Response(body, media_type="application/json")


def _encoded(encoder: Any, batch: Any, outputs: set[str]) -> list[dict]:
    """The three representations per text, in FlagEmbedding's names (dense_vecs, lexical_weights,
    colbert_vecs); lexical weights keyed by token id as a string, with the token strings beside."""
    out = []
    offsets = batch.offsets
    token_ids = sorted(set(batch.sparse.indices.tolist())) if "sparse" in outputs else []
    names = dict(zip(token_ids, encoder.token_strings(token_ids))) if token_ids else {}
    for i in range(len(batch)):
        item: dict[str, Any] = {}
        if "dense" in outputs:
            item["dense_vecs"] = batch.dense[i].tolist()
        if "sparse" in outputs:
            row = batch.sparse[i]
            item["lexical_weights"] = {str(t): float(w) for t, w in zip(row.indices.tolist(), row.data.tolist())}
            item["tokens"] = {str(t): names[t] for t in row.indices.tolist()}
        if "multivec" in outputs:
            item["colbert_vecs"] = batch.multivec[offsets[i] : offsets[i + 1]].tolist()
        out.append(item)
    return out
