"""The native backbone's transformer layers run by ONNX Runtime on CPU (optional: `pip install m3search[onnx]`).

Why: on CPU the encoder is almost all of indexing, and almost all of the encoder is the layers' matmuls,
attention, layer norms and GELU. ONNX Runtime runs them with its own MLAS kernels over weights packed once
at load, and fuses what PyTorch runs as separate ops: softmax attention in one `MultiHeadAttention` op,
residual + bias + LayerNorm in one `SkipLayerNormalization`, bias + exact-erf GELU in one `BiasGelu`. The
torch build's MKL takes its generic sgemm path on AMD CPUs (py-spy: `mkl_blas_def_sgemm_kernel_0_zen`),
MLAS does not. Measured in bench/encode_throughput.py and bench/index_throughput.py.

What runs where: the embeddings (word rows read from the file, see `native.WordRows`; positions; token type;
LayerNorm) stay in torch, as do the heads; the graph built here takes the embedded batch (B, L, h) and the
attention mask and returns the last hidden states: the same post-LN arithmetic as `native._Layer`, fp32,
exact GELU, so outputs match the torch backbone to ~1e-6 (tests/encoder/test_ort_backbone.py checks 1e-4).

Memory: the graph is built in memory with no weight in it. The weights are handed to the session as
external initializers that are views of the torch tensors (the mapped safetensors, and the q/k/v matrix
native.py already concatenated), in their own [out, in] layout (`FusedMatMul` with transB), so nothing is
copied but the packed form ONNX Runtime makes once; the mapped pages read while packing are then dropped
from the process's resident set (`drop_mapped_pages`; the file stays in the page cache).

Used by `M3Encoder` on CPU in fp32 without int8 when `onnxruntime` and `onnx` import; M3SEARCH_ONNX=0
turns it off. Without them everything runs in torch, as before.
"""
from __future__ import annotations

import mmap
import os

import numpy as np

ENV_SWITCH = "M3SEARCH_ONNX"


def available() -> bool:
    """True when ONNX Runtime and the `onnx` graph builder are installed and M3SEARCH_ONNX is not 0/false/off.
    Found, not imported (~0.3 s): they are imported when the first batch runs in ONNX Runtime."""
    if os.environ.get(ENV_SWITCH, "").strip().lower() in ("0", "false", "off", "no"):
        return False
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def _view(t) -> np.ndarray:
    """A float32 numpy view of a CPU tensor or numpy array (a copy only if it is not contiguous fp32)."""
    if isinstance(t, np.ndarray):
        return np.ascontiguousarray(t, dtype=np.float32)
    t = t.detach()
    if t.device.type != "cpu" or t.dtype.is_floating_point is False:
        raise ValueError("ONNX Runtime layers need CPU float tensors")
    import torch

    if t.dtype != torch.float32 or not t.is_contiguous():
        t = t.to(torch.float32).contiguous()
    return t.numpy()


