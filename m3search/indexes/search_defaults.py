"""An index's stored search defaults: the fusion weights (and fusion, RRF k) a search uses when it names
neither a mode nor weights, as `m3search tune` fitted them.

They live beside the manifest in `search_defaults.json`, not in it: the manifest is written once, while
defaults can be re-tuned at any time. The file is versioned and carries a sha256 of its content; it is
written to a temporary file, fsync'd and renamed, so a crash leaves the old defaults or the new ones. A
file that fails its checksum is reported as damage, never used.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from m3search.errors import IndexFormatError
from m3search.indexes.fsutil import fsync_dir, read_versioned_json, sealed_json, write_json_atomic
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


def write_search_defaults(index_dir: Path, defaults: SearchDefaults) -> Path:
    """Store `defaults` atomically (temporary file, fsync, rename, fsync of the folder)."""
    weights = check_weights(defaults.weights)
    if defaults.fusion not in ("weighted", "rrf"):
        raise ValueError(f"unknown fusion {defaults.fusion!r}")
    body = {"format": DEFAULTS_FORMAT, "version": DEFAULTS_VERSION, "weights": weights,
            "fusion": defaults.fusion, "rrf_k": float(defaults.rrf_k), "provenance": defaults.provenance}
    path = Path(index_dir) / DEFAULTS_NAME
    write_json_atomic(path, sealed_json(body))
    return path


def read_search_defaults(index_dir: Path) -> SearchDefaults | None:
    """The stored defaults, or None if the index has none. Raises IndexFormatError for a damaged file."""
    path = Path(index_dir) / DEFAULTS_NAME
    if not path.exists():
        return None
    fix = f"re-run `m3search tune` on the index, or remove {path} to search with the built-in defaults"
    obj = read_versioned_json(path, DEFAULTS_FORMAT, DEFAULTS_VERSION, fix, sealed_from=1)
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
