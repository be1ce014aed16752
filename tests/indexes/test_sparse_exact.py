"""The sparse component's exact search equals brute-force scoring over the quantized impacts."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from m3search.scoring import sparse_scores

LAYOUTS = {
    "default": {},
    "all-dense-rows": {"block_docs": 16, "dense_fraction": 0.0},
    "no-dense-rows": {"block_docs": 128, "dense_fraction": 1.0},
    "float32-forward": {"block_docs": 32, "forward_dtype": "float32"},
}


def quantized_reference(x: sp.csr_matrix, max_weight: float, dtype: str = "float16") -> sp.csr_matrix:
    """The impacts the docs promise: code = clip(rint(w / step), 1, 255), step = max_weight / 255, from the
    weights as stored (rounded to the forward dtype); scored as code * step."""
    x = x.astype(np.float32).tocsr()
    stored = x.data.astype(dtype).astype(np.float64)
    step = max_weight / 255
    codes = np.clip(np.rint(stored / step), 1, 255)
    out = sp.csr_matrix((codes * step, x.indices, x.indptr), shape=x.shape)
    out.eliminate_zeros()
    return out


def brute_force(q: sp.csr_matrix, impacts: sp.csr_matrix, deleted=None) -> np.ndarray:
    s = (q.astype(np.float64) @ impacts.T).toarray()
    if deleted is not None:
        s[:, deleted] = 0
    return s


def assert_exact_topk(D, I, S, k):
    """D, I equal the top-k of the exact scores S (m, n): same scores, true scores for the returned ids,
    only documents with a positive score, ties in id order, padding with (-inf, -1)."""
    assert D.shape == I.shape == (S.shape[0], k)
    for i in range(S.shape[0]):
        s = S[i]
        n_pos = int((s > 0).sum())
        n_ret = min(k, n_pos)
        ids = I[i, :n_ret]
        assert (ids >= 0).all() and len(set(ids.tolist())) == n_ret
        assert (I[i, n_ret:] == -1).all() and np.isneginf(D[i, n_ret:]).all()
        np.testing.assert_allclose(D[i, :n_ret], s[ids], rtol=2e-6, atol=1e-9)
        np.testing.assert_allclose(D[i, :n_ret], np.sort(s)[::-1][:n_ret], rtol=2e-6, atol=1e-9)
        assert (np.diff(D[i, :n_ret]) <= 0).all()
        d, ids_ = D[i, :n_ret], I[i, :n_ret]
        same = d[1:] == d[:-1]
        assert (ids_[1:][same] > ids_[:-1][same]).all(), "ties must come in doc id order"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("k", [1, 10, 100])
def test_exact_equals_brute_force(build_sparse, sparse_docs, sparse_queries, layout, k):
    config = LAYOUTS[layout]
    reader = build_sparse(sparse_docs, config)
    impacts = quantized_reference(sparse_docs, reader.quantizer.max_weight, config.get("forward_dtype", "float16"))
    D, I = reader.search(sparse_queries, k)
    assert_exact_topk(D, I, brute_force(sparse_queries, impacts), k)


def test_quantized_weights_follow_the_documented_formula(build_sparse, sparse_docs):
    reader = build_sparse(sparse_docs)
    mw = reader.quantizer.max_weight
    assert mw == pytest.approx(float(sparse_docs.data.max()) * 1.25, rel=1e-6)
    got = reader.quantized_weights(np.arange(sparse_docs.shape[0]))
    want = quantized_reference(sparse_docs, mw)
    assert abs(got - want).max() < 1e-6


def test_deleted_documents_never_returned_nor_take_a_slot(build_sparse, sparse_docs, sparse_queries):
    reader = build_sparse(sparse_docs, {"block_docs": 16})
    rng = np.random.default_rng(3)
    deleted = rng.random(sparse_docs.shape[0]) < 0.3
    deleted[11] = True  # one of the tied duplicates
    D, I = reader.search(sparse_queries, 20, deleted=deleted)
    assert not deleted[I[I >= 0]].any()
    S = brute_force(sparse_queries, quantized_reference(sparse_docs, reader.quantizer.max_weight), deleted)
    assert_exact_topk(D, I, S, 20)


def test_ties_are_broken_by_doc_id_across_blocks(build_sparse, sparse_docs):
    reader = build_sparse(sparse_docs, {"block_docs": 16})
    q = sparse_docs[11]  # the duplicated document as its own query: 31 identical best scores
    D, I = reader.search(q, 10)
    dupes = [11] + [1000 + 7 * i for i in range(30)]
    assert I[0].tolist() == dupes[:10]
    assert len(set(D[0].tolist())) == 1
    deleted = np.zeros(sparse_docs.shape[0], bool)
    deleted[[11, 1000]] = True
    _, I = reader.search(q, 3, deleted=deleted)
    assert I[0].tolist() == dupes[2:5]


def test_empty_queries_documents_and_unknown_tokens(build_sparse, sparse_docs, sparse_queries):
    reader = build_sparse(sparse_docs)
    empty_rows = np.flatnonzero(np.diff(sparse_docs.indptr) == 0)
    assert len(empty_rows) > 5
    D, I = reader.search(sparse_queries[59:60], 5)  # a query without weights
    assert (I == -1).all() and np.isneginf(D).all()
    D, I = reader.search(sp.csr_matrix((0, sparse_docs.shape[1]), dtype=np.float32), 5)
    assert D.shape == (0, 5)
    small = build_sparse(sparse_docs[:20], name="small")
    unused = np.flatnonzero(np.bincount(sparse_docs[:20].indices, minlength=sparse_docs.shape[1]) == 0)
    q = sp.csr_matrix((np.ones(2, np.float32), ([0, 0], unused[:2])), shape=(1, sparse_docs.shape[1]))
    D, I = small.search(q, 5)
    assert (I == -1).all()
    D, I = reader.search(sparse_queries, 0)
    assert D.shape == (60, 0)
    assert reader.doc_weights(empty_rows).nnz == 0


def test_k_larger_than_matches_pads(build_sparse, sparse_docs, sparse_queries):
    reader = build_sparse(sparse_docs[:40])
    D, I = reader.search(sparse_queries, 64)
    S = brute_force(sparse_queries, quantized_reference(sparse_docs[:40], reader.quantizer.max_weight))
    assert_exact_topk(D, I, S, 64)
    assert (I == -1).any()


def test_empty_segment(build_sparse, sparse_docs, sparse_queries):
    reader = build_sparse(sparse_docs[:0])
    assert reader.n_docs == 0
    D, I = reader.search(sparse_queries, 3)
    assert (I == -1).all()
    assert reader.doc_weights(np.zeros(0, np.int64)).shape == (0, sparse_docs.shape[1])


def test_threads_give_the_same_results(build_sparse, sparse_docs, sparse_queries):
    reader = build_sparse(sparse_docs)
    D1, I1 = reader.search(sparse_queries, 10)
    D2, I2 = reader.search(sparse_queries, 10, threads=2)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)


def test_score_pairs_equal_reference_scoring_of_stored_weights(build_sparse, sparse_docs, sparse_queries):
    reader = build_sparse(sparse_docs)
    stored = reader.doc_weights(np.arange(sparse_docs.shape[0]))
    rng = np.random.default_rng(5)
    q_index = rng.integers(0, sparse_queries.shape[0], 500)
    ids = rng.integers(0, sparse_docs.shape[0], 500)
    got = reader.score_pairs(sparse_queries, q_index, ids)
    want = sparse_scores(sparse_queries, stored)[q_index, ids]
    assert got.dtype == np.float32 and got.shape == (500,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert (want > 0).sum() > 50


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_doc_weights_are_the_input_rounded_to_the_forward_dtype(build_sparse, sparse_docs, dtype):
    reader = build_sparse(sparse_docs, {"forward_dtype": dtype})
    ids = np.array([5, 0, 1499, 11, 5])
    got = reader.doc_weights(ids)
    want = sparse_docs[ids].astype(np.float32)
    want.data = want.data.astype(dtype).astype(np.float32)
    assert got.shape == want.shape and abs(got - want).max() == 0
    np.testing.assert_array_equal(got.indptr, want.indptr)


def test_a_wide_term_space_of_hashed_word_columns(build_sparse, sparse_docs, sparse_queries):
    """Columns spread over vocabulary + 2**22 (encoder/terms.py's whole words): search, stored weights and
    the recorded width are as for a vocabulary-sized matrix with the same postings."""
    width = 1200 + 2**22
    cols = np.sort(np.random.default_rng(5).choice(width, 1200, replace=False))  # old column -> new, order kept

    def widen(x):
        x = x.tocsr()
        return sp.csr_matrix((x.data, cols[x.indices], x.indptr), shape=(x.shape[0], width))

    docs, queries = widen(sparse_docs), widen(sparse_queries)
    reader = build_sparse(docs)
    assert reader.vocab_size == width
    impacts = quantized_reference(docs, reader.quantizer.max_weight)
    D, I = reader.search(queries, 10)
    assert_exact_topk(D, I, brute_force(queries, impacts), 10)
    stored = docs.copy()
    stored.data = stored.data.astype(np.float16).astype(np.float32)  # the default forward dtype
    got = reader.doc_weights(np.arange(docs.shape[0]))
    assert got.shape == docs.shape and abs(got - stored).max() == 0
