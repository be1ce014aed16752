"""RRF ranks do not depend on last-bit noise in tied scores (a shard and the whole index, or two candidate
batches, may round one document's exact score differently)."""
from __future__ import annotations

import numpy as np

from m3search.planner import fusion


def _ranks(order, rank0):
    r = np.empty(len(order), dtype=np.int64)
    r[order] = rank0
    return r


def test_last_bit_noise_in_tied_scores_leaves_the_ranks_as_for_exact_ties():
    rng = np.random.default_rng(3)
    q_index = np.repeat(np.arange(4), 50)
    ids = np.tile(rng.permutation(50), 4).astype(np.int64)
    exact = rng.choice(np.float32([0.9, 0.61045945, 0.5, 0.0, -0.25]), size=len(ids))  # many exact ties
    noisy = exact.copy()
    bump = rng.random(len(ids)) < 0.5  # one ulp up or down on half the pairs, as a different summation order
    noisy[bump] = np.nextafter(exact[bump], np.where(rng.random(bump.sum()) < 0.5, np.inf, -np.inf).astype(np.float32))
    assert (noisy != exact).sum() > 50
    # exact ties: the plain order by (query, -score, id) is the reference
    want = _ranks(*fusion._group_order(q_index, ids, exact))
    np.testing.assert_array_equal(_ranks(*fusion.rank_order(q_index, ids, exact)), want)
    np.testing.assert_array_equal(_ranks(*fusion.rank_order(q_index, ids, noisy)), want)
    assert not np.array_equal(_ranks(*fusion._group_order(q_index, ids, noisy)), want)  # what the tolerance fixes
    w = {"a": 1.0, "b": 0.5}
    np.testing.assert_array_equal(
        fusion.reciprocal_rank(q_index, ids, {"a": noisy, "b": exact[::-1].copy()}, w),
        fusion.reciprocal_rank(q_index, ids, {"a": exact, "b": exact[::-1].copy()}, w))


def test_scores_further_apart_than_the_tolerance_keep_their_order():
    q_index = np.zeros(4, dtype=np.int64)
    ids = np.array([3, 2, 1, 0])
    score = np.array([0.5, 0.5 - 1e-4, 0.5 - 2e-4, -np.inf], dtype=np.float32)  # best score has the largest id
    order, rank0 = fusion.rank_order(q_index, ids, score)
    np.testing.assert_array_equal(order, [0, 1, 2, 3])
    np.testing.assert_array_equal(rank0, [0, 1, 2, 3])
