"""Per-document mean token vectors: a cheap candidate source next to the centroid lists (generator.py).

A document's score is q_sum . mean_d / |mean_d|, q_sum the sum of the query's token vectors: one inner
product per document instead of a MaxSim. On 100k synthetic documents x 384-d its top 100 held 0.902 of the
exact MaxSim top-10 where the generator's 256 candidates held 0.774 (bench/results/multivec_big_n100000_d384_s7.md),
so its top `mean_candidates` join the generator's candidates before stage 3 (full-code MaxSim).

Stored per segment (format v4): `means.arr` (n, d) int8, each document's mean token vector scaled to unit
length and quantized symmetrically per row (code = round(unit / scale), |code| <= 127), and
`means_scale.arr` (n, 2) float32: the row's scale and the mean's norm before scaling. A document without
tokens has a zero row and scale 0 (it scores 0).
"""
from __future__ import annotations

import numba
import numpy as np

from m3search.errors import InputError
from m3search.indexes import query_pool

MEANS, MEANS_SCALE = "means.arr", "means_scale.arr"
MAX_MEAN_CANDIDATES = 100_000  # as the planner's MAX_DEPTH: candidates per source and query
DEFAULT_MEAN_CANDIDATES = 100
# The stage reads every document's mean row per query and is bound by memory bandwidth (~6 GB/s on 2 cores:
# 59 ms at 1M x 384-d, bench/results/mean_scan_cost_s11.md). By default it runs while that is at most this
# many bytes (~20 ms here: 333k documents at 384-d, 125k at 1024-d); an explicit mean_candidates always runs.
DEFAULT_SCAN_BYTES = 128_000_000


def default_mean_candidates(n_docs: int, dim: int) -> int:
    """The mean stage's candidates when the query does not say: DEFAULT_MEAN_CANDIDATES while the scan reads
    at most DEFAULT_SCAN_BYTES, else 0 (off)."""
    return DEFAULT_MEAN_CANDIDATES if int(n_docs) * int(dim) <= DEFAULT_SCAN_BYTES else 0


def quantize(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes (n, d) int8, (n, 2) float32 [scale, norm]) of mean vectors (n, d): each row scaled to unit
    length, then to int8 with its own symmetric scale."""
    means = np.asarray(means, np.float64)
    norm = np.linalg.norm(means, axis=1)
    unit = means / np.maximum(norm, 1e-30)[:, None]
    peak = np.abs(unit).max(axis=1) if unit.shape[1] else np.zeros(len(unit))
    scale = np.where(norm > 0, peak / 127.0, 0.0)
    codes = np.rint(unit / np.where(scale > 0, scale, 1.0)[:, None])
    codes = np.clip(codes, -127, 127).astype(np.int8)
    return codes, np.stack([scale, norm], axis=1).astype(np.float32)


def dequantize(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The unit mean vectors (n, d) float32 the codes stand for."""
    return np.asarray(codes, np.float32) * np.asarray(scales, np.float32)[:, :1]


class MeanBuilder:
    """Per-document means of token vectors that arrive in consecutive chunks of rows (document boundaries
    anywhere): sums are kept only for the documents of the current chunk, so memory is the int8 result plus
    one chunk's worth, not a copy of the tokens."""

    def __init__(self, lengths: np.ndarray, dim: int):
        self.lengths = np.asarray(lengths, np.int64)
        self.offsets = np.zeros(len(self.lengths) + 1, np.int64)
        np.cumsum(self.lengths, out=self.offsets[1:])
        self.codes = np.zeros((len(self.lengths), dim), np.int8)
        self.scales = np.zeros((len(self.lengths), 2), np.float32)
        self._pos = 0  # tokens seen
        self._carry = np.zeros(dim, np.float64)  # the tokens seen so far of a document cut by a chunk's end

    def add(self, x: np.ndarray) -> None:
        lo, hi = self._pos, self._pos + len(x)
        if hi > self.offsets[-1]:
            raise InputError(f"mean vectors: {hi} tokens given for documents holding {self.offsets[-1]}")
        self._pos = hi
        if not len(x):
            return
        first = int(np.searchsorted(self.offsets, lo, side="right")) - 1  # the document of token lo
        last = int(np.searchsorted(self.offsets, hi - 1, side="right")) - 1  # ... of token hi - 1
        docs = np.arange(first, last + 1)
        starts = np.maximum(self.offsets[docs] - lo, 0)
        ends = np.minimum(self.offsets[docs + 1] - lo, len(x))
        full = ends > starts  # documents without tokens in this chunk get no row of reduceat
        sums = np.zeros((len(docs), x.shape[1]), np.float64)
        sums[full] = np.add.reduceat(x, starts[full], axis=0, dtype=np.float64)
        sums[0] += self._carry
        done = self.offsets[docs + 1] <= hi
        self._carry = sums[-1] if not done[-1] else np.zeros_like(self._carry)
        fin = docs[done]
        if len(fin):
            means = sums[done] / np.maximum(self.lengths[fin], 1)[:, None]
            self.codes[fin], self.scales[fin] = quantize(means)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self._pos != self.offsets[-1]:
            raise InputError(f"mean vectors: {self._pos} tokens given for documents holding {self.offsets[-1]}")
        return self.codes, self.scales


def doc_means(vecs: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantized means of documents' token vectors given at once (vecs (T, d), lengths (n,))."""
    b = MeanBuilder(lengths, vecs.shape[1])
    b.add(np.asarray(vecs, np.float32))
    return b.result()


def check_mean_candidates(v) -> int:
    """The knob's value as an int in [0, MAX_MEAN_CANDIDATES] (0: the stage is off)."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= MAX_MEAN_CANDIDATES:
        raise InputError(f"multivec search parameter mean_candidates must be an integer in "
                         f"[0, {MAX_MEAN_CANDIDATES}] (0: off), got {v!r}")
    return int(v)


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _mean_scores_kernel(codes, scales, q, skip, out, lo, hi):  # pragma: no cover - compiled
    # out[i] = scale_i * (codes_i . q); -inf where skipped. Reassociation lets the row sum vectorize
    # (3.6 ms against 30 ms for 100k x 384-d on one core)
    d = codes.shape[1]
    has_skip = skip.shape[0] > 0
    for i in range(lo, hi):
        if has_skip and skip[i]:
            out[i] = -np.inf
            continue
        acc = np.float32(0.0)
        row = codes[i]
        for j in range(d):
            acc += np.float32(row[j]) * q[j]
        out[i] = acc * scales[i, 0]


def mean_scores(codes: np.ndarray, scales: np.ndarray, q_sum: np.ndarray, skip: np.ndarray | None) -> np.ndarray:
    """(n,) float32 dequantized scores q_sum . unit mean of every document, -inf where skip is set. Above
    SPLIT_ROWS rows the documents are cut into chunks an idle helper thread may take (m3search.indexes.
    query_pool); every row's score is computed the same way whichever thread takes it."""
    n = codes.shape[0]
    out = np.empty(n, np.float32)
    q = np.ascontiguousarray(q_sum, dtype=np.float32)
    skip = np.zeros(0, np.bool_) if skip is None else np.ascontiguousarray(skip, dtype=np.bool_)
    scales = np.ascontiguousarray(scales, dtype=np.float32)
    query_pool.split_run(lambda lo, hi: _mean_scores_kernel(codes, scales, q, skip, out, lo, hi),
                         query_pool.chunk_bounds(None, n, n // SPLIT_ROWS))
    return out


SPLIT_ROWS = 16384  # documents per chunk a second core may take (~1 ms at 384-d)
