"""CLI fixtures: CliRunner, corpora in every input format, the hashing encoder via M3SEARCH_MODEL."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from m3search.cli import main
from helpers.sample_docs import MODEL, sample_docs

DOCS = sample_docs("docid")


@pytest.fixture
def run(monkeypatch):
    """run(args, input=None) -> click Result; the hashing encoder is the default model, env is clean."""
    monkeypatch.setenv("M3SEARCH_MODEL", MODEL)
    monkeypatch.delenv("M3SEARCH_INDEX", raising=False)
    runner = CliRunner()

    def _run(args, input=None, **kwargs):
        return runner.invoke(main, [str(a) for a in args], input=input, catch_exceptions=False, **kwargs)

    return _run


@pytest.fixture
def docs():
    return sample_docs("docid")


@pytest.fixture
def jsonl(tmp_path, docs):
    return _write_jsonl(tmp_path / "corpus.jsonl", docs)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """An index of DOCS built once through the CLI, for read-only tests."""
    folder = tmp_path_factory.mktemp("cli")
    corpus = _write_jsonl(folder / "corpus.jsonl", DOCS)
    result = CliRunner().invoke(main, ["index", str(corpus), "-o", str(folder / "idx"), "--model", MODEL, "-q"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return folder / "idx"


def _write_jsonl(path, docs):
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return path
