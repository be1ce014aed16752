"""Sparse segment format 3 (bit-packed postings and forward ids, packed.py / FORMAT.md).

- the bit writer and reader round-trip every width 0..32 at every bit offset;
- a pure-Python decoder written from FORMAT.md gets back the raw postings (doc ids, impact codes), the
  block-max rows and group pointers, on random data and on edge cases (empty lists, one posting, full
  blocks, the fixed-width/bitmap boundary, chunk boundaries, codes 1 and 255, huge block gaps);
- the forward ids round-trip, with gaps needing up to 31 bits, and so do the forward weights (float16
  and float32 bit patterns, one width per document);
- searches over format 3 equal format 2's bit for bit (scores and ids, exact and approximate, deletions,
  floors), and both equal brute force (test_sparse_exact.py runs the default, format 3);
- a format-2 segment is still opened, searched, re-scored and merged into a format-3 one;
- damage that keeps checksums valid but breaks the packed structure is refused.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from test_sparse_exact import assert_exact_topk, brute_force, quantized_reference

from m3search.errors import IndexFormatError
from m3search.indexes import segment_files
from m3search.indexes.sparse import SparseComponent, encode, packed
from m3search.indexes.sparse.component import _canonical_weights


# -- a reference reader written from FORMAT.md (plain Python ints) ------------------------------------

class Bits:
    def __init__(self, words: np.ndarray):
        self.words = [int(w) for w in words]

    def get(self, p: int, w: int) -> int:
        p, w = int(p), int(w)
        i, s = p >> 5, p & 31
        return (((self.words[i + 1] << 32) | self.words[i]) >> s) & ((1 << w) - 1)


def _payload(bits: Bits, pos: int, c: int, mx: int, shift: int, block: int):
    """(postings [(doc, code)], end position) of one entry's payload."""
    R = 1 << shift
    if c == 1:
        return [((block << shift) + bits.get(pos, shift), mx)], pos + shift
    if c * shift <= R:
        offs = [bits.get(pos + q * shift, shift) for q in range(c)]
        pos += c * shift
    else:
        offs = [o for o in range(R) if bits.get(pos + o, 1)]
        pos += R
    assert len(offs) == c and offs == sorted(offs) and len(set(offs)) == c
    wi = (mx - 1).bit_length()
    codes = [bits.get(pos + q * wi, wi) + 1 for q in range(c)]
    assert max(codes) == mx
    return [((block << shift) + o, code) for o, code in zip(offs, codes)], pos + c * wi


def _chunk_v3(bits, pos, n):
    h = bits.get(pos, 13)
    wg, wc, wm = h & 63, (h >> 6) & 7, h >> 9
    pos += 13
    gaps = [bits.get(pos + e * wg, wg) for e in range(n)]
    pos += n * wg
    counts = [bits.get(pos + e * wc, wc) + 1 for e in range(n)]
    pos += n * wc
    maxes = [bits.get(pos + e * wm, wm) + 1 for e in range(n)]
    return gaps, counts, maxes, pos + n * wm


def _chunk_v4(bits, pos, n):
    h = bits.get(pos, 13)
    k, wx, wm = h & 31, (h >> 5) & 15, h >> 9
    pos += 13
    counts = [1] * n
    if wx:
        listed = bits.get(pos, 1)
        pos += 1
        if listed:
            nx = bits.get(pos, 7) + 1
            where = [bits.get(pos + 7 + 7 * i, 7) for i in range(nx)]
            pos += 7 + 7 * nx
            assert 7 * (nx + 1) < n
        else:
            where = [e for e in range(n) if bits.get(pos + e, 1)]
            pos += n
            assert 7 * (len(where) + 1) >= n
        assert where and where == sorted(set(where)) and where[-1] < n
        nx = len(where)
        for i, e in enumerate(where):
            counts[e] = bits.get(pos + i * (wx - 1), wx - 1) + 2
        pos += nx * (wx - 1)
        assert (max(counts) - 2).bit_length() == wx - 1
    maxes = [bits.get(pos + e * wm, wm) + 1 for e in range(n)]
    pos += n * wm
    lows = [bits.get(pos + e * k, k) for e in range(n)]
    pos += n * k
    gaps = []
    for low in lows:
        q = 0
        while not bits.get(pos, 1):
            q += 1
            pos += 1
        gaps.append((q << k) | low)
        pos += 1
    return gaps, counts, maxes, pos


