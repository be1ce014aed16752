"""Few dense graphs in an index built by many commits: the merge policy caps the segments searched on their
own (merge_policy.py), and a dense merge extends its first source's HNSW graph instead of rebuilding it
(dense/component.py), with results that stay exact under an exhaustive walk."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from helpers.components import clustered_unit, vectors_batch

from m3search import scoring
from m3search.errors import ConfigError
from m3search.indexes.dense import DenseComponent
from m3search.indexes.dense.reader import DenseSegmentReader
from m3search.indexes.index import Index
from m3search.indexes.merge_policy import TieredMergePolicy
from m3search.types import EncodedBatch, EncoderIdentity

D = 32


def exact_top(xb, xq, k):
    s = scoring.dense_scores(xq, xb.astype(np.float16).astype(np.float32))
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), order


def assert_same_topk(D1, I1, D2, I2, atol=1e-5):
    np.testing.assert_allclose(D1, D2, atol=atol)
    for d, a, b in zip(D1, I1, I2):
        clear = d > d[-1] + 2 * atol  # ties with the k-th may come in either order
        assert set(a[clear]) <= set(b) and set(b[clear]) <= set(a), (a, b)


# -- the policy -------------------------------------------------------------------------------------------


def test_segments_searched_alone_beyond_the_cap_merge():
    policy = TieredMergePolicy(merge_factor=4, floor_docs=1000)
    sizes = [64_000, 16_000, 16_000, 4_000]  # what tiers alone leave after 100 commits of 1,000
    assert policy.plan(sizes, [0] * 4) == []
    assert policy.plan(sizes, [0] * 4, None, [False] * 4) == []
    # two graphs after the first hold 32k >= 64k / 4: they join the first
    assert policy.plan(sizes, [0] * 4, None, [True, True, True, False]) == [range(0, 3)]
    # behind a much larger first segment they merge into one second segment instead
    assert policy.plan([200_000, 16_000, 16_000, 4_000], [0] * 4, None, [True, True, True, False]) == [range(1, 3)]
    assert policy.plan([200_000, 16_000, 4_000], [0] * 3, None, [True, True, False]) == []  # at the cap
    one = TieredMergePolicy(merge_factor=4, floor_docs=1000, max_searched_alone=1)
    assert one.plan([200_000, 16_000, 4_000], [0] * 3, None, [True, True, False]) == [range(0, 2)]
    # segments with nothing live don't count (the tiers' purge drops them)
    assert policy.plan([64_000, 16_000, 16_000], [0, 16_000, 0], None, [True, True, True]) == [range(1, 2)]
    for bad in ({"max_searched_alone": 0}, {"grow_ratio": 0.5}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            TieredMergePolicy(**bad)


def _simulate(policy, commits, per_commit, alone_from):
    """A commit every `per_commit` documents, each followed by the writer's plan-and-merge loop; yields the
    segment sizes after each commit. `alone_from`: the size from which a segment has a graph."""
    sizes: list[int] = []
    for _ in range(commits):
        sizes.append(per_commit)
        while runs := policy.plan(sizes, [0] * len(sizes), None, [n >= alone_from for n in sizes]):
            for run in sorted(runs, key=lambda r: r.start, reverse=True):
                sizes[run.start : run.stop] = [sum(sizes[run.start : run.stop])]
        yield list(sizes)


@pytest.mark.parametrize("cap", [1, 2, 3])
def test_a_long_build_never_keeps_more_graphs_than_the_cap(cap):
    """300 commits of 1,000 documents at 384-d (a graph from 10,923 documents): tiers alone keep up to 6
    graphs; with the cap never more than `cap`, and every document is still in exactly one segment."""
    tiers_only = TieredMergePolicy(merge_factor=4, floor_docs=1000, max_searched_alone=10**9)
    assert max(sum(n >= 10_923 for n in s) for s in _simulate(tiers_only, 300, 1000, 10_923)) > 3
    capped = TieredMergePolicy(merge_factor=4, floor_docs=1000, max_searched_alone=cap)
    for i, sizes in enumerate(_simulate(capped, 300, 1000, 10_923)):
        assert sum(n >= 10_923 for n in sizes) <= cap
        assert sum(sizes) == 1000 * (i + 1)
        assert len(sizes) <= cap + 6, sizes  # and the flat tail stays bounded by the tiers


# -- extending a graph --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    xb = clustered_unit(3000, D, n_clusters=30, spread=0.4, seed=31)
    rng = np.random.default_rng(32)
    xq = xb[rng.choice(len(xb), 30, replace=False)] + 0.05 * rng.standard_normal((30, D)).astype(np.float32)
    return xb, xq.astype(np.float32)


CONFIG = {"threads": 1, "index": "hnsw", "hnsw_m": 16}


def _segment(tmp_path, x, name):
    comp = DenseComponent(CONFIG)
    meta = comp.build(tmp_path / name, vectors_batch(dense=x), tmp_path / "shared")
    return comp.open(tmp_path / name, meta, tmp_path / "shared")


@pytest.mark.parametrize("first_loses_one", [False, True])
def test_merge_extends_the_first_graph_only_when_it_keeps_every_document(tmp_path, data, monkeypatch, first_loses_one):
    xb, xq = data
    a, b = _segment(tmp_path, xb[:2000], "a"), _segment(tmp_path, xb[2000:], "b")
    copies = []
    original = DenseSegmentReader.graph_copy
    monkeypatch.setattr(DenseSegmentReader, "graph_copy", lambda self: copies.append(self.path) or original(self))
    keep_a = np.delete(np.arange(2000), 7) if first_loses_one else np.arange(2000)
    keep_b = np.arange(0, 1000, 2)
    comp = DenseComponent(CONFIG)
    meta = comp.merge(tmp_path / "m", [a, b], [keep_a, keep_b], tmp_path / "shared")
    merged = comp.open(tmp_path / "m", meta, tmp_path / "shared")
    assert copies == ([] if first_loses_one else [a.path])
    kept = np.concatenate([xb[:2000][keep_a], xb[2000:][keep_b]])
    assert merged.structure.kind == "hnsw" and merged.n_docs == len(kept)
    np.testing.assert_array_equal(merged.vectors(np.arange(len(kept))), kept.astype(np.float16).astype(np.float32))
    assert_same_topk(*exact_top(kept, xq, 10), *merged.search(xq, 10, ef_search=len(kept)))  # exhaustive walk
    _, found = merged.search(xq, 10)
    truth = exact_top(kept, xq, 10)[1]
    assert np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]) >= 0.95
    # the source's own graph was copied, not changed
    assert_same_topk(*exact_top(xb[:2000], xq, 10), *a.search(xq, 10, ef_search=2000))
    assert a.graph_copy().ntotal == 2000


def test_an_index_committed_many_times_keeps_at_most_two_graphs_and_finds_the_exact_top(tmp_path, data):
    xb, xq = data
    identity = EncoderIdentity(name="test-dense", dense_dim=D, multivec_dim=D, vocab_size=10, tokenizer_hash="t")
    policy = TieredMergePolicy(merge_factor=3, floor_docs=20)
    kinds_seen = []
    with Index.create(tmp_path / "ix", identity, components={"dense": {"threads": 1, "flat_threshold": 150}},
                      merge_policy=policy, background_merge=False) as ix:
        for lo in range(0, 2400, 40):
            x = xb[lo : lo + 40]
            ix.add([f"d{i}" for i in range(lo, lo + len(x))],
                   EncodedBatch(x, sp.csr_matrix((len(x), 10), dtype=np.float32), np.zeros((0, D), np.float32),
                                np.zeros(len(x), np.int64)), None)
            ix.commit()
            with ix.snapshot() as snap:
                kinds = [v.readers["dense"].structure.kind for v in snap.dense.segset.views]
            kinds_seen.append(kinds)
            assert sum(k != "flat" for k in kinds) <= 2, kinds
        assert max(sum(k != "flat" for k in kinds) for kinds in kinds_seen) == 2  # the cap was reached
        with ix.snapshot() as snap:
            assert_same_topk(*exact_top(xb[:2400], xq, 10), *snap.dense.search(xq, 10, ef_search=2400))


def test_graphs_searched_at_once_return_what_the_segments_return_one_by_one(tmp_path, data, monkeypatch):
    """Three HNSW segments and no thread count configured: a single query walks them on several threads
    (dense/multiseg.py); the results equal the per-segment path's, and an exhaustive walk the exact top."""
    from m3search.indexes import segments
    from m3search.indexes.dense import multiseg

    xb, xq = data
    calls = []
    concurrently = multiseg._search_concurrently
    monkeypatch.setattr(multiseg, "_search_concurrently", lambda jobs: calls.append(len(jobs)) or concurrently(jobs))
    identity = EncoderIdentity(name="test-dense", dense_dim=D, multivec_dim=D, vocab_size=10, tokenizer_hash="t")
    with Index.create(tmp_path / "ix", identity, components={"dense": {"flat_threshold": 100}}, auto_merge=False) as ix:
        for lo in range(0, 3000, 1000):
            x = xb[lo : lo + 1000]
            ix.add([f"d{i}" for i in range(lo, lo + 1000)],
                   EncodedBatch(x, sp.csr_matrix((1000, 10), dtype=np.float32), np.zeros((0, D), np.float32),
                                np.zeros(1000, np.int64)), None)
            ix.commit()
        ix.delete(["d5", "d1500"])
        ix.commit()
        with ix.snapshot() as snap:
            readers = [v.readers["dense"] for v in snap.dense.segset.views]
            assert [r.structure.kind for r in readers] == ["hnsw"] * 3
            snap.dense.search(xq[:1], 10, threads=1)  # a thread count asked for: one by one
            assert calls == []
            for q in xq[:10]:
                D1, I1 = snap.dense.search(q[None], 10)
                D0, I0 = segments._search(snap.dense.segset, "dense", q[None], 1, 10, None, {})
                np.testing.assert_array_equal(I1, I0)
                np.testing.assert_array_equal(D1, D0)
            assert calls == [3] * 10
            keep = np.setdiff1d(np.arange(3000), [5, 1500])
            scores, ids = snap.dense.search(xq, 10, ef_search=3000)
            Dx, Ix = exact_top(xb[keep], xq, 10)
            assert_same_topk(Dx, keep[Ix], scores, ids)
