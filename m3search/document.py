"""The one document type: what users index, what the corpus readers and benchmark loaders yield, and what
the document store gives back.

>>> from m3search.document import Document
>>> doc = Document("a", "Press F5 to open the Navigator.", title="Navigator")
>>> doc.id, doc.title
('a', 'Navigator')
>>> doc == Document("a", "Press F5 to open the Navigator.", title="Navigator", source="corpus.jsonl:3")
True
"""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Document:
    """One document: an id, its text, an optional title and optional metadata (a JSON-like dict).

    `text` is None only for a document the index engine stored without its text (`Index.add(..., docs=None)`).
    `source` says where a reader found it ('corpus.jsonl:12'), for error messages; it is not stored and not
    compared.
    """

    id: str
    text: str | None
    title: str | None = None
    metadata: dict[str, Any] | None = None
    source: str | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def docid(self) -> str:
        """The id under the name the benchmark files use (MIRACL's `docid`)."""
        return self.id
