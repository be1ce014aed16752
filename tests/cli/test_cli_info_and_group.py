"""`m3search info`, the command group, and the lazily registered subcommands."""
from __future__ import annotations

import json
import sys

import click
from click.testing import CliRunner

from m3search.cli import main
from m3search.cli.lazy import LazyGroup


def test_info_text_and_json(run, built):
    text = run(["info", built])
    assert text.exit_code == 0, text.output
    assert "documents   8" in text.stdout and "format      m3search.index version" in text.stdout
    for kind in ("dense", "sparse", "multivec", "total"):
        assert any(line.strip().startswith(kind) for line in text.stdout.splitlines())
    info = json.loads(run(["info", built, "--json"]).stdout)
    assert info["n_docs"] == 8 and info["model"] == "hashing:dim=32,vocab_size=5000"
    assert set(info["components"]) == {"dense", "sparse", "multivec"}


def test_info_wrong_path(run, tmp_path):
    result = run(["info", tmp_path / "nope"])
    assert result.exit_code == 1 and "does not exist" in result.stderr


def test_help_lists_commands_and_version():
    result = CliRunner().invoke(main, ["--help"])
    for name in ("index", "query", "info"):
        assert f"  {name} " in result.output
    assert CliRunner().invoke(main, ["--version"]).output.startswith("m3search, version")


def test_lazy_group_imports_only_the_command_it_runs(tmp_path, monkeypatch):
    (tmp_path / "fake_train_cmd.py").write_text(
        "import click\n@click.command('train')\ndef some_name():\n    click.echo('training')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    group = LazyGroup(name="g", lazy_commands={"train": "fake_train_cmd:train", "bench": "not_installed_mod:bench"})
    assert group.list_commands(click.Context(group)) == ["train"]
    assert "fake_train_cmd" not in sys.modules
    result = CliRunner().invoke(group, ["train"])
    assert result.output == "training\n"
