"""Merges, the index-wide impact scale, approximate search and option validation of the sparse component."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.sparse as sp

from m3search.errors import ConfigError, InputError
from m3search.indexes.sparse import SparseComponent


def _segment_arrays(reader) -> dict:
    return {name: np.asarray(a).copy() for name, a in reader._seg.arrays.items()}


def test_merge_with_keep_masks_equals_building_from_the_kept_documents(tmp_path, sparse_batch, sparse_docs,
                                                                      sparse_queries):
    comp = SparseComponent({"block_docs": 32})
    shared = tmp_path / "shared"
    a, b = sparse_docs[:900], sparse_docs[900:]
    readers = []
    for name, x in (("a", a), ("b", b)):
        meta = comp.build(tmp_path / name, sparse_batch(x), shared)
        readers.append(comp.open(tmp_path / name, meta, shared))
    rng = np.random.default_rng(11)
    keep_a = np.flatnonzero(rng.random(900) < 0.7)
    keep_b = rng.random(600) < 0.5  # a bool mask works too
    meta = comp.merge(tmp_path / "merged", readers, [keep_a, keep_b], shared)
    merged = comp.open(tmp_path / "merged", meta, shared)

    kept = sp.vstack([a[keep_a], b[np.flatnonzero(keep_b)]], format="csr")
    meta = comp.build(tmp_path / "direct", sparse_batch(kept), shared)
    direct = comp.open(tmp_path / "direct", meta, shared)

    assert merged.n_docs == direct.n_docs == kept.shape[0]
    got, want = _segment_arrays(merged), _segment_arrays(direct)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    D1, I1 = merged.search(sparse_queries, 10)
    D2, I2 = direct.search(sparse_queries, 10)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)


def test_merge_keeps_scores_of_documents_unchanged(tmp_path, sparse_batch, sparse_docs, sparse_queries):
    comp = SparseComponent()
    shared = tmp_path / "shared"
    meta = comp.build(tmp_path / "a", sparse_batch(sparse_docs), shared)
    src = comp.open(tmp_path / "a", meta, shared)
    keep = np.arange(0, sparse_docs.shape[0], 3)
    merged = comp.open(tmp_path / "m", comp.merge(tmp_path / "m", [src], [keep], shared), shared)
    before = src.quantized_weights(keep)
    after = merged.quantized_weights(np.arange(len(keep)))
    assert abs(before - after).max() == 0


def test_merge_refuses_mismatched_inputs(tmp_path, build_sparse, sparse_docs):
    comp = SparseComponent()
    reader = build_sparse(sparse_docs[:10])
    with pytest.raises(InputError, match="keep"):
        comp.merge(tmp_path / "m", [reader], [], tmp_path / "shared")
    with pytest.raises(InputError, match="outside"):
        comp.merge(tmp_path / "m", [reader], [np.array([10])], tmp_path / "shared")
    with pytest.raises(InputError, match="shape"):
        comp.merge(tmp_path / "m", [reader], [np.ones(3, bool)], tmp_path / "shared")


def test_the_scale_is_chosen_once_per_index(tmp_path, sparse_batch, sparse_docs, caplog):
    comp = SparseComponent()
    shared = tmp_path / "shared"
    small = sparse_docs[:100].copy()
    small.data = np.minimum(small.data, 0.2)
    first = comp.open(tmp_path / "a", comp.build(tmp_path / "a", sparse_batch(small), shared), shared)
    assert first.quantizer.max_weight == pytest.approx(0.25, rel=1e-3)  # 0.2 as float16, x 1.25
    with caplog.at_level(logging.WARNING, logger="m3search.indexes.sparse.component"):
        meta = comp.build(tmp_path / "b", sparse_batch(sparse_docs[100:200]), shared)
    second = comp.open(tmp_path / "b", meta, shared)
    assert second.quantizer.max_weight == first.quantizer.max_weight
    assert "saturated" in caplog.text
    assert second.quantized_weights(np.arange(100)).data.max() == pytest.approx(first.quantizer.max_weight)
    # the same document scores the same in either segment
    row = sparse_docs[3:4].copy()
    row.data = np.minimum(row.data, 0.2)
    x = sp.vstack([row, row], format="csr")
    for name in ("c", "d"):
        r = comp.open(tmp_path / name, comp.build(tmp_path / name, sparse_batch(x), shared), shared)
        assert r.search(row, 1)[0][0, 0] == first.search(row, 1)[0][0, 0]


def test_fixed_max_weight_and_empty_first_batch(tmp_path, sparse_batch, sparse_docs, sparse_queries):
    comp = SparseComponent()
    shared = tmp_path / "shared"
    empty = comp.open(tmp_path / "e", comp.build(tmp_path / "e", sparse_batch(sparse_docs[:0]), shared), shared)
    assert empty.quantizer is None and not (shared / "quantizer.json").exists()
    fixed = SparseComponent({"max_weight": 4.0})
    r = fixed.open(tmp_path / "f", fixed.build(tmp_path / "f", sparse_batch(sparse_docs), shared), shared)
    assert r.quantizer.max_weight == 4.0


def test_approximate_search_recall_floor(build_sparse, sparse_docs, sparse_queries):
    reader = build_sparse(sparse_docs, {"block_docs": 16})
    _, exact = reader.search(sparse_queries, 10)

    def recall(I):
        return np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / (b >= 0).sum() for a, b in zip(I, exact) if b[0] >= 0])

    _, I = reader.search(sparse_queries, 10, exact=False)
    assert recall(I) >= 0.9
    _, I = reader.search(sparse_queries, 10, exact=False, alpha=0.7)
    assert recall(I) >= 0.7
    _, I = reader.search(sparse_queries, 10, exact=False, alpha=1.0, beta=0.9)
    assert recall(I) >= 0.7
    _, I = reader.search(sparse_queries, 10, exact=False, alpha=1.0, beta=1.0)
    assert recall(I) == 1.0


@pytest.mark.parametrize("config, match", [
    ({"block_size": 64}, "unknown"),
    ({"block_docs": 48}, "block_docs"),
    ({"block_docs": True}, "block_docs"),
    ({"forward_dtype": "bfloat16"}, "forward_dtype"),
    ({"max_weight": -1.0}, "max_weight"),
    ({"max_weight": "big"}, "max_weight"),
    ({"dense_fraction": 2}, "dense_fraction"),
    ({"verify": "paranoid"}, "verify"),
])
def test_config_validation(config, match):
    with pytest.raises(ConfigError, match=match):
        SparseComponent(config)


def test_config_defaults():
    cfg = SparseComponent().config
    assert cfg == {"max_weight": "auto", "block_docs": 64, "dense_fraction": 0.25, "forward_dtype": "float16",
                   "verify": "fast"}


@pytest.mark.parametrize("params, error, match", [
    ({"alpha": 0.5}, ConfigError, "exact=False"),
    ({"exact": False, "alpha": 0.0}, ConfigError, "alpha"),
    ({"exact": False, "beta": 1.5}, ConfigError, "beta"),
    ({"nprobe": 3}, ConfigError, "unknown"),
    ({"threads": 0}, ConfigError, "threads"),
    ({"exact": "yes"}, ConfigError, "exact"),
])
def test_search_parameter_validation(build_sparse, sparse_docs, sparse_queries, params, error, match):
    reader = build_sparse(sparse_docs[:50])
    with pytest.raises(error, match=match):
        reader.search(sparse_queries, 5, **params)


def test_input_validation(build_sparse, sparse_docs, sparse_queries, sparse_batch, tmp_path):
    reader = build_sparse(sparse_docs[:50])
    with pytest.raises(InputError, match="vocabulary"):
        reader.search(sp.csr_matrix((1, 7), dtype=np.float32), 5)
    neg = sparse_queries[:1].copy()
    neg.data[0] = -1
    with pytest.raises(InputError, match=">= 0"):
        reader.search(neg, 5)
    with pytest.raises(InputError, match="deleted"):
        reader.search(sparse_queries, 5, deleted=np.zeros(3, bool))
    with pytest.raises(InputError, match="k must"):
        reader.search(sparse_queries, -1)
    with pytest.raises(InputError, match="ids"):
        reader.doc_weights(np.array([50]))
    bad = sparse_docs[:5].copy()
    bad.data[2] = np.nan
    with pytest.raises(InputError, match="token 119 in row 1"):
        SparseComponent().build(tmp_path / "x", sparse_batch(bad), tmp_path / "shared")