def decode_token(bits, start, end, n_entries, shift, dense_row=None, gptr=None, version=4):
    out = []
    pos = start
    if dense_row is None:
        prev = -1
        left = n_entries
        while left:
            n = min(128, left)
            gaps, counts, maxes, pos = (_chunk_v4 if version >= 4 else _chunk_v3)(bits, pos, n)
            for g, c, mx in zip(gaps, counts, maxes):
                block = prev + 1 + g
                posts, pos = _payload(bits, pos, c, mx, shift, block)
                out += posts
                prev = block
            left -= n
        assert pos == end
        return out
    G = packed.GROUP_BLOCKS
    for g in range(len(gptr) - 1):
        assert pos == start + int(gptr[g])
        present = [b for b in range(g * G, min(g * G + G, len(dense_row))) if dense_row[b]]
        if not present:
            continue
        wc = bits.get(pos, 3)
        pos += 3
        counts = [bits.get(pos + e * wc, wc) + 1 for e in range(len(present))]
        pos += len(present) * wc
        for b, c in zip(present, counts):
            posts, pos = _payload(bits, pos, c, int(dense_row[b]), shift, b)
            out += posts
    assert pos == end == start + int(gptr[-1])
    return out


def roundtrip_postings(term_start, post_doc, post_code, shift, is_dense, n_blocks, version=4):
    entries = encode.count_blocks(term_start, post_doc, shift)
    term_ptr, words, term_dense, dense_max, gptr = packed.encode_postings(
        term_start, post_doc, post_code, entries, shift, is_dense, n_blocks, version)
    assert words.dtype == np.uint32 and len(words) == packed.stream_words(term_ptr[-1])
    assert (words[-packed.PAD_WORDS:] == 0).all()
    bits = Bits(words)
    G = packed.GROUP_BLOCKS
    n_groups1 = (n_blocks + G - 1) // G + 1
    for i in range(len(term_start) - 1):
        lo, hi = term_start[i], term_start[i + 1]
        want = list(zip(post_doc[lo:hi].tolist(), post_code[lo:hi].tolist()))
        d = term_dense[i]
        if d >= 0:
            row = dense_max[d * n_blocks:(d + 1) * n_blocks]
            blocks = post_doc[lo:hi] >> shift
            want_row = np.zeros(n_blocks, np.int64)
            np.maximum.at(want_row, blocks, post_code[lo:hi].astype(np.int64))
            assert np.array_equal(row, want_row)
            got = decode_token(bits, term_ptr[i], term_ptr[i + 1], entries[i], shift, row,
                               gptr[d * n_groups1:(d + 1) * n_groups1], version=version)
        else:
            got = decode_token(bits, term_ptr[i], term_ptr[i + 1], entries[i], shift, version=version)
        assert got == want, f"token {i}"
    return term_ptr, words


# -- tests -----------------------------------------------------------------------------------------

def test_bits_round_trip_every_width_and_offset():
    rng = np.random.default_rng(0)
    widths = [w for w in range(33) for _ in range(40)]
    rng.shuffle(widths)
    values = [int(rng.integers(0, 1 << w)) if w else 0 for w in widths]
    values[:33] = [(1 << w) - 1 for w in range(33)]  # all ones at every width
    widths[:33] = list(range(33))
    words = np.zeros(packed.stream_words(sum(widths)), np.uint32)
    pos = 0
    for v, w in zip(values, widths):
        pos = packed.put_bits(words, pos, v, w)
    assert pos == sum(widths)
    pos = 0
    for v, w in zip(values, widths):
        assert packed.get_bits(words, pos, w) == v
        pos += w
    for v in (1, 2, 3, 1 << 31, 0xFFFFFFFF, 0x80000001):
        assert packed.low_bit_index(v) == (v & -v).bit_length() - 1


