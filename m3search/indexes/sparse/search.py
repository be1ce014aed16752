"""numba query kernels: exact top-k with block-max pruning over the postings of `encode.py`.

Per query (document ids are split into blocks of R consecutive ids):
1. Upper-bound pass: ub[block] = sum over query tokens of w * block-max, read from the dense block-max
   rows of frequent tokens (a vectorised loop) and by decoding the entry headers of the others (their
   entry positions are kept for step 3).
2. Warm-up: the `warmup` blocks with the highest bounds are scored first, so the k-th best score
   (the threshold) is high before the main pass.
3. Main pass, in block order: a block is scored only if alpha * ub[block] >= threshold. The postings of
   the non-dense tokens are added first (their entries are at hand); if neither a document without
   them (bound: the dense tokens' block-maxes) nor one with them (its partial score plus that bound)
   can reach the threshold, the block is dropped without locating the dense tokens' entries.
   Otherwise the block is scored in full, in the canonical token order, into R accumulators, and
   every positive, non-deleted document is offered to a k-heap.

Exactness: scores and bounds are float32 sums over the query tokens in the same order, and rounding is
monotone, so ub[block] >= every score in the block in floating point too; a small slack on top guards
against a compiler contracting a multiply-add in one loop and not the other. A block is skipped only
when its bound is below the threshold, so with alpha = 1 the result equals scoring every document.
Ties are broken by the smaller document id, so results are deterministic.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from m3search.indexes.sparse.encode import GROUP_BLOCKS, read_varint

BOUND_SLACK = np.float32(1.0 + 2.0**-20)
# index of the lowest set bit of a byte, for walking offset bitmaps
_LOW_BIT = np.array([0] + [(v & -v).bit_length() - 1 for v in range(1, 256)], dtype=np.int64)


@njit(cache=True, nogil=True, inline="always")  # inline: read once per entry in the bound and scoring loops
def _entry_count(stream, pos, v):
    """(multi, postings count, position after the count byte) of the entry whose header value is v."""
    multi = v & 1
    if multi:
        return multi, np.int64(stream[pos]), pos + 1
    return multi, np.int64(1), pos


@njit(cache=True, nogil=True)
def _payload_bytes(multi, c, R):
    if multi == 0:
        return 1
    if c * 8 > R:
        return R // 8 + c
    return 2 * c


@njit(cache=True, nogil=True)
def _add_entry(stream, hp, end, R, w, acc):
    """acc[doc offset] += w * impact for the postings of the entry whose header starts at hp."""
    v, pos = read_varint(stream, hp, end)
    if v < 0 or pos + 2 > end:
        return
    multi, c, pos = _entry_count(stream, pos, v)
    mx = stream[pos]
    pos += 1
    if pos + _payload_bytes(multi, c, R) > end:
        return  # corrupt: never read past the token's span
    if multi == 0:
        acc[stream[pos] & (R - 1)] += w * np.float32(mx)
    elif c * 8 > R:
        ip = pos + R // 8
        stop = ip + c
        for byte_i in range(R // 8):
            byte = np.int64(stream[pos + byte_i])
            while byte != 0 and ip < stop:
                acc[(byte_i * 8 + _LOW_BIT[byte]) & (R - 1)] += w * np.float32(stream[ip])
                ip += 1
                byte &= byte - 1
    else:
        for q in range(c):
            acc[stream[pos + q] & (R - 1)] += w * np.float32(stream[pos + c + q])


@njit(cache=True, nogil=True)
def _worse(s1, i1, s2, i2):
    return s1 < s2 or (s1 == s2 and i1 > i2)


@njit(cache=True, nogil=True, inline="always")  # inline: runs for every document offered to a full heap
def _sift_down(hs, hi, size):
    """Restore the min-heap hs/hi[:size] after its root was replaced."""
    pos = 0
    while True:
        left = 2 * pos + 1
        if left >= size:
            break
        child = left
        if left + 1 < size and _worse(hs[left + 1], hi[left + 1], hs[left], hi[left]):
            child = left + 1
        if _worse(hs[child], hi[child], hs[pos], hi[pos]):
            hs[pos], hs[child] = hs[child], hs[pos]
            hi[pos], hi[child] = hi[child], hi[pos]
            pos = child
        else:
            break


@njit(cache=True, nogil=True)
def _heap_offer(hs, hi, size, k, s, i):
    """Offer (score s, id i) to the min-heap of the k best; return the new size."""
    if size < k:
        pos = size
        hs[pos] = s
        hi[pos] = i
        while pos > 0:
            parent = (pos - 1) >> 1
            if _worse(hs[pos], hi[pos], hs[parent], hi[parent]):
                hs[pos], hs[parent] = hs[parent], hs[pos]
                hi[pos], hi[parent] = hi[parent], hi[pos]
                pos = parent
            else:
                break
        return size + 1
    if not _worse(hs[0], hi[0], s, i):
        return size
    hs[0] = s
    hi[0] = i
    _sift_down(hs, hi, size)
    return size


@njit(cache=True, nogil=True)
def _locate_dense(stream, start, end, gp, b, R):
    """Header position of block b's entry in a dense token's span (-1 if absent)."""
    g = b // GROUP_BLOCKS
    pos = start + np.int64(gp[g])
    stop = start + np.int64(gp[g + 1])
    if stop > end:
        return -1
    prev = g * GROUP_BLOCKS - 1
    while pos < stop:
        hp = pos
        v, pos = read_varint(stream, pos, stop)
        if v < 0:
            return -1
        blk = prev + 1 + (v >> 1)
        if blk == b:
            return hp
        if blk > b:
            return -1
        multi, c, pos = _entry_count(stream, pos, v)
        pos += 1 + _payload_bytes(multi, c, R)
        prev = blk
    return -1


@njit(cache=True, nogil=True)
def _find_block(e_blk, lo, hi, b):
    """Index of b in the sorted e_blk[lo:hi], or -1."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if e_blk[mid] < b:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def prune_terms(qt, qw, term_max, beta):
    """Drop the query tokens with the smallest score bounds w * max impact while the dropped bounds add
    up to at most (1 - beta) of the total; keeps the tokens' order."""
    m = len(qt)
    if beta >= 1.0 or m <= 1:
        return qt, qw
    bound = np.empty(m, np.float64)
    for j in range(m):
        bound[j] = qw[j] * np.float64(term_max[qt[j]])
    budget = (1.0 - beta) * bound.sum()
    keep = np.ones(m, np.bool_)
    dropped = 0.0
    for j in np.argsort(bound):
        if dropped + bound[j] > budget:
            break
        dropped += bound[j]
        keep[j] = False
    return qt[keep], qw[keep]


