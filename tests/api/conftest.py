"""Fixtures for the Python API tests: a small multilingual corpus and the deterministic hashing encoder."""
from __future__ import annotations

import pytest

import m3search

# must match the session `hashing_encoder` fixture of tests/conftest.py, so scores can be recomputed
MODEL = "hashing:dim=32,vocab_size=5000"

DOCS = [
    {"id": "en-1", "title": "Navigator", "text": "Press F5 to open the Navigator and jump to a sheet"},
    {"id": "en-2", "title": "Sorting", "text": "Sort the cells of a column in ascending or descending order"},
    {"id": "en-3", "title": "Columns", "text": "To delete an entire column select the column and choose delete"},
    {"id": "de-1", "title": "Navigator", "text": "Drücken Sie F5 um den Navigator zu öffnen"},
    {"id": "de-2", "title": "Spalten", "text": "Um eine ganze Spalte zu löschen wählen Sie die Spalte aus"},
    {"id": "fr-1", "title": "Trier", "text": "Trier les cellules d'une colonne par ordre croissant"},
    {"id": "ja-1", "title": "列の削除", "text": "列全体を削除するには列を選択します"},
    {"id": "zh-1", "title": "删除整列", "text": "要删除整列请选择该列然后删除"},
]


@pytest.fixture
def docs():
    return [dict(d) for d in DOCS]


@pytest.fixture
def model():
    return MODEL


@pytest.fixture(scope="module")
def shared_index(tmp_path_factory):
    """One index of DOCS for read-only tests."""
    index = m3search.build_index(tmp_path_factory.mktemp("api") / "idx", DOCS, model=MODEL)
    yield index
    index.close()