@pytest.mark.parametrize("block_docs", [16, 64, 128])
@pytest.mark.parametrize("dense_fraction", [0.0, 0.25, 1.01])
def test_postings_round_trip_random(sparse_docs, block_docs, dense_fraction):
    x = sparse_docs[:700]
    codes = np.random.default_rng(block_docs).integers(1, 256, x.nnz).astype(np.uint8)
    shift = block_docs.bit_length() - 1
    n_blocks = (x.shape[0] + block_docs - 1) // block_docs
    term_ids, term_start, post_doc, post_code = encode.invert(x.indptr.astype(np.int64), x.indices.astype(np.int32),
                                                              codes, x.shape[1])
    entries = encode.count_blocks(term_start, post_doc, shift)
    is_dense = entries >= max(1.0, dense_fraction * n_blocks)
    for version in (3, 4):
        roundtrip_postings(term_start, post_doc, post_code, shift, is_dense, n_blocks, version)


def _edge_lists(shift):
    R = 1 << shift
    per_shift_fixed = R // shift  # the most postings of a block still stored at fixed width
    lists = [
        [],  # an empty list
        [(0, 1)],  # one posting, first doc, smallest code
        [(R * 40 - 1, 255)],  # one posting, last doc
        [(R - 1, 7), (R, 9)],  # across a block boundary
        [(o, 1 + o % 255) for o in range(R)],  # a full block
        [(R + o, 200) for o in range(per_shift_fixed)],  # fixed width, at its limit
        [(2 * R + o, 3) for o in range(per_shift_fixed + 1)],  # one more: a bitmap
        [(3 * R, 1), (3 * R + 1, 1)],  # max 1: impacts take 0 bits
        [(4 * R, 128), (4 * R + 5, 1)],  # max 128: 7 bits
        [(5 * R, 129), (5 * R + 5, 1)],  # max 129: 8 bits
        [(b * R + b % R, 50) for b in range(40)],  # 40 entries, one per block
    ]
    return lists


@pytest.mark.parametrize("block_docs", [16, 64, 128])
@pytest.mark.parametrize("dense", [False, True])
def test_postings_round_trip_edge_cases(block_docs, dense):
    shift = block_docs.bit_length() - 1
    n_blocks = 40
    lists = _edge_lists(shift)
    term_start = np.zeros(len(lists) + 1, np.int64)
    term_start[1:] = np.cumsum([len(x) for x in lists])
    post_doc = np.array([d for x in lists for d, _ in x], np.int32)
    post_code = np.array([c for x in lists for _, c in x], np.uint8)
    is_dense = np.array([dense and len(x) > 0 for x in lists])
    for version in (3, 4):
        roundtrip_postings(term_start, post_doc, post_code, shift, is_dense, n_blocks, version)


def test_chunk_boundaries_and_huge_gaps():
    """A token with 127, 128, 129 and 300 entries (chunks of 128) and one whose block gap needs 27 bits;
    version 4's count exceptions listed by index (few) and by bitmap (many), and a Rice-coded chunk of
    zero gaps with one huge one."""
    shift = 4
    lists = [[(b * 16 * 3 + b % 16, 1 + b % 200) for b in range(n)] for n in (127, 128, 129, 300)]
    lists.append([(0, 5), (2**31 - 1, 6)])
    lists.append([(16 * 7 + 3, 2)] + [(16 * 8 + o, 1 + o) for o in range(16)])
    lists.append([(b * 16 * 5 + o, 9 + o) for b in range(130) for o in range(1 + 2 * (b % 10 == 3))])
    lists.append([(b * 16 + o, 200 - o) for b in range(150) for o in range(1 + 15 * (b % 3 == 0))])
    lists.append([(b * 16 + 1, 3) for b in range(127)] + [(2**31 - 2, 4)])
    term_start = np.zeros(len(lists) + 1, np.int64)
    term_start[1:] = np.cumsum([len(x) for x in lists])
    post_doc = np.array([d for x in lists for d, _ in x], np.int32)
    post_code = np.array([c for x in lists for _, c in x], np.uint8)
    n_blocks = (2**31) >> shift
    for version in (3, 4):
        roundtrip_postings(term_start, post_doc, post_code, shift, np.zeros(len(lists), bool), n_blocks, version)


