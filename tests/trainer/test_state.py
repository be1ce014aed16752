"""Training state without pickle: optimizer state through safetensors + JSON, and back."""
from __future__ import annotations

import json

import pytest
import torch

from m3search.errors import ModelError
from m3search.trainer.state import Progress, load_state, save_state


def stepped_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    opt = torch.optim.AdamW([{"params": [model[0].weight], "weight_decay": 0.1},
                             {"params": [model[0].bias, *model[1].parameters()], "weight_decay": 0.0}], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(2).mean().backward()
        opt.step()
    return model, opt


def test_optimizer_state_round_trips_exactly(tmp_path):
    model, opt = stepped_optimizer()
    save_state(tmp_path, Progress(3, 1, 2), opt, {"seed": 1})
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.pkl"))
    loaded = load_state(tmp_path)
    assert loaded.progress == Progress(3, 1, 2) and loaded.config == {"seed": 1}
    fresh = torch.optim.AdamW([{"params": [model[0].weight], "weight_decay": 0.1},
                               {"params": [model[0].bias, *model[1].parameters()], "weight_decay": 0.0}], lr=1.0)
    fresh.load_state_dict(loaded.optimizer_state)
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for idx, per_param in a["state"].items():
        for name, value in per_param.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][idx][name])), (idx, name)
    assert torch.equal(loaded.rng["rng.torch"], torch.get_rng_state())


def test_refuses_missing_or_newer_state(tmp_path):
    with pytest.raises(ModelError, match="no training state"):
        load_state(tmp_path)
    _, opt = stepped_optimizer()
    folder = save_state(tmp_path, Progress(1, 0, 1), opt, {})
    meta = json.loads((folder / "state.json").read_text())
    meta["version"] = 99
    (folder / "state.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="newer"):
        load_state(tmp_path)