def _external(name: str, array: np.ndarray):
    """A graph initializer whose data the session takes from memory (`add_external_initializers`)."""
    from onnx import TensorProto

    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(array.shape))
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "m3search-memory"), ("offset", "0"), ("length", str(array.nbytes))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def build_graph(layers, hidden: int, heads: int, eps: float):
    """An onnx ModelProto of `layers` (native._Layer modules, or the same attribute tree of numpy arrays as
    `ort_passages.py` builds) and its weights, name -> numpy view (no copy)."""
    from onnx import TensorProto, helper

    nodes, weights = [], {}
    x = "x"

    def w(name: str, tensor) -> str:
        weights[name] = _view(tensor)
        return name

    def matmul_t(a: str, weight: str, out: str) -> None:  # a @ weight.T, weight in nn.Linear's [out, in] layout
        nodes.append(helper.make_node("FusedMatMul", [a, weight], [out], domain="com.microsoft", transB=1, name=out))

    for i, layer in enumerate(layers):
        p = f"l{i}."
        matmul_t(x, w(p + "qkv.w", layer.qkv.weight), p + "qkv")
        nodes.append(helper.make_node("Split", [p + "qkv", "split"], [p + "q", p + "k", p + "v"], axis=-1,
                                      name=p + "split"))
        nodes.append(helper.make_node(
            "MultiHeadAttention", [p + "q", p + "k", p + "v", w(p + "qkv.b", layer.qkv.bias), "mask"], [p + "attn"],
            domain="com.microsoft", num_heads=heads, name=p + "attention"))
        matmul_t(p + "attn", w(p + "ao.w", layer.attn_out.weight), p + "ao")
        nodes.append(helper.make_node(
            "SkipLayerNormalization",
            [p + "ao", x, w(p + "aln.w", layer.attn_norm.weight), w(p + "aln.b", layer.attn_norm.bias),
             w(p + "ao.b", layer.attn_out.bias)],
            [p + "h"], domain="com.microsoft", epsilon=eps, name=p + "attn_norm"))
        matmul_t(p + "h", w(p + "fi.w", layer.ffn_in.weight), p + "fi")
        nodes.append(helper.make_node("BiasGelu", [p + "fi", w(p + "fi.b", layer.ffn_in.bias)], [p + "g"],
                                      domain="com.microsoft", name=p + "gelu"))
        matmul_t(p + "g", w(p + "fo.w", layer.ffn_out.weight), p + "fo")
        out = "y" if i == len(layers) - 1 else p + "out"
        nodes.append(helper.make_node(
            "SkipLayerNormalization",
            [p + "fo", p + "h", w(p + "oln.w", layer.ffn_norm.weight), w(p + "oln.b", layer.ffn_norm.bias),
             w(p + "fo.b", layer.ffn_out.bias)],
            [out], domain="com.microsoft", epsilon=eps, name=p + "ffn_norm"))
        x = out
    split = helper.make_tensor("split", TensorProto.INT64, [3], [hidden] * 3)
    graph = helper.make_graph(
        nodes, "m3search-layers",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "length", hidden]),
         helper.make_tensor_value_info("mask", TensorProto.INT32, ["batch", "length"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "length", hidden])],
        initializer=[split] + [_external(n, a) for n, a in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              producer_name="m3search")
    model.ir_version = 8
    return model, weights


def _file_mappings() -> list[tuple[int, int]]:
    """(start, end) of this process's mappings of regular files, from /proc/self/maps ([] where there is none)."""
    out = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    start, end = (int(x, 16) for x in parts[0].split("-"))
                    out.append((start, end))
    except OSError:
        return []
    return out


def drop_mapped_pages(arrays) -> int:
    """MADV_DONTNEED over the whole pages of those arrays that lie in a file mapping: they leave the resident
    set and are read back from the file (page cache) if ever touched again. Weights are never written, so a
    private mapping loses nothing. Arrays in anonymous memory are left alone. Returns the bytes dropped."""
    if not hasattr(mmap, "MADV_DONTNEED"):
        return 0
    import ctypes

    maps = _file_mappings()
    libc = ctypes.CDLL(None, use_errno=True)
    page, dropped = mmap.PAGESIZE, 0
    for a in arrays:
        lo, hi = a.ctypes.data, a.ctypes.data + a.nbytes
        if not any(s <= lo and hi <= e for s, e in maps):
            continue
        start, end = -(-lo // page) * page, hi // page * page
        if end > start and libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), mmap.MADV_DONTNEED) == 0:
            dropped += end - start
    return dropped


class OrtLayers:
    """`layers(x, mask) -> hidden`: the backbone's transformer layers in one ONNX Runtime session."""

    def __init__(self, layers, hidden: int, heads: int, eps: float, threads: int | None = None):
        import onnxruntime as ort

        model, weights = build_graph(layers, hidden, heads, eps)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False  # activations come and go with each batch, not kept at their peak
        values = {n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in weights.items()}
        options.add_external_initializers(list(values), list(values.values()))
        self._weights = weights  # the session reads these (views of the torch tensors) for as long as it lives
        self._values = values
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.dropped_bytes = drop_mapped_pages(weights.values())  # packed now; the torch layers re-read if used

    def __call__(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.session.run(["y"], {"x": np.ascontiguousarray(x, dtype=np.float32),
                                        "mask": np.ascontiguousarray(mask, dtype=np.int32)})[0]
