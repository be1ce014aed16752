"""The plain-torch inference backbone (`native.py`) against transformers' model on the same checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch

ATOL = 1e-5  # as test_parity.py

TEXTS = ["query: short", "passage: " + "a longer text with several words " * 12, "x", "  spaced   out  "]


def test_native_backbone_is_used_and_matches_transformers(tiny_model_dir, tiny_loaded):
    from m3search.encoder.checkpoint import load_m3_model
    from m3search.encoder.native import NativeEncoder

    native = load_m3_model(tiny_model_dir, device="cpu", native=True)
    assert isinstance(native.model.backbone, NativeEncoder)
    assert not isinstance(tiny_loaded.model.backbone, NativeEncoder)
    batch = tiny_loaded.tokenizer(TEXTS)  # padded: exercises the attention mask
    with torch.inference_mode():
        want = tiny_loaded.model.backbone(**batch).last_hidden_state
        got = native.model.backbone(**batch).last_hidden_state
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(got[mask], want[mask], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["passage", "query"])
def test_native_encoder_matches_flagembedding(tiny_model_dir, flag_reference, kind):
    from m3search.encoder.m3 import M3Encoder
    from m3search.encoder.native import NativeEncoder

    encoder = M3Encoder.from_pretrained(tiny_model_dir, device="cpu")  # the path queries take
    assert isinstance(encoder.model.backbone, NativeEncoder)
    batch = encoder.encode([str(t) for t in flag_reference[f"{kind}_texts"]], kind=kind)
    np.testing.assert_allclose(batch.dense, flag_reference[f"{kind}_dense"], atol=ATOL, rtol=0)
    assert batch.multivec_lengths.tolist() == flag_reference[f"{kind}_colbert_lengths"].tolist()
    np.testing.assert_allclose(batch.multivec, flag_reference[f"{kind}_colbert"], atol=ATOL, rtol=0)


def test_weights_are_mapped_not_copied(tiny_model_dir):
    """The word table is a view of the mapped file (why a query touches only the rows it uses)."""
    from m3search.encoder.native import mmap_safetensors

    state = mmap_safetensors(tiny_model_dir / "model.safetensors")
    from safetensors.torch import load_file

    want = load_file(str(tiny_model_dir / "model.safetensors"))
    assert sorted(state) == sorted(want)
    for name, tensor in want.items():
        assert torch.equal(state[name], tensor), name
    file = tiny_model_dir / "model.safetensors"
    header = 8 + int.from_bytes(file.read_bytes()[:8], "little")
    starts = [t.data_ptr() for t in state.values()]
    ends = [t.data_ptr() + t.numel() * t.element_size() for t in state.values()]
    assert max(ends) - min(starts) == file.stat().st_size - header  # all views of one mapped buffer


def test_unsupported_configs_fall_back_to_transformers(tiny_model_dir, tmp_path):
    import json
    import shutil

    from m3search.encoder.checkpoint import load_m3_model
    from m3search.encoder.native import NativeEncoder, supports, read_config

    assert supports(read_config(tiny_model_dir))
    folder = tmp_path / "relative"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["position_embedding_type"] = "relative_key"
    (folder / "config.json").write_text(json.dumps(config))
    assert not supports(read_config(folder))
    loaded = load_m3_model(folder, device="cpu", native=True)
    assert not isinstance(loaded.model.backbone, NativeEncoder)


def test_word_rows_are_read_not_mapped_and_equal_the_table(tiny_model_dir):
    """Word rows come from pread (RSS: no fault-around over the mapped table) and equal F.embedding's."""
    from m3search.encoder.checkpoint import load_m3_model

    backbone = load_m3_model(tiny_model_dir, device="cpu", native=True).model.backbone
    assert backbone._reads_word_rows()
    ids = torch.tensor([[0, 5, 5, 250001, 17], [3, 2, 1, 1, 1]])
    assert torch.equal(backbone.word_rows(ids), torch.nn.functional.embedding(ids, backbone.word))
    with pytest.raises(IndexError):
        backbone.word_rows(torch.tensor([[backbone.word.shape[0]]]))
    backbone.word = torch.nn.Parameter(backbone.word.detach().clone(), requires_grad=False)  # a moved table
    assert not backbone._reads_word_rows()  # then the tensor itself is used
