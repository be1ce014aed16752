"""The dense multi-segment pass (dense/multiseg.py) on an index shaped like a CLI build (graphs plus flat
segments): the concurrent schedule, a late pool worker, a worker's error, the inline rule for small
leftovers and the cheaper merge all return what the per-segment path and merge_topk return, and an
exhaustive walk the exact top."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import scipy.sparse as sp
from helpers.components import clustered_unit

from m3search import scoring
from m3search.errors import InputError
from m3search.indexes import segments
from m3search.indexes import query_pool
from m3search.indexes.dense import multiseg
from m3search.indexes.dense.reader import DenseSegmentReader
from m3search.indexes.index import Index
from m3search.types import EncodedBatch, EncoderIdentity

D = 32
SIZES = (1200, 600, 150, 100, 50)  # two graphs (flat_threshold 300), then three flat segments


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    xb = clustered_unit(sum(SIZES), D, n_clusters=20, spread=0.4, seed=41)
    rng = np.random.default_rng(42)
    xq = (xb[rng.choice(len(xb), 12, replace=False)] + 0.05 * rng.standard_normal((12, D))).astype(np.float32)
    identity = EncoderIdentity(name="test-dense", dense_dim=D, multivec_dim=D, vocab_size=10, tokenizer_hash="t")
    path = tmp_path_factory.mktemp("pass") / "ix"
    with Index.create(path, identity, components={"dense": {"flat_threshold": 300}}, auto_merge=False) as ix:
        lo = 0
        for n in SIZES:
            ix.add([f"d{i}" for i in range(lo, lo + n)],
                   EncodedBatch(xb[lo : lo + n], sp.csr_matrix((n, 10), dtype=np.float32),
                                np.zeros((0, D), np.float32), np.zeros(n, np.int64)), None)
            ix.commit()
            lo += n
    return path, xb, xq


@pytest.fixture
def snap(built):
    path, xb, xq = built
    with Index.open(path) as ix, ix.snapshot() as snap:
        kinds = [v.readers["dense"].structure.kind for v in snap.dense.segset.views]
        assert kinds == ["hnsw", "hnsw", "flat", "flat", "flat"]
        yield snap, xb, xq


def per_segment(snap, q, k, **params):
    return segments._search(snap.dense.segset, "dense", q, len(q), k, None, params)


def exact_top(xb, xq, k):
    s = scoring.dense_scores(xq, xb.astype(np.float16).astype(np.float32))
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), order


@pytest.fixture
def at_once(monkeypatch):
    """Searches as small as these tests' (32-d) handed to the pool as a 384-d index's are."""
    monkeypatch.setattr(multiseg, "HANDOFF_WORK", 0)


def test_graphs_and_flat_group_searched_at_once_equal_the_per_segment_path(snap, monkeypatch, at_once):
    snap, xb, xq = snap
    jobs_seen = []
    concurrently = multiseg._search_concurrently
    monkeypatch.setattr(multiseg, "_search_concurrently", lambda jobs: jobs_seen.append(len(jobs)) or concurrently(jobs))
    for q in xq:
        for k in (10, 100):
            D1, I1 = snap.dense.search(q[None], k)
            D0, I0 = per_segment(snap, q[None], k)
            np.testing.assert_array_equal(I1, I0)
            np.testing.assert_array_equal(D1, D0)
    assert jobs_seen == [3] * (2 * len(xq))  # two graphs and one job for the three flat segments
    scores, ids = snap.dense.search(xq, 10, ef_search=len(xb))  # an exhaustive walk: the exact top
    Dx, Ix = exact_top(xb, xq, 10)
    np.testing.assert_allclose(scores, Dx, atol=1e-5)
    for d, a, b in zip(Dx, Ix, ids):
        clear = d > d[-1] + 1e-4
        assert set(a[clear]) <= set(b)


def test_a_late_worker_leaves_the_jobs_to_the_caller(snap, monkeypatch, at_once):
    """The pool's only worker busy elsewhere: the caller runs every job itself (results unchanged) and
    does not wait for the worker to start."""
    snap, _, xq = snap
    monkeypatch.setattr(query_pool, "helpers", lambda: 1)
    monkeypatch.setattr(query_pool, "_POOL", None)
    release = threading.Event()
    blocker = query_pool.pool().submit(release.wait)  # the one helper, taken by other work
    timer = threading.Timer(10, release.set)  # a caller that waited for the worker returns, late, and fails
    timer.daemon = True
    timer.start()
    runners = []
    run = DenseSegmentReader.search_checked
    monkeypatch.setattr(DenseSegmentReader, "search_checked",
                        lambda self, *a, **kw: runners.append(threading.current_thread().name) or run(self, *a, **kw))
    try:
        D1, I1 = snap.dense.search(xq[:1], 10)
        assert not release.is_set()
    finally:
        timer.cancel()
        release.set()
    blocker.result()
    assert len(set(runners)) == 1 and runners[0] == threading.current_thread().name
    D0, I0 = per_segment(snap, xq[:1], 10)
    np.testing.assert_array_equal(I1, I0)
    np.testing.assert_array_equal(D1, D0)


def test_an_error_in_a_job_reaches_the_caller(snap, monkeypatch, at_once):
    snap, _, xq = snap
    run = DenseSegmentReader.search_checked

    def failing(self, *a, **kw):
        if self.n_docs == 600:
            raise InputError("segment 600 failed")
        return run(self, *a, **kw)

    monkeypatch.setattr(DenseSegmentReader, "search_checked", failing)
    for _ in range(5):  # on the worker or, when it starts late, on the caller
        with pytest.raises(InputError, match="segment 600 failed"):
            snap.dense.search(xq[:1], 10)


def test_small_leftovers_run_on_the_callers_thread(snap, monkeypatch):
    """Besides the largest job, less work than a hand-off to the pool costs: no pool, same results."""
    snap, _, xq = snap
    calls = []
    monkeypatch.setattr(multiseg, "_search_concurrently", lambda jobs: calls.append(jobs) or [j.run() for j in jobs])
    # at 32-d a graph walk (ef 256, M 32) is 262k multiply-adds: the second graph and the flat group are
    # below HANDOFF_WORK
    D1, I1 = snap.dense.search(xq[:1], 10)
    assert calls == []
    snap.dense.search(xq[:1], 10, ef_search=512)  # twice the work: now worth the hand-off
    assert len(calls) == 1
    D0, I0 = per_segment(snap, xq[:1], 10)
    np.testing.assert_array_equal(I1, I0)
    np.testing.assert_array_equal(D1, D0)


def test_a_configured_thread_count_searches_one_by_one(snap, monkeypatch, at_once):
    snap, _, xq = snap
    calls = []
    monkeypatch.setattr(multiseg, "_search_concurrently", lambda jobs: calls.append(jobs))
    for q in xq[:3]:
        D1, I1 = snap.dense.search(q[None], 10, threads=1)
        D0, I0 = per_segment(snap, q[None], 10, threads=1)
        np.testing.assert_array_equal(I1, I0)
        np.testing.assert_array_equal(D1, D0)
    assert calls == []


@pytest.mark.parametrize("seed", range(6))
def test_merge_equals_merge_topk_with_ties_padding_and_short_lists(seed):
    rng = np.random.default_rng(seed)
    m, k = 4, 10
    Ds, Is, next_id = [], [], 0
    for _ in range(rng.integers(2, 5)):
        n = int(rng.integers(1, 15))
        d = np.round(rng.standard_normal((m, n)), 1 if seed % 2 else 6).astype(np.float32)  # odd seeds: many ties
        ids = next_id + rng.permutation(n)[None].repeat(m, 0)
        next_id += n
        order = np.argsort(-d, axis=1, kind="stable")
        d, ids = np.take_along_axis(d, order, 1), np.take_along_axis(ids, order, 1)
        pad = rng.random((m, n)) < 0.2  # padding at the end of a row, as a segment with few live docs returns
        pad = np.sort(pad, axis=1)
        d[pad], ids[pad] = -np.inf, -1
        Ds.append(d)
        Is.append(ids.astype(np.int64))
    for kk in (1, k, sum(x.shape[1] for x in Ds) + 3):
        want = segments.merge_topk(Ds, Is, m, kk)
        got = multiseg.merge(Ds, Is, m, kk)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_ids_that_are_not_live_are_refused_by_the_array_routing(snap):
    """A fresh build's segments are plain ranges: locate routes them with array operations, and still
    refuses ids outside every segment."""
    snap, xb, xq = snap
    segset = snap.dense.segset
    assert segset._ranges is not None
    ids = np.array([0, 1199, 1200, 1799, 1800, len(xb) - 1, 5])
    scores = snap.dense.score_pairs(xq[:1], np.zeros(len(ids), np.int64), ids)
    np.testing.assert_allclose(scores, xb[ids].astype(np.float16).astype(np.float32) @ xq[0], rtol=1e-5, atol=1e-6)
    groups = segset.locate(ids)
    saved, segset._ranges = segset._ranges, None  # the per-segment routing gives the same groups
    try:
        for (v1, p1, l1), (v2, p2, l2) in zip(groups, segset.locate(ids)):
            assert v1 is v2
            np.testing.assert_array_equal(p1, p2)
            np.testing.assert_array_equal(l1, l2)
    finally:
        segset._ranges = saved
    for bad in ([-1], [len(xb)], [0, len(xb) + 7]):
        with pytest.raises(InputError, match="not live documents"):
            segset.locate(np.array(bad))
