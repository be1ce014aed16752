"""Search modes and fusion weights: the one table behind `SearchIndex.search(mode=...)`, `m3search query
--mode` and `m3search bench --modes`.

A mode is `all` or signals joined by '+', in any order: `dense`, `sparse`, `multivec`, `dense+sparse`,
`sparse+multivec`, ... A single-signal mode weighs its signal 1; a fused mode takes each of its signals'
weights from the fusion weights, by default the M3 paper's (dense 1, sparse 0.3, multi-vector 1), so
`dense+sparse` is dense 1 + sparse 0.3 and `all` is the paper's sum. Any other weighting is given as weights.

A weight of 0 means the same everywhere: the signal is off. It is neither searched for candidates nor
scored (unless all_scores asks for every score) and adds nothing to the fused score, exactly as if it were
left out. In fusion weights (`m3search bench --weights`), a 0 therefore switches that signal off in every
fused mode, while a signal left out keeps the paper's weight.

>>> mode_weights("sparse+dense")
{'dense': 1.0, 'sparse': 0.3}
>>> mode_weights("all", {"multivec": 0})
{'dense': 1.0, 'sparse': 0.3}
"""
from __future__ import annotations

import math
from typing import Mapping

from m3search.errors import ConfigError

COMPONENTS = ("dense", "sparse", "multivec")
SIGNALS = COMPONENTS  # the benchmark's name for them
PAPER_WEIGHTS: dict[str, float] = {"dense": 1.0, "sparse": 0.3, "multivec": 1.0}
DEFAULT_MODE = "all"
# The optional fourth signal: full-text BM25 of an index created with a "text" component
# (m3search.indexes.text). It is never part of "all"; name it in a mode ("all+text", "dense+text") or in
# weights. Its weight in fused modes is TEXT_WEIGHT: BM25 scores are ~10-40x dense/multi-vector scores, and
# this weight is the one the dev sets chose (bench/results/text_signal.md: best of the sweep on all three tasks).
TEXT = "text"
TEXT_WEIGHT = 0.01
TEXT_DEFAULT_MODE = "all+text"  # the default mode of an index that has a text component
ALL_SIGNALS = (*COMPONENTS, TEXT)


def mode_signals(mode: str) -> tuple[str, ...]:
    """The signals a mode scores with, in canonical order.

    >>> mode_signals("multivec+sparse")
    ('sparse', 'multivec')
    """
    if mode == "all":
        return COMPONENTS
    parts = tuple(p.strip() for p in str(mode).split("+"))
    if "all" in parts and len(parts) == 2 and TEXT in parts:  # all+text: the three M3 signals and BM25
        return ALL_SIGNALS
    bad = [p for p in parts if p not in ALL_SIGNALS]
    if bad or len(set(parts)) != len(parts):
        raise ConfigError(
            f"unknown mode {mode!r}: choose all, all+text, or signals joined by '+' from {', '.join(ALL_SIGNALS)} "
            "(e.g. dense+sparse; text needs an index with a text component), or give weights such as "
            "'dense=1,sparse=0.3,multivec=1'"
        )
    return tuple(s for s in ALL_SIGNALS if s in parts)


def mode_weights(mode: str, fusion: Mapping[str, float] | None = None) -> dict[str, float]:
    """The weights a mode searches with (zero weights dropped: they switch a signal off).

    >>> mode_weights("multivec")
    {'multivec': 1.0}
    """
    signals = mode_signals(mode)
    if len(signals) == 1:
        return {signals[0]: 1.0}
    fusion = {**PAPER_WEIGHTS, TEXT: TEXT_WEIGHT, **check_weights(dict(fusion or {}), keep_zeros=True)}
    weights = {s: fusion[s] for s in signals if fusion[s] > 0}
    if not weights:
        raise ConfigError(f"mode {mode!r} has all its fusion weights at 0: {dict(fusion)}")
    return weights


def parse_weights(spec: str, keep_zeros: bool = False) -> dict[str, float]:
    """'dense=1,sparse=0.3' -> {'dense': 1.0, 'sparse': 0.3}.

    >>> parse_weights("dense=1, sparse=0.3, multivec=0")
    {'dense': 1.0, 'sparse': 0.3}
    >>> parse_weights("sparse=0.5, multivec=0", keep_zeros=True)
    {'sparse': 0.5, 'multivec': 0.0}
    """
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError(f"weight {part!r} must look like name=value, e.g. 'dense=1,sparse=0.3,multivec=1'")
        try:
            out[name] = float(value)
        except ValueError:
            raise ConfigError(f"weight {name}={value.strip()!r} is not a number, e.g. 'sparse=0.3'") from None
    return check_weights(out, keep_zeros=keep_zeros)


def check_weights(weights: Mapping[str, float], keep_zeros: bool = False) -> dict[str, float]:
    """Validate names and values. Zero weights are dropped (the signal is off) unless `keep_zeros`, which
    fusion weights use so that a 0 overrides the paper's default. Raises ConfigError naming the bad entry."""
    out: dict[str, float] = {}
    for name, value in weights.items():
        if name not in ALL_SIGNALS:
            raise ConfigError(f"unknown weight {name!r}: the signals are {', '.join(ALL_SIGNALS)}")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"weight {name}={value!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"weight {name}={value} must be a finite number >= 0")
        if value > 0 or keep_zeros:
            out[name] = value
    if not out and not keep_zeros:
        raise ConfigError("all weights are zero: give at least one positive weight, e.g. 'dense=1'")
    return out


def resolve_weights(mode: str | None = None, weights: Mapping[str, float] | str | None = None) -> dict[str, float]:
    """The weights a search uses: explicit `weights` if given, else those of `mode` (default 'all').

    >>> resolve_weights("dense+sparse")
    {'dense': 1.0, 'sparse': 0.3}
    >>> resolve_weights(weights="multivec=2")
    {'multivec': 2.0}
    """
    if weights is not None:
        if mode is not None:
            raise ConfigError(f"give a mode or weights, not both (got mode={mode!r} and weights={weights!r})")
        return parse_weights(weights) if isinstance(weights, str) else check_weights(weights)
    return mode_weights(DEFAULT_MODE if mode is None else mode)


# The named modes, for listings and help texts; any other '+' combination is accepted too.
MODES: dict[str, dict[str, float]] = {m: mode_weights(m) for m in ("dense", "sparse", "multivec", "dense+sparse", "all")}
