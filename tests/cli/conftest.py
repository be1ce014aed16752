"""CLI fixtures: CliRunner, corpora in every input format, the hashing encoder via M3SEARCH_MODEL."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from m3search.cli import main

MODEL = "hashing:dim=32,vocab_size=5000"  # the session `hashing_encoder` fixture's encoder

DOCS = [
    {"docid": "en-1", "title": "Navigator", "text": "Press F5 to open the Navigator and jump to a sheet"},
    {"docid": "en-2", "title": "Sorting", "text": "Sort the cells of a column in ascending or descending order"},
    {"docid": "en-3", "title": "Columns", "text": "To delete an entire column select the column and choose delete"},
    {"docid": "de-1", "title": "Navigator", "text": "Drücken Sie F5 um den Navigator zu öffnen"},
    {"docid": "de-2", "title": "Spalten", "text": "Um eine ganze Spalte zu löschen wählen Sie die Spalte aus"},
    {"docid": "fr-1", "title": "Trier", "text": "Trier les cellules d'une colonne par ordre croissant"},
    {"docid": "ja-1", "title": "列の削除", "text": "列全体を削除するには列を選択します"},
    {"docid": "zh-1", "title": "删除整列", "text": "要删除整列请选择该列然后删除"},
]


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
    return [dict(d) for d in DOCS]


@pytest.fixture
def jsonl(tmp_path, docs):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """An index of DOCS built once through the CLI, for read-only tests."""
    folder = tmp_path_factory.mktemp("cli")
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in DOCS), encoding="utf-8")
    result = CliRunner().invoke(main, ["index", str(corpus), "-o", str(folder / "idx"), "--model", MODEL, "-q"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return folder / "idx"
