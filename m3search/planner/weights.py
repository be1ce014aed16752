"""Search modes and fusion weights.

A mode is a name for a weight vector over the three signals; the weights of `all` are the M3 paper's
(dense 1, sparse 0.3, multi-vector 1). Any other combination can be given directly as weights.
"""
from __future__ import annotations

import math
from typing import Mapping

from m3search.errors import ConfigError

COMPONENTS = ("dense", "sparse", "multivec")

MODES: dict[str, dict[str, float]] = {
    "dense": {"dense": 1.0},
    "sparse": {"sparse": 1.0},
    "multivec": {"multivec": 1.0},
    "dense+sparse": {"dense": 1.0, "sparse": 0.3},
    "all": {"dense": 1.0, "sparse": 0.3, "multivec": 1.0},
}
DEFAULT_MODE = "all"


def parse_weights(spec: str) -> dict[str, float]:
    """'dense=1,sparse=0.3' -> {'dense': 1.0, 'sparse': 0.3}.

    >>> parse_weights("dense=1, sparse=0.3")
    {'dense': 1.0, 'sparse': 0.3}
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
    return check_weights(out)


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Validate names and values; drop zero weights. Raises ConfigError naming the bad entry."""
    out: dict[str, float] = {}
    for name, value in weights.items():
        if name not in COMPONENTS:
            raise ConfigError(f"unknown weight {name!r}: the components are {', '.join(COMPONENTS)}")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"weight {name}={value!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"weight {name}={value} must be a finite number >= 0")
        if value > 0:
            out[name] = value
    if not out:
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
    mode = DEFAULT_MODE if mode is None else mode
    if mode not in MODES:
        raise ConfigError(
            f"unknown mode {mode!r}: choose one of {', '.join(MODES)}, or give weights such as "
            "'dense=1,sparse=0.3,multivec=1'"
        )
    return dict(MODES[mode])
