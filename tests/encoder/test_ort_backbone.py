"""The ONNX Runtime layers (`ort_backbone.py`, the optional `m3search[onnx]` extra) against the torch encoder."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from m3search.encoder import ort_backbone

pytestmark = pytest.mark.skipif(not ort_backbone.available(), reason="onnxruntime/onnx not installed")

ATOL = 1e-4  # the bound; measured ~1e-6 on the tiny model and on m3search-small
TEXTS = ["short", "a longer text with several words " * 30, "x", "  spaced   out  ", "Straße 42 — ünïcödé " * 5,
         "中文的句子，不太长。", "word " * 200]


@pytest.fixture(scope="module")
def encoders(tiny_model_dir):
    from m3search.encoder.m3 import M3Encoder

    torch_encoder = M3Encoder.from_pretrained(tiny_model_dir, device="cpu", onnx=False)
    onnx_encoder = M3Encoder.from_pretrained(tiny_model_dir, device="cpu", onnx=True, batch_tokens=512)
    return torch_encoder, onnx_encoder


def test_layers_match_torch_on_a_padded_batch(encoders):
    torch_encoder, onnx_encoder = encoders
    assert (torch_encoder.runtime, onnx_encoder.runtime) == ("torch", "onnxruntime")
    ids, mask = onnx_encoder.tokenizer.pad(onnx_encoder.tokenizer.encode(TEXTS, 512))
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    with torch.inference_mode():
        want = torch_encoder.model.backbone(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
        got = onnx_encoder.model.backbone(input_ids=ids_t, attention_mask=mask_t, onnx=True).last_hidden_state
    assert onnx_encoder.model.backbone._onnx_layers is not None  # it really ran in ONNX Runtime
    real = mask_t.bool()
    assert got.shape == want.shape
    torch.testing.assert_close(got[real], want[real], atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", ["passage", "query"])
def test_encoder_outputs_match_torch(encoders, monkeypatch, kind):
    """All three outputs, every batch through ONNX Runtime (the small-batch torch route turned off)."""
    from m3search.encoder import m3

    torch_encoder, onnx_encoder = encoders
    monkeypatch.setattr(m3, "SINGLE_THREAD_TOKENS", 0)
    calls = []
    run = ort_backbone.OrtLayers.__call__
    monkeypatch.setattr(ort_backbone.OrtLayers, "__call__", lambda self, *a: calls.append(1) or run(self, *a))
    want, got = torch_encoder.encode(TEXTS, kind=kind), onnx_encoder.encode(TEXTS, kind=kind)
    assert len(calls) >= 2  # several batches (batch_tokens 512), all in ONNX Runtime
    np.testing.assert_allclose(got.dense, want.dense, atol=ATOL, rtol=0)
    assert got.multivec_lengths.tolist() == want.multivec_lengths.tolist()
    np.testing.assert_allclose(got.multivec, want.multivec, atol=ATOL, rtol=0)
    for i in range(len(TEXTS)):
        a, b = got.lexical_weights(i), want.lexical_weights(i)
        for key in set(a) | set(b):  # a weight at 0 +- 1e-6 may be kept by one and dropped by the other
            assert abs(a.get(key, 0.0) - b.get(key, 0.0)) <= ATOL, (i, key)


def test_int8_and_switch_off_use_torch(tiny_model_dir, monkeypatch):
    from m3search.encoder.m3 import M3Encoder

    assert M3Encoder.from_pretrained(tiny_model_dir, device="cpu").runtime == "onnxruntime"  # default: used
    monkeypatch.setenv(ort_backbone.ENV_SWITCH, "0")
    assert M3Encoder.from_pretrained(tiny_model_dir, device="cpu").runtime == "torch"
    monkeypatch.delenv(ort_backbone.ENV_SWITCH)
    assert M3Encoder.from_pretrained(tiny_model_dir, device="cpu", quantize="int8").runtime == "torch"


def test_missing_package_falls_back_or_refuses(tiny_model_dir, monkeypatch):
    """Without onnxruntime: the default quietly runs torch; onnx=True says what to install."""
    from m3search.encoder.m3 import M3Encoder
    from m3search.errors import ConfigError

    monkeypatch.setattr(ort_backbone, "available", lambda: False)
    encoder = M3Encoder.from_pretrained(tiny_model_dir, device="cpu")
    assert encoder.runtime == "torch"
    assert encoder.encode(["still works"]).dense.shape[0] == 1
    with pytest.raises(ConfigError, match=r"m3search\[onnx\]"):
        M3Encoder.from_pretrained(tiny_model_dir, device="cpu", onnx=True)


def test_torch_layers_still_right_after_the_mapped_pages_are_dropped(tiny_model_dir):
    """Building the session drops the mapped weight pages it packed from; the torch route (small batches)
    reads them back from the file, and the concatenated q/k/v (anonymous memory) is left alone."""
    from m3search.encoder.m3 import M3Encoder

    reference = M3Encoder.from_pretrained(tiny_model_dir, device="cpu", onnx=False)
    encoder = M3Encoder.from_pretrained(tiny_model_dir, device="cpu", onnx=True)
    ids, mask = encoder.tokenizer.pad(encoder.tokenizer.encode(TEXTS, 512))
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    with torch.inference_mode():
        encoder.model.backbone(input_ids=ids_t, attention_mask=mask_t, onnx=True)
        assert encoder.model.backbone._onnx_layers.dropped_bytes > 0
        got = encoder.model.backbone(input_ids=ids_t, attention_mask=mask_t, onnx=False).last_hidden_state
        want = reference.model.backbone(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_an_install_that_fails_to_load_falls_back_to_torch(tiny_model_dir, monkeypatch, caplog):
    from m3search.encoder import m3
    from m3search.encoder.m3 import M3Encoder

    def broken(*args, **kwargs):
        raise OSError("libonnxruntime.so: cannot open shared object file")

    monkeypatch.setattr(ort_backbone, "OrtLayers", broken)
    monkeypatch.setattr(m3, "SINGLE_THREAD_TOKENS", 0)
    reference = M3Encoder.from_pretrained(tiny_model_dir, device="cpu", onnx=False).encode(TEXTS)
    encoder = M3Encoder.from_pretrained(tiny_model_dir, device="cpu")
    got = encoder.encode(TEXTS)
    assert "encoding with torch" in caplog.text
    np.testing.assert_array_equal(got.dense, reference.dense)
