"""BGE-M3 folder layout: loading, refusing head-less folders, saving and reloading, the spec file."""
from __future__ import annotations

import json
import numpy as np
import pytest
import torch

from m3search.encoder.checkpoint import SPEC_FILE, ModelSpec, load_m3_model, save_m3_model
from m3search.encoder.m3 import M3Encoder
from m3search.errors import ModelError

TEXTS = ["Hello world", "Die Katze schläft.", "猫在睡觉", ""]


def _copy_without(src, dst, *names):
    """The folder's files as symlinks (cheap), less `names`."""
    dst.mkdir()
    for f in src.iterdir():
        if f.name not in names:
            (dst / f.name).symlink_to(f)
    return dst


@pytest.mark.parametrize("missing", [("colbert_linear.pt",), ("sparse_linear.pt",), ("colbert_linear.pt", "sparse_linear.pt")])
def test_headless_folder_is_refused_naming_the_files_and_the_fix(tiny_model_dir, tmp_path, missing):
    folder = _copy_without(tiny_model_dir, tmp_path / "headless", *missing)
    with pytest.raises(ModelError) as err:
        load_m3_model(folder)
    message = str(err.value)
    for name in missing:
        assert name in message
    assert "random" in message and "m3search train" in message


def test_folder_without_backbone_is_refused(tiny_model_dir, tmp_path):
    folder = _copy_without(tiny_model_dir, tmp_path / "nobackbone", "model.safetensors")
    with pytest.raises(ModelError, match="model.safetensors"):
        load_m3_model(folder)
    with pytest.raises(ModelError, match="does not exist"):
        load_m3_model(tmp_path / "nowhere")


def test_bge_m3_folder_without_spec_gets_bge_m3_conventions(tiny_loaded, tiny_model_dir):
    assert not (tiny_model_dir / SPEC_FILE).exists()
    spec = tiny_loaded.spec
    assert (spec.pooling, spec.query_prefix, spec.passage_prefix, spec.heads_trained) == ("cls", "", "", True)
    assert spec.max_positions == 256  # 258 position rows minus XLM-R's padding offset
    assert tiny_loaded.model.colbert_dim == 32


def test_heads_are_loaded_from_the_pt_files(tiny_loaded, tiny_model_dir):
    colbert = torch.load(tiny_model_dir / "colbert_linear.pt", weights_only=True)
    sparse = torch.load(tiny_model_dir / "sparse_linear.pt", weights_only=True)
    assert torch.equal(tiny_loaded.model.colbert_linear.weight, colbert["weight"])
    assert torch.equal(tiny_loaded.model.sparse_linear.bias, sparse["bias"])


@pytest.mark.slow
def test_save_and_reload_round_trip(tiny_loaded, tiny_encoder, tmp_path):
    spec = ModelSpec(name="tiny-saved", pooling="cls", max_positions=200, heads_trained=False)
    out = save_m3_model(tiny_loaded.model, tiny_loaded.tokenizer, tmp_path / "saved", spec)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "colbert_linear.pt", "sparse_linear.pt", SPEC_FILE):
        assert (out / name).is_file(), name
    head = torch.load(out / "colbert_linear.pt", weights_only=True)
    assert set(head) == {"weight", "bias"}
    assert not list(tmp_path.glob(".saved.tmp-*")), "the temporary build folder must be gone"

    reloaded = M3Encoder(load_m3_model(out, device="cpu"))  # transformers on both sides: bit-exact
    assert reloaded.spec == spec
    assert reloaded.heads_trained is False
    assert reloaded.identity.tokenizer_hash == tiny_encoder.identity.tokenizer_hash
    assert reloaded.identity.heads_hash == tiny_encoder.identity.heads_hash
    a, b = tiny_encoder.encode(TEXTS), reloaded.encode(TEXTS)
    np.testing.assert_array_equal(a.dense, b.dense)
    np.testing.assert_array_equal(a.multivec, b.multivec)
    assert (a.sparse != b.sparse).nnz == 0


