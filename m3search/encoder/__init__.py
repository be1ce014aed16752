"""Stage 1: text -> `EncodedBatch` (dense, lexical weights, token vectors) in one encoder pass."""
from __future__ import annotations

from pathlib import Path

from m3search.encoder.base import Encoder, validate_texts
from m3search.encoder.hashing import HashingEncoder
from m3search.errors import ModelError

DEFAULT_MODEL = "m3search-small"

__all__ = ["DEFAULT_MODEL", "Encoder", "HashingEncoder", "load_encoder", "validate_texts"]


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
        from m3search.encoder.m3 import M3Encoder

        return M3Encoder.from_pretrained(path, device=device, **options)
    raise ModelError(
        f"model {name!r} is neither {DEFAULT_MODEL!r}, 'hashing', nor a folder: give the path of a local model "
        "folder in BGE-M3's layout (m3search never downloads from a hub)"
    )
