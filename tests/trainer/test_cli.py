"""`m3search train` end to end on a tiny model folder: mine negatives with the index, fit heads, resume, plot."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from helpers.trainer import make_examples
from m3search.cli.train import train
from m3search.encoder.checkpoint import load_m3_model
from m3search.trainer.data import read_examples, write_examples


@pytest.fixture
def data_file(tmp_path):
    examples = [ex.__class__(ex.query, ex.pos, (), meta=ex.meta) for ex in make_examples(24, seed=3)]
    path = tmp_path / "pairs.jsonl.gz"
    write_examples(path, examples)
    return path


def invoke(*args):
    result = CliRunner().invoke(train, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
def test_mine_fit_resume_plot(tmp_path, data_file, tiny_checkpoint):
    mined = tmp_path / "mined.jsonl"
    invoke("mine-negatives", "--data", data_file, "--out", mined, "--model", tiny_checkpoint, "--negatives", 3,
           "--range", "0:10", "--cache-dir", tmp_path / "cache", "--index-out", tmp_path / "mine-index", "-q")
    examples = read_examples(mined)
    assert len(examples) == 24 and all(len(ex.neg) == 3 and not set(ex.neg) & set(ex.pos) for ex in examples)
    assert (tmp_path / "mine-index" / "manifest.json").is_file()

    # partitioned mining: negatives only from positives of the same 'task' value (one index each)
    parted = tmp_path / "parted.jsonl"
    invoke("mine-negatives", "--data", data_file, "--out", parted, "--model", tiny_checkpoint, "--negatives", 3,
           "--range", "0:10", "--partition-by", "task", "--index-out", tmp_path / "parts", "-q")
    positives = {}
    for ex in read_examples(parted):
        positives.setdefault(ex.meta["task"], set()).update(ex.pos)
    for ex in read_examples(parted):
        assert set(ex.neg) <= positives[ex.meta["task"]] - set(ex.pos)
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == ["000", "001"]

    out = tmp_path / "run"
    common = ["--data", mined, "--model", tiny_checkpoint, "--out", out, "--mode", "heads", "--cache-dir",
              tmp_path / "cache", "--group-size", 3, "--batch-size", 4, "--bucket-edges", "16",
              "--lr", "1e-3", "--epochs", 2, "--save-every", 4, "--log-every", 2, "--reset-heads", "-q"]
    invoke("fit", *common)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log and {"dense", "lexical", "multivec", "inter", "distill"} <= set(log[-1])
    assert (out / "loss_curves.png").stat().st_size > 1000
    model = load_m3_model(out / "model")
    assert model.spec.heads_trained and model.spec.name == "run"
    steps = log[-1]["step"]

    # resume from the step-4 checkpoint: same number of steps, log rewritten from there
    invoke("fit", "--data", mined, "--out", out, "--resume", out / "checkpoint-000004",
           "--cache-dir", tmp_path / "cache", "-q")
    relog = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in relog] == [r["step"] for r in log] and relog[-1]["step"] == steps
    assert relog[-1]["total"] == pytest.approx(log[-1]["total"], rel=1e-5)

    result = invoke("plot", out, "--out", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").is_file() and "curves.png" in result.output


def test_fit_refuses_data_without_negatives(tmp_path, data_file, tiny_checkpoint):
    result = CliRunner().invoke(train, ["fit", "--data", str(data_file), "--model", str(tiny_checkpoint),
                                        "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code != 0 and "mine-negatives" in str(result.exception or result.output)


def test_heads_fit_on_passages_longer_than_the_backbone_in_windows(tmp_path, tiny_checkpoint):
    """Passages past the tiny model's 64 positions: heads mode trains on windowed cached states (the
    encoder's windows), and without a cache the long max length is refused with one line."""
    from m3search.trainer.state_cache import StateCache

    long_examples = make_examples(8, seed=4, max_len=150)
    data = tmp_path / "long.jsonl.gz"
    write_examples(data, long_examples)
    out = tmp_path / "run"
    args = ["fit", "--data", data, "--model", tiny_checkpoint, "--out", out, "--mode", "heads", "--group-size", 3,
            "--batch-size", 4, "--bucket-edges", "64,256", "--passage-max-length", 300, "--epochs", 1,
            "--log-every", 1, "--reset-heads", "-q"]
    refused = CliRunner().invoke(train, [str(a) for a in args])
    assert refused.exit_code != 0 and "--cache-dir" in str(refused.exception or refused.output)
    invoke(*args, "--cache-dir", tmp_path / "cache")
    cache = StateCache(tmp_path / "cache" / "passages")
    assert cache.identity["window_tokens"] == 64 and int((cache.offsets[1:] - cache.offsets[:-1]).max()) > 64
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log and all(0 < r["total"] < float("inf") for r in log)
