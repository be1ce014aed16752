"""The passage path's layer runtime (`layer_runtime.py`): ONNX Runtime by default, torch with
M3SEARCH_LAYERS=torch; both give the torch encoder's outputs; a misspelt value is refused."""
from __future__ import annotations

import numpy as np
import pytest
from helpers.components import assert_same_batch

from m3search.encoder import layer_runtime, ort_backbone
from m3search.errors import ConfigError

pytestmark = pytest.mark.skipif(not ort_backbone.available(), reason="onnxruntime/onnx not installed")
TEXTS = ["passage number %d about cells and tables" % i for i in range(40)] + [
    "a longer text with several words " * 30, "Straße 42 — ünïcödé " * 5, "中文的句子，不太长。", "word " * 700]


@pytest.fixture(scope="module")
def fast(tiny_model_dir, tmp_path_factory):
    from m3search.encoder.fast_query import load_fast

    cache = tmp_path_factory.mktemp("layer-runtime-cache")
    load_fast(tiny_model_dir, device="cpu", cache_dir=cache)  # writes the artifact (with torch)
    return lambda: load_fast(tiny_model_dir, device="cpu", cache_dir=cache)


@pytest.mark.parametrize("setting", ["", "onnxruntime", "torch", " Torch "])
def test_each_runtime_encodes_passages_like_the_torch_encoder(fast, monkeypatch, tiny_encoder, setting):
    monkeypatch.setenv(layer_runtime.ENV_CHOICE, setting)
    runtime = setting.strip().lower() or "onnxruntime"
    encoder = fast()
    got = encoder.encode(TEXTS)
    assert encoder._full is None and encoder._ort.runtime == runtime  # the passage path, not the torch encoder
    assert isinstance(encoder._ort.layers, layer_runtime.TorchLayers) == (runtime == "torch")
    assert_same_batch(got, tiny_encoder.encode(TEXTS), 1e-4)


def test_an_unknown_runtime_is_refused_by_name(fast, monkeypatch):
    monkeypatch.setenv(layer_runtime.ENV_CHOICE, "tensorrt")
    with pytest.raises(ConfigError, match="M3SEARCH_LAYERS='tensorrt'.*onnxruntime, torch"):
        fast().encode(TEXTS)


def test_torch_layers_match_onnx_runtime_layers_with_padding(fast):
    from m3search.encoder.ort_passages import _numpy_layers

    bb = fast()._lite_path().backbone
    layers = _numpy_layers(bb)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 17, bb.hidden)).astype(np.float32)
    mask = np.ones((3, 17), np.int64)
    mask[1, 9:] = mask[2, 4:] = 0
    got = {r: layer_runtime.make_layers(r, layers, bb.hidden, bb.heads, bb.eps)(x, mask) for r in layer_runtime.RUNTIMES}
    real = mask.astype(bool)
    np.testing.assert_allclose(got["torch"][real], got["onnxruntime"][real], atol=1e-4)
