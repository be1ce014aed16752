"""What runs the transformer layers of the passage path (`ort_passages.py`): ONNX Runtime (the default) or,
with M3SEARCH_LAYERS=torch, torch's `native._Layer`s over the same weights.

Why a choice: neither is faster on every CPU. On the AMD EPYC machines of earlier sessions ONNX Runtime's
MLAS kernels ran m3search-small's layers well ahead of torch, whose MKL takes a generic sgemm path there
(`ort_backbone.py`). On an Intel Xeon with AVX-512 torch ran the layers alone 1.2-1.5x as fast; but whole
`m3search index` runs gained only 2-13% passages/s (1,000 passages: 55.5 s vs 56.8-62.7 s) for ~260 MB more
peak RSS (torch's libraries: 995 vs 734 MB, against the 1 GB goal of issue #15;
bench/results/index_throughput_layers_n1000_s11.md). So ONNX Runtime stays the default everywhere, without
a timing step, and torch is there for whoever has the memory and wants the speed.
Both compute the same post-LN arithmetic (tests/encoder/test_layer_runtime.py: 1e-4).
"""
from __future__ import annotations

import os
import warnings

import numpy as np

ENV_CHOICE = "M3SEARCH_LAYERS"
RUNTIMES = ("onnxruntime", "torch")


def configured() -> str:
    """The runtime M3SEARCH_LAYERS names; ONNX Runtime when unset. Anything else is refused."""
    value = os.environ.get(ENV_CHOICE, "").strip().lower() or "onnxruntime"
    if value not in RUNTIMES:
        from m3search.errors import ConfigError

        raise ConfigError(f"{ENV_CHOICE}={value!r} is not a layer runtime; use one of {', '.join(RUNTIMES)}")
    return value


class TorchLayers:
    """`layers(x, mask) -> hidden` in torch: `native._Layer` modules over views of the numpy weights (the
    attribute tree `ort_backbone.build_graph` reads), as `NativeEncoder` runs them."""

    def __init__(self, layers, hidden: int, heads: int, eps: float):
        import torch

        from m3search.encoder.native import _Layer

        self._torch = torch
        self.layers = []
        with warnings.catch_warnings():  # read-only mapped weights: the layers never write to them
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            for layer in layers:
                self.layers.append(_Layer(_layer_state(torch, layer, hidden), "", heads, eps))

    def __call__(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            h = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            bias = None
            if not mask.all():
                bias = torch.zeros(mask.shape, dtype=torch.float32)
                bias.masked_fill_(torch.from_numpy(np.asarray(mask)) == 0, torch.finfo(torch.float32).min)
                bias = bias[:, None, None, :]
            for layer in self.layers:
                h = layer(h, bias)
            return h.numpy()


def _layer_state(torch, layer, hidden: int) -> dict:
    """One layer of the numpy attribute tree as the tensor names `native._Layer` reads (views, no copies)."""
    t = {name: torch.from_numpy(np.asarray(a, dtype=np.float32)) for name, a in (
        ("attention.output.dense.weight", layer.attn_out.weight), ("attention.output.dense.bias", layer.attn_out.bias),
        ("attention.output.LayerNorm.weight", layer.attn_norm.weight), ("attention.output.LayerNorm.bias", layer.attn_norm.bias),
        ("intermediate.dense.weight", layer.ffn_in.weight), ("intermediate.dense.bias", layer.ffn_in.bias),
        ("output.dense.weight", layer.ffn_out.weight), ("output.dense.bias", layer.ffn_out.bias),
        ("output.LayerNorm.weight", layer.ffn_norm.weight), ("output.LayerNorm.bias", layer.ffn_norm.bias))}
    qkv_w, qkv_b = (torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in (layer.qkv.weight, layer.qkv.bias))
    for j, name in enumerate(("query", "key", "value")):
        t[f"attention.self.{name}.weight"] = qkv_w[j * hidden : (j + 1) * hidden]
        t[f"attention.self.{name}.bias"] = qkv_b[j * hidden : (j + 1) * hidden]
    return t


def make_layers(runtime: str, layers, hidden: int, heads: int, eps: float):
    if runtime == "torch":
        return TorchLayers(layers, hidden, heads, eps)
    from m3search.encoder.ort_backbone import OrtLayers

    return OrtLayers(layers, hidden, heads, eps)