@njit(cache=True, nogil=True)
def _upper_bounds(qt, qw, n_blocks, shift, term_ptr, term_dense, term_entries, stream, dense_max):
    """ub per block, and the (block, header position) of every entry of the non-dense query tokens,
    query token j's in e_blk/e_pos[e_lo[j]:e_lo[j + 1]]."""
    R = 1 << shift
    m = len(qt)
    ub = np.zeros(n_blocks, np.float32)
    n_sparse = 0
    for j in range(m):
        if term_dense[qt[j]] < 0:
            n_sparse += term_entries[qt[j]]
    e_blk = np.empty(n_sparse, np.int64)
    e_pos = np.empty(n_sparse, np.int64)
    e_lo = np.zeros(m + 1, np.int64)
    fill = 0
    for j in range(m):
        t = qt[j]
        w = qw[j]
        d = term_dense[t]
        if d >= 0:
            row = dense_max[d * n_blocks : (d + 1) * n_blocks]
            for b in range(n_blocks):
                ub[b] += w * np.float32(row[b])
        else:
            pos = term_ptr[t]
            end = term_ptr[t + 1]
            prev = -1
            stop_fill = e_lo[j] + term_entries[t]
            while pos < end and fill < stop_fill:
                hp = pos
                v, pos = read_varint(stream, pos, end)
                if v < 0:
                    break
                b = prev + 1 + (v >> 1)
                if b >= n_blocks or pos + 2 > end:
                    break
                multi, c, pos = _entry_count(stream, pos, v)
                ub[b] += w * np.float32(stream[pos])
                pos += 1 + _payload_bytes(multi, c, R)
                e_blk[fill] = b
                e_pos[fill] = hp
                fill += 1
                prev = b
        e_lo[j + 1] = fill
    return ub, e_blk, e_pos, e_lo


