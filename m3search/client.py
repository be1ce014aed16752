"""`m3search.connect(url)`: a client for `m3search serve` with the embedded index's interface.

>>> index = m3search.connect("http://127.0.0.1:8000")          # doctest: +SKIP
>>> index.search("open the navigator", k=5, filter={"lang": "de"})  # doctest: +SKIP

`search`, `search_many`, `add`, `upsert`, `delete`, `info`, `encode` and `len()` take and return what
SearchIndex's do (`Hit`, `AddResult`, ...), so code written against `open_index(path)` runs against a
server unchanged. Errors come back as the same `M3SearchError` subclasses, with the server's message.
Needs httpx (the `server` extra).
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence

from m3search import errors
from m3search.errors import InputError, M3SearchError, missing_dependency
from m3search.planner.hits import Hit, MatchedTerm

API_KEY_ENV = "M3SEARCH_API_KEY"
DOCS_PER_REQUEST = 1000


class RemoteError(M3SearchError):
    """The server answered with an error that is not one of m3search's own (e.g. 401, 413)."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(f"{message} (HTTP {status})")
        self.status, self.field = status, field


def connect(url: str, api_key: str | None = None, timeout: float = 120.0) -> "RemoteIndex":
    """A client for the server at `url` (e.g. 'http://127.0.0.1:8000'); api_key defaults to
    $M3SEARCH_API_KEY. Checks the server answers /health."""
    client = RemoteIndex(url, api_key=api_key, timeout=timeout)
    try:
        client.health()
    except BaseException:
        client.close()
        raise
    return client


class RemoteIndex:
    def __init__(self, url: str, api_key: str | None = None, timeout: float = 120.0):
        try:
            import httpx
        except ImportError:
            raise missing_dependency("httpx", "m3search.connect", "'m3search[server]'") from None
        self.url = url.rstrip("/")
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    # -- transport
    def _call(self, method: str, path: str, json: Any = None) -> Any:
        import httpx

        try:
            r = self._http.request(method, path, json=json)
        except httpx.HTTPError as e:
            raise RemoteError(0, f"can't reach the m3search server at {self.url}{path}: {e}") from e
        if r.status_code < 400:
            return r.json()
        try:
            err = r.json()["error"]
            kind, message, field = err.get("type"), err.get("message", r.text), err.get("field")
        except (ValueError, KeyError, TypeError):
            kind, message, field = None, r.text[:500], None
        cls = getattr(errors, kind, None) if kind else None
        if isinstance(cls, type) and issubclass(cls, M3SearchError) and cls is not errors.MissingDependencyError:
            raise cls(message)
        raise RemoteError(r.status_code, message, field)

    def health(self) -> dict:
        return self._call("GET", "/health")

    # -- reading
    def search(self, query, *, k: int = 10, mode: str | None = None, weights=None, depths=None,
               fusion: str = "weighted", rrf_k: float = 60, explain: bool = False, all_scores: bool = False,
               with_text: bool = True, filter: Any = None, offset: int = 0, fields: Sequence[str] | None = None,
               params: Any = None):
        """As SearchIndex.search: a string gives list[Hit], a list of strings one list per query."""
        single = isinstance(query, str)
        texts = [query] if single else list(query)
        if not texts:
            return []
        hits = self.search_many(texts, k=k, mode=mode, weights=weights, depths=depths, fusion=fusion, rrf_k=rrf_k,
                                explain=explain, all_scores=all_scores, with_text=with_text, filter=filter,
                                offset=offset, fields=fields, params=params)
        return hits[0] if single else hits

    def search_many(self, queries: Sequence[str], **options: Any) -> list[list[Hit]]:
        if isinstance(queries, str):
            raise InputError("search_many takes a list of queries; use search() for one")
        queries = list(queries)
        if not queries:
            return []
        body: dict[str, Any] = {"queries": queries}
        for name, value in options.items():
            if value is None:
                continue
            if name == "filter":
                value = value.to_json() if hasattr(value, "to_json") else value
            elif name == "fields":
                value = [value] if isinstance(value, str) else list(value)
            body[name] = value
        answer = self._call("POST", "/v1/search", body)
        return [[_hit(h) for h in r["hits"]] for r in answer["results"]]

    def info(self) -> dict:
        return self._call("GET", "/v1/info")

    def __len__(self) -> int:
        return int(self.info()["n_docs"])

    def encode(self, texts: Sequence[str], kind: str = "passage", outputs: Sequence[str] | None = None) -> list[dict]:
        """dense_vecs, lexical_weights (token id string -> weight) and colbert_vecs per text."""
        body: dict[str, Any] = {"texts": list(texts), "kind": kind}
        if outputs is not None:
            body["outputs"] = list(outputs)
        return self._call("POST", "/v1/encode", body)["results"]

    # -- writing
    def add(self, docs: Iterable[Any], **_: Any):
        """Add documents (ids already indexed are skipped and counted); committed when this returns."""
        return self._write(docs, upsert=False)

    def upsert(self, docs: Iterable[Any], **_: Any):
        return self._write(docs, upsert=True)

    def delete(self, ids: Iterable[str]) -> int:
        ids = [str(i) for i in ([ids] if isinstance(ids, str) else ids)]
        if not ids:
            return 0
        return int(self._call("POST", "/v1/documents/delete", {"ids": ids})["deleted"])

    def _write(self, docs: Iterable[Any], upsert: bool):
        from m3search.ingest import AddResult, DocumentStream

        total = {"added": 0, "skipped": 0, "replaced": 0, "generation": 0}
        chunk: list[dict] = []

        def send() -> None:
            r = self._call("POST", "/v1/documents", {"documents": chunk, "upsert": upsert})
            for key in ("added", "skipped", "replaced"):
                total[key] += int(r[key])
            total["generation"] = int(r["generation"])
            chunk.clear()

        stream = DocumentStream(docs)  # the same checks (ids, duplicates, empty texts) as the embedded API
        for doc in stream:
            record = {"id": doc.id, "text": doc.text}
            if doc.title is not None:
                record["title"] = doc.title
            if doc.metadata:
                record["metadata"] = doc.metadata
            chunk.append(record)
            if len(chunk) >= DOCS_PER_REQUEST:
                send()
        if chunk:
            send()
        return AddResult(**total, skipped_empty=stream.skipped_empty)

    # -- lifetime
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RemoteIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteIndex({self.url!r})"


def _hit(d: Mapping[str, Any]) -> Hit:
    terms = d.get("matched_terms")
    return Hit(
        docid=d["docid"], score=float(d["score"]), scores=dict(d.get("scores") or {}),
        text=d.get("text"), title=d.get("title"),
        matched_terms=tuple(MatchedTerm(**t) for t in terms) if terms is not None else None,
        metadata=d.get("metadata"),
    )
