"""Which structure a dense segment gets (flat while n * d < FLAT_WORK under flat_threshold "auto"), that
the chosen structure keeps recall against exact search, that indexes keep the threshold they recorded,
and that a multi-segment index (one pass over its segments) finds what the same index optimized finds."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from helpers.components import clustered_unit, vectors_batch

from m3search import scoring
from m3search.errors import ConfigError
from m3search.indexes import segments
from m3search.indexes.dense import DenseComponent, choose_structure
from m3search.indexes.dense.config import FLAT_WORK, flat_threshold, validate_config
from m3search.indexes.index import Index
from m3search.types import EncodedBatch, EncoderIdentity

D = 384


@pytest.mark.parametrize("d, flat_below", [(384, 10_923), (1024, 4_096), (768, 5_462), (64, 65_536)])
def test_auto_threshold_follows_n_times_d(d, flat_below):
    config = validate_config({})
    assert config["flat_threshold"] == "auto"
    assert flat_threshold(d, config) == flat_below
    assert (flat_below - 1) * d < FLAT_WORK <= flat_below * d
    assert choose_structure(flat_below - 1, d, config).kind == "flat"
    assert choose_structure(flat_below, d, config).kind == "hnsw"
    assert choose_structure(1, d, config).kind == "flat"
    assert choose_structure(0, d, config).kind == "flat"


def test_a_number_is_kept_and_structures_above_it_as_before():
    old = validate_config({"flat_threshold": 100_000})  # what indexes created before "auto" recorded
    assert choose_structure(64_000, 384, old).kind == "flat"
    assert choose_structure(99_999, 1024, old).kind == "flat"
    assert choose_structure(100_000, 384, old).kind == "hnsw"
    assert choose_structure(2_000_000, 1024, validate_config({})).kind == "ivfpqfs"  # hnsw_max_docs
    with pytest.raises(ConfigError, match="flat_threshold"):
        validate_config({"flat_threshold": "sometimes"})


def exact(xb, xq, k, deleted=None):
    s = scoring.dense_scores(xq, xb.astype(np.float16).astype(np.float32))
    if deleted is not None:
        s[:, deleted] = -np.inf
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def recall(found, truth, k):
    return np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(found, truth)])


@pytest.fixture(scope="module")
def corpus():
    xb = clustered_unit(12_000, D, n_clusters=60, spread=0.5, seed=11)
    rng = np.random.default_rng(12)
    xq = xb[rng.choice(len(xb), 60, replace=False)] + 0.1 * rng.standard_normal((60, D)).astype(np.float32)
    return xb, xq.astype(np.float32)


@pytest.mark.slow
def test_chosen_structure_keeps_recall(tmp_path, corpus):
    """12,000 x 384 is above the auto threshold: HNSW, R@10 and R@100 >= 0.99 against exact search, also
    with 30% of the documents deleted; just below it the segment is flat and exact."""
    xb, xq = corpus
    comp = DenseComponent({"threads": 1})
    meta = comp.build(tmp_path / "big", vectors_batch(dense=xb), tmp_path / "shared")
    reader = comp.open(tmp_path / "big", meta, tmp_path / "shared")
    assert reader.structure.kind == "hnsw"
    for k in (10, 100):
        _, found = reader.search(xq, k)
        assert recall(found, exact(xb, xq, k), k) >= 0.99
    deleted = np.random.default_rng(13).random(len(xb)) < 0.3
    _, found = reader.search(xq, 100, deleted=deleted)
    assert not deleted[found[found >= 0]].any()
    assert recall(found, exact(xb, xq, 100, deleted), 100) >= 0.99

    small = xb[: flat_threshold(D, comp.config) - 1]
    meta = comp.build(tmp_path / "small", vectors_batch(dense=small), tmp_path / "shared")
    flat = comp.open(tmp_path / "small", meta, tmp_path / "shared")
    assert flat.structure.kind == "flat"
    _, found = flat.search(xq, 100)
    assert recall(found, exact(small, xq, 100), 100) == 1.0


def _identity():
    return EncoderIdentity(name="test-dense", dense_dim=D, multivec_dim=D, vocab_size=10, tokenizer_hash="t")


def _batch(x):
    n = len(x)
    return EncodedBatch(x, sp.csr_matrix((n, 10), dtype=np.float32), np.zeros((0, D), np.float32),
                        np.zeros(n, np.int64))


@pytest.mark.slow
def test_multi_segment_index_finds_what_the_optimized_one_finds(tmp_path, corpus):
    """Segments [12,000 (HNSW), 6,000, 3,000, 1,000 (flat)] with deletions: the one-pass search equals the
    per-segment path exactly, and both it and the optimized index (one HNSW segment) keep R@10/R@100 >= 0.99
    against exact search over the live documents."""
    xb, xq = corpus
    rng = np.random.default_rng(14)
    extra = clustered_unit(10_000, D, n_clusters=60, spread=0.5, seed=21)
    allx = np.concatenate([xb, extra])
    with Index.create(tmp_path / "ix", _identity(), components={"dense": {"threads": 1}}, auto_merge=False) as ix:
        lo = 0
        for size in (12_000, 6_000, 3_000, 1_000):
            ix.add([f"d{i}" for i in range(lo, lo + size)], _batch(allx[lo : lo + size]), None)
            ix.commit()
            lo += size
        gone = np.flatnonzero(rng.random(lo) < 0.05)
        ix.delete([f"d{i}" for i in gone])
        ix.commit()
        deleted = np.zeros(lo, bool)
        deleted[gone] = True
        truth = {k: exact(allx, xq, k, deleted) for k in (10, 100)}
        with ix.snapshot() as snap:
            kinds = [v.readers["dense"].structure.kind for v in snap.dense.segset.views]
            assert kinds == ["hnsw", "flat", "flat", "flat"]
            found = {}
            for k in (10, 100):
                D1, I1 = snap.dense.search(xq, k)
                D0, I0 = segments._search(snap.dense.segset, "dense", xq, len(xq), k, None, {})
                np.testing.assert_array_equal(I1, I0)
                np.testing.assert_array_equal(D1, D0)
                assert not deleted[I1[I1 >= 0]].any()
                assert recall(I1, truth[k], k) >= 0.99
                found[k] = I1
            ids = np.concatenate([found[100][:, :50].ravel(), found[10].ravel()])
            ids = ids[ids >= 0]
            qi = np.concatenate([np.repeat(np.arange(len(xq)), 50), np.repeat(np.arange(len(xq)), 10)])
            one = snap.dense.score_pairs(xq, qi, ids)
            each = snap.dense._score_pairs(qi, ids, lambda r, q, loc: r.score_pairs(xq, q, loc))
            np.testing.assert_allclose(one, each, rtol=0, atol=1e-6)
            np.testing.assert_allclose(one, np.einsum("pd,pd->p", allx[ids].astype(np.float16).astype(np.float32),
                                                      xq[qi]), rtol=0, atol=1e-5)
            # a caller's mask (a filter) goes through the same pass
            mask = np.zeros(snap.dense.n_docs, bool)
            mask[::3] = True
            _, If = snap.dense.search(xq, 10, deleted=mask)
            assert not (mask[If[If >= 0]] | deleted[If[If >= 0]]).any()
            assert recall(If, exact(allx, xq, 10, deleted | mask), 10) >= 0.99
        ix.optimize()
        with ix.snapshot() as snap:
            assert [v.readers["dense"].structure.kind for v in snap.dense.segset.views] == ["hnsw"]
            for k in (10, 100):
                _, I2 = snap.dense.search(xq, k)
                assert recall(I2, truth[k], k) >= 0.99
                assert recall(found[k], I2, k) >= 0.98  # the two approximate searches agree


def test_an_index_keeps_the_threshold_it_recorded(tmp_path):
    """An index whose manifest records flat_threshold 100,000 (every index created before "auto") keeps
    building flat segments below it after reopening, as it always did; a new index records "auto"."""
    x = clustered_unit(11_000, D, n_clusters=20, spread=0.5, seed=5)
    with Index.create(tmp_path / "old", _identity(), components={"dense": {"flat_threshold": 100_000, "threads": 1}},
                      auto_merge=False) as ix:
        ix.add([f"a{i}" for i in range(10)], _batch(x[:10]), None)
        ix.commit()
    with Index.open(tmp_path / "old", writable=True, auto_merge=False) as ix:
        assert ix.components["dense"]["flat_threshold"] == 100_000
        ix.add([f"b{i}" for i in range(11_000)], _batch(x), None)
        ix.commit()
        with ix.snapshot() as snap:
            assert [v.readers["dense"].structure.kind for v in snap.dense.segset.views] == ["flat", "flat"]
    with Index.create(tmp_path / "new", _identity(), components={"dense": {}}) as ix:
        assert ix.components["dense"]["flat_threshold"] == "auto"