def test_forward_ids_round_trip_with_wide_gaps():
    vocab = 2**31
    docs = [[], [0], [vocab - 1], [0, vocab - 1], [5, 6, 7, 8], list(range(0, 4000, 37)), [1, 2**30, 2**31 - 2]]
    indptr = np.zeros(len(docs) + 1, np.int64)
    indptr[1:] = np.cumsum([len(d) for d in docs])
    indices = np.array([t for d in docs for t in d], np.int32)
    width, words = packed.encode_forward_ids(indptr, indices)
    assert width.max() == 31
    bptr = packed.forward_bit_pointers(indptr, width)
    assert len(words) == packed.stream_words(bptr[-1])
    from m3search.indexes.sparse import forward

    ids = np.arange(len(docs))
    got_ptr, got = forward.decode_ids_packed(ids, indptr, bptr, width, words, vocab)
    assert np.array_equal(got_ptr, indptr) and np.array_equal(got, indices)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_forward_weights_round_trip(dtype):
    """Bit patterns minus the document's smallest, at one width per document; every float comes back."""
    rng = np.random.default_rng(4)
    lengths = [0, 1, 2, 5, 300, 1, 0, 40]
    wptr = np.zeros(len(lengths) + 1, np.int64)
    wptr[1:] = np.cumsum(lengths)
    w = rng.lognormal(-2.0, 1.5, wptr[-1]).astype(dtype)
    w[wptr[4]] = np.finfo(dtype).max  # the widest spread a document can have
    w[wptr[4] + 1] = np.finfo(dtype).tiny
    pattern = w.view(np.uint16 if dtype == np.float16 else np.uint32)
    base, width, words = packed.encode_forward_weights(wptr, pattern.astype(np.int64))
    bptr = packed.forward_bit_pointers(wptr, width)
    assert len(words) == packed.stream_words(bptr[-1])
    assert width[4] <= 8 * w.itemsize and width[1] == 0
    from m3search.indexes.sparse import forward

    ids = np.arange(len(lengths))[::-1].copy()
    indptr = np.zeros(len(ids) + 1, np.int64)
    indptr[1:] = np.cumsum(np.array(lengths)[ids])
    got = forward.gather_weights_packed(ids, wptr, bptr, base.astype(pattern.dtype), width, words,
                                        dtype == np.float16, indptr)
    want = np.concatenate([w[wptr[d]:wptr[d + 1]] for d in ids]).astype(np.float32)
    np.testing.assert_array_equal(got, want)


# -- format 3 beside format 2 ----------------------------------------------------------------------

def _formats(tmp_path, x, config):
    """comp, {version: reader} for the same documents in formats 2, 3 and 4 (the one written now)."""
    comp = SparseComponent(config)
    shared = tmp_path / "shared"
    m4 = comp.build(tmp_path / "v4", _batch(x), shared)
    assert m4["version"] == 4
    readers = {4: comp.open(tmp_path / "v4", m4, shared)}
    xc = _canonical_weights(x)
    for v in (2, 3):
        m = comp._write(tmp_path / f"v{v}", xc.indptr.astype(np.int64), xc.indices.astype(np.int32),
                        xc.data.astype(comp.config["forward_dtype"]), xc.shape, shared, version=v)
        assert m["version"] == v
        readers[v] = comp.open(tmp_path / f"v{v}", m, shared)
    return comp, readers


def _batch(x):
    from m3search.types import EncodedBatch

    n = x.shape[0]
    return EncodedBatch(dense=np.zeros((n, 1), np.float32), sparse=x.tocsr().astype(np.float32),
                        multivec=np.zeros((0, 1), np.float32), multivec_lengths=np.zeros(n, np.int64))


