"""The typed shape every benchmark loads into: a corpus read lazily, queries, qrels and (MKQA) answers."""
from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Iterator, Sequence

from m3search.document import Document, UniqueIds
from m3search.errors import InputError
from m3search.ingest import PASSAGE_INPUT_VERSION
from m3search.evaluation.datasets._files import files_hash, get_field, iter_jsonl

logger = logging.getLogger(__name__)

class Corpus:
    """Passages (`m3search.document.Document`s) read on demand from JSONL files (gzip or plain), in file order.

    Ids come from the first of `docid`, `_id`, `id`; text from `text` (or `contents`); `title` is optional.
    A null text (MIRACL ships some as null with "truncated": true) reads as "", so judgements on it still
    resolve. A docid seen twice is an error naming both places.
    """

    ID_FIELDS = ("docid", "_id", "id")
    TEXT_FIELDS = ("text", "contents")

    def __init__(self, files: Sequence[Path]):
        if not files:
            raise InputError("a corpus needs at least one file")
        self.files = tuple(Path(f) for f in files)

    def __repr__(self) -> str:
        return f"Corpus({[str(f) for f in self.files]})"

    def __iter__(self) -> Iterator[Document]:
        ids = UniqueIds()
        for path in self.files:
            for lineno, obj in iter_jsonl(path):
                where = f"{path}:{lineno}"
                docid = get_field(obj, self.ID_FIELDS, where)
                text = get_field(obj, self.TEXT_FIELDS, where, optional=True) or ""
                title = get_field(obj, ("title",), where, optional=True) or None
                doc = Document(docid, text, title, source=where)
                ids.check(doc)
                yield doc

    def passages(self) -> list[Document]:
        return list(self)

    @functools.cached_property
    def content_hash(self) -> str:
        """Identity of the corpus content (bytes of its files plus how passages become input)."""
        return files_hash(self.files, salt=f"passage-input-v{PASSAGE_INPUT_VERSION}")


@dataclasses.dataclass
class RetrievalTask:
    """One language of one benchmark split.

    queries: {qid: text}; qrels: {qid: {docid: rel}} (may be empty for answer-only MKQA files);
    answers: {qid: [answer strings]} for MKQA's answer-string recall, else empty.
    """

    task: str
    language: str
    split: str
    corpus: Corpus
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    answers: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    corpus_language: str | None = None

    @property
    def name(self) -> str:
        return f"{self.task}/{self.language}/{self.split}"

    @property
    def judged_queries(self) -> dict[str, str]:
        """The queries that can be scored: those with qrels, or with answers when there are no qrels."""
        keys = self.qrels if self.qrels else self.answers
        return {qid: text for qid, text in self.queries.items() if qid in keys}

    def summary(self) -> dict:
        return {
            "task": self.task,
            "language": self.language,
            "split": self.split,
            "corpus_language": self.corpus_language or self.language,
            "corpus_files": [str(f) for f in self.corpus.files],
            "queries": len(self.queries),
            "judged_queries": len(self.judged_queries),
            "qrels": sum(len(v) for v in self.qrels.values()),
            "answers": len(self.answers),
        }
