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
