"""Benchmark modes and their fusion weights."""
from __future__ import annotations

import pytest

from m3search.errors import ConfigError
from m3search.evaluation.modes import mode_signals, mode_weights, parse_fusion_weights, parse_modes


def test_modes_and_weights():
    assert parse_modes("dense, sparse+dense,all,bm25,dense") == ["dense", "sparse+dense", "all", "bm25"]
    assert mode_signals("multivec+sparse") == ("sparse", "multivec")
    assert mode_weights("all") == {"dense": 1.0, "sparse": 0.3, "multivec": 1.0}  # the paper's
    fusion = parse_fusion_weights("sparse=0.5,multivec=0")
    assert mode_weights("all", fusion) == {"dense": 1.0, "sparse": 0.5}  # a 0 switches multivec off
    assert mode_weights("multivec", fusion) == {"multivec": 1.0}  # single-signal modes weigh 1
    with pytest.raises(ConfigError, match="all its fusion weights at 0"):
        mode_weights("sparse+multivec", {"sparse": 0, "multivec": 0})


@pytest.mark.parametrize("spec", ["colbert=1", "dense", "dense=-1", "sparse=x", "dense=inf"])
def test_bad_fusion_weights(spec):
    with pytest.raises(ConfigError):
        parse_fusion_weights(spec)


@pytest.mark.parametrize("spec", ["", "dense+dense", "dense+bm25", "hybrid"])
def test_bad_modes(spec):
    with pytest.raises(ConfigError):
        parse_modes(spec)


def test_query_and_bench_accept_the_same_modes_with_the_same_weights():
    """One table: what `bench --modes` accepts, `query --mode` and the API accept, with the same weights."""
    from m3search.planner.weights import resolve_weights

    for mode in ["dense", "sparse", "multivec", "dense+sparse", "sparse+multivec", "dense+multivec", "all",
                 "multivec+dense+sparse"]:
        assert parse_modes(mode) == [mode]
        assert resolve_weights(mode) == mode_weights(mode)


def test_a_zero_weight_means_off_everywhere():
    from m3search.planner.weights import parse_weights, resolve_weights

    assert resolve_weights(weights={"dense": 1, "sparse": 0}) == {"dense": 1.0}
    assert parse_weights("dense=1,sparse=0") == {"dense": 1.0}
    assert mode_weights("dense+sparse", parse_fusion_weights("sparse=0")) == {"dense": 1.0}
