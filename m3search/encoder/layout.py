"""File names of BGE-M3's folder layout (see `checkpoint.py`), and how cache folders are published;
importable without torch."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

SPEC_FILE = "m3search_model.json"
SPEC_FORMAT = "m3search.model"
SPEC_VERSION = 1
COLBERT_FILE = "colbert_linear.pt"
SPARSE_FILE = "sparse_linear.pt"


def publish_cache_folder(target: Path, build: Callable[[Path], None], done_file: str) -> None:
    """Build a cache folder in a temporary sibling and rename it to `target`, so a crash never leaves half a
    folder under the final name. A concurrent build that finished first (its `done_file` exists) wins."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        build(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / done_file).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)  # only our own temporary folder


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks (cache keys and cache integrity checks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
