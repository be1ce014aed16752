"""numba query kernels over bit-packed postings (segment format versions 3 and 4, `packed.py`).

The algorithm is search.py's, unchanged (block upper bounds, warm-up, block-order main pass with the
non-dense tokens' postings first, exact top-k with deterministic ties); only reading an entry differs:
the bound pass decodes each non-dense token's chunks (version 3: frame of reference; version 4: Rice-
coded gaps and count exceptions, `_chunk_v4`) into (block, bit position, count, max) per entry, and a
dense token's entry is found from its group pointer, the group's counts and the block-maxes of its
dense row. Scores are the same float32 sums in the same order as version 2's.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from m3search.indexes.sparse.packed import (
    CHUNK,
    CHUNK_HEADER_BITS,
    EXC_INDEX_BITS,
    GROUP_BLOCKS,
    GROUP_HEADER_BITS,
    add_payload,
    get_bits,
    low_bit_index,
    payload_bits,
    RICE_HEADER_BITS,
    trailing_zeros,
)
from m3search.indexes.sparse.search import BOUND_SLACK, _find_block, _heap_offer, _pop_sorted, prune_terms


@njit(cache=True, nogil=True)
def _chunk_v4(words, pos, end, n, prev, n_blocks, shift, w, ub, e_blk, e_pos, e_cm, fill, cnt, blk):
    """Decode one version-4 chunk of n entries at bit pos into the entry arrays from `fill` and add its
    block-maxes to ub; returns (next chunk's pos, last block, fill, ok). cnt, blk: scratch of CHUNK."""
    R = np.int64(1) << shift
    if pos + RICE_HEADER_BITS > end:
        return pos, prev, fill, False
    h = get_bits(words, pos, RICE_HEADER_BITS)
    k = h & 31
    wx = (h >> 5) & 15
    wm = h >> 9
    if wx > 8 or wm > 8:
        return pos, prev, fill, False
    p = pos + RICE_HEADER_BITS
    for e in range(n):
        cnt[e] = 1
    if wx > 0:
        wv = wx - 1
        listed = get_bits(words, p, 1)
        p += 1
        if listed:
            if p + EXC_INDEX_BITS > end:
                return pos, prev, fill, False
            nx = get_bits(words, p, EXC_INDEX_BITS) + 1
            p += EXC_INDEX_BITS
            vp = p + EXC_INDEX_BITS * nx
            if nx > n or vp + nx * wv > end:
                return pos, prev, fill, False
            for i in range(nx):
                e = get_bits(words, p + EXC_INDEX_BITS * i, EXC_INDEX_BITS)
                if e >= n:
                    return pos, prev, fill, False
                cnt[e] = get_bits(words, vp + i * wv, wv) + 2
        else:  # an n-bit map of the entries holding more than one posting
            vp = p + n
            nx = 0
            for wd in range((n + 31) >> 5):
                bits = get_bits(words, p + 32 * wd, min(np.int64(32), n - 32 * wd))
                while bits != 0:
                    if vp + (nx + 1) * wv > end:
                        return pos, prev, fill, False
                    cnt[wd * 32 + low_bit_index(bits)] = get_bits(words, vp + nx * wv, wv) + 2
                    nx += 1
                    bits &= bits - 1
        p = vp + nx * wv
    pm = p
    p += n * wm
    # Rice-coded block gaps: a run of zero bits (the high part), a one, k low bits
    limit = n_blocks >> k  # a larger high part is a block past the end (and could overflow)
    b = prev
    # split Rice codes: n low parts at k bits, then the high parts in unary (zeros, then a one)
    lp = p
    hp = p + n * k
    if hp > end:
        return pos, prev, fill, False
    b = prev
    e = 0
    last = np.int64(-1)  # bit index (from hp) of the previous high part's one
    wd = np.int64(0)
    while e < n:
        if hp + 32 * wd >= end or 32 * wd - last - 1 > limit:
            return pos, prev, fill, False
        bits = get_bits(words, hp + 32 * wd, 32)
        while bits != 0 and e < n:
            at = 32 * wd + trailing_zeros(bits)
            q = at - last - 1
            if q > limit or hp + at >= end:
                return pos, prev, fill, False
            last = at
            b = b + 1 + ((q << k) | get_bits(words, lp + e * k, k))
            if b >= n_blocks:
                return pos, prev, fill, False
            blk[e] = b
            bits &= bits - 1
            e += 1
        wd += 1
    p = hp + last + 1
    pp = p
    for e in range(n):
        c = cnt[e]
        mx = get_bits(words, pm + e * wm, wm) + 1
        if c > R or mx > 255:
            return pos, prev, fill, False
        pb = payload_bits(c, mx, shift)
        if pp + pb > end:
            return pos, prev, fill, False
        b = blk[e]
        ub[b] += w * np.float32(mx)
        e_blk[fill] = b
        e_pos[fill] = pp
        e_cm[fill] = (c << 8) | mx
        fill += 1
        pp += pb
    return pp, blk[n - 1], fill, True


@njit(cache=True, nogil=True)
def _upper_bounds(qt, qw, n_blocks, shift, term_ptr, term_dense, term_entries, words, dense_max, rice):
    """ub per block, and (block, payload bit position, count << 8 | max) of every entry of the non-dense query
    tokens, query token j's at [e_lo[j], e_lo[j + 1]). Damaged data ends a token's decoding early and
    is never read outside the token's span."""
    R = 1 << shift
    m = len(qt)
    ub = np.zeros(n_blocks, np.float32)
    n_sparse = 0
    for j in range(m):
        if term_dense[qt[j]] < 0:
            n_sparse += term_entries[qt[j]]
    e_blk = np.empty(n_sparse, np.int32)
    e_pos = np.empty(n_sparse, np.int64)
    e_cm = np.empty(n_sparse, np.int32)  # count << 8 | max
    e_lo = np.zeros(m + 1, np.int64)
    cnt = np.empty(CHUNK, np.int64)
    blk = np.empty(CHUNK, np.int64)
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
            left = np.int64(term_entries[t])
            ok = True
            while left > 0 and ok:
                if rice:
                    n = min(np.int64(CHUNK), left)
                    pos, prev, fill, ok = _chunk_v4(words, pos, end, n, prev, n_blocks, shift, w, ub, e_blk, e_pos,
                                                    e_cm, fill, cnt, blk)
                    left -= n
                    continue
                if pos + CHUNK_HEADER_BITS > end:
                    break
                h = get_bits(words, pos, CHUNK_HEADER_BITS)
                wg = h & 63
                wc = (h >> 6) & 7
                wm = h >> 9
                n = min(np.int64(CHUNK), left)
                pg = pos + CHUNK_HEADER_BITS
                pc = pg + n * wg
                pm = pc + n * wc
                pp = pm + n * wm
                if wg > 32 or wm > 8 or pp > end:
                    break
                for e in range(n):
                    b = prev + 1 + get_bits(words, pg, wg)
                    c = get_bits(words, pc, wc) + 1
                    mx = get_bits(words, pm, wm) + 1
                    pg += wg
                    pc += wc
                    pm += wm
                    if b >= n_blocks or c > R or mx > 255:
                        ok = False
                        break
                    pb = payload_bits(c, mx, shift)
                    if pp + pb > end:
                        ok = False
                        break
                    ub[b] += w * np.float32(mx)
                    e_blk[fill] = b
                    e_pos[fill] = pp
                    e_cm[fill] = (c << 8) | mx
                    fill += 1
                    pp += pb
                    prev = b
                pos = pp
                left -= n
        e_lo[j + 1] = fill
    return ub, e_blk[:fill], e_pos, e_cm, e_lo


@njit(cache=True, nogil=True)
def _locate_dense(words, start, end, gp, dense_max, row, b, shift, n_blocks):
    """(payload bit position, count) of block b's entry in a dense token's span ((-1, 0) if absent)."""
    R = 1 << shift
    g = b // GROUP_BLOCKS
    pos = start + np.int64(gp[g])
    stop = start + np.int64(gp[g + 1])
    if stop > end or pos + GROUP_HEADER_BITS > stop or dense_max[row + b] == 0:
        return np.int64(-1), np.int64(0)
    wc = get_bits(words, pos, GROUP_HEADER_BITS)
    cp = pos + GROUP_HEADER_BITS
    g0 = g * GROUP_BLOCKS
    g1 = min(g0 + GROUP_BLOCKS, n_blocks)
    # one walk: the payload bits of the present blocks before b (their counts at cp + index * wc), then
    # the present blocks from b on, for where the counts end and the payloads begin
    before = np.int64(0)
    skip = np.int64(0)
    for blk in range(g0, b):
        mx = np.int64(dense_max[row + blk])
        if mx != 0:
            c = get_bits(words, cp + before * wc, wc) + 1
            if c > R:
                return np.int64(-1), np.int64(0)
            skip += payload_bits(c, mx, shift)
            before += 1
    n_present = before
    for blk in range(b, g1):
        if dense_max[row + blk] != 0:
            n_present += 1
    c = get_bits(words, cp + before * wc, wc) + 1
    pp = cp + n_present * wc + skip
    if c > R or pp + payload_bits(c, np.int64(dense_max[row + b]), shift) > stop:
        return np.int64(-1), np.int64(0)
    return pp, c


@njit(cache=True, nogil=True)
def search_one(qt, qw, k, alpha, warmup, deleted, n_docs, shift, n_blocks,
               term_ptr, term_dense, term_entries, stream, dense_max, gptr, out_s, out_i, counters,
               floor=np.float32(-np.inf), rice=True):
    """Top-k of one query (local token indices qt, weights qw already times the impact step); stream is
    the packed uint32 word stream.

    floor: a score the caller already has k documents at or above (e.g. from other segments of the
    index): documents scoring below it are not returned and blocks whose bound is below it are skipped,
    as if the heap were already full at that threshold. -inf: none. rice: version 4's non-dense chunks
    (False: version 3's).
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
    ub, e_blk, e_pos, e_cm, e_lo = _upper_bounds(qt, qw, n_blocks, shift, term_ptr, term_dense,
                                                         term_entries, stream, dense_max, rice)
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
                if e < e_lo[j + 1] and e_blk[e] == b:
                    hp_of[j] = e
                    add_payload(stream, e_pos[e], np.int64(e_cm[e] >> 8), np.int64(e_cm[e] & 255), shift, qw[j], acc)
                else:
                    hp_of[j] = -1
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
                    e = hp_of[j]
                    if e == -2:
                        d = term_dense[t]
                        mx = np.int64(dense_max[d * n_blocks + b])
                        if mx == 0:
                            continue
                        pp, c = _locate_dense(stream, term_ptr[t], term_ptr[t + 1],
                                              gptr[d * n_groups1 : (d + 1) * n_groups1], dense_max, d * n_blocks,
                                              b, shift, n_blocks)
                        if pp >= 0:
                            add_payload(stream, pp, c, mx, shift, qw[j], acc)
                    elif e >= 0:
                        add_payload(stream, e_pos[e], np.int64(e_cm[e] >> 8), np.int64(e_cm[e] & 255), shift, qw[j], acc)
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
                  floors, rice):
    for qi in range(q0, q1):
        qt, qw = prune_terms(qt_all[qptr[qi] : qptr[qi + 1]], qw_all[qptr[qi] : qptr[qi + 1]], term_max, beta)
        search_one(qt, qw, k, alpha, warmup, deleted, n_docs, shift, n_blocks, term_ptr, term_dense,
                   term_entries, stream, dense_max, gptr, out_s[qi], out_i[qi], counters,
                   floors[qi] if len(floors) else np.float32(-np.inf), rice)


@njit(cache=True, nogil=True)
def search_batch(qptr, qt_all, qw_all, term_max, k, alpha, beta, warmup, deleted, n_docs, shift, n_blocks,
                 term_ptr, term_dense, term_entries, stream, dense_max, gptr, out_s, out_i, counters,
                 floors=np.zeros(0, np.float32), rice=True):
    """All queries one after the other, on the calling thread; counters: (1, 4) int64; floors: (m,) float32
    per-query floors (see search_one) or empty; rice: version 4 (False: version 3)."""
    _search_range(0, len(qptr) - 1, qptr, qt_all, qw_all, term_max, k, alpha, beta, warmup, deleted, n_docs,
                  shift, n_blocks, term_ptr, term_dense, term_entries, stream, dense_max, gptr, out_s, out_i,
                  counters[0], floors, rice)


@njit(cache=True, nogil=True, parallel=True)
def search_batch_parallel(qptr, qt_all, qw_all, term_max, k, alpha, beta, warmup, deleted, n_docs,
                          shift, n_blocks, term_ptr, term_dense, term_entries, stream, dense_max, gptr,
                          out_s, out_i, counters, floors=np.zeros(0, np.float32), rice=True):
    """Queries split into len(counters) contiguous chunks run in parallel (throughput, not latency)."""
    n_q = len(qptr) - 1
    n_threads = len(counters)
    for c in prange(n_threads):
        q0 = n_q * c // n_threads
        q1 = n_q * (c + 1) // n_threads
        _search_range(q0, q1, qptr, qt_all, qw_all, term_max, k, alpha, beta, warmup, deleted, n_docs, shift,
                      n_blocks, term_ptr, term_dense, term_entries, stream, dense_max, gptr, out_s, out_i,
                      counters[c], floors, rice)
