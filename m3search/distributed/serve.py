"""`m3search serve INDEX --ray`: a sharded index on Ray Serve, one deployment per shard behind a router.

- `ShardServer` (one deployment per shard; replicas are read copies): the three shard steps of a search
  (`m3search.sharding.shard.ShardSearcher`: candidates, exact scores, hits) over that shard's files.
- `RouterServer`: loads the encoder once per replica, encodes each query batch once and runs the same
  fan-out/merge as the in-process sharded index (`m3search.sharding.router`), with the shard deployments'
  handles as the fan-out. Results equal the local sharded index's, hence the unsharded index's.
- `RayServedIndex`: what a caller holds, with the SearchIndex surface (search, search_many, add, upsert,
  delete, info, len, close), so the HTTP app (`create_app`) can serve it unchanged. Writes go through a
  local `ShardedIndex` on the same files; the shard replicas see each commit at their next search.

The shards' folders must be readable by every node that hosts a replica (a shared filesystem, or a copy
at the same path on each node).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from m3search.distributed import require_ray
from m3search.sharding import router
from m3search.sharding.layout import read_header
from m3search.sharding.shard import ShardSearcher

log = logging.getLogger(__name__)


class ShardServer:
    def __init__(self, root: str, name: str, number: int):
        # matched terms come back as token ids ('#id'); the router, which encoded the queries, names them
        self.searcher = ShardSearcher(root, name, number, token_strings=None)

    def candidates(self, *args):
        return self.searcher.candidates(*args)

    def score(self, *args):
        return self.searcher.score(*args)

    def hits(self, *args):
        return self.searcher.hits(*args)

    def n_docs(self) -> int:
        return self.searcher.n_docs()

    def components(self) -> list[str]:
        return self.searcher.components()


class RouterServer:
    def __init__(self, root: str, model: str | None, encoder_options: Mapping[str, Any] | None, *shards):
        from m3search.api import _load_encoder

        header = read_header(Path(root))
        self.root, self.shards = root, list(shards)
        self.encoder = _load_encoder(model or header.get("model"), None, encoder_options)
        self._components: list[str] | None = None

    def _fan(self, method: str, args: Sequence[tuple]) -> list:
        responses = [getattr(h, method).remote(*a) for h, a in zip(self.shards, args)]
        return [r.result() for r in responses]

    def search_many(self, texts: list[str], options: dict[str, Any]):
        options = dict(options)
        max_length = options.pop("max_length", None)
        if not texts:
            return []
        if options.get("mode") is None and options.get("weights") is None:
            options["mode"] = "all" if getattr(self.encoder, "heads_trained", True) else "dense"
        if self._components is None:
            self._components = self.shards[0].components.remote().result()
        batch = self.encoder.encode(list(texts), kind="query", max_length=max_length)
        # n_docs=1: an empty shard returns no candidates, so the count need not be fetched per request
        hits = router.search_encoded(self._fan, len(self.shards), self._components, 1, batch, **options)
        return self._name_terms(hits) if options.get("explain") else hits

    def _name_terms(self, hits):
        import dataclasses

        ids = sorted({t.token_id for per_query in hits for h in per_query for t in (h.matched_terms or ())})
        name = dict(zip(ids, self.encoder.token_strings(ids))) if ids else {}
        return [[dataclasses.replace(h, matched_terms=tuple(dataclasses.replace(t, token=name[t.token_id])
                                                            for t in h.matched_terms))
                 if h.matched_terms else h for h in per_query] for per_query in hits]

    def n_docs(self) -> int:
        return sum(self._fan("n_docs", [()] * len(self.shards)))


class RayServedIndex:
    """A sharded index served on Ray Serve, with the SearchIndex surface."""

    def __init__(self, path: str | Path, handle, app_name: str, deployed_here: bool):
        self.path = Path(path)
        self._handle = handle
        self.app_name = app_name
        self._deployed_here = deployed_here
        self._writer = None

    def search(self, query, **options: Any):
        if isinstance(query, str):
            return self.search_many([query], **options)[0]
        return self.search_many(query, **options)

    def search_many(self, queries: Sequence[str], **options: Any):
        from m3search.api import _query_list

        return self._handle.search_many.remote(_query_list(queries), options).result()

    def __len__(self) -> int:
        return int(self._handle.n_docs.remote().result())

    def info(self) -> dict[str, Any]:
        return {**self._local().info(), "served": {"ray_serve_app": self.app_name}}

    def _local(self):
        if self._writer is None:
            from m3search.sharding import ShardedIndex

            self._writer = ShardedIndex(self.path)
        return self._writer

    def add(self, docs: Iterable[Any], **options: Any):
        return self._local().add(docs, **options)

    def upsert(self, docs: Iterable[Any], **options: Any):
        return self._local().upsert(docs, **options)

    def delete(self, ids: Iterable[str]) -> int:
        return self._local().delete(ids)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._deployed_here:
            from ray import serve

            serve.delete(self.app_name)
            self._deployed_here = False

    def __enter__(self) -> "RayServedIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def deploy(path: str | Path, *, address: str | None = None, replicas: int = 1, app_name: str = "m3search",
           cpus_per_shard: float = 0.5, cpus_per_router: float = 0.5,
           encoder_options: Mapping[str, Any] | None = None) -> RayServedIndex:
    """Deploy the sharded index at `path` on the Ray cluster at `address` (or the one this process is
    connected to): one deployment per shard with `replicas` replicas, and the router. No HTTP ingress
    is started here; serve the returned object with `m3search.server.app.create_app`."""
    ray = require_ray()
    from ray import serve

    path = Path(path).resolve()
    header = read_header(path)
    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    shard_apps = [
        serve.deployment(ShardServer).options(name=f"{app_name}-{name}", num_replicas=replicas,
                                              ray_actor_options={"num_cpus": cpus_per_shard})
        .bind(str(path), name, i)
        for i, name in enumerate(header["shards"])
    ]
    app = serve.deployment(RouterServer).options(name=f"{app_name}-router", ray_actor_options={"num_cpus": cpus_per_router}) \
        .bind(str(path), header.get("model"), dict(encoder_options or {}) or None, *shard_apps)
    handle = serve.run(app, name=app_name, route_prefix=None)
    return RayServedIndex(path, handle, app_name, deployed_here=True)


def serve_http(path: str | Path, *, address: str | None = None, host: str = "127.0.0.1", port: int = 8000,
               replicas: int = 1, settings: Any = None, log_level: str = "warning") -> None:
    """What `m3search serve INDEX --ray ADDRESS` runs: the single-node server's HTTP app (`create_app`,
    from `m3search.server`) over the index deployed on Ray Serve, so both speak the same HTTP API."""
    try:
        from m3search.server.app import create_app
    except ImportError as e:  # the HTTP app lives in m3search.server (the `serve` command's package)
        from m3search.errors import ConfigError

        raise ConfigError(f"the HTTP server needs m3search.server.app.create_app ({e})") from e
    import uvicorn

    index = deploy(path, address=address, replicas=replicas)
    try:
        uvicorn.run(create_app(index, settings), host=host, port=port, log_level=log_level)
    finally:
        index.close()
