"""The Ray layer (`pip install m3search[distributed]`): corpus encoding on Ray Data, sharded indexes on
Ray Serve. A shell over the same library calls the single-machine path makes; the only place that
imports `ray`, and only when one of its functions runs.
"""
from __future__ import annotations

INSTALL_HINT = "the Ray layer needs Ray: pip install 'm3search[distributed]'"


def require_ray():
    try:
        import ray
    except ImportError as e:  # pragma: no cover - depends on the environment
        from m3search.errors import ConfigError

        raise ConfigError(INSTALL_HINT) from e
    return ray
