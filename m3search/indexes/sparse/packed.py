"""Bit-packed postings and forward index (segment format versions 3 and 4): numba writers and bit readers.

Streams are little-endian uint32 words read as one bit string (bit i of the stream is bit i % 32 of word
i // 32), followed by two zero words of padding so that a read of up to 32 bits at any position inside the
stream loads two whole words. Values are stored at fixed widths (frame of reference): one width per chunk
of up to CHUNK entries, per group of dense blocks, or per document, and each entry's payload width
follows from values already decoded. Version 4 codes the non-dense tokens' block gaps with Rice codes
(low parts, then unary high parts) and their counts as exceptions. See FORMAT.md beside this file.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from m3search.indexes.sparse.encode import dense_rows, dense_tables

CHUNK = 128  # entries per frame-of-reference chunk of a non-dense token
CHUNK_HEADER_BITS = 13  # version 3: gap width (6 bits) | count-1 width (3) | max-1 width (4)
# version 4: Rice parameter of the gaps (5 bits) | exception value width + 1 (4) | max-1 width (4)
RICE_HEADER_BITS = 13
EXC_INDEX_BITS = 7  # an entry's index within its chunk (CHUNK = 2^7)
GROUP_HEADER_BITS = 3  # count-1 width of a dense token's group
PAD_WORDS = 2
# blocks per group pointer of a dense token (version 2 has 8: a pointer costs 32 bits per group, and
# finding an entry walks at most this many block-maxes and counts)
GROUP_BLOCKS = 16
# BITLEN[v]: bits needed for v (0 for 0), for v in 0..255
BITLEN = np.array([int(v).bit_length() for v in range(256)], dtype=np.int64)
_DEBRUIJN = np.array([0, 1, 28, 2, 29, 14, 24, 3, 30, 22, 20, 15, 25, 17, 4, 8, 31, 27, 13, 23, 21, 19, 16, 7,
                      26, 12, 18, 6, 11, 5, 10, 9], dtype=np.int64)


@njit(cache=True, nogil=True, inline="always")
def get_bits(words, p, w):
    """w (0..32) bits at bit position p."""
    i = p >> 5
    v = (np.int64(words[i]) | (np.int64(words[i + 1]) << 32)) >> (p & 31)
    return v & ((np.int64(1) << w) - 1)


@intrinsic
def trailing_zeros(typingctx, v):
    """Number of trailing zero bits of an integer (its width for 0): one instruction (LLVM cttz)."""
    if not isinstance(v, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        tz = builder.cttz(args[0], ir.Constant(ir.IntType(1), 0))
        return context.cast(builder, tz, signature.args[0], types.int64)

    return types.int64(v), codegen


@njit(cache=True, nogil=True, inline="always")
def low_bit_index(v):
    """Index of the lowest set bit of a non-zero 32-bit value."""
    return _DEBRUIJN[(((v & -v) * 0x077CB531) & 0xFFFFFFFF) >> 27]


@njit(cache=True, nogil=True)
def put_bits(words, p, v, w):
    """Store the w (0..32) low bits of v at bit position p of a zeroed stream; return p + w."""
    if w == 0:
        return p
    i = p >> 5
    s = p & 31
    v = np.int64(v) & ((np.int64(1) << w) - 1)
    words[i] = words[i] | ((v << s) & 0xFFFFFFFF)
    if s + w > 32:
        words[i + 1] = words[i + 1] | (v >> (32 - s))
    return p + w


@njit(cache=True, nogil=True)
def bitlen(v):
    n = 0
    while v > 0:
        v >>= 1
        n += 1
    return n


@njit(cache=True, nogil=True, inline="always")
def payload_bits(c, mx, shift):
    """Bits of an entry's payload: offsets (shift bits each, or an R-bit bitmap when that is smaller),
    then, for c > 1, each impact code - 1 at the width of max - 1."""
    R = np.int64(1) << shift
    if c == 1:
        return np.int64(shift)
    ob = c * shift
    if ob > R:
        ob = R
    return ob + c * BITLEN[mx - 1]


@njit(cache=True, nogil=True)
def add_payload(words, pos, c, mx, shift, w, acc):
    """acc[doc offset] += w * impact for the c postings of the payload at bit pos (maximum impact mx)."""
    R = np.int64(1) << shift
    mask = R - 1
    if c == 1:
        acc[get_bits(words, pos, shift) & mask] += w * np.float32(mx)
        return
    wi = BITLEN[mx - 1]
    if c * shift <= R:
        ip = pos + c * shift
        for q in range(c):
            o = get_bits(words, pos + q * shift, shift)
            acc[o & mask] += w * np.float32(get_bits(words, ip + q * wi, wi) + 1)
        return
    ip = pos + R
    stop = ip + c * wi
    for wd in range((R + 31) >> 5):
        bits = get_bits(words, pos + 32 * wd, min(np.int64(32), R - 32 * wd))
        while bits != 0 and ip < stop:
            o = wd * 32 + low_bit_index(bits)
            acc[o & mask] += w * np.float32(get_bits(words, ip, wi) + 1)
            ip += wi
            bits &= bits - 1


@njit(cache=True, nogil=True)
def _write_payload(post_doc, post_code, i, j, b, mx, shift, words, pos, write):
    c = j - i
    if not write:
        return pos + payload_bits(c, mx, shift)
    R = np.int64(1) << shift
    base = np.int64(b) << shift
    if c == 1:
        return put_bits(words, pos, post_doc[i] - base, shift)
    if c * shift <= R:
        for p in range(i, j):
            pos = put_bits(words, pos, post_doc[p] - base, shift)
    else:
        for p in range(i, j):
            put_bits(words, pos + post_doc[p] - base, 1, 1)
        pos += R
    wi = BITLEN[mx - 1]
    for p in range(i, j):
        pos = put_bits(words, pos, np.int64(post_code[p]) - 1, wi)
    return pos


@njit(cache=True, nogil=True)
def _entries(post_doc, post_code, lo, hi, shift, e_b, e_c, e_m, e_i):
    """Split one token's postings into entries (one per block holding it); returns their number."""
    n = 0
    i = lo
    while i < hi:
        b = post_doc[i] >> shift
        j = i
        mx = 0
        while j < hi and (post_doc[j] >> shift) == b:
            if post_code[j] > mx:
                mx = post_code[j]
            j += 1
        e_b[n] = b
        e_c[n] = j - i
        e_m[n] = mx
        e_i[n] = i
        n += 1
        i = j
    e_i[n] = hi
    return n