def test_save_refuses_an_existing_folder(tiny_loaded, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ModelError, match="already exists"):
        save_m3_model(tiny_loaded.model, tiny_loaded.tokenizer, tmp_path / "taken", ModelSpec(name="x"))
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_spec_prefixes_and_mean_pooling_are_applied(tiny_model_dir, tiny_encoder, tmp_path):
    folder = _copy_without(tiny_model_dir, tmp_path / "e5style")
    spec = ModelSpec(name="e5style", pooling="mean", query_prefix="query: ", passage_prefix="passage: ", max_positions=256)
    (folder / SPEC_FILE).write_text(json.dumps(spec.to_dict()))
    e5 = M3Encoder.from_pretrained(folder, device="cpu")

    as_query = e5.encode(["Wo schläft die Katze?"], kind="query")
    by_hand = tiny_encoder.encode(["query: Wo schläft die Katze?"])
    np.testing.assert_allclose(as_query.multivec, by_hand.multivec, atol=1e-6)
    # mean pooling: the normalised mean of the final states over all tokens (cls and </s> included)
    loaded = e5.model
    ids = torch.tensor([e5.tokenizer.encode(["query: Wo schläft die Katze?"])[0]])
    with torch.inference_mode():
        hidden = loaded.backbone(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
    mean = hidden.mean(0) / hidden.mean(0).norm()
    np.testing.assert_allclose(as_query.dense[0], mean.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "content, match",
    [
        ({"format": "m3search.model", "format_version": 99, "name": "x"}, "newer"),
        ({"format": "something-else", "name": "x"}, "format"),
        ({"format": "m3search.model", "name": "x", "pooling": "max"}, "pooling"),
        ({"format": "m3search.model", "pooling": "cls"}, "name"),
    ],
)
def test_bad_spec_files_are_refused(tiny_model_dir, tmp_path, content, match):
    folder = _copy_without(tiny_model_dir, tmp_path / "badspec")
    (folder / SPEC_FILE).write_text(json.dumps(content))
    with pytest.raises(ModelError, match=match):
        load_m3_model(folder)


def test_spec_longer_than_the_position_table_is_refused(tiny_model_dir, tmp_path):
    folder = _copy_without(tiny_model_dir, tmp_path / "toolong")
    (folder / SPEC_FILE).write_text(json.dumps(ModelSpec(name="x", max_positions=4096).to_dict()))
    with pytest.raises(ModelError, match="max_positions"):
        load_m3_model(folder)


def test_unknown_or_missing_devices_are_refused(tiny_model_dir):
    import torch

    with pytest.raises(ModelError, match="device"):
        load_m3_model(tiny_model_dir, device="tpu:9")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA"):
            load_m3_model(tiny_model_dir, device="cuda")


def test_pytorch_model_bin_with_prefixed_keys_loads_the_same(tiny_model_dir, tiny_encoder, tmp_path):
    """BAAI/bge-m3 ships pytorch_model.bin; some checkpoints prefix keys with the base model's name."""
    from safetensors.torch import load_file

    folder = _copy_without(tiny_model_dir, tmp_path / "binfolder", "model.safetensors")
    state = {f"roberta.{k}": v for k, v in load_file(str(tiny_model_dir / "model.safetensors")).items()}
    torch.save(state, folder / "pytorch_model.bin")
    other = M3Encoder.from_pretrained(folder, device="cpu")  # native backbone, mapped from the .bin
    a, b = tiny_encoder.encode(TEXTS), other.encode(TEXTS)
    np.testing.assert_allclose(a.dense, b.dense, atol=1e-6, rtol=0)
    np.testing.assert_allclose(a.multivec, b.multivec, atol=1e-6, rtol=0)
    from m3search.encoder.native import NativeEncoder

    assert isinstance(other.model.backbone, NativeEncoder)


@pytest.mark.slow
def test_backbone_weights_that_do_not_fit_the_config_are_refused(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _copy_without(tiny_model_dir, tmp_path / "partial", "model.safetensors")
    state = load_file(str(tiny_model_dir / "model.safetensors"))
    del state["encoder.layer.1.output.dense.weight"]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ModelError, match="encoder.layer.1.output.dense.weight"):
        load_m3_model(folder)


def test_identity_records_the_heads(tiny_loaded, tiny_encoder):
    """Fine-tuned heads over the same backbone and tokenizer make a different identity, so an index built
    with them refuses to be searched with the stock heads."""
    import copy

    tuned = copy.deepcopy(tiny_loaded)
    with torch.no_grad():
        tuned.model.sparse_linear.bias += 0.5
    other = M3Encoder(tuned).identity
    mine = tiny_encoder.identity
    assert len(mine.heads_hash) == 64
    assert other.tokenizer_hash == mine.tokenizer_hash and other.heads_hash != mine.heads_hash
    assert [m.split(":")[0] for m in mine.mismatches(other)] == ["heads_hash"]
