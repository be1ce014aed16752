"""8-bit impacts on one index-wide linear scale.

impact code = clip(rint(w / step), 1, 255) with step = max_weight / 255, for every stored weight w > 0;
the impact a search scores with is code * step. A positive weight never rounds to 0, so every stored
token stays findable; weights above max_weight saturate at 255 (counted and logged).

The scale is chosen once per index and written to the component's shared folder, so every segment,
built or merged at any time, quantizes identically: a document's impacts do not depend on the segment
it lands in, and merges (which requantize the stored weights) reproduce the same codes bit for bit.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from m3search.errors import IndexFormatError
from m3search.indexes.fsutil import fsync_file, read_versioned_json, sealed_json

logger = logging.getLogger(__name__)

QUANTIZER_FILE = "quantizer.json"
QUANTIZER_FORMAT = "m3search.sparse.quantizer"
QUANTIZER_VERSION = 2  # 2: sealed with a sha256 (1 is still read)
LEVELS = 255
AUTO_HEADROOM = 1.25  # "auto": the first batch's largest weight times this, room for later batches


@dataclasses.dataclass(frozen=True)
class Quantizer:
    max_weight: float

    @property
    def step(self) -> float:
        return self.max_weight / LEVELS

    def codes(self, weights: np.ndarray) -> tuple[np.ndarray, int]:
        """(uint8 codes of positive float weights, how many saturated)."""
        scaled = np.rint(np.asarray(weights, dtype=np.float64) / self.step)
        n_clipped = int(np.count_nonzero(scaled > LEVELS))
        return np.clip(scaled, 1, LEVELS).astype(np.uint8), n_clipped

    def dequantize(self, codes: np.ndarray) -> np.ndarray:
        return codes.astype(np.float64) * self.step

    def to_dict(self) -> dict:
        return {"format": QUANTIZER_FORMAT, "version": QUANTIZER_VERSION, "bits": 8, "max_weight": self.max_weight}


def read_quantizer(shared: Path) -> Quantizer | None:
    path = Path(shared) / QUANTIZER_FILE
    if not path.is_file():
        return None
    d = read_versioned_json(path, QUANTIZER_FORMAT, QUANTIZER_VERSION, "restore the index from a backup",
                            sealed_from=2)
    mw = d.get("max_weight")
    if d.get("bits") != 8 or not isinstance(mw, (int, float)) or not np.isfinite(mw) or mw <= 0:
        raise IndexFormatError(f"{path}: bits must be 8 and max_weight a positive number, got {d}")
    return Quantizer(float(mw))


def shared_quantizer(shared: Path, configured: float | str, batch_max: float) -> Quantizer | None:
    """The index's quantizer: the one in `shared`, or a new one written there once.

    Returns None while it can't be chosen yet ("auto" and a batch without weights).
    """
    shared = Path(shared)
    found = read_quantizer(shared)
    if found is not None:
        return found
    if configured == "auto":
        if batch_max <= 0:
            return None
        max_weight = float(np.float32(batch_max * AUTO_HEADROOM))
    else:
        max_weight = float(configured)
    q = Quantizer(max_weight)
    shared.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".quantizer-", dir=shared)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(sealed_json(q.to_dict()), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        try:  # link, not replace: if another writer got there first, its scale wins for everyone
            os.link(tmp, shared / QUANTIZER_FILE)
        except FileExistsError:
            return read_quantizer(shared)
        fsync_file(shared)
    finally:
        os.unlink(tmp)
    logger.info("sparse impacts: 8-bit linear scale up to max_weight=%.6g (written to %s)", max_weight, shared)
    return q
