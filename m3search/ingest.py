"""Ingestion: how documents become encoder input and index entries. The API (`SearchIndex.add/upsert`,
`build_index`), the CLI (`m3search index`), the trainer's negative mining and the benchmarks all go
through here, so the same document is always embedded from the same text.

- `passage_text(doc)`: the text the encoder sees. A title is encoded as "title text", as FlagEmbedding's
  MIRACL evaluation gives a passage to BGE-M3 (`f"{title} {text}"`, and pyserini's MIRACL runs do the
  same); a missing or blank title leaves the text as it is. The stored text and title stay apart.
- `DocumentStream(docs)`: dicts, `(id, text)` tuples or Documents -> Documents, refusing duplicate ids and
  skipping (and counting) documents whose text is missing, empty or only whitespace: they have nothing to
  match, and an empty text would otherwise get an arbitrary vector.
- `encode_documents(encoder, docs)`: one encoder call for a chunk of documents.
- `ingest(writer, docs, encode)`: the loop: chunks, skip or replace of ids already indexed, a commit at
  least every `commit_interval` seconds and at the end, a progress bar, rollback to the last commit on
  any error -> `AddResult`.

>>> from m3search.document import Document
>>> passage_text(Document("1", "Press F5.", title="Navigator"))
'Navigator Press F5.'
>>> passage_text(Document("2", "Press F5."))
'Press F5.'
>>> stream = DocumentStream([{"id": "a", "text": "x"}, ("b", "  "), Document("c", "z")])
>>> [d.id for d in stream], stream.skipped_empty, stream.first_empty
(['a', 'c'], 1, 'docs[1]')
"""
from __future__ import annotations

import dataclasses
import logging
import time
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from m3search.document import Document, UniqueIds
from m3search.errors import InputError
from m3search.types import EncodedBatch

log = logging.getLogger(__name__)

# Bump when `passage_text` or what is skipped changes: it is part of every benchmark encoding-cache key.
PASSAGE_INPUT_VERSION = 2

DEFAULT_BATCH_SIZE = 128  # documents per encoder call (which sorts them by length) and per add to the index
DEFAULT_COMMIT_INTERVAL = 120.0  # seconds between commits of a long add, so an interrupted run resumes

DocLike = Document | Mapping[str, Any] | tuple[str, str]
EMPTY_TEXT = "the text is missing or empty"


@dataclasses.dataclass(frozen=True)
class AddResult:
    """What an add or upsert did: documents written, those left alone because their id was indexed
    (`skipped`), and those left out because their text was missing or empty (`skipped_empty`)."""

    added: int
    skipped: int = 0
    replaced: int = 0
    generation: int = 0
    skipped_empty: int = 0


def passage_text(doc: Document) -> str:
    """The text the encoder (and the BM25 baseline) sees for a document: its title, a space, its text."""
    text = doc.text or ""
    return f"{doc.title} {text}" if doc.title and doc.title.strip() else text


def has_text(doc: Document) -> bool:
    """Whether a document has something to index: a text that is not empty or only whitespace."""
    return bool(doc.text and doc.text.strip())


def to_document(item: DocLike, where: str) -> Document:
    """A Document from a Document, a dict (id under `id`/`docid`/`_id`, `text`, `title`?, `metadata`?) or
    an `(id, text)` tuple; `where` names it in errors."""
    from m3search.data.corpus import document_from_mapping

    if isinstance(item, Document):
        return item
    if isinstance(item, Mapping):
        return document_from_mapping(item, where)
    if isinstance(item, tuple) and len(item) == 2:
        return document_from_mapping({"id": item[0], "text": item[1]}, where)
    raise InputError(f"{where}: a {type(item).__name__} is not a document: give {{'id': ..., 'text': ...}} or (id, text)")


