"""Stage 2-3: index writers and the on-disk index (dense FAISS, learned-sparse inverted index,
compressed token-vector store, LMDB document store), segment by segment.

`Index` (index.py) is the entry point; `Snapshot` (snapshot.py) the read side; components implement
the interfaces of base.py and are looked up by kind in registry.py.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "Index": "m3search.indexes.index",
    "Snapshot": "m3search.indexes.snapshot",
    "DocRecord": "m3search.indexes.docstore",
    "TieredMergePolicy": "m3search.indexes.merge_policy",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'm3search.indexes' has no attribute {name!r}")
