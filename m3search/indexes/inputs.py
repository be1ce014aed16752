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


# -- the one check of encoded values at the boundary (writes and queries) -------------------------------

# Lexical weights are stored as float16 (max 65504) and summed per query; BGE-M3's are below ~1 (relu of a
# linear head). A weight above this is an encoder bug or a scaling mistake, not a strong match.
MAX_LEXICAL_WEIGHT = 100.0
# Token vectors are unit length in BGE-M3 (and stored as float16 or compressed): elements are in [-1, 1].
MAX_TOKEN_VALUE = 100.0
_CHECK_ROWS = 16384
# Dense vectors are unit length by the EncodedBatch contract; rows this close are renormalised exactly,
# rows further off (a scaled or unnormalised vector) are refused.
UNIT_NORM_TOLERANCE = 1e-2


def check_values(batch, kinds, names=None, what: str = "add"):
    """Refuse NaN, infinity and out-of-range values in the representations `kinds` of `batch`; return the
    batch with dense rows renormalised to unit length (a new batch if any row changed). The one check of
    encoded values: the writer runs it on documents, the planner on queries, the components on what they
    are given directly.

    names: per-row labels for messages (document ids; default "row i"); what: the action, for messages.
    """
    import dataclasses

    kinds = set(kinds)
    if "dense" in kinds:
        dense = check_dense(batch.dense, names, what)
        if dense is not batch.dense:
            batch = dataclasses.replace(batch, dense=dense)
    if "sparse" in kinds:
        check_lexical(batch.sparse, names, what)
    if "multivec" in kinds:
        check_tokens(batch.multivec, batch.multivec_lengths, names, what)
    return batch


def _label(names, row: int) -> str:
    return f"document {names[row]!r} (row {row})" if names is not None else f"row {row}"


def check_dense(x: np.ndarray, names=None, what: str = "add", unit: bool = True) -> np.ndarray:
    """Finite rows; with `unit`, of length 1 within UNIT_NORM_TOLERANCE (returned renormalised)."""
    if not x.size:
        return x
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise InputError(f"{what}: the dense vector of {_label(names, row)} holds NaN or infinity; fix the encoder "
                         "output or drop that text")
    if not unit:
        return x
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    off = np.abs(norms - 1.0) > UNIT_NORM_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise InputError(
            f"{what}: the dense vector of {_label(names, row)} has length {norms[row]:.6g}, but dense vectors must be "
            "unit length (M3 normalises them; inner products are cosine similarities): normalise it "
            "(x / ||x||) or re-encode"
        )
    if (np.abs(norms - 1.0) > 1e-6).any():
        return (x / norms[:, None]).astype(np.float32)
    return x


def check_lexical(x, names=None, what: str = "add") -> None:
    """Lexical weights (a CSR matrix) finite and in [0, MAX_LEXICAL_WEIGHT]."""
    data = x.data
    if not len(data):
        return
    bad = ~np.isfinite(data) | (data < 0) | (data > MAX_LEXICAL_WEIGHT)
    if bad.any():
        p = int(np.flatnonzero(bad)[0])
        row = int(np.searchsorted(x.indptr, p, side="right") - 1)
        raise InputError(
            f"{what}: the lexical weight of token {int(x.indices[p])} in {_label(names, row)} is "
            f"{float(data[p])}; weights must be finite and in [0, {MAX_LEXICAL_WEIGHT:g}] (M3's are relu "
            "outputs below ~1): check the encoder's sparse head or the scaling of precomputed weights"
        )


def check_tokens(v: np.ndarray, lengths, names=None, what: str = "add", after_block=None) -> None:
    """Token vectors finite, every element within ±MAX_TOKEN_VALUE. after_block() is called after each
    block is read (a file mapping's drop_pages: the check then doesn't leave all of v resident)."""
    if not v.size:
        return
    for lo in range(0, len(v), _CHECK_ROWS):  # a block at a time: no temporaries the size of v
        bad = ~(np.abs(v[lo : lo + _CHECK_ROWS]) <= MAX_TOKEN_VALUE).all(axis=1)  # also catches NaN
        if after_block is not None:
            after_block()
        if bad.any():
            break
    if bad.any():
        t = lo + int(np.flatnonzero(bad)[0])
        starts = np.concatenate([[0], np.cumsum(lengths)])
        row = int(np.searchsorted(starts, t, side="right") - 1)
        raise InputError(
            f"{what}: token vector {t - int(starts[row])} of {_label(names, row)} holds NaN, infinity or a value "
            f"beyond ±{MAX_TOKEN_VALUE:g} (M3's token vectors are unit length): fix the encoder output"
        )
