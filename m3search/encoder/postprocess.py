"""Post-processing shared by the torch encoder (`m3.py`), the numpy query path (`fast_query.py`) and the
ONNX Runtime passage path (`ort_passages.py`)."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from m3search.errors import ModelError


def max_per_token(n_texts: int, text_of: np.ndarray, weights: list, vocab_size: int,
                  unused: np.ndarray) -> sp.csr_matrix:
    """CSR of lexical weights: for each (text, token id) the max weight over all its occurrences. `weights`:
    each piece's (ids, weights) at every position; zero weights and the ids BGE-M3 drops (`unused`:
    cls/eos/pad/unk, FlagEmbedding's `unused_tokens`) are left out."""
    rows = np.concatenate([np.full(len(ids), t, dtype=np.int64) for t, (ids, _) in zip(text_of, weights)] or [np.zeros(0, np.int64)])
    cols = np.concatenate([np.asarray(ids, dtype=np.int64) for ids, _ in weights] or [np.zeros(0, np.int64)])
    vals = np.concatenate([w for _, w in weights] or [np.zeros(0, np.float32)]).astype(np.float32)
    keep = (vals > 0) & ~np.isin(cols, unused)
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
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


def merge_pieces(n_texts: int, pieces: list, dense: np.ndarray, weights: list, vectors: list, long_dense: str,
                 vocab_size: int, colbert_dim: int, unused: np.ndarray,
                 terms=None) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray, np.ndarray]:
    """(dense, sparse, token vectors, lengths) of each text from its pieces' outputs (see `windows.py`):
    dense is the first piece's or the renormalised mean ("first"/"mean"), lexical weights the max per token
    id (`weights`: each piece's ids and weights at every position; `unused`: ids whose weights are dropped),
    or the rows of another sparse term scheme (`terms`: a `terms.SparseTerms`), token vectors every piece's
    in order."""
    text_of = np.asarray([p.text for p in pieces], dtype=np.int64)
    text_dense = np.zeros((n_texts, dense.shape[1]), dtype=np.float32)
    first = np.searchsorted(text_of, np.arange(n_texts))  # pieces are text by text
    counts = np.bincount(text_of, minlength=n_texts)
    if long_dense == "first" or counts.max(initial=0) <= 1:
        text_dense[:] = dense[first]
    else:
        np.add.at(text_dense, text_of, dense)
        text_dense /= np.maximum(np.linalg.norm(text_dense, axis=1, keepdims=True), 1e-12)
    if terms is None:
        sparse = max_per_token(n_texts, text_of, weights, vocab_size, unused)
    else:
        sparse = terms.rows(n_texts, text_of, weights, unused)
    lengths = np.bincount(text_of, weights=[len(v) for v in vectors], minlength=n_texts).astype(np.int64)
    multivec = np.concatenate(vectors).astype(np.float32, copy=False) if vectors else np.zeros(
        (0, colbert_dim), dtype=np.float32)
    return text_dense, sparse, np.ascontiguousarray(multivec), lengths
