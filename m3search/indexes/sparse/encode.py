"""numba kernels that write a segment's postings and forward index in format version 2 (byte-aligned;
still read, and written only for tests and benchmarks: version 3, packed.py, is the format written now),
plus the inversion and block counting both versions use.

Postings layout (version 2) (one byte stream, one span per token id, `docs` split into blocks of `R` consecutive
local ids; see FORMAT.md beside this file for the full description):

    entry   := header [count] max payload        one per block holding the token
    header  := varint((gap << 1) | multi)        gap = block - previous block - 1
    count   := u8, only when multi (2..R)
    max     := u8, the largest impact code of the token in the block (the block-max)
    payload := offsets [impacts]                 impacts only when multi (a single's impact is `max`)
    offsets := one u8 per posting (doc - block * R), or an R/8-byte bitmap when count * 8 > R

Tokens present in at least `dense_fraction` of the blocks also get a dense row of block-maxes (u8 per
block, read by the upper-bound pass without decoding) and a u32 pointer per group of G blocks into their
span; their gaps restart at each group (the previous block is taken as group * G - 1).
"""
from __future__ import annotations

import numpy as np
from numba import njit

GROUP_BLOCKS = 8  # G: blocks per group pointer of a dense token


@njit(cache=True, nogil=True)
def varint_len(v):
    n = 1
    while v >= 128:
        v >>= 7
        n += 1
    return n


@njit(cache=True, nogil=True)
def put_varint(buf, pos, v):
    while v >= 128:
        buf[pos] = (v & 127) | 128
        v >>= 7
        pos += 1
    buf[pos] = v
    return pos + 1


@njit(cache=True, nogil=True)
def read_varint(stream, pos, end):
    """The inverse of put_varint: (value, next position); (-1, end) when the bytes run out before `end`
    or the value is too long (corrupt data never reads past `end`)."""
    v = np.int64(0)
    shift = 0
    while pos < end and shift < 57:
        byte = stream[pos]
        pos += 1
        v |= np.int64(byte & 127) << shift
        if byte < 128:
            return v, pos
        shift += 7
    return np.int64(-1), end


@njit(cache=True, nogil=True)
def invert(indptr, indices, codes, n_terms_total):
    """CSR (docs x tokens) -> per-token doc-ordered postings.

    Returns (term_ids, term_start, post_doc, post_code): the tokens present, sorted, and for token i its
    postings post_doc/post_code[term_start[i]:term_start[i + 1]].
    """
    counts = np.zeros(n_terms_total, np.int64)
    for p in range(len(indices)):
        counts[indices[p]] += 1
    local = np.full(n_terms_total, -1, np.int64)
    n_present = 0
    for t in range(n_terms_total):
        if counts[t] > 0:
            local[t] = n_present
            n_present += 1
    term_ids = np.empty(n_present, np.int32)
    term_start = np.zeros(n_present + 1, np.int64)
    for t in range(n_terms_total):
        if counts[t] > 0:
            term_ids[local[t]] = t
            term_start[local[t] + 1] = counts[t]
    for i in range(n_present):
        term_start[i + 1] += term_start[i]
    fill = term_start[:-1].copy()
    post_doc = np.empty(len(indices), np.int32)
    post_code = np.empty(len(indices), np.uint8)
    for d in range(len(indptr) - 1):
        for p in range(indptr[d], indptr[d + 1]):
            li = local[indices[p]]
            post_doc[fill[li]] = d
            post_code[fill[li]] = codes[p]
            fill[li] += 1
    return term_ids, term_start, post_doc, post_code


@njit(cache=True, nogil=True)
def count_blocks(term_start, post_doc, shift):
    """Blocks holding each token (its number of entries)."""
    n = len(term_start) - 1
    out = np.zeros(n, np.int64)
    for i in range(n):
        prev = -1
        for p in range(term_start[i], term_start[i + 1]):
            b = post_doc[p] >> shift
            if b != prev:
                out[i] += 1
                prev = b
    return out


