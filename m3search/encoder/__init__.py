"""Stage 1: text -> `EncodedBatch` (dense, lexical weights, token vectors) in one encoder pass."""
from __future__ import annotations

from pathlib import Path

from m3search.encoder.base import Encoder, validate_texts
from m3search.encoder.hashing import HashingEncoder
from m3search.errors import ModelError

DEFAULT_MODEL = "m3search-small"

__all__ = [
    "DEFAULT_MODEL",
    "Encoder",
    "HashingEncoder",
    "M3Encoder",
    "ModelSpec",
    "load_encoder",
    "load_m3_model",
    "save_m3_model",
    "default_model_path",
    "validate_texts",
]

# name -> module; loaded on first use so `import m3search.encoder` does not import torch
_LAZY = {
    "M3Encoder": "m3search.encoder.m3",
    "ModelSpec": "m3search.encoder.checkpoint",
    "load_m3_model": "m3search.encoder.checkpoint",
    "save_m3_model": "m3search.encoder.checkpoint",
    "default_model_path": "m3search.encoder.default_model",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'm3search.encoder' has no attribute {name!r}")


def _parse_options(spec: str) -> dict:
    """'hashing:dim=32,vocab_size=1000' -> {'dim': 32, 'vocab_size': 1000}."""
    opts = {}
    for part in filter(None, spec.split(",")):
        key, sep, value = part.partition("=")
        if not sep:
            raise ModelError(f"model option {part!r} must look like name=value, e.g. 'hashing:dim=64'")
        opts[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    return opts


def load_encoder(model: str | Path | Encoder | None = None, device: str | None = None, **options) -> Encoder:
    """Load an encoder by name or folder. Nothing is ever downloaded.

    device: "cpu", "cuda", "cuda:1"... (default: CUDA when available). options go to M3Encoder (batch_tokens,
    window_tokens, window_overlap, long_dense, mcls, quantize, progress; cache_dir for the default model).

    model: None or "m3search-small" for the bundled default; a folder in BGE-M3's layout (backbone,
    tokenizer, colbert_linear.pt, sparse_linear.pt), e.g. a local copy of BAAI/bge-m3; "hashing" (or
    "hashing:dim=64") for the deterministic test encoder; or an Encoder, returned as is.
    """
    if isinstance(model, Encoder):
        return model
    name = str(model) if model is not None else DEFAULT_MODEL
    if name == "hashing" or name.startswith("hashing:"):
        return HashingEncoder(**_parse_options(name.partition(":")[2]), **options)
    if name == DEFAULT_MODEL:
        from m3search.encoder.default_model import load_default_encoder

        return load_default_encoder(device=device, **options)
    path = Path(name).expanduser()
    if path.is_dir():
        from m3search.encoder.fast_query import load_fast  # queries without torch; see fast_query.py

        return load_fast(path, device=device, **options)
    raise ModelError(
        f"model {name!r} is neither {DEFAULT_MODEL!r}, 'hashing', nor a folder: give the path of a local model "
        "folder in BGE-M3's layout (m3search never downloads from a hub)"
    )