LAYOUTS = {
    "default": {},
    "all-dense-rows": {"block_docs": 16, "dense_fraction": 0.0},
    "no-dense-rows": {"block_docs": 128, "dense_fraction": 1.0},
    "mixed-32": {"block_docs": 32, "dense_fraction": 0.1},
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_formats_3_and_4_search_equal_format_2_bit_for_bit(tmp_path, sparse_docs, sparse_queries, layout):
    comp, r = _formats(tmp_path, sparse_docs, LAYOUTS[layout])
    assert r[3].stats()["inverted_bytes"] < r[2].stats()["inverted_bytes"]
    if layout == "no-dense-rows":  # every token in Rice-coded chunks (a token of one entry costs a bit more)
        assert r[4].stats()["inverted_bytes"] < r[3].stats()["inverted_bytes"]
    assert r[3].stats()["forward_bytes"] < r[2].stats()["forward_bytes"]
    deleted = np.random.default_rng(1).random(sparse_docs.shape[0]) < 0.2
    floors = np.full(sparse_queries.shape[0], 0.05, np.float32)
    for params in ({}, {"exact": False, "alpha": 0.8, "beta": 0.9}, {"floor": floors}):
        for k in (1, 10, 100):
            for dele in (None, deleted):
                D2, I2 = r[2].search(sparse_queries, k, deleted=dele, **params)
                for v in (3, 4):
                    D, I = r[v].search(sparse_queries, k, deleted=dele, **params)
                    np.testing.assert_array_equal(I, I2)
                    np.testing.assert_array_equal(D, D2)
    for threads in (1, 2):
        D, I = r[4].search(sparse_queries, 10, threads=threads)
        impacts = quantized_reference(sparse_docs, r[4].quantizer.max_weight)
        assert_exact_topk(D, I, brute_force(sparse_queries, impacts), 10)


def test_formats_2_and_3_are_still_read_and_merged_into_format_4(tmp_path, sparse_docs, sparse_queries):
    comp, r = _formats(tmp_path, sparse_docs, {"block_docs": 32})
    assert [r[v].stats()["version"] for v in (2, 3, 4)] == [2, 3, 4]
    ids = np.arange(sparse_docs.shape[0])
    rng = np.random.default_rng(2)
    q_index = rng.integers(0, sparse_queries.shape[0], 300)
    pair_ids = rng.integers(0, sparse_docs.shape[0], 300)
    for v in (2, 3):
        assert (r[v].doc_weights(ids) != r[4].doc_weights(ids)).nnz == 0
        np.testing.assert_array_equal(r[v].score_pairs(sparse_queries, q_index, pair_ids),
                                      r[4].score_pairs(sparse_queries, q_index, pair_ids))
    keep = np.ones(sparse_docs.shape[0], bool)
    keep[::3] = False
    meta = comp.merge(tmp_path / "merged", [r[2]], [keep], tmp_path / "shared")
    assert meta["version"] == 4
    merged = comp.open(tmp_path / "merged", meta, tmp_path / "shared")
    D, I = merged.search(sparse_queries, 10)
    impacts = quantized_reference(sparse_docs[keep], merged.quantizer.max_weight)
    assert_exact_topk(D, I, brute_force(sparse_queries, impacts), 10)


# -- damage with valid checksums -------------------------------------------------------------------

def _rewrite(path, name, arr):
    header = json.loads((path / "sparse.json").read_text())
    header["arrays"][name] = segment_files.write_array(path, f"{name}.arr", arr)
    (path / "sparse.json").write_text(json.dumps(header))


def _array(path, name):
    header = json.loads((path / "sparse.json").read_text())
    return np.array(segment_files.open_array(path, f"{name}.arr", header["arrays"][name]))


@pytest.mark.parametrize("damage", ["postings-short", "forward-width", "forward-short", "weights-short",
                                    "weights-width", "entries-type", "claims-version-2"])
def test_packed_structure_damage_is_refused(tmp_path, sparse_docs, damage):
    comp = SparseComponent({"block_docs": 16, "dense_fraction": 0.1})
    path, shared = tmp_path / "seg", tmp_path / "shared"
    meta = comp.build(path, _batch(sparse_docs), shared)
    if damage == "postings-short":
        _rewrite(path, "postings", _array(path, "postings")[:-1])
    elif damage == "forward-width":
        w = _array(path, "fwd_width")
        w[np.argmax(np.diff(_array(path, "fwd_wptr")))] += 1  # the longest document: its bits change most
        _rewrite(path, "fwd_width", w)
    elif damage == "forward-short":
        _rewrite(path, "fwd_ids", _array(path, "fwd_ids")[:-1])
    elif damage == "weights-short":
        _rewrite(path, "fwd_weights", _array(path, "fwd_weights")[:-1])
    elif damage == "weights-width":
        w = _array(path, "fwd_wwidth")
        w[0] = 17
        _rewrite(path, "fwd_wwidth", w)
    elif damage == "entries-type":
        _rewrite(path, "term_entries", _array(path, "term_entries").astype(np.int64))
    else:
        header = json.loads((path / "sparse.json").read_text())
        header["version"] = 2
        (path / "sparse.json").write_text(json.dumps(header))
    with pytest.raises(IndexFormatError):
        comp.open(path, meta, shared)


def test_empty_and_single_document_segments(tmp_path, sparse_docs, sparse_queries):
    comp = SparseComponent()
    for n in (0, 1):
        x = sparse_docs[11:11 + n]
        meta = comp.build(tmp_path / f"s{n}", _batch(x), tmp_path / "shared")
        r = comp.open(tmp_path / f"s{n}", meta, tmp_path / "shared")
        D, I = r.search(sparse_queries, 3)
        if n:
            S = brute_force(sparse_queries, quantized_reference(x, r.quantizer.max_weight))
            assert_exact_topk(D, I, S, 3)
            want = sp.csr_matrix(x, dtype=np.float32)
            want.data = want.data.astype(np.float16).astype(np.float32)
            assert (r.doc_weights([0]) != want).nnz == 0
        else:
            assert (I == -1).all()


def test_garbage_chunks_decode_inside_the_span_and_block_range():
    """Version 3 and 4 chunks made of random bits (damage that kept its checksums): the bound pass stops
    decoding a token at the first impossible field, and every entry it keeps lies inside the token's
    span, before n_blocks, with a count <= R and a max <= 255."""
    from m3search.indexes.sparse import search_packed

    rng = np.random.default_rng(7)
    n_terms, n_blocks, shift = 40, 500, 6
    spans = rng.integers(0, 3000, n_terms)
    term_ptr = np.zeros(n_terms + 1, np.int64)
    term_ptr[1:] = np.cumsum(spans)
    qt = np.arange(n_terms, dtype=np.int64)
    qw = np.ones(n_terms, np.float32)
    term_dense = np.full(n_terms, -1, np.int32)
    term_entries = rng.integers(0, n_blocks + 1, n_terms).astype(np.int32)
    for trial in range(20):
        words = rng.integers(0, 2**32, packed.stream_words(term_ptr[-1]), dtype=np.uint32)
        if trial % 2:  # sparse garbage: long zero runs (huge unary high parts)
            words &= rng.integers(0, 2**32, len(words), dtype=np.uint32) & rng.integers(0, 2**32, len(words),
                                                                                          dtype=np.uint32)
        words[-packed.PAD_WORDS:] = 0
        for rice in (False, True):
            ub, e_blk, e_pos, e_cm, e_lo = search_packed._upper_bounds(
                qt, qw, n_blocks, shift, term_ptr, term_dense, term_entries, words, np.zeros(0, np.uint8), rice)
            assert len(e_blk) == e_lo[-1] and (np.diff(e_lo) <= term_entries).all()
            for j in range(n_terms):
                lo, hi = e_lo[j], e_lo[j + 1]
                c, mx = e_cm[lo:hi] >> 8, e_cm[lo:hi] & 255
                assert ((e_blk[lo:hi] >= 0) & (e_blk[lo:hi] < n_blocks)).all()
                assert ((c >= 1) & (c <= 1 << shift) & (mx >= 1)).all()
                ends = e_pos[lo:hi] + [packed.payload_bits(int(a), int(b), shift) for a, b in zip(c, mx)]
                assert ((e_pos[lo:hi] >= term_ptr[j]) & (ends <= term_ptr[j + 1])).all()
