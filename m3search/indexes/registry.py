"""Which `ComponentType` implements each component kind.

The default registry names the real implementations by module path and imports them on first use, so
`import m3search.indexes` stays cheap (FAISS loads only when a dense component is used). Callers (tests,
experiments) can pass their own mapping of kind -> ComponentType subclass instead; nothing here is
mutable global state.
"""
from __future__ import annotations

import importlib
from typing import Mapping

from m3search.errors import ConfigError
from m3search.indexes.base import ComponentType

DEFAULT_COMPONENTS: dict[str, str] = {
    "dense": "m3search.indexes.dense:DenseComponent",
    "sparse": "m3search.indexes.sparse:SparseComponent",
    "multivec": "m3search.indexes.multivec:MultivecComponent",
    "text": "m3search.indexes.text:TextComponent",  # optional full-text BM25
}

Registry = Mapping[str, "type[ComponentType] | str"]


def component_type(kind: str, registry: Registry | None = None) -> type[ComponentType]:
    registry = DEFAULT_COMPONENTS if registry is None else registry
    if kind not in registry:
        raise ConfigError(f"unknown index component {kind!r}; valid kinds: {sorted(registry)}")
    entry = registry[kind]
    if not isinstance(entry, str):
        return entry
    module_name, _, attr = entry.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"index component {kind!r} is implemented by {entry}, which can't be loaded: {e}") from e
    return cls


def make_components(configs: Mapping[str, dict], registry: Registry | None = None) -> dict[str, ComponentType]:
    """Instantiate (and thereby validate) one ComponentType per configured kind."""
    if not configs:
        raise ConfigError("an index needs at least one component; choose from 'dense', 'sparse', 'multivec'")
    out = {}
    for kind, config in configs.items():
        if config is not None and not isinstance(config, dict):
            raise ConfigError(f"the config of component {kind!r} must be a dict, got {type(config).__name__}")
        out[kind] = component_type(kind, registry)(config)
    return out