@njit(cache=True, nogil=True)
def rice_param(e_b, k0, k1, prev):
    """The Rice parameter (0..31) that codes the chunk's block gaps in the fewest bits, searched near the
    mean gap's width (the best one for geometric gaps is about log2(mean * ln 2))."""
    total = np.int64(0)
    p = prev
    for e in range(k0, k1):
        total += e_b[e] - p - 1
        p = e_b[e]
    c = bitlen(total // (k1 - k0))
    best_k = 0
    best = np.int64(-1)
    for k in range(max(0, c - 3), min(31, c + 1) + 1):
        bits = np.int64(0)
        p = prev
        for e in range(k0, k1):
            bits += (e_b[e] - p - 1) >> k
            p = e_b[e]
        bits += (k1 - k0) * (1 + k)
        if best < 0 or bits < best:
            best = bits
            best_k = k
    return best_k, best


@njit(cache=True, nogil=True)
def _exceptions(e_c, k0, k1):
    """(exception value width + 1 (0: every entry holds one posting), exception count, whether they are
    listed by index (else by an n-bit map), their bits)."""
    n = k1 - k0
    nx = 0
    top = 0
    for e in range(k0, k1):
        if e_c[e] > 1:
            nx += 1
            top = max(top, e_c[e] - 2)
    if nx == 0:
        return 0, 0, False, np.int64(0)
    wx = 1 + bitlen(top)
    listed = EXC_INDEX_BITS * (nx + 1) < n
    where = EXC_INDEX_BITS * (nx + 1) if listed else n
    return wx, nx, listed, np.int64(1 + where + nx * (wx - 1))


@njit(cache=True, nogil=True)
def _write_chunk_v4(e_b, e_c, e_m, k0, k1, prev, words, pos, write):
    """Version 4 chunk fields before the payloads (header, count exceptions, maxes, Rice-coded gaps)."""
    n = k1 - k0
    wm = 0
    for e in range(k0, k1):
        wm = max(wm, bitlen(e_m[e] - 1))
    k, gap_bits = rice_param(e_b, k0, k1, prev)
    wx, nx, listed, x_bits = _exceptions(e_c, k0, k1)
    if not write:
        return pos + RICE_HEADER_BITS + x_bits + n * wm + gap_bits
    pos = put_bits(words, pos, k | (wx << 5) | (wm << 9), RICE_HEADER_BITS)
    if wx > 0:
        pos = put_bits(words, pos, 1 if listed else 0, 1)
        if listed:
            pos = put_bits(words, pos, nx - 1, EXC_INDEX_BITS)
            for e in range(k0, k1):
                if e_c[e] > 1:
                    pos = put_bits(words, pos, e - k0, EXC_INDEX_BITS)
        else:
            for e in range(k0, k1):
                if e_c[e] > 1:
                    put_bits(words, pos + e - k0, 1, 1)
            pos += n
        for e in range(k0, k1):
            if e_c[e] > 1:
                pos = put_bits(words, pos, e_c[e] - 2, wx - 1)
    for e in range(k0, k1):
        pos = put_bits(words, pos, e_m[e] - 1, wm)
    # Rice codes of the gaps, split: the k low bits of each, then the high parts in unary (gap >> k zero
    # bits and a one each), so a reader finds the high parts by walking set bits instead of bit by bit
    p = prev
    for e in range(k0, k1):
        pos = put_bits(words, pos, e_b[e] - p - 1, k)
        p = e_b[e]
    p = prev
    for e in range(k0, k1):
        pos += (e_b[e] - p - 1) >> k
        pos = put_bits(words, pos, 1, 1)
        p = e_b[e]
    return pos


@njit(cache=True, nogil=True)
def _encode_term(post_doc, post_code, lo, hi, shift, dense, n_blocks, words, pos, write, dmax, gptr,
                 e_b, e_c, e_m, e_i, version):
    """Write (or, write=False, only measure) one token's span from bit pos; return its end."""
    start = pos
    n = _entries(post_doc, post_code, lo, hi, shift, e_b, e_c, e_m, e_i)
    if not dense:
        prev = -1
        for k0 in range(0, n, CHUNK):
            k1 = min(k0 + CHUNK, n)
            if version >= 4:
                pos = _write_chunk_v4(e_b, e_c, e_m, k0, k1, prev, words, pos, write)
                prev = e_b[k1 - 1]
            else:
                wg = 0
                wc = 0
                wm = 0
                p = prev
                for e in range(k0, k1):
                    wg = max(wg, bitlen(e_b[e] - p - 1))
                    wc = max(wc, bitlen(e_c[e] - 1))
                    wm = max(wm, bitlen(e_m[e] - 1))
                    p = e_b[e]
                if write:
                    pos = put_bits(words, pos, wg | (wc << 6) | (wm << 9), CHUNK_HEADER_BITS)
                    for e in range(k0, k1):
                        pos = put_bits(words, pos, e_b[e] - prev - 1, wg)
                        prev = e_b[e]
                    for e in range(k0, k1):
                        pos = put_bits(words, pos, e_c[e] - 1, wc)
                    for e in range(k0, k1):
                        pos = put_bits(words, pos, e_m[e] - 1, wm)
                else:
                    pos += CHUNK_HEADER_BITS + (k1 - k0) * (wg + wc + wm)
                    prev = p
            for e in range(k0, k1):
                pos = _write_payload(post_doc, post_code, e_i[e], e_i[e + 1], e_b[e], e_m[e], shift, words, pos,
                                     write)
        return pos
    n_groups = (n_blocks + GROUP_BLOCKS - 1) // GROUP_BLOCKS
    e = 0
    for g in range(n_groups):
        if write:
            gptr[g] = pos - start
        e1 = e
        wc = 0
        while e1 < n and e_b[e1] // GROUP_BLOCKS == g:
            wc = max(wc, bitlen(e_c[e1] - 1))
            e1 += 1
        if e1 == e:
            continue
        if write:
            pos = put_bits(words, pos, wc, GROUP_HEADER_BITS)
            for q in range(e, e1):
                pos = put_bits(words, pos, e_c[q] - 1, wc)
                dmax[e_b[q]] = e_m[q]
        else:
            pos += GROUP_HEADER_BITS + (e1 - e) * wc
        for q in range(e, e1):
            pos = _write_payload(post_doc, post_code, e_i[q], e_i[q + 1], e_b[q], e_m[q], shift, words, pos, write)
        e = e1
    if write:
        gptr[n_groups] = pos - start
    return pos


@njit(cache=True, nogil=True)
def encode_postings(term_start, post_doc, post_code, entries, shift, is_dense, n_blocks, version=4):
    """(term_ptr in bits (n + 1,), uint32 stream, term_dense, dense_max rows, group bit pointers) of segment
    format `version` (3 or 4: they differ in the non-dense tokens' chunks)."""
    n = len(term_start) - 1
    n_groups = (n_blocks + GROUP_BLOCKS - 1) // GROUP_BLOCKS
    most = 1
    for i in range(n):
        most = max(most, entries[i])
    e_b = np.empty(most, np.int64)
    e_c = np.empty(most, np.int64)
    e_m = np.empty(most, np.int64)
    e_i = np.empty(most + 1, np.int64)
    dummy_u8 = np.zeros(0, np.uint8)
    dummy_u32 = np.zeros(0, np.uint32)
    dummy_w = np.zeros(0, np.uint32)
    term_ptr = np.zeros(n + 1, np.int64)
    for i in range(n):
        end = _encode_term(post_doc, post_code, term_start[i], term_start[i + 1], shift, is_dense[i], n_blocks,
                           dummy_w, term_ptr[i], False, dummy_u8, dummy_u32, e_b, e_c, e_m, e_i, version)
        term_ptr[i + 1] = end
        if is_dense[i] and end - term_ptr[i] >= (np.int64(1) << 32):
            raise ValueError("a dense token's postings exceed 2^32 bits: split the segment")
    words = np.zeros((term_ptr[n] + 31) // 32 + PAD_WORDS, np.uint32)
    term_dense, dense_max, gptr = dense_tables(is_dense, n_blocks, n_groups)
    for i in range(n):
        dm, gp = dense_rows(term_dense[i], dense_max, gptr, n_blocks, n_groups)
        end = _encode_term(post_doc, post_code, term_start[i], term_start[i + 1], shift, is_dense[i], n_blocks,
                           words, term_ptr[i], True, dm, gp, e_b, e_c, e_m, e_i, version)
        assert end == term_ptr[i + 1]
    return term_ptr, words, term_dense, dense_max, gptr


@njit(cache=True, nogil=True)
def encode_forward_ids(indptr, indices):
    """Each document's sorted token ids as gaps (the first from -1) at one width per document.

    Returns (width per document (uint8), uint32 stream); document d's bits start at the sum of
    width * length of the documents before it (forward_bit_pointers)."""
    n = len(indptr) - 1
    width = np.zeros(n, np.uint8)
    total = np.int64(0)
    for d in range(n):
        w = 0
        prev = -1
        for p in range(indptr[d], indptr[d + 1]):
            w = max(w, bitlen(indices[p] - prev - 1))
            prev = indices[p]
        width[d] = w
        total += np.int64(w) * (indptr[d + 1] - indptr[d])
    words = np.zeros((total + 31) // 32 + PAD_WORDS, np.uint32)
    pos = np.int64(0)
    for d in range(n):
        prev = -1
        w = np.int64(width[d])
        for p in range(indptr[d], indptr[d + 1]):
            pos = put_bits(words, pos, indices[p] - prev - 1, w)
            prev = indices[p]
    return width, words


def forward_bit_pointers(wptr: np.ndarray, width: np.ndarray) -> np.ndarray:
    """(n + 1,) int64 bit offsets of each document's token ids in the forward stream."""
    out = np.zeros(len(width) + 1, np.int64)
    np.cumsum(np.diff(wptr) * width.astype(np.int64), out=out[1:])
    return out


def stream_words(n_bits: int) -> int:
    """Length in words of a stream holding n_bits, padding included."""
    return (int(n_bits) + 31) // 32 + PAD_WORDS


@njit(cache=True, nogil=True)
def encode_forward_weights(wptr, bits):
    """Each document's stored weights (their raw bit patterns, `bits`: float16 as uint16 or float32 as
    uint32, widened to int64) as value - the document's smallest pattern, at one width per document.
    Non-negative floats order like their bit patterns, so weights of similar size share their high bits.

    Returns (base per document (int64), width per document (uint8), uint32 stream)."""
    n = len(wptr) - 1
    base = np.zeros(n, np.int64)
    width = np.zeros(n, np.uint8)
    total = np.int64(0)
    for d in range(n):
        if wptr[d + 1] == wptr[d]:
            continue
        lo = bits[wptr[d]]
        hi = lo
        for p in range(wptr[d], wptr[d + 1]):
            lo = min(lo, bits[p])
            hi = max(hi, bits[p])
        base[d] = lo
        width[d] = bitlen(hi - lo)
        total += np.int64(width[d]) * (wptr[d + 1] - wptr[d])
    words = np.zeros((total + 31) // 32 + PAD_WORDS, np.uint32)
    pos = np.int64(0)
    for d in range(n):
        w = np.int64(width[d])
        for p in range(wptr[d], wptr[d + 1]):
            pos = put_bits(words, pos, bits[p] - base[d], w)
    return base, width, words
