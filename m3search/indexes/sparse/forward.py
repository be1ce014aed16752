"""numba kernels over the forward index: each document's token ids (varint gaps in version 2, bit-packed
gaps in version 3) and stored weights."""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from m3search.indexes.sparse.encode import read_varint
from m3search.indexes.sparse.packed import get_bits

# numba has no float16 arithmetic: float16 weights travel as their uint16 bits and are widened by lookup
HALF_TO_FLOAT = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


def as_kernel_weights(weights: np.ndarray) -> np.ndarray:
    """The stored weights as the kernels take them (float16 -> its uint16 bits; float32 as is)."""
    return weights.view(np.uint16) if weights.dtype == np.float16 else weights


def weight_at(weights, p):  # pragma: no cover - replaced by the overload in kernels
    raise NotImplementedError


@overload(weight_at, inline="always")
def _weight_at(weights, p):
    if weights.dtype == types.uint16:
        table = HALF_TO_FLOAT
        return lambda weights, p: table[weights[p]]
    return lambda weights, p: np.float32(weights[p])


@njit(cache=True, nogil=True)
def decode_ids(ids, wptr, bptr, stream, vocab_size):
    """CSR indptr and token ids of documents `ids`; raises on data inconsistent with the pointers."""
    n = len(ids)
    indptr = np.zeros(n + 1, np.int64)
    for r in range(n):
        d = ids[r]
        indptr[r + 1] = indptr[r] + wptr[d + 1] - wptr[d]
    out = np.empty(indptr[n], np.int32)
    for r in range(n):
        d = ids[r]
        pos = bptr[d]
        end = bptr[d + 1]
        prev = -1
        for p in range(indptr[r], indptr[r + 1]):
            v, pos = read_varint(stream, pos, end)
            tok = prev + 1 + v
            if v < 0 or tok >= vocab_size:
                raise ValueError("corrupt forward index: token ids run past the document's bytes")
            out[p] = tok
            prev = tok
        if pos != end:
            raise ValueError("corrupt forward index: a document's bytes disagree with its length")
    return indptr, out


@njit(cache=True, nogil=True)
def gather_weights(ids, wptr, weights, indptr):
    out = np.empty(indptr[-1], np.float32)
    for r in range(len(ids)):
        d = ids[r]
        o = indptr[r]
        for p in range(wptr[d], wptr[d + 1]):
            out[o] = weight_at(weights, p)
            o += 1
    return out


@njit(cache=True, nogil=True)
def score_pairs(q_indptr, q_indices, q_data, q_index, ids, wptr, bptr, stream, weights):
    """(P,) float32: sum over shared token ids of w_q * w_d for each (query q_index[p], document ids[p]),
    summed in token id order."""
    n = len(ids)
    out = np.zeros(n, np.float32)
    for p in range(n):
        qi = q_index[p]
        d = ids[p]
        a = q_indptr[qi]
        a_end = q_indptr[qi + 1]
        if a == a_end:
            continue
        pos = bptr[d]
        end = bptr[d + 1]
        prev = -1
        s = np.float32(0.0)
        for wp in range(wptr[d], wptr[d + 1]):
            v, pos = read_varint(stream, pos, end)
            if v < 0:
                break
            tok = prev + 1 + v
            prev = tok
            while a < a_end and q_indices[a] < tok:
                a += 1
            if a == a_end:
                break
            if q_indices[a] == tok:
                s += q_data[a] * weight_at(weights, wp)
        out[p] = s
    return out


# -- version 3: bit-packed token ids (packed.py): document d's gaps at width[d] bits from bit bptr[d] -------
# and bit-packed weights: document d's k-th weight has the bit pattern wbase[d] + (wwidth[d] bits at
# wbptr[d] + k * wwidth[d]) of its float16 (is_half) or float32

@njit(cache=True, nogil=True, inline="always")
def packed_weight(words, wbptr, wbase, wwidth, d, k, is_half, buf_u, buf_f):
    w = np.int64(wwidth[d])
    pattern = np.int64(wbase[d]) + get_bits(words, wbptr[d] + k * w, w)
    if is_half:
        return HALF_TO_FLOAT[pattern & 0xFFFF]
    buf_u[0] = pattern
    return buf_f[0]


@njit(cache=True, nogil=True)
def gather_weights_packed(ids, wptr, wbptr, wbase, wwidth, words, is_half, indptr):
    """gather_weights for packed weights."""
    buf_u = np.zeros(1, np.uint32)
    buf_f = buf_u.view(np.float32)
    out = np.empty(indptr[-1], np.float32)
    for r in range(len(ids)):
        d = ids[r]
        o = indptr[r]
        for k in range(wptr[d + 1] - wptr[d]):
            out[o + k] = packed_weight(words, wbptr, wbase, wwidth, d, k, is_half, buf_u, buf_f)
    return out

@njit(cache=True, nogil=True)
def decode_ids_packed(ids, wptr, bptr, width, words, vocab_size):
    """decode_ids for packed forward ids."""
    n = len(ids)
    indptr = np.zeros(n + 1, np.int64)
    for r in range(n):
        d = ids[r]
        indptr[r + 1] = indptr[r] + wptr[d + 1] - wptr[d]
    out = np.empty(indptr[n], np.int32)
    for r in range(n):
        d = ids[r]
        pos = bptr[d]
        w = np.int64(width[d])
        prev = -1
        for p in range(indptr[r], indptr[r + 1]):
            tok = prev + 1 + get_bits(words, pos, w)
            pos += w
            if tok >= vocab_size:
                raise ValueError("corrupt forward index: a token id lies outside the vocabulary")
            out[p] = tok
            prev = tok
    return indptr, out


@njit(cache=True, nogil=True)
def score_pairs_packed(q_indptr, q_indices, q_data, q_index, ids, wptr, bptr, width, words, wbptr, wbase, wwidth,
                       wwords, is_half):
    """score_pairs for packed forward ids and weights (same sums in the same order)."""
    buf_u = np.zeros(1, np.uint32)
    buf_f = buf_u.view(np.float32)
    n = len(ids)
    out = np.zeros(n, np.float32)
    for p in range(n):
        qi = q_index[p]
        d = ids[p]
        a = q_indptr[qi]
        a_end = q_indptr[qi + 1]
        if a == a_end:
            continue
        pos = bptr[d]
        w = np.int64(width[d])
        prev = -1
        s = np.float32(0.0)
        for wp in range(wptr[d], wptr[d + 1]):
            tok = prev + 1 + get_bits(words, pos, w)
            pos += w
            prev = tok
            while a < a_end and q_indices[a] < tok:
                a += 1
            if a == a_end:
                break
            if q_indices[a] == tok:
                s += q_data[a] * packed_weight(wwords, wbptr, wbase, wwidth, d, wp - wptr[d], is_half, buf_u, buf_f)
        out[p] = s
    return out
