"""Benchmark modes: names for weight vectors over the three signals, plus the BM25 baseline.

A mode is "bm25", "all", or signals joined by "+" ("dense", "dense+sparse", "sparse+multivec", ...).
Single-signal modes weigh their signal 1; fused modes take their signals' weights from the task's fusion
weights (by default the M3 paper's: dense 1, sparse 0.3, multi-vector 1).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from m3search.errors import ConfigError

SIGNALS = ("dense", "sparse", "multivec")
BM25 = "bm25"
DEFAULT_MODES = ("dense", "sparse", "multivec", "dense+sparse", "all")
PAPER_WEIGHTS = {"dense": 1.0, "sparse": 0.3, "multivec": 1.0}
# how the report names the rows, after the paper's tables
LABELS = {"bm25": "BM25", "dense": "Dense", "sparse": "Sparse", "multivec": "Multi-vec", "dense+sparse": "Dense+Sparse", "all": "All"}


def mode_signals(mode: str) -> tuple[str, ...]:
    """The signals a mode scores with, in canonical order.

    >>> mode_signals("sparse+dense")
    ('dense', 'sparse')
    """
    if mode == "all":
        return SIGNALS
    parts = tuple(mode.split("+"))
    bad = [p for p in parts if p not in SIGNALS]
    if bad or len(set(parts)) != len(parts):
        raise ConfigError(
            f"unknown mode {mode!r}: use bm25, all, or signals joined by '+' from {', '.join(SIGNALS)} "
            "(e.g. dense+sparse)"
        )
    return tuple(s for s in SIGNALS if s in parts)


def mode_weights(mode: str, fusion: Mapping[str, float] | None = None) -> dict[str, float]:
    """The weights a mode searches with.

    >>> mode_weights("all")
    {'dense': 1.0, 'sparse': 0.3, 'multivec': 1.0}
    >>> mode_weights("sparse")
    {'sparse': 1.0}
    """
    signals = mode_signals(mode)
    if len(signals) == 1:
        return {signals[0]: 1.0}
    fusion = {**PAPER_WEIGHTS, **dict(fusion or {})}
    weights = {s: float(fusion[s]) for s in signals if float(fusion[s]) > 0}
    if not weights:
        raise ConfigError(f"mode {mode!r} has all its fusion weights at 0: {dict(fusion)}")
    return weights


def parse_fusion_weights(spec: str) -> dict[str, float]:
    """'dense=1,sparse=0.3,multivec=0' -> weights for the fused modes; a 0 is kept (it switches a signal off
    in every fused mode), unlike a search's weights where 0 means "not given".

    >>> parse_fusion_weights("sparse=0.5, multivec=0")
    {'sparse': 0.5, 'multivec': 0.0}
    """
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = (x.strip() for x in part.partition("="))
        if not sep or name not in SIGNALS:
            raise ConfigError(f"weight {part!r} must look like name=value with name one of {', '.join(SIGNALS)}, "
                              "e.g. 'dense=1,sparse=0.3,multivec=1'")
        try:
            out[name] = float(value)
        except ValueError:
            raise ConfigError(f"weight {name}={value!r} is not a number, e.g. 'sparse=0.3'") from None
        if not 0 <= out[name] < float("inf"):
            raise ConfigError(f"weight {name}={value} must be a finite number >= 0")
    return out


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
