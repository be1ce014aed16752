"""Merges in the background of commits (writer.py, background.py): the policy's merges run on a worker
thread after the commit is durable; results, deletions and the segment count are what synchronous merges
give. Crashes during background merges are in test_crash_safety.py."""
from __future__ import annotations

import threading

import numpy as np
from helpers.engine_doubles import assert_matches_brute_force, make_text

from m3search.indexes.index import Index
from m3search.indexes.merge_policy import TieredMergePolicy
from m3search.planner import Planner

QUERIES = ["alpha river", "music theory engine", "golden castle harbor", "stone paper glass", "north"]
POLICY = TieredMergePolicy(merge_factor=3, floor_docs=8, max_deleted_ratio=0.3)


def add_batch(index, encoder, live, ids):
    texts = [make_text(i) for i in ids]
    index.add(ids, encoder.encode(texts), [{"text": t} for t in texts])
    live.update(zip(ids, texts))


def test_segment_count_stays_bounded_and_results_exact(make_index, hashing_encoder):
    index = make_index(merge_policy=POLICY)
    live: dict[str, str] = {}
    for b in range(30):
        add_batch(index, hashing_encoder, live, [f"d{b}-{i}" for i in range(4)])
        index.commit()
        if b % 7 == 6:
            index.delete([f"d{b - 3}-{i}" for i in range(3)])
            for i in range(3):
                live.pop(f"d{b - 3}-{i}")
            index.commit()
    index.wait_for_merges()
    segs = index._committed_state().segments
    # a tier holds fewer than merge_factor segments once the policy is done: here tiers 0-2
    assert len(segs) <= 3 * (POLICY.merge_factor - 1)
    assert POLICY.plan([s.n for s in segs], [s.n_deleted for s in segs]) == []
    with index.snapshot() as snap:
        assert_matches_brute_force(snap, hashing_encoder, live, QUERIES)


def test_deletions_committed_during_a_merge_carry_over(tmp_path, hashing_encoder, engine_registry):
    """A merge paused after writing its segment; meanwhile the caller deletes documents of the segments it
    merges and commits. The merged segment must not bring them back."""
    at_merge, resume = threading.Event(), threading.Event()

    def hook(point):
        if point == "merge:built" and not at_merge.is_set():
            at_merge.set()
            assert resume.wait(timeout=60)

    policy = TieredMergePolicy(merge_factor=3, floor_docs=8, max_deleted_ratio=0.5)  # 4 of 12: no purge
    index = Index.create(tmp_path / "ix", hashing_encoder.identity, "hashing", registry=engine_registry,
                         merge_policy=policy, crash_hook=hook)
    live: dict[str, str] = {}
    try:
        for b in range(3):  # the third commit makes a run of three tier-0 segments: a merge starts
            add_batch(index, hashing_encoder, live, [f"d{b}-{i}" for i in range(4)])
            index.commit()
        assert at_merge.wait(timeout=60), "the policy should have started a merge"
        victims = ["d0-1", "d1-0", "d1-3", "d2-2"]
        index.delete(victims)
        add_batch(index, hashing_encoder, live, ["e0", "e1"])
        gen = index.commit()  # not blocked by the merge under way
        for v in victims:
            live.pop(v)
        with index.snapshot() as snap:
            assert snap.generation == gen and len(snap.segments) == 4  # three sources and the new one
            assert_matches_brute_force(snap, hashing_encoder, live, QUERIES)
        resume.set()
        index.wait_for_merges()
        with index.snapshot() as snap:
            assert len(snap.segments) == 2
            merged = snap.segments[0]
            assert (merged.n, merged.n_deleted) == (12, 4)
            assert_matches_brute_force(snap, hashing_encoder, live, QUERIES)
    finally:
        resume.set()
        index.close()
    with Index.open(tmp_path / "ix", registry=engine_registry) as again, again.snapshot() as snap:
        assert_matches_brute_force(snap, hashing_encoder, live, QUERIES)


