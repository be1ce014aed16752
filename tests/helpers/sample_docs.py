"""The small multilingual corpus that the API and CLI tests index, and the encoder they name.

A plain module beside tests/conftest.py (importable as `sample_docs`), so each folder's conftest builds
its documents from the same texts.
"""
from __future__ import annotations

# must match the session `hashing_encoder` fixture of tests/conftest.py, so scores can be recomputed
MODEL = "hashing:dim=32,vocab_size=5000"

_TEXTS = [  # (id, title, text)
    ("en-1", "Navigator", "Press F5 to open the Navigator and jump to a sheet"),
    ("en-2", "Sorting", "Sort the cells of a column in ascending or descending order"),
    ("en-3", "Columns", "To delete an entire column select the column and choose delete"),
    ("de-1", "Navigator", "Drücken Sie F5 um den Navigator zu öffnen"),
    ("de-2", "Spalten", "Um eine ganze Spalte zu löschen wählen Sie die Spalte aus"),
    ("fr-1", "Trier", "Trier les cellules d'une colonne par ordre croissant"),
    ("ja-1", "列の削除", "列全体を削除するには列を選択します"),
    ("zh-1", "删除整列", "要删除整列请选择该列然后删除"),
]


def sample_docs(id_field: str) -> list[dict]:
    """New document dicts, the id under `id_field` ("id" for the Python API, "docid" in corpus files)."""
    return [{id_field: doc_id, "title": title, "text": text} for doc_id, title, text in _TEXTS]
