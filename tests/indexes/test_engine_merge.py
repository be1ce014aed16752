"""Index engine: merge policy, merges preserving search results, id routing across segments."""
from __future__ import annotations

import numpy as np
import pytest
from helpers.engine_doubles import assert_matches_brute_force, make_text

from m3search.errors import ConfigError, InputError
from m3search.indexes.merge_policy import TieredMergePolicy, merge_all

QUERIES = ["alpha river", "music theory engine", "golden castle harbor", "stone paper glass", "north"]


def fill(index, encoder, n_batches, per_batch, prefix="d"):
    live = {}
    for b in range(n_batches):
        ids = [f"{prefix}{b}-{i}" for i in range(per_batch)]
        texts = [make_text(i) for i in ids]
        index.add(ids, encoder.encode(texts), [{"text": t} for t in texts])
        index.commit()
        live.update(zip(ids, texts))
    return live


def search_all(snap, encoder, k=10):
    q = encoder.encode(QUERIES, kind="query")
    return snap.dense.search(q.dense, k), snap.sparse.search(q.sparse, k)


# -- the policy -----------------------------------------------------------------------------------------


def test_policy_merges_runs_of_equal_tier():
    policy = TieredMergePolicy(merge_factor=4, floor_docs=100, max_deleted_ratio=0.5)
    assert policy.plan([10] * 3, [0] * 3) == []
    assert policy.plan([10] * 8, [0] * 8) == [range(0, 4), range(4, 8)]
    # a big segment (tier 2) followed by small ones: only the small run merges
    assert policy.plan([5000, 10, 10, 10, 10], [0] * 5) == [range(1, 5)]
    assert policy.tier(99) == 0 and policy.tier(100) == 1 and policy.tier(400) == 2


def test_policy_purges_deleted_and_drops_empty_segments():
    policy = TieredMergePolicy(merge_factor=4, floor_docs=100, max_deleted_ratio=0.3)
    assert policy.plan([1000, 1000], [400, 0]) == [range(0, 1)]
    assert policy.plan([1000, 50], [0, 50]) == [range(1, 2)]
    assert merge_all(1, [0]) == [] and merge_all(1, [3]) == [range(0, 1)] and merge_all(3, [0, 0, 0]) == [range(0, 3)]


def test_policy_refuses_bad_settings():
    with pytest.raises(ConfigError, match="merge_factor"):
        TieredMergePolicy(merge_factor=1)
    with pytest.raises(ConfigError, match="max_deleted_ratio"):
        TieredMergePolicy(max_deleted_ratio=0)


# -- merges -----------------------------------------------------------------------------------------------


def test_optimize_keeps_search_results_identical(make_index, hashing_encoder, tmp_path):
    index = make_index(auto_merge=False)
    live = fill(index, hashing_encoder, n_batches=5, per_batch=12)
    gone = ["d0-0", "d1-5", "d1-6", "d3-11", "d4-0"]
    index.delete(gone)
    index.commit()
    for g in gone:
        live.pop(g)
    with index.snapshot() as before:
        assert len(before.segments) == 5
        (D1, I1), (Ds1, Is1) = search_all(before, hashing_encoder)
        ids_before = before.internal_ids(sorted(live))
    index.optimize()
    with index.snapshot() as after:
        assert len(after.segments) == 1 and after.segments[0].n_deleted == 0
        assert after.segments[0].id_map, "deleted documents leave gaps: the merged segment lists its ids"
        (D2, I2), (Ds2, Is2) = search_all(after, hashing_encoder)
        np.testing.assert_array_equal(I1, I2)
        np.testing.assert_array_equal(Is1, Is2)
        np.testing.assert_allclose(D1, D2, atol=1e-6)
        np.testing.assert_allclose(Ds1, Ds2, atol=1e-6)
        np.testing.assert_array_equal(after.internal_ids(sorted(live)), ids_before)
        assert_matches_brute_force(after, hashing_encoder, live, QUERIES)
    assert sorted(p.name for p in (tmp_path / "ix" / "segments").iterdir()) == [after.segments[0].name]


def test_auto_merge_bounds_the_segment_count(make_index, hashing_encoder):
    policy = TieredMergePolicy(merge_factor=3, floor_docs=10, max_deleted_ratio=0.3)
    index = make_index(merge_policy=policy, background_merge=False)  # merges in commit(): a fixed sequence
    live = fill(index, hashing_encoder, n_batches=14, per_batch=4)
    # deleting most of the oldest documents triggers a purge of their segment
    with index.snapshot() as snap:
        first = snap.segments[0]
    assert first.n == 36, "9 batches of 4 merged into the first segment"
    victims = [e for e in sorted(live) if e.startswith(("d0-", "d1-", "d2-", "d3-"))]
    index.delete(victims)
    index.commit()
    for v in victims:
        live.pop(v)
    with index.snapshot() as snap:
        assert len(snap.segments) <= 3 * 3
        assert all(s.n_deleted / s.n <= 0.3 for s in snap.segments)
        assert first.name not in {s.name for s in snap.segments}
        assert_matches_brute_force(snap, hashing_encoder, live, QUERIES)