@njit(cache=True, nogil=True)
def _pop_sorted(hs, hi, size, out_s, out_i):
    """Empty the k-heap into out_s/out_i, best first."""
    for r in range(size - 1, -1, -1):
        out_s[r] = hs[0]
        out_i[r] = hi[0]
        size = r
        hs[0] = hs[size]
        hi[0] = hi[size]
        _sift_down(hs, hi, size)


@njit(cache=True, nogil=True)
def search_one(qt, qw, k, alpha, warmup, deleted, n_docs, shift, n_blocks,
               term_ptr, term_dense, term_entries, stream, dense_max, gptr, out_s, out_i, counters,
               floor=np.float32(-np.inf)):
    """Top-k of one query (local token indices qt, weights qw already times the impact step).

    floor: a score the caller already has k documents at or above (e.g. from other segments of the
    index): documents scoring below it are not returned and blocks whose bound is below it are skipped,
    as if the heap were already full at that threshold. -inf: none.
    counters (int64[4]) accumulates: blocks above the threshold, blocks fully scored, entries decoded
    for bounds, queries."""
    R = 1 << shift
    m = len(qt)
    n_groups1 = (n_blocks + GROUP_BLOCKS - 1) // GROUP_BLOCKS + 1
    has_del = len(deleted) > 0
    for r in range(k):
        out_s[r] = -np.inf
        out_i[r] = -1
    counters[3] += 1
    if m == 0 or k == 0 or n_docs == 0:
        return
    ub, e_blk, e_pos, e_lo = _upper_bounds(qt, qw, n_blocks, shift, term_ptr, term_dense, term_entries, stream,
                                           dense_max)
    counters[2] += len(e_blk)
    # rounding slack of a float32 sum of m terms taken in another order than the score's
    sum_slack = np.float32(1.0 + 2.0 * (m + 1) * 2.0**-24) * BOUND_SLACK
    hs = np.empty(k, np.float32)
    hi = np.empty(k, np.int64)
    size = 0
    acc = np.zeros(R, np.float32)
    hp_of = np.full(m, -1, np.int64)
    done = np.zeros(n_blocks, np.bool_)
    cursor = e_lo[:m].copy()
    n_warm = min(warmup, n_blocks)
    ws = np.empty(max(n_warm, 1), np.float32)
    wb = np.empty(max(n_warm, 1), np.int64)
    wsize = 0
    if n_warm > 0:
        for b in range(n_blocks):
            if ub[b] > 0 and (wsize < n_warm or ub[b] > ws[0]):
                wsize = _heap_offer(ws, wb, wsize, n_warm, ub[b], b)
    for phase in range(2):
        n_iter = wsize if phase == 0 else n_blocks
        for it in range(n_iter):
            b = wb[it] if phase == 0 else it
            if done[b] or ub[b] <= 0:
                continue
            thr = hs[0] if size == k else floor  # hs[0] >= floor: nothing below floor enters the heap
            full = thr == -np.inf
            if not full and alpha * ub[b] * BOUND_SLACK < thr:
                continue
            done[b] = True
            counters[0] += 1
            # the non-dense tokens' postings first: cheap, and often enough to rule the block out
            dub = np.float32(0.0)
            for j in range(m):
                t = qt[j]
                d = term_dense[t]
                if d >= 0:
                    dub += qw[j] * np.float32(dense_max[d * n_blocks + b])
                    hp_of[j] = -2  # located only if the block is fully scored
                    continue
                if phase == 0:
                    e = _find_block(e_blk, e_lo[j], e_lo[j + 1], b)
                else:
                    e = cursor[j]
                    while e < e_lo[j + 1] and e_blk[e] < b:
                        e += 1
                    cursor[j] = e
                hp = e_pos[e] if e < e_lo[j + 1] and e_blk[e] == b else -1
                hp_of[j] = hp
                if hp >= 0:
                    _add_entry(stream, hp, term_ptr[t + 1], R, qw[j], acc)
            if dub > 0 and not full:
                # documents without non-dense tokens score at most dub; the others at most acc + dub
                full = alpha * dub * sum_slack >= thr
                for o in range(R):
                    if full:
                        break
                    full = acc[o] > 0 and alpha * (acc[o] + dub) * sum_slack >= thr
                if not full:
                    acc[:] = 0
                    continue
            if dub > 0:
                # score in the canonical token order, so a document's score never depends on the path
                acc[:] = 0
                counters[1] += 1
                for j in range(m):
                    t = qt[j]
                    hp = hp_of[j]
                    if hp == -2:
                        d = term_dense[t]
                        if dense_max[d * n_blocks + b] == 0:
                            continue
                        hp = _locate_dense(stream, term_ptr[t], term_ptr[t + 1],
                                           gptr[d * n_groups1 : (d + 1) * n_groups1], b, R)
                    if hp >= 0:
                        _add_entry(stream, hp, term_ptr[t + 1], R, qw[j], acc)
            base = b << shift
            for o in range(R):
                s = acc[o]
                if s > 0:
                    acc[o] = 0
                    doc = base + o
                    if s < floor or (size == k and (s < hs[0] or (s == hs[0] and doc > hi[0]))):
                        continue
                    if doc < n_docs and not (has_del and deleted[doc]):
                        size = _heap_offer(hs, hi, size, k, s, doc)
    _pop_sorted(hs, hi, size, out_s, out_i)


