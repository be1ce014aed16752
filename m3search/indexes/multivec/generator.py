"""Candidate generation over token vectors: a PLAID-style centroid index on the residual codec's centroids.

Every token code of a residual codec (rpq/ropq) starts with the id of its coarse k-means centroid. A segment
keeps, per centroid, the sorted ids of the documents having a token there (CSR: `lists_offsets` (K + 1,),
`lists_docs` (nnz,) int32, memory-mapped). A query is answered in three stages, each cheaper per document
than the next:

1. probe: each query token i takes its `nprobe` best centroids; every document in those lists gets, for
   token i, the best such centroid score, and documents not reached by token i get the nprobe-th best score
   (an estimate of what it would have reached). Cost: the postings scanned.
2. centroid interaction: the best `pool` documents of stage 1 are scored by MaxSim with every token
   replaced by its centroid (2 bytes read per token, a table lookup per query token).
2.5 partial codes: the best `default_refine` (4 x candidates) of stage 2 are scored by MaxSim with every
   token reconstructed from its centroid and its first quarter of sub-codes (lookup tables): on the 20k x
   384-d synthetic benchmark a twelfth's top-256 of 4,096 kept 0.945 of the codes' top-10 where stage 2's
   kept 0.877; at 100k documents a quarter lifts the generator's R@10 from 0.718 to 0.774 (see
   `partial_subquantizers`).
3. the best `candidates` of stage 2.5 are scored by MaxSim from their full codes (the reader's bulk
   `score_pairs`), and the top k of those are returned.

With nprobe = K and pool = candidates >= the segment's live documents, every document reaches stage 3:
the result is the exhaustive top-k of the stored codes.
"""
from __future__ import annotations

import numba
import numpy as np

from m3search.indexes import query_pool
from m3search.indexes.multivec.maxsim import pad_lanes

LISTS_OFFSETS, LISTS_DOCS = "lists_offsets.arr", "lists_docs.arr"


def build_lists(cids: np.ndarray, lengths: np.ndarray, n_centroids: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (K + 1,) int64, docs (nnz,) int32): per centroid the sorted unique documents with a token
    assigned to it. cids: (T,) centroid id of every token, documents' tokens consecutive (lengths)."""
    n = len(lengths)
    doc = np.repeat(np.arange(n, dtype=np.int64), lengths)
    keys = np.unique(np.asarray(cids, np.int64) * max(n, 1) + doc)
    cent, docs = keys // max(n, 1), (keys % max(n, 1)).astype(np.int32)
    offsets = np.zeros(n_centroids + 1, np.int64)
    np.cumsum(np.bincount(cent, minlength=n_centroids), out=offsets[1:])
    return offsets, docs


def default_nprobe(n_centroids: int, n_docs: int | None = None) -> int:
    """Centroids probed per query token by default: K/512, at least 4 (8 at the 4096 centroids `coarse_k`
    'auto' gives from 200k sample tokens). PLAID probes 1-4 of 2^12-2^18 centroids; on the synthetic 10k x
    100-token benchmark at K=4096, 8 probes reached 0.94 of the exhaustive top-10 where 4 reached 0.88
    (bench/results/multivec_generator_profile.md). Stage 1's cost is nprobe x lq lists of ~nnz/K documents."""
    return int(min(n_centroids, max(4, round(n_centroids / 512))))


def default_candidates(k: int, n_live: int) -> int:
    """Documents scored from their full codes (stage 3, the expensive one): 2k, at least 256."""
    return int(min(n_live, max(2 * k, 256)))


POOL_SHARE, POOL_MAX = 0.2, 32768


def default_pool(candidates: int, n_live: int) -> int:
    """Documents scored by centroid interaction (stage 2, cheap: ~0.3 us per document, a few dozen distinct
    centroids each): a fifth of the live documents, at least 4 x candidates and 1024 (PLAID's ndocs for
    k=100), at most 32768. It grows with the index because stage 1's estimates don't get sharper while the
    documents sharing a query's centroids multiply (K is fixed when the codec is trained): at 20k and 50k
    synthetic documents a fixed 1,024 kept 0.92 / 0.87 of the codes' top-10, a fifth 0.99 / 0.99
    (bench/results/multivec_scaling_d384.md)."""
    return int(min(n_live, max(4 * candidates, 1024, min(POOL_MAX, round(POOL_SHARE * n_live)))))


