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

from m3search.errors import InputError


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


class UniqueIds:
    """The one duplicate-id check of every document stream (corpus readers, the API, benchmark corpora).

    >>> ids = UniqueIds()
    >>> ids.check(Document("a", "x", source="c.jsonl:1"))
    >>> ids.check(Document("a", "y", source="c.jsonl:2"))
    Traceback (most recent call last):
    ...
    m3search.errors.InputError: c.jsonl:2: duplicate id 'a' (it appeared earlier in the input): ids must be unique; remove or rename one of them
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def check(self, doc: Document, where: str | None = None) -> None:
        if doc.id in self._seen:
            raise InputError(
                f"{where or doc.source or 'input'}: duplicate id {doc.id!r} (it appeared earlier in the input): ids "
                "must be unique; remove or rename one of them"
            )
        self._seen.add(doc.id)