def test_results_equal_before_and_after_background_merges(tmp_path, hashing_encoder):
    """Real components: the planner's hits on a CLI-like index (a commit per batch) are the same while the
    merge is pending and after it committed, and after optimize."""
    at_merge, resume = threading.Event(), threading.Event()

    def hook(point):
        if point == "merge:built" and not at_merge.is_set():
            at_merge.set()
            assert resume.wait(timeout=60)

    components = {"dense": {"index": "flat"}, "sparse": {},
                  "multivec": {"coarse_k": 16, "min_train_tokens": 300, "train_tokens": 3000}}
    index = Index.create(tmp_path / "ix", hashing_encoder.identity, "hashing", components=components,
                         merge_policy=TieredMergePolicy(merge_factor=4, floor_docs=50), crash_hook=hook)
    live: dict[str, str] = {}
    queries = hashing_encoder.encode(QUERIES, kind="query")

    def hits(mode):
        with index.snapshot() as snap:
            found = Planner(snap).search(queries, k=6, mode=mode, depths=40)
            return len(snap.segments), [[(h.docid, round(h.score, 4)) for h in row] for row in found]

    try:
        for b in range(4):
            add_batch(index, hashing_encoder, live, [f"d{b}-{i}" for i in range(40)])
            index.commit()
        assert at_merge.wait(timeout=60)
        before = {mode: hits(mode) for mode in ("dense", "sparse", "multivec", "all")}
        resume.set()
        index.wait_for_merges()
        after = {mode: hits(mode) for mode in before}
        index.optimize()
        optimized = {mode: hits(mode) for mode in before}
    finally:
        resume.set()
        index.close()
    for mode in before:
        assert before[mode][0] == 4 and after[mode][0] == 1 == optimized[mode][0]
        assert before[mode][1] == after[mode][1] == optimized[mode][1], mode


def test_close_waits_for_merges(tmp_path, hashing_encoder, engine_registry):
    index = Index.create(tmp_path / "ix", hashing_encoder.identity, "hashing", registry=engine_registry,
                         merge_policy=POLICY)
    live: dict[str, str] = {}
    for b in range(9):
        add_batch(index, hashing_encoder, live, [f"d{b}-{i}" for i in range(3)])
        index.commit()
    index.close()
    with Index.open(tmp_path / "ix", registry=engine_registry) as again, again.snapshot() as snap:
        segs = snap.segments
        assert POLICY.plan([s.n for s in segs], [s.n_deleted for s in segs]) == []
        names = {p.name for p in (tmp_path / "ix" / "segments").iterdir()}
        assert names == {s.name for s in segs}, "merged-away folders are collected"
        assert_matches_brute_force(snap, hashing_encoder, live, QUERIES)


def test_the_merge_that_trains_the_codec_runs_in_the_commit(tmp_path, hashing_encoder):
    """Until the multi-vector codec exists, a merge may train it (a sample and k-means' buffers): it runs in
    the commit, not beside the caller's encoding on the merge thread; merges after it go to that thread."""
    threads: list[str] = []

    def hook(point):
        if point == "merge:built":
            threads.append(threading.current_thread().name)

    components = {"multivec": {"compression": "sq8", "min_train_tokens": 100}}
    policy = TieredMergePolicy(merge_factor=3, floor_docs=8, max_deleted_ratio=0.5)
    index = Index.create(tmp_path / "ix", hashing_encoder.identity, "hashing", components=components,
                         merge_policy=policy, crash_hook=hook)
    live: dict[str, str] = {}
    try:
        for b in range(3):  # ~55 tokens each: fp16 segments; the third commit merges them, which trains
            add_batch(index, hashing_encoder, live, [f"a{b}-{i}" for i in range(4)])
            index.commit()
        segs = index._committed_state().segments  # no wait_for_merges: the merge ran in the commit
        assert [s.metas["multivec"]["codec"] for s in segs] == ["sq8"] and threads == [threading.current_thread().name]
        for b in range(3):  # three more small segments, encoded with the codec: their merge is background work
            add_batch(index, hashing_encoder, live, [f"b{b}-{i}" for i in range(4)])
            index.commit()
        index.wait_for_merges()
        assert threads[1:] == ["m3search-merges"]
        segs = index._committed_state().segments
        assert [s.metas["multivec"]["codec"] for s in segs] == ["sq8", "sq8"] and sum(s.n for s in segs) == len(live)
    finally:
        index.close()
