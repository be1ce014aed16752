"""A model folder whose weights are a pickle with code is refused with a clear ModelError (issue #10 item 6)."""
from __future__ import annotations

import pickle
import shutil

import pytest

from m3search.encoder.checkpoint import load_m3_model
from m3search.errors import ModelError


class _Payload:
    def __reduce__(self):  # what a malicious checkpoint does: run code when unpickled
        return (print, ("unpickled!",))


def _pickled_backbone(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    for name in ("model.safetensors", "model.safetensors.index.json"):
        (folder / name).unlink(missing_ok=True)
    import torch

    torch.save({"weights": _Payload()}, folder / "pytorch_model.bin", pickle_module=pickle)
    return folder


def test_pickled_backbone_is_refused_clearly(tiny_model_dir, tmp_path, capsys):
    folder = _pickled_backbone(tiny_model_dir, tmp_path)
    with pytest.raises(ModelError, match="pytorch_model.bin is a pickle that holds more than tensors.*safetensors"):
        load_m3_model(folder)
    assert "unpickled!" not in capsys.readouterr().out


def test_pickled_head_is_refused_clearly(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    import torch

    torch.save({"weight": _Payload(), "bias": 1}, folder / "sparse_linear.pt")
    with pytest.raises(ModelError, match="sparse_linear.pt .*never runs pickled code") as err:
        load_m3_model(folder)
    assert "\n" not in str(err.value)
