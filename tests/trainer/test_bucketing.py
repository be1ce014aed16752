from __future__ import annotations

import pytest

from m3search.errors import ConfigError
from m3search.trainer.bucketing import BucketBatchSampler, bucket_of


def test_bucket_of_edges_are_inclusive_upper_bounds():
    edges = [8, 16, 32]
    assert [bucket_of(n, edges) for n in (1, 8, 9, 16, 17, 32, 33, 1000)] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_every_batch_comes_from_one_bucket_and_group():
    lengths = [(i * 7) % 50 + 1 for i in range(200)]
    groups = ["a" if i % 3 else "b" for i in range(200)]
    s = BucketBatchSampler(lengths, [10, 20, 40], batch_size=4, seed=1, groups=groups)
    batches = s.epoch(0)
    assert batches
    for b in batches:
        assert len(b) == 4
        assert len({bucket_of(lengths[i], [10, 20, 40]) for i in b}) == 1
        assert len({groups[i] for i in b}) == 1
    used = [i for b in batches for i in b]
    assert len(used) == len(set(used))  # nothing twice in an epoch
    # what is dropped is at most one incomplete batch per (group, bucket)
    assert 200 - len(used) <= 2 * 4 * 3


def test_order_depends_only_on_seed_and_epoch():
    lengths = list(range(1, 101))
    a = BucketBatchSampler(lengths, [25, 50], 5, seed=3)
    b = BucketBatchSampler(lengths, [25, 50], 5, seed=3)
    assert a.epoch(2) == b.epoch(2)
    assert a.epoch(0) != a.epoch(1)
    assert BucketBatchSampler(lengths, [25, 50], 5, seed=4).epoch(0) != a.epoch(0)


def test_per_bucket_batch_sizes():
    lengths = [5] * 20 + [50] * 20
    s = BucketBatchSampler(lengths, [10], batch_size=[8, 2], seed=0)
    sizes = sorted({(bucket_of(lengths[b[0]], [10]), len(b)) for b in s.epoch(0)})
    assert sizes == [(0, 8), (1, 2)]
    with pytest.raises(ConfigError, match="one per bucket"):
        BucketBatchSampler(lengths, [10], batch_size=[8], seed=0)
    with pytest.raises(ConfigError, match="strictly increasing"):
        BucketBatchSampler(lengths, [10, 10], batch_size=2, seed=0)
