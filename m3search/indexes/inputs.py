"""Checks of caller-supplied arrays shared by the segment readers and components."""
from __future__ import annotations

import numpy as np

from m3search.errors import InputError


def check_ids(ids: np.ndarray, n: int, what: str = "ids") -> np.ndarray:
    """`ids` as a 1-d int64 array of values in 0..n-1; InputError naming `what` otherwise."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise InputError(f"{what} must be a 1-d integer array, got {ids.dtype} {ids.shape}")
    ids = ids.astype(np.int64, copy=False)
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise InputError(f"{what} must lie in 0..{n - 1}, got values from {ids.min()} to {ids.max()}")
    return ids
