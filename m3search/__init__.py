"""m3search: multilingual hybrid retrieval on M3 embeddings.

The package layout follows the data flow:
text -> `encoder` -> `EncodedBatch` -> `indexes` (dense, sparse, multi-vector) -> `planner` -> hits.

Heavy modules (torch, faiss) load on first use, so `import m3search` stays cheap.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "load_encoder": "m3search.encoder",
    "Encoder": "m3search.encoder",
    "EncodedBatch": "m3search.types",
    "EncoderIdentity": "m3search.types",
    "build_index": "m3search.api",
    "open_index": "m3search.api",
    "SearchIndex": "m3search.api",
    "Hit": "m3search.planner",
    "Document": "m3search.document",
    "connect": "m3search.client",
    "tune": "m3search.api",
    "TuneReport": "m3search.tuner",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from m3search.api import SearchIndex, build_index, open_index, tune  # noqa: F401
    from m3search.document import Document  # noqa: F401
    from m3search.client import connect  # noqa: F401
    from m3search.encoder import Encoder, load_encoder  # noqa: F401
    from m3search.planner import Hit  # noqa: F401
    from m3search.tuner import TuneReport  # noqa: F401
    from m3search.types import EncodedBatch, EncoderIdentity  # noqa: F401


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'm3search' has no attribute {name!r}")
