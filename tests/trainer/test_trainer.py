"""The training loop end to end on a tiny model: learning, checkpoints in BGE-M3 layout, logs, resume."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers.trainer import make_examples, make_model, make_spec, make_tokenizer
from m3search.encoder.checkpoint import load_m3_model
from m3search.errors import ConfigError, InputError
from m3search.trainer.config import TrainConfig
from m3search.trainer.heads_file import load_heads
from m3search.trainer.trainer import TrainCallback, Trainer, learning_rate

TERMS = {"total", "unified", "dense", "lexical", "multivec", "inter", "distill", "distill_dense",
         "distill_lexical", "distill_multivec"}


def heads_config(**kw) -> TrainConfig:
    base = dict(mode="heads", group_size=3, batch_size=4, bucket_edges=(8, 16), learning_rate=3e-3,
                warmup_ratio=0.0, epochs=2, log_every=1, seed=5)
    base.update(kw)
    return TrainConfig(**base)


class Interrupt(Exception):
    pass


class StopAfter(TrainCallback):
    def __init__(self, step):
        self.step = step

    def on_save(self, path):
        if path.name == f"checkpoint-{self.step:06d}":
            raise Interrupt


def run(tmp_path, name, config, model=None, examples=None, resume=None, callback=None):
    model = model or make_model(seed=3)
    trainer = Trainer(model, make_tokenizer(), make_spec(), config, examples or make_examples(24, seed=1),
                      tmp_path / name, callback=callback)
    return trainer.fit(resume_from=resume), model


def read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_learning_rate_schedule():
    lrs = [learning_rate(s, 10, 1.0, 0.2) for s in range(10)]
    assert lrs[:2] == [0.5, 1.0]
    assert lrs[2] == 1.0 and lrs[-1] == pytest.approx(1 / 8)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))


def test_heads_mode_trains_only_the_heads_and_writes_the_run(tmp_path):
    before = make_model(seed=3).state_dict()
    result, model = run(tmp_path, "run", heads_config())
    after = model.state_dict()
    for name, value in before.items():
        changed = not torch.equal(value, after[name])
        assert changed == name.startswith(("sparse_linear", "colbert_linear")), name
    out = tmp_path / "run"
    log = read_log(out / "log.jsonl")
    assert [r["step"] for r in log] == list(range(1, result.steps + 1))
    assert TERMS <= set(log[0])
    # the loss goes down on this easy synthetic task
    first, last = np.mean([r["total"] for r in log[:3]]), np.mean([r["total"] for r in log[-3:]])
    assert last < first
    # final model in BGE-M3 layout, loadable, with the trained heads
    loaded = load_m3_model(result.model_dir)
    assert loaded.spec.heads_trained and loaded.spec.name == "run"
    torch.testing.assert_close(loaded.model.sparse_linear.weight, model.sparse_linear.weight)
    assert (out / f"checkpoint-{result.steps:06d}" / "trainer_state" / "state.json").is_file()
    fresh = make_model(seed=9)
    meta = load_heads(fresh, out / "heads.safetensors")
    torch.testing.assert_close(fresh.colbert_linear.weight, model.colbert_linear.weight)
    assert meta["base_model"] == "tiny" and json.loads(meta["config"])["mode"] == "heads"


def test_self_distillation_switches_on_at_the_configured_step(tmp_path):
    result, _ = run(tmp_path, "run", heads_config(self_distill_start_step=3, epochs=1))
    log = read_log(tmp_path / "run" / "log.jsonl")
    assert all("distill" not in r for r in log[:3])
    assert all("distill" in r for r in log[3:]) and len(log) > 3


def test_full_mode_changes_the_backbone(tmp_path):
    before = make_model(seed=3).state_dict()
    _, model = run(tmp_path, "run", heads_config(mode="full", epochs=1, max_steps=2, sub_batch_size=5))
    assert not torch.equal(before["backbone.encoder.layer.0.attention.self.query.weight"],
                           model.state_dict()["backbone.encoder.layer.0.attention.self.query.weight"])


def test_resume_continues_exactly(tmp_path):
    config = heads_config(save_every=3)
    straight, model_a = run(tmp_path, "straight", config)
    # the same run killed right after its step-3 checkpoint, then resumed from it with a freshly loaded model
    with pytest.raises(Interrupt):
        run(tmp_path, "resumed", config, callback=StopAfter(3))
    ckpt = tmp_path / "resumed" / "checkpoint-000003"
    loaded = load_m3_model(ckpt)
    resumed, model_b = run(tmp_path, "resumed", config, model=loaded.model, resume=ckpt)
    assert resumed.steps == straight.steps
    for name in ("sparse_linear.weight", "colbert_linear.weight", "colbert_linear.bias"):
        torch.testing.assert_close(model_a.state_dict()[name], model_b.state_dict()[name], rtol=1e-6, atol=1e-7)
    log_a = read_log(tmp_path / "straight" / "log.jsonl")
    log_b = read_log(tmp_path / "resumed" / "log.jsonl")
    assert [r["step"] for r in log_b] == [r["step"] for r in log_a]
    assert [r["total"] for r in log_b] == pytest.approx([r["total"] for r in log_a], rel=1e-5)


def test_refuses_to_overwrite_a_run_and_bad_settings(tmp_path):
    run(tmp_path, "run", heads_config(max_steps=1))
    with pytest.raises(InputError, match="already holds a training run"):
        run(tmp_path, "run", heads_config(max_steps=1))
    with pytest.raises(ConfigError, match="fp16"):
        Trainer(make_model(), make_tokenizer(), make_spec(), heads_config(amp="fp16"), make_examples(8), tmp_path / "x")
    with pytest.raises(InputError, match="no full batch"):
        run(tmp_path, "small", heads_config(batch_size=64))


def test_teacher_scores_from_the_data_drive_the_loss(tmp_path):
    import dataclasses

    examples = [dataclasses.replace(ex, pos_scores=(2.0,), neg_scores=tuple(float(i) for i in range(len(ex.neg))))
                for ex in make_examples(16, seed=1)]
    result, _ = run(tmp_path, "kd", heads_config(teacher_scores=True, epochs=1), examples=examples)
    assert result.steps > 0 and np.isfinite(result.last_log["total"])
    plain, _ = run(tmp_path, "plain", heads_config(epochs=1), examples=examples)
    assert plain.last_log["dense"] != pytest.approx(result.last_log["dense"])


def test_bf16_autocast_step_runs_on_cpu(tmp_path):
    result, model = run(tmp_path, "bf16", heads_config(mode="full", amp="bf16", max_steps=1, epochs=1))
    assert result.steps == 1 and np.isfinite(result.last_log["total"])
    assert model.colbert_linear.weight.dtype == torch.float32  # master weights stay float32
