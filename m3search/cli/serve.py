"""`m3search serve`: serve an index over HTTP/JSON (FastAPI under uvicorn); the model loads once."""
from __future__ import annotations

import os

import click

from m3search.cli.common import INDEX_ENV, model_option

API_KEY_ENV = "M3SEARCH_API_KEY"


@click.command("serve")
@click.argument("index_path", metavar="[INDEX]", required=False, envvar=INDEX_ENV)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. The default accepts local connections only; 0.0.0.0 exposes the server.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free one).")
@click.option("--api-key", envvar=API_KEY_ENV, default=None, metavar="KEY",
              help=f"Require this key on /v1/* (as 'Authorization: Bearer KEY' or 'X-API-Key'). [env: {API_KEY_ENV}]")
@click.option("--max-k", type=click.IntRange(min=1), default=1000, show_default=True, help="Largest k a search may ask.")
@click.option("--max-body-mb", type=click.FloatRange(min=0.001), default=32.0, show_default=True,
              help="Largest request body, in MiB.")
@click.option("--max-batch", type=click.IntRange(min=1), default=256, show_default=True,
              help="Most queries encoded together in one micro-batch.")
@click.option("--batch-wait-ms", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Longest wait for search requests already being read to join a micro-batch (0: never wait; "
              "an idle server never waits).")
@click.option("--search-workers", type=click.IntRange(min=1), default=None,
              help="Search threads (default: one per usable core); each encodes and searches.")
@click.option("--split-batches/--whole-batches", default=True, show_default=True,
              help="Form one micro-batch at a time and split it over the search workers, or give each worker "
              "whole batches of its own.")
@click.option("--torch-threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Intra-op torch threads of each search worker. One thread per worker, workers side by side, "
              "measured fastest on 2 cores with a writer running (bench/results/server_load_quiet_s2.md).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True, help="uvicorn's log level (access log at info).")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Serve a sharded INDEX from the Ray cluster at ADDRESS ('auto': the one this machine runs): a "
              "Ray Serve deployment per shard behind a router; same HTTP API (needs m3search[distributed]).")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --ray: read copies per shard.")
@model_option
def serve_command(index_path, host, port, api_key, max_k, max_body_mb, max_batch, batch_wait_ms, search_workers,
                  split_batches, torch_threads, log_level, ray_address, replicas, model):
    """Serve INDEX at http://HOST:PORT: /v1/search, /v1/documents, /v1/documents/delete, /v1/encode,
    /v1/info, /health; OpenAPI at /openapi.json and docs at /docs.

    \b
    Examples:
      m3search serve my-index
      M3SEARCH_API_KEY=secret m3search serve my-index --host 0.0.0.0 --port 9000
    Then, from Python: m3search.connect("http://127.0.0.1:8000").search("...")
    """
    # The search workers' and the writer's OpenMP teams share the cores: busy-waiting threads of one team
    # starve the other (measured: a batch of 16 queries 105 ms alone, 2.5 s while the writer encodes;
    # 130 ms with passive waiting). Set before torch loads (it loads on the first big batch), unless the
    # user chose a policy.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import uvicorn

        from m3search.server.app import ServerSettings, create_app
    except ImportError as e:
        raise click.ClickException(f"m3search serve needs the server extra ({e.name} is missing): "
                                   "pip install 'm3search[server]'") from None
    from m3search import api

    if not index_path:
        raise click.UsageError(f"give the INDEX to serve (or set {INDEX_ENV})")
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        click.echo(f"warning: serving on {host} without an API key; anyone who can reach it can write", err=True)
    settings = ServerSettings(api_key=api_key or None, max_k=max_k, max_body_bytes=int(max_body_mb * (1 << 20)),
                              max_batch=max_batch, batch_wait_ms=batch_wait_ms, search_workers=search_workers,
                              split_batches=split_batches, torch_threads=torch_threads)
    if ray_address is not None:
        from m3search.distributed.serve import serve_http

        click.echo(f"m3search: serving {os.path.abspath(index_path)} from the Ray cluster at {ray_address} at "
                   f"http://{host}:{port}", err=True)
        serve_http(index_path, address=ray_address, host=host, port=port, replicas=replicas, settings=settings,
                   log_level=log_level)
        return
    with api.open_index(index_path, model) as index:
        _ = index.encoder  # load the model now, not on the first request
        app = create_app(index, settings)
        click.echo(f"m3search: serving {os.path.abspath(index_path)} ({len(index)} documents) at "
                   f"http://{host}:{port}", err=True)
        uvicorn.run(app, host=host, port=port, log_level=log_level)
