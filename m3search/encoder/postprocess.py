"""Post-processing shared by the torch encoder (`m3.py`) and the numpy query path (`fast_query.py`)."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from m3search.errors import ModelError


def max_per_token(n_texts: int, text_of: np.ndarray, weights: list, vocab_size: int) -> sp.csr_matrix:
    """CSR of lexical weights: for each (text, token id) the max weight over all its occurrences."""
    rows = np.concatenate([np.full(len(ids), t, dtype=np.int64) for t, (ids, _) in zip(text_of, weights)] or [np.zeros(0, np.int64)])
    cols = np.concatenate([ids for ids, _ in weights] or [np.zeros(0, np.int64)])
    vals = np.concatenate([w for _, w in weights] or [np.zeros(0, np.float32)]).astype(np.float32)
    if len(vals):
        order = np.lexsort((cols, rows))
        rows, cols, vals = rows[order], cols[order], vals[order]
        starts = np.flatnonzero(np.r_[True, (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])])
        vals = np.maximum.reduceat(vals, starts)
        rows, cols = rows[starts], cols[starts]
    if len(cols) and cols.max() >= vocab_size:
        raise ModelError(f"token id {int(cols.max())} is outside the model's vocabulary of {vocab_size}")
    indptr = np.zeros(n_texts + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_texts), out=indptr[1:])
    return sp.csr_matrix((vals, cols.astype(np.int32), indptr), shape=(n_texts, vocab_size), dtype=np.float32)
