"""The native backbone's transformer layers run by ONNX Runtime on CPU (optional: `pip install m3search[onnx]`).

Why: on CPU the encoder is almost all of indexing, and almost all of the encoder is the layers' matmuls,
attention, layer norms and GELU. ONNX Runtime's contrib kernels fuse what PyTorch runs as separate ops
(q/k/v projection + softmax attention in one `Attention` op, residual + bias + LayerNorm in one
`SkipLayerNormalization`, bias + exact-erf GELU in one `BiasGelu`) over pre-packed MLAS weights, and skip
PyTorch's per-op dispatch. Measured in bench/encode_throughput.py and bench/index_throughput.py.

What runs where: the embeddings (word rows read from the file, see `native.WordRows`; positions; token type;
LayerNorm) stay in torch, as do the heads; the graph built here takes the embedded batch (B, L, h) and the
attention mask and returns the last hidden states. The graph is built in memory from the checkpoint's
tensors (no file is written, nothing is cached): the same post-LN arithmetic as `native._Layer`, fp32, exact
GELU, so outputs match the torch backbone to ~1e-6 (tests/encoder/test_ort_backbone.py checks 1e-4).

Used by `M3Encoder` on CPU in fp32 without int8 when `onnxruntime` and `onnx` import; M3SEARCH_ONNX=0
turns it off. Without them everything runs in torch, as before.
"""
from __future__ import annotations

import os

import numpy as np

ENV_SWITCH = "M3SEARCH_ONNX"


def available() -> bool:
    """True when ONNX Runtime (and the `onnx` graph builder) import, and M3SEARCH_ONNX is not 0/false/off."""
    if os.environ.get(ENV_SWITCH, "").strip().lower() in ("0", "false", "off", "no"):
        return False
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _np(t) -> np.ndarray:
    return t.detach().to("cpu").float().contiguous().numpy()


def build_graph(layers, hidden: int, heads: int, eps: float):
    """An onnx ModelProto of `layers` (native._Layer modules) plus their weights as a dict name -> array.

    The weights are not stored in the proto: they are handed to the session as initializers, so building
    the graph copies nothing big.
    """
    import onnx
    from onnx import TensorProto, helper

    nodes, weights = [], {}
    x = "x"

    def add(name: str, array: np.ndarray) -> str:
        weights[name] = np.ascontiguousarray(array, dtype=np.float32)
        return name

    for i, layer in enumerate(layers):
        p = f"l{i}."
        qkv_w = add(p + "qkv.w", _np(layer.qkv.weight).T)  # (h, 3h): x @ w
        qkv_b = add(p + "qkv.b", _np(layer.qkv.bias))
        nodes.append(helper.make_node("Attention", [x, qkv_w, qkv_b, "mask"], [p + "attn"], domain="com.microsoft",
                                      num_heads=heads, name=p + "attention"))
        nodes.append(helper.make_node("MatMul", [p + "attn", add(p + "ao.w", _np(layer.attn_out.weight).T)],
                                      [p + "ao"], name=p + "ao"))
        nodes.append(helper.make_node(
            "SkipLayerNormalization",
            [p + "ao", x, add(p + "aln.w", _np(layer.attn_norm.weight)), add(p + "aln.b", _np(layer.attn_norm.bias)),
             add(p + "ao.b", _np(layer.attn_out.bias))],
            [p + "h"], domain="com.microsoft", epsilon=eps, name=p + "attn_norm"))
        nodes.append(helper.make_node("MatMul", [p + "h", add(p + "fi.w", _np(layer.ffn_in.weight).T)], [p + "fi"],
                                      name=p + "fi"))
        nodes.append(helper.make_node("BiasGelu", [p + "fi", add(p + "fi.b", _np(layer.ffn_in.bias))], [p + "g"],
                                      domain="com.microsoft", name=p + "gelu"))
        nodes.append(helper.make_node("MatMul", [p + "g", add(p + "fo.w", _np(layer.ffn_out.weight).T)], [p + "fo"],
                                      name=p + "fo"))
        out = "y" if i == len(layers) - 1 else p + "out"
        nodes.append(helper.make_node(
            "SkipLayerNormalization",
            [p + "fo", p + "h", add(p + "oln.w", _np(layer.ffn_norm.weight)), add(p + "oln.b", _np(layer.ffn_norm.bias)),
             add(p + "fo.b", _np(layer.ffn_out.bias))],
            [out], domain="com.microsoft", epsilon=eps, name=p + "ffn_norm"))
        x = out
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "length", hidden]),
              helper.make_tensor_value_info("mask", TensorProto.INT32, ["batch", "length"])]
    initializers = [_external(n, a) for n, a in weights.items()]
    graph = helper.make_graph(nodes, "m3search-layers", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "length", hidden])],
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              producer_name="m3search")
    model.ir_version = 8
    return model, weights


def _external(name: str, array: np.ndarray):
    """An initializer whose data the session gets from memory (`add_external_initializers`), not the proto."""
    from onnx import TensorProto

    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(array.shape))
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "m3search-memory"), ("offset", "0"), ("length", str(array.nbytes))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


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
        self._values = {n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in weights.items()}
        self._weights = weights  # the OrtValues borrow these arrays' memory
        options.add_external_initializers(list(self._values), list(self._values.values()))
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.session.run(["y"], {"x": np.ascontiguousarray(x, dtype=np.float32),
                                        "mask": np.ascontiguousarray(mask, dtype=np.int32)})[0]