class DocumentStream:
    """Documents from any iterable of DocLike, read lazily: duplicate ids are an InputError naming the
    place; documents without text are skipped and counted (`skipped_empty`, `first_empty` names one)."""

    def __init__(self, docs: Iterable[DocLike], check_ids: bool = True):
        if isinstance(docs, (str, bytes, Mapping, Document)):
            raise InputError("docs must be a list (or iterable) of documents, not a single " + type(docs).__name__)
        self._docs = docs
        self._check_ids = check_ids  # False for documents another DocumentStream has already checked
        self.skipped_empty = 0
        self.first_empty: str | None = None

    def __iter__(self) -> Iterator[Document]:
        ids = UniqueIds()
        for i, item in enumerate(self._docs):
            where = getattr(item, "source", None) or f"docs[{i}]"
            doc = to_document(item, where)
            if self._check_ids:
                ids.check(doc, where)
            if not has_text(doc):
                self.skipped_empty += 1
                if self.first_empty is None:
                    self.first_empty = where
                    log.warning("%s: document %r has no text (missing, empty or only whitespace): skipped", where, doc.id)
                continue
            yield doc


def encode_documents(encoder, docs: Sequence[Document], max_length: int | None = None) -> EncodedBatch:
    """Encode documents as passages, from `passage_text`; a text over the encoder's token limit is an
    InputError naming the document (and its source line, when it came from a file)."""
    from m3search.encoder.limits import TextTooLongError

    try:
        return encoder.encode([passage_text(d) for d in docs], kind="passage", max_length=max_length)
    except TextTooLongError as e:
        doc = docs[e.position]
        where = getattr(doc, "source", None)
        reason = str(e).replace(f"text {e.position} has", "has", 1)
        raise InputError(f"{where + ': ' if where else ''}document {doc.id!r} {reason}") from None


def ingest(
    writer,
    docs: Iterable[DocLike],
    encode: Callable[[Sequence[Document]], EncodedBatch],
    *,
    replace: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    commit_interval: float = DEFAULT_COMMIT_INTERVAL,
    progress: bool = False,
    after_encoding: Callable[[], None] | None = None,
) -> AddResult:
    """Add `docs` to `writer` (an index open for writing, `m3search.indexes.index.Index`), encoding each
    chunk of `batch_size` documents with `encode` (e.g. `lambda chunk: encode_documents(encoder, chunk)`).

    Ids already indexed are skipped (counted in `skipped`), or re-encoded and replaced with `replace`.
    Commits at least every `commit_interval` seconds and at the end. If anything fails (a malformed
    document, an interrupt), what was not committed is rolled back: the index stays at its last commit.
    `after_encoding` is called once every document is encoded and added, before the final commit (the CLI
    frees the encoder there, so the commit's codec training does not stack on the model's memory).
    The caller keeps ownership of `writer` (and closes it).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    stream = docs if isinstance(docs, DocumentStream) else DocumentStream(docs)
    added = skipped = replaced = generation = 0
    bar = _progress_bar(progress, len(docs) if isinstance(docs, Sequence) else None)
    try:
        last_commit = time.monotonic()
        for chunk in _chunks(stream, batch_size):
            present = writer.contains([d.id for d in chunk])
            n_present = int(present.sum())
            if not replace:
                skipped += n_present
                chunk = [d for d, p in zip(chunk, present) if not p]
            if chunk:
                batch = encode(chunk)
                (writer.upsert if replace else writer.add)([d.id for d in chunk], batch, chunk)
                added += len(chunk) - (n_present if replace else 0)
                replaced += n_present if replace else 0
            if bar is not None:
                bar.update(len(chunk) + (0 if replace else n_present))
            if time.monotonic() - last_commit >= commit_interval:
                generation = writer.commit()
                last_commit = time.monotonic()
                log.info("committed generation %d (%d documents added so far)", generation, added)
        if after_encoding is not None:
            after_encoding()
        generation = writer.commit()
    except BaseException:
        writer.rollback()  # what was not committed is dropped: the index stays at its last commit
        raise
    finally:
        if bar is not None:
            bar.close()
    return AddResult(added=added, skipped=skipped, replaced=replaced, generation=int(generation),
                     skipped_empty=stream.skipped_empty)


def _chunks(items: Iterable[Document], size: int) -> Iterator[list[Document]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _progress_bar(enabled: bool, total: int | None):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=" docs", desc="indexing", dynamic_ncols=True)
