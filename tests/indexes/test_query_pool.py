"""One query's kernels split into chunks for idle helper threads (m3search.indexes.query_pool): the same
values as one call, whoever runs which chunk."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from m3search.indexes import query_pool
from m3search.indexes.multivec import generator as gen
from m3search.indexes.multivec import maxsim


def test_chunk_bounds_cover_every_item_once():
    for weights, n, chunks in [(None, 10, 3), (None, 5, 9), ([1, 1, 1, 10, 1, 1], 6, 2), ([0, 0, 7], 3, 3)]:
        bounds = query_pool.chunk_bounds(weights, n, chunks)
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a < b for a, b in bounds) and all(b == c for (_, b), (c, _) in zip(bounds, bounds[1:]))
    assert query_pool.chunk_bounds([1, 1, 1, 10, 1, 1], 6, 2) == [(0, 4), (4, 6)]  # by weight, not count


def test_split_run_uses_helpers_only_where_allowed():
    if query_pool.helpers() == 0:
        pytest.skip("one core: nothing to split onto")
    seen = []

    def fn(lo, hi):
        seen.append(threading.current_thread().name)
        threading.Event().wait(0.01)  # long enough for a helper to wake and claim a range
        return list(range(lo, hi))

    bounds = query_pool.chunk_bounds(None, 48, 16)  # 160 ms of ranges: time for a helper to wake
    assert query_pool.split_run(fn, bounds) == [list(range(a, b)) for a, b in bounds]
    assert set(seen) == {threading.current_thread().name}  # not allowed: the caller did every range
    seen.clear()
    with query_pool.allow_split():
        assert query_pool.split_run(fn, bounds) == [list(range(a, b)) for a, b in bounds]
    assert any(name.startswith("m3search-query") for name in seen) and len(seen) == len(bounds)
    assert not query_pool.split_allowed()  # the block restored the setting
    assert query_pool._OUTSTANDING[0] == 0  # every helper task counted itself off


def test_busy_helpers_are_not_queued_behind():
    """While every helper is taken (another search's chunks), a split runs on its caller alone."""
    if query_pool.helpers() == 0:
        pytest.skip("one core: nothing to split onto")
    release = threading.Event()

    def other_search() -> None:  # a split whose ranges last until released: it takes a helper
        with query_pool.allow_split():
            query_pool.split_run(lambda lo, hi: release.wait(5), [(0, 1), (1, 2)])

    blockers = [threading.Thread(target=other_search) for _ in range(query_pool.helpers())]
    for t in blockers:
        t.start()
    for _ in range(200):  # until the helpers are all taken
        if query_pool._OUTSTANDING[0] >= query_pool.helpers():
            break
        release.wait(0.01)
    with query_pool.allow_split():
        names = []
        out = query_pool.split_run(lambda lo, hi: names.append(threading.current_thread().name) or lo, [(0, 1), (1, 2), (2, 3)])
    release.set()
    for t in blockers:
        t.join()
    assert out == [0, 1, 2] and set(names) == {threading.current_thread().name}
    assert query_pool._OUTSTANDING[0] == 0


def test_split_kernels_equal_one_call(monkeypatch):
    """The LUT MaxSim and stage-2 kernels, cut into chunks of a few documents, give the one-call values."""
    rng = np.random.default_rng(3)
    n_docs, m_sub, lq, k = 300, 6, 5, 32
    lengths = rng.integers(0, 20, n_docs)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    codes = rng.integers(0, 256, (offsets[-1], 2 + m_sub)).astype(np.uint8)
    codes[:, 1] = 0
    codes[:, 0] %= k
    tables = rng.standard_normal((m_sub, 256, lq)).astype(np.float32)
    coarse = rng.standard_normal((k, lq)).astype(np.float32)
    ids = np.sort(rng.choice(n_docs, 200, replace=False)).astype(np.int64)
    lists = gen.build_lists(codes[:, 0].astype(np.int64), lengths, k)
    cents = gen.doc_centroids(*lists, n_docs)
    sims = rng.standard_normal((lq, k)).astype(np.float32)
    whole_lut = maxsim.maxsim_lut(tables, coarse, codes, offsets, ids, True)
    whole_ci = gen.centroid_maxsim(cents, ids, sims)
    monkeypatch.setattr(maxsim, "SPLIT_TOKENS", 16)
    monkeypatch.setattr(gen, "SPLIT_DOCS", 8)
    calls = []
    real = query_pool.split_run
    monkeypatch.setattr(query_pool, "split_run", lambda fn, bounds: calls.append(len(bounds)) or real(fn, bounds))
    with query_pool.allow_split():
        np.testing.assert_array_equal(maxsim.maxsim_lut(tables, coarse, codes, offsets, ids, True), whole_lut)
        np.testing.assert_array_equal(gen.centroid_maxsim(cents, ids, sims), whole_ci)
    assert len(calls) == 2 and min(calls) > 4  # both kernels were cut into many chunks


def test_an_error_stops_the_split_and_waits_for_running_helpers():
    if query_pool.helpers() == 0:
        pytest.skip("one core: nothing to split onto")
    running, done = [], []

    def task(i):
        def run():
            running.append(i)
            if i == 1:
                raise ValueError("range 1 is damaged")
            threading.Event().wait(0.02)
            done.append(i)
        return run

    with query_pool.allow_split(), pytest.raises(ValueError, match="range 1"):
        query_pool.run_shared([task(i) for i in range(12)])
    settled = (list(running), list(done))
    threading.Event().wait(0.1)
    assert (running, done) == settled  # nothing ran after the call returned
    assert len(running) < 12 and query_pool._OUTSTANDING[0] == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_splits_with_its_own_helpers():
    with query_pool.allow_split():
        query_pool.split_run(lambda lo, hi: lo, [(0, 1), (1, 2)])  # the parent's pool exists
    pid = os.fork()
    if pid == 0:  # child: a split must finish (with new helpers, or on its own), never hang
        try:
            with query_pool.allow_split():
                ok = query_pool.split_run(lambda lo, hi: threading.Event().wait(0.01) or lo, [(0, 1), (1, 2), (2, 3)])
            os._exit(0 if ok == [0, 1, 2] else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
