"""`m3search serve`: the embedded API over HTTP/JSON (FastAPI under uvicorn), a thin shell with no search
logic of its own. `create_app(index)` builds the app for any object with SearchIndex's surface (a local
SearchIndex, or a sharded one); the client for it is `m3search.connect(url)` (m3search/client.py).

Needs the `server` extra: pip install 'm3search[server]'.
"""
from __future__ import annotations


def create_app(index, settings=None):
    """The FastAPI app serving `index` (see m3search.server.app.create_app)."""
    from m3search.server.app import create_app as _create_app

    return _create_app(index, settings)


__all__ = ["create_app"]
