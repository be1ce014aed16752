"""Ingestion: how documents become encoder input and index entries. The API, the CLI, the trainer's
negative mining and the benchmarks all go through here, so they embed the same text for the same document.

How a title is encoded is decided in one place, `passage_text`: "title text", as FlagEmbedding's MIRACL
evaluation and pyserini's MIRACL runs give a passage to the encoder (FlagEmbedding strips the joined
string; here a missing or blank title leaves the text exactly as it is).

>>> from m3search.document import Document
>>> passage_text(Document("1", "Press F5.", title="Navigator"))
'Navigator Press F5.'
>>> passage_text(Document("2", "Press F5."))
'Press F5.'
"""
from __future__ import annotations

from m3search.document import Document

# Bump when `passage_text` changes: it is part of every benchmark encoding-cache key.
PASSAGE_INPUT_VERSION = 1


def passage_text(doc: Document) -> str:
    """The text the encoder (and the BM25 baseline) sees for a document: its title, a space, its text."""
    text = doc.text or ""
    return f"{doc.title} {text}" if doc.title and doc.title.strip() else text
