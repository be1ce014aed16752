"""Cached hidden states reproduce the encoder's outputs; heads applied to them match M3Encoder."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.trainer import make_model, make_spec, make_tokenizer
from m3search.encoder.checkpoint import LoadedModel
from m3search.encoder.m3 import M3Encoder
from m3search.errors import InputError
from m3search.trainer.state_cache import StateCache, build_cache, cache_identity, encode_from_cache, open_or_build

TEXTS = ["w1 w2 w3", "w4 w5 w6 w7 w8 w9 w10 w4", "w11", "w1 w2 w3", "w12 w13 w14 w15"]


@pytest.fixture
def parts():
    model, tok = make_model(seed=2), make_tokenizer()
    torch.nn.init.normal_(model.sparse_linear.weight, std=0.5)
    return model, tok, cache_identity(model, tok, "tiny", "passage", "", 32)


def test_cache_holds_the_backbone_states_and_dense_vectors(tmp_path, parts):
    model, tok, ident = parts
    cache = build_cache(tmp_path / "c", TEXTS, model, tok, ident, tokens_per_batch=12)
    assert len(cache) == 4  # the repeated text is stored once
    side = cache.side(cache.rows(["w4 w5 w6 w7 w8 w9 w10 w4", "w11"]), tok.pad_id)
    ids, mask = tok.pad(tok.encode(["w4 w5 w6 w7 w8 w9 w10 w4", "w11"], 32))
    assert torch.equal(side.input_ids, torch.from_numpy(ids)) and torch.equal(side.attention_mask, torch.from_numpy(mask))
    with torch.no_grad():
        hidden = model.backbone(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
    m = torch.from_numpy(mask).bool()
    torch.testing.assert_close(side.hidden, hidden[m], rtol=2e-3, atol=2e-3)  # packed real tokens; fp16 storage


def test_heads_on_cached_states_match_the_encoder(tmp_path, parts):
    model, tok, ident = parts
    cache = build_cache(tmp_path / "c", TEXTS, model, tok, ident)
    encoder = M3Encoder(LoadedModel(model, tok, make_spec()))
    expected = encoder.encode(cache.texts, kind="passage")
    got = encode_from_cache(cache, model, tok.unused_ids, encoder.vocab_size)
    np.testing.assert_allclose(got.dense, expected.dense, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got.multivec_lengths, expected.multivec_lengths)
    np.testing.assert_allclose(got.multivec, expected.multivec, atol=5e-3)
    assert got.sparse.shape == expected.sparse.shape
    np.testing.assert_array_equal(got.sparse.indices, expected.sparse.indices)
    np.testing.assert_allclose(got.sparse.data, expected.sparse.data, rtol=5e-3, atol=5e-3)


def test_reuse_checks_identity_and_coverage(tmp_path, parts):
    model, tok, ident = parts
    build_cache(tmp_path / "c", TEXTS, model, tok, ident)
    assert len(open_or_build(tmp_path / "c", TEXTS[:2], model, tok, ident)) == 4
    with pytest.raises(InputError, match="lacks 1 of the texts"):
        open_or_build(tmp_path / "c", ["w99"], model, tok, ident)
    with pytest.raises(InputError, match="max_length"):
        StateCache(tmp_path / "c").check_identity({**ident, "max_length": 64})
    with pytest.raises(InputError, match="backbone_fingerprint"):
        StateCache(tmp_path / "c").check_identity(cache_identity(make_model(seed=5), tok, "tiny", "passage", "", 32))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_long_texts_are_cached_in_the_encoders_windows_and_heads_match_it(tmp_path, pooling):
    """Texts longer than the backbone's window: the cache cuts them as M3Encoder does at inference
    (overlapping windows, each run alone), so heads on the cached states give the encoder's dense vector
    (mean of the windows'), lexical weights (max over windows) and token vectors (every window's, in order)."""
    model, tok = make_model(seed=3, pooling=pooling), make_tokenizer()
    torch.nn.init.normal_(model.sparse_linear.weight, std=0.5)
    window = 12
    texts = [" ".join(f"w{(7 * i + j) % 40 + 1}" for j in range(n)) for i, n in enumerate((3, 10, 11, 25, 37))]
    ident = cache_identity(model, tok, "tiny", "passage", "", 1000, window_tokens=window)
    assert ident["window_tokens"] == window and cache_identity(model, tok, "tiny", "passage", "", 12, window) == \
        cache_identity(model, tok, "tiny", "passage", "", 12)  # short max lengths keep their old identity
    cache = build_cache(tmp_path / "c", texts, model, tok, ident, tokens_per_batch=30)
    encoder = M3Encoder(LoadedModel(model, tok, make_spec()), window_tokens=window, long_dense="mean")
    expected = encoder.encode(texts, kind="passage")
    assert expected.multivec_lengths.max() > window  # the long texts really are windowed
    got = encode_from_cache(cache, model, tok.unused_ids, encoder.vocab_size)
    np.testing.assert_allclose(got.dense, expected.dense, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got.multivec_lengths, expected.multivec_lengths)
    np.testing.assert_allclose(got.multivec, expected.multivec, atol=5e-3)
    np.testing.assert_array_equal(got.sparse.indptr, expected.sparse.indptr)
    np.testing.assert_array_equal(got.sparse.indices, expected.sparse.indices)
    np.testing.assert_allclose(got.sparse.data, expected.sparse.data, rtol=5e-3, atol=5e-3)


def test_cache_built_with_onnx_runtime_layers_holds_the_same_states(tmp_path, tiny_checkpoint):
    """`onnx_backbone` (how `train` builds caches on CPU): the states and dense vectors of the torch backbone,
    long texts windowed the same way; the identity still names the training model."""
    from m3search.encoder import ort_backbone
    from m3search.trainer.pipeline import load_for_training
    from m3search.trainer.state_cache import onnx_backbone

    if not ort_backbone.available():
        pytest.skip("onnxruntime/onnx not installed")
    loaded = load_for_training(tiny_checkpoint, device="cpu")
    model, tok = loaded.model, loaded.tokenizer
    fast = onnx_backbone(tiny_checkpoint)
    assert fast is not None
    texts = [" ".join(f"w{(5 * i + j) % 40 + 1}" for j in range(n)) for i, n in enumerate((3, 9, 30))]
    ident = cache_identity(model, tok, "tiny", "passage", "", 1000, window_tokens=12)
    want = build_cache(tmp_path / "torch", texts, model, tok, ident, tokens_per_batch=30)
    got = build_cache(tmp_path / "ort", texts, model, tok, ident, tokens_per_batch=30, backbone=fast)
    assert fast.native._onnx_layers is not None  # it really ran in ONNX Runtime
    assert got.meta == want.meta
    np.testing.assert_array_equal(got.offsets, want.offsets)
    np.testing.assert_array_equal(got.input_ids, want.input_ids)
    np.testing.assert_allclose(got.states.astype(np.float32), want.states.astype(np.float32), atol=2e-3)
    np.testing.assert_allclose(got.dense, want.dense, atol=1e-5)
