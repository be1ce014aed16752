"""MaxSim of one query against many documents stored as codes, without a Python loop per document.

Two ways, same scores up to float rounding:
- `maxsim_decoded`: decompress all candidate tokens at once, one matrix product with the query tokens,
  a max per document span (`np.maximum.reduceat`).
- `maxsim_lut`: for PQ-family codes, asymmetric distance computation: per query token a table of its inner
  products with every sub-quantizer centroid; each document token costs M table lookups per query token,
  not a d-dim product (FAISS's ADC, with MaxSim on top). A numba kernel, parallel over groups of documents.
"""
from __future__ import annotations

import numba
import numpy as np

from m3search.indexes import query_pool

_DECODE_TOKENS = 32768  # candidate tokens decompressed at a time (128 MiB of float32 at d=1024)
# The kernels' innermost loops run over the query tokens; LLVM vectorizes them 8 floats at a time and leaves
# the rest to a scalar tail, so a query of 14 tokens cost 2x one of 16 (1 thread, 256 documents x 60 tokens,
# rpq96: 11.8 vs 5.5 ms). Tables are zero-padded to a multiple of LANES query tokens; padded columns score 0
# and are left out of the sums.
LANES = 8


def pad_lanes(a: np.ndarray) -> np.ndarray:
    """a (..., lq) float32, zero-padded along its last axis to a multiple of LANES (a itself if it is one)."""
    lq = a.shape[-1]
    lp = -(-lq // LANES) * LANES
    if lp == lq:
        return np.ascontiguousarray(a, dtype=np.float32)
    out = np.zeros(a.shape[:-1] + (lp,), np.float32)
    out[..., :lq] = a
    return out


def token_rows(offsets: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows of all tokens of documents ids, in order; each document's token count)."""
    starts, lengths = offsets[ids], offsets[ids + 1] - offsets[ids]
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64), lengths
    first = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + (np.arange(total) - first), lengths


def maxsim_decoded(q: np.ndarray, codes: np.ndarray, offsets: np.ndarray, ids: np.ndarray, decode) -> np.ndarray:
    """(len(ids),) MaxSim of query tokens q (lq, d) against documents ids; decode(codes) -> float32."""
    out = np.zeros(len(ids), np.float32)
    if len(q) == 0 or len(ids) == 0:
        return out
    # documents in chunks of about _DECODE_TOKENS tokens
    lengths = offsets[ids + 1] - offsets[ids]
    bounds = np.searchsorted(np.cumsum(lengths), np.arange(_DECODE_TOKENS, lengths.sum(), _DECODE_TOKENS))
    for part in np.split(np.arange(len(ids)), np.unique(bounds)):
        if not len(part):
            continue
        rows, lens = token_rows(offsets, ids[part])
        if not len(rows):
            continue
        order = np.argsort(rows, kind="stable")  # read the store sequentially
        x = np.empty((len(rows), q.shape[1]), np.float32)
        x[order] = decode(np.asarray(codes[rows[order]]))
        sim = q @ x.T  # (lq, tokens)
        nonempty = lens > 0
        starts = (np.cumsum(lens) - lens)[nonempty]
        out[part[nonempty]] = np.maximum.reduceat(sim, starts, axis=1).sum(axis=0) / len(q)
    return out


@numba.njit(cache=True)
def doc_groups(lengths, limit):  # pragma: no cover - compiled
    """Boundaries (n_groups + 1,) of runs of consecutive documents with at most `limit` tokens together (a
    longer document is a group of its own)."""
    n = lengths.shape[0]
    bounds = np.empty(n + 1, np.int64)
    bounds[0] = 0
    g = 0
    tot = 0
    for c in range(n):
        if c > bounds[g] and tot + lengths[c] > limit:
            g += 1
            bounds[g] = c
            tot = 0
        tot += max(lengths[c], 0)
    bounds[g + 1] = n
    return bounds[: g + 2]


@numba.njit(parallel=True, cache=True, fastmath=False, nogil=True)
def _maxsim_lut_kernel(codes, starts, ends, tables, coarse, skip, sq_norms, byte_scales, n_q, groups):  # pragma: no cover
    # sq_norms (M, 256): squared norms of the sub-centroids, to rescale each token to unit norm; (0, 0): don't.
    # byte_scales (256,): the factor of each value of a code's last byte (a residual codec's norm byte); (0,): none.
    # n_q: the query's tokens, the first n_q of the tables' lq columns (the rest is padding, see LANES).
    # Per group of documents (`doc_groups`), sub-quantizer by sub-quantizer (m outer, tokens inner): one
    # (256, lq) table slab stays in L1 while every token of the group adds its entry. Per document instead
    # of per group, all M slabs (1.5 MB at M=96, lq=16: more than L2) were streamed again for every document.
    m_sub = tables.shape[0]
    lq = tables.shape[2]
    by_byte = byte_scales.shape[0] > 0
    by_norms = sq_norms.shape[0] > 0
    last = codes.shape[1] - 1
    out = np.zeros(starts.shape[0], np.float32)
    for g in numba.prange(groups.shape[0] - 1):
        c0, c1 = groups[g], groups[g + 1]
        tot = 0
        for c in range(c0, c1):
            tot += max(ends[c] - starts[c], 0)
        acc = np.zeros((tot, lq), np.float32)
        if skip == 2:
            r = 0
            for c in range(c0, c1):
                for row in range(starts[c], ends[c]):
                    cid = np.int64(codes[row, 0]) | (np.int64(codes[row, 1]) << 8)
                    for i in range(lq):
                        acc[r, i] = coarse[cid, i]
                    r += 1
        for m in range(m_sub):
            slab = tables[m]
            r = 0
            for c in range(c0, c1):
                for row in range(starts[c], ends[c]):
                    entry = slab[codes[row, skip + m]]
                    for i in range(lq):
                        acc[r, i] += entry[i]
                    r += 1
        best = np.empty(lq, np.float32)
        r = 0
        for c in range(c0, c1):
            if ends[c] <= starts[c]:
                continue
            for i in range(lq):
                best[i] = -np.inf
            for row in range(starts[c], ends[c]):
                if by_byte:
                    inv = byte_scales[codes[row, last]]
                elif by_norms:
                    nrm2 = np.float32(0.0)
                    for m in range(m_sub):
                        nrm2 += sq_norms[m, codes[row, skip + m]]
                    inv = np.float32(1.0) / np.sqrt(max(nrm2, np.float32(1e-12)))
                else:
                    inv = np.float32(1.0)
                for i in range(lq):
                    best[i] = max(best[i], acc[r, i] * inv)
                r += 1
            total = np.float32(0.0)
            for i in range(n_q):
                total += best[i]
            out[c] = total / n_q
    return out


GROUP_FLOATS = 32768  # accumulator floats per group of documents (128 KiB: L2), i.e. 2,048 tokens at 16 query tokens


def maxsim_lut(tables: np.ndarray, coarse: np.ndarray, codes: np.ndarray, offsets: np.ndarray,
               ids: np.ndarray, residual: bool, sq_norms: np.ndarray | None = None,
               byte_scales: np.ndarray | None = None) -> np.ndarray:
    """(len(ids),) MaxSim from lookup tables (see `Codec.lut_tables`) over the stored codes; with sq_norms
    (`Codec.sub_sq_norms`) each reconstructed token is rescaled to unit norm first, with byte_scales
    (`Codec.norm_scales`) by the factor its code's last byte stands for."""
    if tables.shape[2] == 0 or len(ids) == 0:
        return np.zeros(len(ids), np.float32)
    norms = np.zeros((0, 0), np.float32) if sq_norms is None else sq_norms
    scales = np.zeros(0, np.float32) if byte_scales is None else np.asarray(byte_scales, np.float32)
    n_q = tables.shape[2]
    tables, coarse = pad_lanes(tables), pad_lanes(coarse)
    starts, ends = offsets[ids], offsets[ids + 1]
    skip, per_group = 2 if residual else 0, max(1, GROUP_FLOATS // tables.shape[2])

    def run(lo: int, hi: int) -> np.ndarray:
        s, e = starts[lo:hi], ends[lo:hi]
        return _maxsim_lut_kernel(codes, s, e, tables, coarse, skip, norms, scales, n_q, doc_groups(e - s, per_group))

    lengths = ends - starts
    chunks = int(lengths.sum()) // SPLIT_TOKENS
    if chunks < 2:
        return run(0, len(ids))
    return np.concatenate(query_pool.split_run(run, query_pool.chunk_bounds(lengths, len(ids), chunks)))


SPLIT_TOKENS = 4096  # document tokens per chunk a second core may take (~1 ms at 96 sub-codes, 16 query tokens)
