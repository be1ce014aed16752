"""An index's stored search defaults: the fusion weights (and fusion, RRF k) a search uses when it names
neither a mode nor weights, as `m3search tune` fitted them.

They live beside the manifest in `search_defaults.json`, not in it: the manifest is written once, while
defaults can be re-tuned at any time. The file is versioned and carries a sha256 of its content; it is
written to a temporary file, fsync'd and renamed, so a crash leaves the old defaults or the new ones. A
file that fails its checksum is reported as damage, never used.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from m3search.errors import IndexFormatError
from m3search.indexes.fsutil import fsync_dir
from m3search.planner.fusion import DEFAULT_RRF_K
from m3search.planner.weights import COMPONENTS, check_weights

DEFAULTS_NAME = "search_defaults.json"
DEFAULTS_FORMAT = "m3search.search_defaults"
DEFAULTS_VERSION = 1


@dataclasses.dataclass(frozen=True)
class SearchDefaults:
    """weights: positive weights by component; fusion: 'weighted' or 'rrf'; rrf_k: RRF's constant;
    provenance: how they were obtained (metric, queries, held-out gains, time), for `m3search info`."""

    weights: dict[str, float]
    fusion: str = "weighted"
    rrf_k: float = DEFAULT_RRF_K
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        text = ",".join(f"{c}={w:g}" for c, w in self.weights.items())
        return text + (f", fusion rrf (k={self.rrf_k:g})" if self.fusion == "rrf" else "")

    def to_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "fusion": self.fusion, "rrf_k": self.rrf_k,
                "provenance": dict(self.provenance)}


def _checksum(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def write_search_defaults(index_dir: Path, defaults: SearchDefaults) -> Path:
    """Store `defaults` atomically (temporary file, fsync, rename, fsync of the folder)."""
    weights = check_weights(defaults.weights)
    if defaults.fusion not in ("weighted", "rrf"):
        raise ValueError(f"unknown fusion {defaults.fusion!r}")
    body = {"format": DEFAULTS_FORMAT, "version": DEFAULTS_VERSION, "weights": weights,
            "fusion": defaults.fusion, "rrf_k": float(defaults.rrf_k), "provenance": defaults.provenance}
    data = json.dumps({**body, "sha256": _checksum(body)}, indent=1, sort_keys=True, ensure_ascii=False)
    path = Path(index_dir) / DEFAULTS_NAME
    fd, tmp = tempfile.mkstemp(prefix=DEFAULTS_NAME + ".", suffix=".tmp", dir=index_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)  # our own temporary file
        raise
    fsync_dir(Path(index_dir))
    return path


def read_search_defaults(index_dir: Path) -> SearchDefaults | None:
    """The stored defaults, or None if the index has none. Raises IndexFormatError for a damaged file."""
    path = Path(index_dir) / DEFAULTS_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    fix = f"re-run `m3search tune` on the index, or remove {path} to search with the built-in defaults"
    try:
        obj = json.loads(raw.decode("utf-8"))
        stored = obj.pop("sha256")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError) as e:
        raise IndexFormatError(f"{path}: the stored search defaults are damaged ({e}): {fix}") from None
    if obj.get("format") != DEFAULTS_FORMAT:
        raise IndexFormatError(f"{path}: not an m3search search-defaults file (format {obj.get('format')!r}): {fix}")
    if not isinstance(obj.get("version"), int) or obj["version"] > DEFAULTS_VERSION:
        raise IndexFormatError(f"{path}: search defaults version {obj.get('version')!r} is newer than this m3search "
                               f"reads ({DEFAULTS_VERSION}): upgrade m3search, or {fix}")
    if _checksum(obj) != stored:
        raise IndexFormatError(f"{path}: the stored search defaults fail their checksum (the file was changed or "
                               f"damaged): {fix}")
    try:
        weights = check_weights(obj["weights"])
        weights = {c: weights[c] for c in COMPONENTS if c in weights}  # canonical order (the file sorts keys)
        return SearchDefaults(weights=weights, fusion=str(obj["fusion"]),
                              rrf_k=float(obj["rrf_k"]), provenance=dict(obj.get("provenance") or {}))
    except (KeyError, TypeError, ValueError) as e:
        raise IndexFormatError(f"{path}: the stored search defaults are malformed ({e}): {fix}") from None


def remove_search_defaults(index_dir: Path) -> bool:
    """Forget the stored defaults (the user asked to); True if there were any."""
    path = Path(index_dir) / DEFAULTS_NAME
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(Path(index_dir))
    return True