@njit(cache=True, nogil=True)
def _encode_term(post_doc, post_code, lo, hi, shift, dense, out, pos, write, dmax, gptr):
    """Write (or, write=False, only measure) one token's entries from pos; return the end position."""
    R = 1 << shift
    start = pos
    prev = -1
    group = -1
    i = lo
    while i < hi:
        b = post_doc[i] >> shift
        j = i
        mx = 0
        while j < hi and (post_doc[j] >> shift) == b:
            if post_code[j] > mx:
                mx = post_code[j]
            j += 1
        c = j - i
        if dense:
            g = b // GROUP_BLOCKS
            if g != group:
                if write:
                    for gg in range(group + 1, g + 1):
                        gptr[gg] = pos - start
                group = g
                prev = g * GROUP_BLOCKS - 1
            if write:
                dmax[b] = mx
        multi = 1 if c > 1 else 0
        v = (b - prev - 1) * 2 + multi
        bitmap = multi == 1 and c * 8 > R
        if write:
            pos = put_varint(out, pos, v)
            if multi:
                out[pos] = c
                pos += 1
            out[pos] = mx
            pos += 1
            if bitmap:
                for q in range(R // 8):
                    out[pos + q] = 0
                for p in range(i, j):
                    o = post_doc[p] - (b << shift)
                    out[pos + (o >> 3)] |= np.uint8(1 << (o & 7))
                pos += R // 8
            else:
                for p in range(i, j):
                    out[pos] = post_doc[p] - (b << shift)
                    pos += 1
            if multi:
                for p in range(i, j):
                    out[pos] = post_code[p]
                    pos += 1
        else:
            pos += varint_len(v) + multi + 1 + (R // 8 if bitmap else c) + (c if multi else 0)
        prev = b
        i = j
    if dense and write:
        for gg in range(group + 1, len(gptr)):
            gptr[gg] = pos - start
    return pos


@njit(cache=True, nogil=True)
def dense_tables(is_dense, n_blocks, n_groups):
    """(term_dense (n,): each dense token's row, -1 for the others; dense_max (rows x n_blocks) uint8 block
    maxima; gptr (rows x (n_groups + 1)) uint32 group pointers), zeroed, for the encoders to fill."""
    n = len(is_dense)
    term_dense = np.full(n, -1, np.int32)
    rows = 0
    for i in range(n):
        if is_dense[i]:
            term_dense[i] = rows
            rows += 1
    return term_dense, np.zeros(rows * n_blocks, np.uint8), np.zeros(rows * (n_groups + 1), np.uint32)


@njit(cache=True, nogil=True)
def dense_rows(di, dense_max, gptr, n_blocks, n_groups):
    """Dense row di's block maxima and group pointers (empty slices for di = -1, a token that isn't dense)."""
    if di < 0:
        return dense_max[:0], gptr[:0]
    return dense_max[di * n_blocks : (di + 1) * n_blocks], gptr[di * (n_groups + 1) : (di + 1) * (n_groups + 1)]


@njit(cache=True, nogil=True)
def encode_postings(term_start, post_doc, post_code, shift, is_dense, n_blocks):
    """The postings stream, per-token spans, dense block-max rows and group pointers."""
    n = len(term_start) - 1
    n_groups = (n_blocks + GROUP_BLOCKS - 1) // GROUP_BLOCKS
    dummy_u8 = np.zeros(0, np.uint8)
    dummy_u32 = np.zeros(0, np.uint32)
    term_ptr = np.zeros(n + 1, np.int64)
    for i in range(n):
        size = _encode_term(post_doc, post_code, term_start[i], term_start[i + 1], shift, is_dense[i],
                            dummy_u8, 0, False, dummy_u8, dummy_u32)
        term_ptr[i + 1] = term_ptr[i] + size
    stream = np.empty(term_ptr[n], np.uint8)
    term_dense, dense_max, gptr = dense_tables(is_dense, n_blocks, n_groups)
    for i in range(n):
        dm, gp = dense_rows(term_dense[i], dense_max, gptr, n_blocks, n_groups)
        end = _encode_term(post_doc, post_code, term_start[i], term_start[i + 1], shift, is_dense[i],
                           stream, term_ptr[i], True, dm, gp)
        assert end == term_ptr[i + 1]
    return term_ptr, stream, term_dense, dense_max, gptr


@njit(cache=True, nogil=True)
def term_max_codes(term_start, post_code):
    n = len(term_start) - 1
    out = np.zeros(n, np.uint8)
    for i in range(n):
        for p in range(term_start[i], term_start[i + 1]):
            if post_code[p] > out[i]:
                out[i] = post_code[p]
    return out


@njit(cache=True, nogil=True)
def encode_forward_ids(indptr, indices):
    """Each document's sorted token ids as varint gaps; returns (byte pointers (n + 1,), stream)."""
    n = len(indptr) - 1
    bptr = np.zeros(n + 1, np.int64)
    for d in range(n):
        size = 0
        prev = -1
        for p in range(indptr[d], indptr[d + 1]):
            size += varint_len(indices[p] - prev - 1)
            prev = indices[p]
        bptr[d + 1] = bptr[d] + size
    out = np.empty(bptr[n], np.uint8)
    for d in range(n):
        pos = bptr[d]
        prev = -1
        for p in range(indptr[d], indptr[d + 1]):
            pos = put_varint(out, pos, indices[p] - prev - 1)
            prev = indices[p]
    return bptr, out