def test_contiguous_merge_needs_no_id_map(make_index, hashing_encoder):
    index = make_index(auto_merge=False)
    live = fill(index, hashing_encoder, n_batches=3, per_batch=5)
    index.optimize()
    with index.snapshot() as snap:
        (seg,) = snap.segments
        assert (seg.lo, seg.hi, seg.id_map) == (0, 15, False)
        assert_matches_brute_force(snap, hashing_encoder, live, QUERIES)


# -- routing ids to segments ---------------------------------------------------------------------------------


def test_stored_representations_come_back_in_input_order(make_index, hashing_encoder):
    index = make_index(auto_merge=False)
    live = fill(index, hashing_encoder, n_batches=4, per_batch=6)
    index.delete(["d0-1", "d2-2"])
    index.commit()
    live.pop("d0-1"), live.pop("d2-2")
    index.optimize()  # one id-mapped segment ...
    more = fill(index, hashing_encoder, n_batches=2, per_batch=5, prefix="m")  # ... plus contiguous ones
    live.update(more)
    rng = np.random.default_rng(0)
    ext = list(rng.permutation(sorted(live)))
    truth = hashing_encoder.encode([live[e] for e in ext])
    with index.snapshot() as snap:
        assert len(snap.segments) == 3
        ids = snap.internal_ids(ext)
        np.testing.assert_allclose(snap.dense.vectors(ids), truth.dense, atol=1e-6)
        np.testing.assert_allclose(snap.sparse.doc_weights(ids).toarray(), truth.sparse.toarray(), atol=1e-6)
        vecs, lens = snap.multivec.token_vectors(ids)
        np.testing.assert_array_equal(lens, truth.multivec_lengths)
        np.testing.assert_allclose(vecs, truth.multivec, atol=1e-6)
        q = hashing_encoder.encode(QUERIES, kind="query")
        qi = rng.integers(0, len(QUERIES), size=len(ids))
        got = snap.dense.score_pairs(q.dense, qi, ids)
        np.testing.assert_allclose(got, np.einsum("ij,ij->i", q.dense[qi], truth.dense), atol=1e-5)
        with pytest.raises(InputError, match="same length"):
            snap.dense.score_pairs(q.dense, qi[:-1], ids)


def test_caller_mask_filters_search(make_index, hashing_encoder):
    index = make_index(auto_merge=False)
    live = fill(index, hashing_encoder, n_batches=3, per_batch=8)
    with index.snapshot() as snap:
        keep = sorted(e for e in live if e.endswith(("-1", "-2", "-3")))
        mask = np.ones(snap.dense.n_docs, dtype=bool)
        mask[snap.internal_ids(keep)] = False
        q = hashing_encoder.encode(QUERIES, kind="query")
        D, I = snap.dense.search(q.dense, 5, deleted=mask)
        assert set(I[I >= 0].tolist()) <= set(snap.internal_ids(keep).tolist())
        D, I = snap.dense.search(q.dense, 50, deleted=mask)
        assert (I >= 0).sum(axis=1).tolist() == [len(keep)] * len(QUERIES)
        with pytest.raises(InputError, match="deleted mask must have shape"):
            snap.dense.search(q.dense, 5, deleted=mask[:-1])


def test_fidelity_is_combined_over_segments():
    from m3search.indexes.segments import IndexMultivecReader, SegmentSet, SegmentView
    from m3search.indexes.state import SegmentInfo

    class Stub:
        def __init__(self, report):
            self.report = report

        def fidelity(self):
            return self.report

    def view(lo, n, report):
        info = SegmentInfo(name=f"s{lo}", lo=lo, hi=lo + n, n=n, id_map=False, metas={}, files={})
        return SegmentView(info, {"multivec": Stub(report)}, None, np.zeros(n, dtype=bool))

    views = [view(0, 30, {"mean_cosine": 1.0, "compression": "fp16"}),
             view(30, 10, {"mean_cosine": 0.96, "compression": "rpq64"})]
    report = IndexMultivecReader(SegmentSet(views, 40, 1), dim=8).fidelity()
    assert report["mean_cosine"] == pytest.approx(0.99)
    assert report["compression"] == ["fp16", "rpq64"]
