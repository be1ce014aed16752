"""The two M3 heads alone, as one small safetensors file (how m3search ships the default model's heads).

Keys: sparse_linear.weight (1, h), sparse_linear.bias (1,), colbert_linear.weight (d', h), colbert_linear.bias
(d',). The safetensors metadata records the format, the base model and how the heads were trained.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from m3search.encoder.model import M3Model
from m3search.errors import ModelError

HEADS_FORMAT = "m3search.heads"
HEADS_VERSION = "1"
KEYS = ("sparse_linear.weight", "sparse_linear.bias", "colbert_linear.weight", "colbert_linear.bias")


def save_heads(model: M3Model, path: str | Path, metadata: dict | None = None) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {
        f"{head}.{name}": t.detach().to("cpu", torch.float32).contiguous()
        for head in ("sparse_linear", "colbert_linear")
        for name, t in getattr(model, head).state_dict().items()
    }
    meta = {"format": HEADS_FORMAT, "version": HEADS_VERSION}
    for k, v in (metadata or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def load_heads(model: M3Model, path: str | Path) -> dict:
    """Copy the heads in `path` into `model`; returns the file's metadata."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"head file {path} does not exist")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        missing = [k for k in KEYS if k not in f.keys()]
        if missing:
            raise ModelError(f"{path} lacks {missing}: a heads file holds {list(KEYS)}")
        tensors = {k: f.get_tensor(k) for k in KEYS}
    if tensors["sparse_linear.weight"].shape != model.sparse_linear.weight.shape or \
            tensors["colbert_linear.weight"].shape[1] != model.hidden_size:
        raise ModelError(f"{path}: head shapes {[tuple(t.shape) for t in tensors.values()]} don't fit a model "
                         f"with hidden size {model.hidden_size}")
    if tensors["colbert_linear.weight"].shape[0] != model.colbert_dim:
        out_dim = tensors["colbert_linear.weight"].shape[0]
        model.colbert_linear = torch.nn.Linear(model.hidden_size, out_dim).to(model.colbert_linear.weight)
    for head in ("sparse_linear", "colbert_linear"):
        getattr(model, head).load_state_dict({
            "weight": tensors[f"{head}.weight"], "bias": tensors[f"{head}.bias"],
        })
    return meta
