"""Benchmark modes: the search modes of `m3search.planner.weights` (one table for query and bench) plus
the BM25 baseline, and the names the report gives them."""
from __future__ import annotations

from typing import Mapping, Sequence

from m3search.errors import ConfigError
from m3search.planner.weights import PAPER_WEIGHTS, SIGNALS, mode_signals, mode_weights, parse_weights

BM25 = "bm25"
DEFAULT_MODES = ("dense", "sparse", "multivec", "dense+sparse", "all")
# how the report names the rows, after the paper's tables
LABELS = {"bm25": "BM25", "dense": "Dense", "sparse": "Sparse", "multivec": "Multi-vec", "dense+sparse": "Dense+Sparse", "all": "All",
          "text": "Text (BM25)", "all+text": "All+Text"}

__all__ = ["BM25", "DEFAULT_MODES", "LABELS", "PAPER_WEIGHTS", "SIGNALS", "label", "mode_signals", "mode_weights",
           "parse_fusion_weights", "parse_modes"]


def parse_fusion_weights(spec: str) -> dict[str, float]:
    """'dense=1,sparse=0.3,multivec=0' -> the fused modes' weights; a 0 is kept so that it switches the
    signal off in every fused mode (a signal left out keeps the paper's weight).

    >>> parse_fusion_weights("sparse=0.5, multivec=0")
    {'sparse': 0.5, 'multivec': 0.0}
    """
    return parse_weights(spec, keep_zeros=True)


def parse_modes(spec: str | Sequence[str]) -> list[str]:
    """'dense,sparse,all' -> ['dense', 'sparse', 'all'], each checked; 'bm25' allowed."""
    items = [m.strip() for m in (spec.split(",") if isinstance(spec, str) else spec) if m.strip()]
    if not items:
        raise ConfigError("no modes given: e.g. --modes dense,sparse,multivec,dense+sparse,all")
    for m in items:
        if m != BM25:
            mode_signals(m)
    return list(dict.fromkeys(items))


def label(mode: str) -> str:
    return LABELS.get(mode, mode)