def default_refine(candidates: int, pool: int) -> int:
    """Documents of stage 2 that stage 2.5 (partial codes) ranks: 4 x candidates, at most the pool."""
    return int(min(pool, 4 * candidates))


def partial_subquantizers(m: int) -> int:
    """Sub-codes stage 2.5 reads per token: a quarter of them, at most PARTIAL_MAX, at least 1 (24 of the
    default rpq96 codes at 384-d, 24 of rpq128's at 1024-d). On 100k synthetic documents x 100 tokens (K 4,096,
    100 queries): at 384-d (rpq96) 8 sub-codes R@10 0.718 at p50 14.4-16.5 ms, 24 sub-codes 0.774 at
    16.5-17.6 ms, all 96 also 0.774 (28 ms): from a quarter on, stage 2.5 ranks its documents as the full
    codes do. At 1024-d (rpq128) stage 2.5 costs as much as stage 3, and a quarter (32) gave R@10 0.830 at
    p50 19.5 ms where 24 gave 0.810 at 17.3 (bench/results/multivec_subcodes_d1024_s7.md): the cap keeps
    `multivec` within 20 ms at BGE-M3's size; `candidates` buys recall back at about the same rate."""
    return max(1, min(m // 4, PARTIAL_MAX))


PARTIAL_MAX = 24


def partial_tables(codec, q: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables of stage 2.5 (as `Codec.lut_tables`, fewer): the first `partial_subquantizers`
    sub-quantizers' inner products with the query tokens (the rest of the residual is left out), and the
    coarse centroids' (sims (lq, K), already computed for stages 1-2, transposed)."""
    cent = codec.arrays["pq_centroids"]  # (M, 256, dsub)
    mp, dsub = partial_subquantizers(cent.shape[0]), cent.shape[2]
    q = np.ascontiguousarray(q, dtype=np.float32)
    qr = q @ codec.arrays["rotation"].T if codec.spec["rotation"] else q
    qs = np.ascontiguousarray(qr[:, : mp * dsub].reshape(len(q), mp, dsub).transpose(1, 2, 0))
    return np.ascontiguousarray(np.matmul(cent[:mp], qs)), np.ascontiguousarray(sims.T, dtype=np.float32)


def centroid_sims(q: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """Stages 1-3's query-token x coarse-centroid products (lq, K). At 1024-d this is one query's largest
    product (~17 x 4,096 x 1,024 multiply-adds, ~2 ms on one core), so above SPLIT_MACS the centroids are
    cut into chunks an idle helper thread may take (numpy releases the GIL). Chunks equal one product up to
    float rounding, and depend only on the sizes, not on which thread takes them."""
    chunks = q.shape[0] * coarse.shape[0] * coarse.shape[1] // SPLIT_MACS
    if chunks < 2:
        return q @ coarse.T
    parts = query_pool.split_run(lambda lo, hi: q @ coarse[lo:hi].T,
                                 query_pool.chunk_bounds(None, coarse.shape[0], chunks))
    return np.concatenate(parts, axis=1)


SPLIT_MACS = 1 << 24  # multiply-adds per chunk of `centroid_sims` (~1 ms on one core)


@numba.njit(cache=True)
def _probe_kernel(lists_offsets, lists_docs, probed, probed_scores, missing, skip, n_docs):  # pragma: no cover
    # total[d] = sum_i (best probed score of token i in d, else missing[i]); -inf for documents never reached
    lq, npr = probed.shape
    total = np.zeros(n_docs, np.float32)
    stamp = np.full(n_docs, -1, np.int32)
    reached = np.zeros(n_docs, np.bool_)
    base = np.float32(0.0)
    for i in range(lq):
        base += missing[i]
        for j in range(npr):  # centroids in descending score: the first visit of a document is its best
            c = probed[i, j]
            s = probed_scores[i, j] - missing[i]
            for p in range(lists_offsets[c], lists_offsets[c + 1]):
                d = lists_docs[p]
                if stamp[d] != i:
                    stamp[d] = i
                    total[d] += s
                    reached[d] = True
    out = np.full(n_docs, -np.inf, np.float32)
    for d in range(n_docs):
        if reached[d] and not (skip.shape[0] and skip[d]):
            out[d] = total[d] + base
    return out


def probe_scores(lists_offsets: np.ndarray, lists_docs: np.ndarray, sims: np.ndarray, nprobe: int,
                 deleted: np.ndarray | None, n_docs: int) -> np.ndarray:
    """Stage 1 for one query: (n_docs,) float32 estimates, -inf for documents not reached or deleted.
    sims: (lq, K) query-token x centroid inner products."""
    nprobe = int(min(max(1, nprobe), sims.shape[1]))
    if nprobe < sims.shape[1]:
        part = np.argpartition(-sims, nprobe - 1, axis=1)[:, :nprobe]
    else:
        part = np.broadcast_to(np.arange(sims.shape[1]), sims.shape).copy()
    part_scores = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    probed = np.ascontiguousarray(np.take_along_axis(part, order, axis=1), dtype=np.int64)
    scores = np.ascontiguousarray(np.take_along_axis(part_scores, order, axis=1), dtype=np.float32)
    # a token's estimate where its probed centroids missed the document: as PLAID/XTR impute, the lowest
    # score it did retrieve (0 contribution when every centroid is probed: then nothing is missed)
    missing = scores[:, -1].copy()
    skip = np.zeros(0, np.bool_) if deleted is None else np.ascontiguousarray(deleted, dtype=np.bool_)
    return _probe_kernel(lists_offsets, lists_docs, probed, scores, missing, skip, n_docs)


@numba.njit(cache=True)
def _transpose_kernel(lists_offsets, lists_docs, n_docs):  # pragma: no cover - compiled
    counts = np.zeros(n_docs + 1, np.int64)
    for p in range(lists_docs.shape[0]):
        counts[lists_docs[p] + 1] += 1
    for d in range(n_docs):
        counts[d + 1] += counts[d]
    fill = counts[:-1].copy()
    cents = np.empty(lists_docs.shape[0], np.int32)
    for c in range(lists_offsets.shape[0] - 1):
        for p in range(lists_offsets[c], lists_offsets[c + 1]):
            d = lists_docs[p]
            cents[fill[d]] = c
            fill[d] += 1
    return counts, cents


def doc_centroids(lists_offsets: np.ndarray, lists_docs: np.ndarray, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """The lists transposed: (offsets (n + 1,) int64, centroids (nnz,) int32), per document the distinct
    centroids of its tokens, ascending. Stage 2 reads these instead of the token codes: a document's
    centroid MaxSim only depends on its set of centroids, which is smaller and contiguous."""
    return _transpose_kernel(np.asarray(lists_offsets, np.int64), np.asarray(lists_docs), int(n_docs))


@numba.njit(parallel=True, cache=True, nogil=True)
def _centroid_maxsim_kernel(doc_off, doc_cents, ids, sims_t, n_q):  # pragma: no cover - compiled
    # sims_t (K, lq): a token with centroid c scores sims_t[c, i] against query token i; the first n_q
    # columns are the query's tokens, the rest zero padding (maxsim.LANES)
    n = ids.shape[0]
    lq = sims_t.shape[1]
    out = np.zeros(n, np.float32)
    for j in numba.prange(n):
        d = ids[j]
        lo, hi = doc_off[d], doc_off[d + 1]
        if hi <= lo:
            continue
        best = sims_t[doc_cents[lo]].copy()
        for p in range(lo + 1, hi):
            row = sims_t[doc_cents[p]]
            for i in range(lq):
                best[i] = max(best[i], row[i])
        total = np.float32(0.0)
        for i in range(n_q):
            total += best[i]
        out[j] = total
    return out


def centroid_maxsim(doc_cents: tuple[np.ndarray, np.ndarray], ids: np.ndarray, sims: np.ndarray) -> np.ndarray:
    """Stage 2: (len(ids),) MaxSim sums with every document token replaced by its coarse centroid;
    doc_cents from `doc_centroids`."""
    if len(ids) == 0:
        return np.zeros(0, np.float32)
    ids, sims_t = np.asarray(ids, np.int64), pad_lanes(sims.T)
    parts = query_pool.split_run(
        lambda lo, hi: _centroid_maxsim_kernel(doc_cents[0], doc_cents[1], ids[lo:hi], sims_t, sims.shape[0]),
        query_pool.chunk_bounds(None, len(ids), len(ids) // SPLIT_DOCS))
    return np.concatenate(parts)


SPLIT_DOCS = 4096  # stage 2 documents per chunk a second core may take (~1 ms)


def top_ids(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """The k ids of highest score (ties: smaller id first), best first; -inf scores are never taken."""
    valid = np.isfinite(scores)
    scores, ids = scores[valid], ids[valid]
    if len(ids) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        # keep every id tied with the k-th score, so the tie-break below is by id, not by partition order
        kth = scores[part].min()
        part = np.nonzero(scores >= kth)[0]
        scores, ids = scores[part], ids[part]
    order = np.lexsort((ids, -scores))[:k]
    return ids[order]


@numba.njit(cache=True, inline="always")
def _order_key(u):  # pragma: no cover - compiled
    # a float32's bits u -> int64 key ordered like the floats, 0 for -inf, +inf and NaN (finite floats get
    # keys in (2^23 - 1, 2^32 - 2^23)); -0.0 and 0.0 are one value, as in `top_ids`. Branch-free: a quarter
    # to half the estimates are -inf, in no order, and a branch on them cost ~4 ms per 1M.
    u = np.int64(u)
    key = u ^ (np.int64(0x80000000) | ((u >> 31) * np.int64(0x7FFFFFFF)))  # sign set: ~u, else u + 2^31
    key += key == 0x7FFFFFFF  # -0.0 -> 0.0
    return key * ((key > 0x007FFFFF) & (key < 0xFF800000))


@numba.njit(cache=True)
def _top_positions_kernel(scores, k):  # pragma: no cover - compiled
    # radix select on the order keys: the top 16 bits' histogram finds the k-th key's bucket; one pass in
    # position order collects every key in or above that bucket; over those few, the low 16 bits' histogram
    # of the bucket finds the k-th key itself, and a last walk takes every key above it and the first ties
    # (ties go to smaller positions)
    n = scores.shape[0]
    bits = scores.view(np.uint32)
    high = np.zeros(65536, np.int64)
    for i in range(n):
        high[_order_key(bits[i]) >> 16] += 1
    n_valid = n - high[0]  # bucket 0 holds the invalid ones only
    k = min(k, n_valid)
    if k == 0:
        return np.zeros(0, np.int64)
    above, hb = 0, 65535
    while above + high[hb] < k:
        above += high[hb]
        hb -= 1
    cand = np.empty(above + high[hb] + 1, np.int64)
    j = 0
    for i in range(n):
        cand[j] = i
        j += (_order_key(bits[i]) >> 16) >= hb
    low = np.zeros(65536, np.int64)
    for c in range(j):
        key = _order_key(bits[cand[c]])
        if (key >> 16) == hb:
            low[key & 0xFFFF] += 1
    lb = 65535
    while above + low[lb] < k:
        above += low[lb]
        lb -= 1
    kth = (np.int64(hb) << 16) | lb
    ties = k - above
    out = np.empty(k, np.int64)
    m = 0
    for c in range(j):
        key = _order_key(bits[cand[c]])
        if key > kth or (key == kth and ties > 0):
            out[m] = cand[c]
            m += 1
            ties -= key == kth
    return out


def top_positions(scores: np.ndarray, k: int) -> np.ndarray:
    """The positions `top_ids(scores, np.arange(len(scores)), k)` takes, ascending instead of best first:
    the pool selection over every document's stage-1 estimate, by a radix select: two passes over the
    estimates, then work on the few in the k-th's bucket, instead of top_ids' compress, partition and sort
    (32,768 of 1M estimates: ~2 ms against ~12; `bench/multivec_stage_timing.py` times it in the query)."""
    if k <= 0:
        return np.zeros(0, np.int64)
    return _top_positions_kernel(np.ascontiguousarray(scores, dtype=np.float32), int(k))