@njit(cache=True, nogil=True)
def _search_range(q0, q1, qptr, qt_all, qw_all, term_max, k, alpha, beta, warmup, deleted, n_docs, shift,
                  n_blocks, term_ptr, term_dense, term_entries, stream, dense_max, gptr, out_s, out_i, counters,
                  floors):
    for qi in range(q0, q1):
        qt, qw = prune_terms(qt_all[qptr[qi] : qptr[qi + 1]], qw_all[qptr[qi] : qptr[qi + 1]], term_max, beta)
        search_one(qt, qw, k, alpha, warmup, deleted, n_docs, shift, n_blocks, term_ptr, term_dense,
                   term_entries, stream, dense_max, gptr, out_s[qi], out_i[qi], counters,
                   floors[qi] if len(floors) else np.float32(-np.inf))


@njit(cache=True, nogil=True)
def search_batch(qptr, qt_all, qw_all, term_max, k, alpha, beta, warmup, deleted, n_docs, shift, n_blocks,
                 term_ptr, term_dense, term_entries, stream, dense_max, gptr, out_s, out_i, counters,
                 floors=np.zeros(0, np.float32)):
    """All queries one after the other, on the calling thread; counters: (1, 4) int64; floors: (m,) float32
    per-query floors (see search_one) or empty."""
    _search_range(0, len(qptr) - 1, qptr, qt_all, qw_all, term_max, k, alpha, beta, warmup, deleted, n_docs,
                  shift, n_blocks, term_ptr, term_dense, term_entries, stream, dense_max, gptr, out_s, out_i,
                  counters[0], floors)


@njit(cache=True, nogil=True, parallel=True)
def search_batch_parallel(qptr, qt_all, qw_all, term_max, k, alpha, beta, warmup, deleted, n_docs,
                          shift, n_blocks, term_ptr, term_dense, term_entries, stream, dense_max, gptr,
                          out_s, out_i, counters, floors=np.zeros(0, np.float32)):
    """Queries split into len(counters) contiguous chunks run in parallel (throughput, not latency)."""
    n_q = len(qptr) - 1
    n_threads = len(counters)
    for c in prange(n_threads):
        q0 = n_q * c // n_threads
        q1 = n_q * (c + 1) // n_threads
        _search_range(q0, q1, qptr, qt_all, qw_all, term_max, k, alpha, beta, warmup, deleted, n_docs, shift,
                      n_blocks, term_ptr, term_dense, term_entries, stream, dense_max, gptr, out_s, out_i,
                      counters[c], floors)
