"""Streaming corpus readers: JSON lines (plain or .gz), TSV, a folder of text files, or stdin.

JSON lines take MIRACL's and BEIR's shapes: one object per line with an id under `docid`, `_id` or
`id`, a `text`, and optionally a `title` and a `metadata` object (other keys are kept as metadata).
TSV lines are `id<TAB>text` or `id<TAB>text<TAB>title` (DPR's order), with an optional header line.
A folder is read recursively: every .txt/.md file is a document whose id is its path in the folder.

Every problem is reported as `file:line: what is wrong; how to fix it`. A record whose text is JSON
null (MIRACL ships some) reads as a Document with no text; `m3search.ingest` skips and counts those
(and empty or whitespace-only texts), the same for the CLI and the API.
"""
from __future__ import annotations

from collections import Counter

import json
import logging
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping

from m3search.data.lines import binary_lines, decode_line
from m3search.document import Document, UniqueIds
from m3search.errors import InputError

log = logging.getLogger(__name__)

FORMATS = ("auto", "jsonl", "tsv")
ID_KEYS = ("docid", "_id", "id")
TEXT_SUFFIXES = (".txt", ".md", ".text")
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
_RESERVED = {*ID_KEYS, "text", "title", "metadata"}


class CorpusReader:
    """Iterates the documents of one or more sources in order, refusing duplicate ids.

    sources: file paths, folders, or '-' for `stdin` (a binary or text stream; default sys.stdin).
    format:  'auto' (by suffix, else by the first line), 'jsonl' or 'tsv'; folders are always text files.
    """

    def __init__(self, sources: Iterable[str | Path], format: str = "auto", stdin: IO | None = None):
        if format not in FORMATS:
            raise InputError(f"unknown corpus format {format!r}: choose one of {', '.join(FORMATS)}")
        self.sources = [str(s) for s in sources]
        if not self.sources:
            raise InputError("no corpus given: name one or more files or folders, or '-' for stdin")
        self.format = format
        self.stdin = stdin
        self.skipped: Counter[str] = Counter()  # files left out, by reason (empty texts: DocumentStream counts them)
        self.first_skipped: dict[str, str] = {}

    def __iter__(self) -> Iterator[Document]:
        ids = UniqueIds()
        for source in self.sources:
            for doc in self._read_source(source):
                ids.check(doc)
                yield doc

    def _skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self.first_skipped.setdefault(reason, where)

    def _read_source(self, source: str) -> Iterator[Document]:
        if source == "-":
            yield from self._read_lines("<stdin>", binary_lines("-", self.stdin), None if self.format == "auto" else self.format)
            return
        path = Path(source).expanduser()
        if path.is_dir():
            yield from self._read_folder(path)
            return
        if not path.is_file():
            raise InputError(f"corpus {source!r} does not exist: give a JSON-lines or TSV file, a folder, or '-'")
        fmt = self.format if self.format != "auto" else _format_from_suffix(path)
        yield from self._read_lines(str(path), binary_lines(path), fmt)

    def _read_lines(self, name: str, lines: Iterable[bytes], fmt: str | None) -> Iterator[Document]:
        header_checked = False
        for lineno, raw in enumerate(lines, start=1):
            where = f"{name}:{lineno}"
            line = decode_line(raw, where, strip_bom=lineno == 1)
            if not line.strip():
                continue
            if fmt is None:  # sniff from the first non-blank line
                fmt = "jsonl" if line.lstrip().startswith("{") else "tsv"
            if fmt == "jsonl":
                doc = self._from_json(line, where)
            else:
                if not header_checked and _is_tsv_header(line):
                    header_checked = True
                    continue
                doc = _from_tsv(line, where)
            header_checked = True
            if doc is not None:
                yield doc

    def _from_json(self, line: str, where: str) -> Document | None:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not valid JSON ({e.msg}: column {e.colno}): fix or remove this line") from None
        except RecursionError:
            raise InputError(f"{where}: the JSON is nested too deeply to be a document: fix or remove this line") from None
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object like {{\"docid\": ..., \"text\": ...}}, got {type(obj).__name__}")
        doc_id = _id_field(obj, where)
        if "text" not in obj:
            raise InputError(f"{where}: document {doc_id!r} has no 'text' field: every line needs a \"text\"")
        return document_from_mapping(obj, where, doc_id)

    def _read_folder(self, root: Path) -> Iterator[Document]:
        files = sorted(
            p for p in root.rglob("*")
            if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        if not files:
            raise InputError(f"folder {root} holds no {'/'.join(TEXT_SUFFIXES)} files to index")
        real_root = root.resolve()
        for path in files:
            where = str(path)
            if not path.resolve().is_relative_to(real_root):  # a symlink (or one above it) leads elsewhere
                self._skip("a symbolic link that leads out of the folder", where)
                continue
            text = decode_line(path.read_bytes(), where, strip_bom=True).strip()
            yield Document(id=path.relative_to(root).as_posix(), text=text, source=where)


def document_from_mapping(obj: Mapping[str, Any], where: str, doc_id: str | None = None) -> Document:
    """A Document from a dict with an id (docid/_id/id), text (a string, or null for none), and optional
    title and metadata."""
    doc_id = _id_field(obj, where) if doc_id is None else doc_id
    text = obj.get("text")
    if not isinstance(text, str) and not (text is None and "text" in obj):
        what = "no 'text' field" if "text" not in obj else f"a {type(text).__name__} as 'text'"
        raise InputError(f"{where}: document {doc_id!r} has {what}: give its text as a string")
    title = obj.get("title")
    if title is not None and not isinstance(title, str):
        raise InputError(f"{where}: document {doc_id!r} has a {type(title).__name__} as 'title': give a string or leave it out")
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InputError(f"{where}: document {doc_id!r} has a {type(metadata).__name__} as 'metadata': give a JSON object")
    for field, value in (("id", doc_id), ("text", text), ("title", title)):
        check_unicode(value, f"{where}: document {doc_id!r}" if field != "id" else where, field)
    extra = {k: v for k, v in obj.items() if k not in _RESERVED}
    metadata = {**extra, **(metadata or {})} or None
    return Document(id=doc_id, text=text, title=title or None, metadata=metadata, source=where)


def check_unicode(value: str | None, where: str, field: str) -> None:
    """Refuse a string that is not valid Unicode (a lone surrogate such as JSON's "\\ud800" escape)."""
    if value is None:
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(
            f"{where}: the {field} holds a lone surrogate ({value[e.start]!r} at character {e.start}), which is not "
            "valid Unicode: fix the producer of this data (a UTF-16 pair was split)"
        ) from None


def _id_field(obj: Mapping[str, Any], where: str) -> str:
    for key in ID_KEYS:
        if key in obj:
            value = obj[key]
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise InputError(f"{where}: {key!r} is a {type(value).__name__}: ids must be strings or integers")
            value = str(value)
            if not value.strip():
                raise InputError(f"{where}: {key!r} is empty: every document needs a non-empty id")
            return value
    raise InputError(f"{where}: no id field: give each document one of {', '.join(repr(k) for k in ID_KEYS)}")


def _from_tsv(line: str, where: str) -> Document:
    fields = line.split("\t")
    if len(fields) < 2:
        raise InputError(f"{where}: expected 'id<TAB>text', found no tab: separate the id and the text with a tab")
    if len(fields) > 3:
        raise InputError(
            f"{where}: expected 'id<TAB>text' or 'id<TAB>text<TAB>title', found {len(fields)} fields: "
            "tabs inside a text must be replaced by spaces"
        )
    doc_id = fields[0].strip()
    if not doc_id:
        raise InputError(f"{where}: the id (first field) is empty: every document needs a non-empty id")
    title = fields[2].strip() if len(fields) == 3 and fields[2].strip() else None
    return Document(id=doc_id, text=fields[1], title=title, source=where)


def _is_tsv_header(line: str) -> bool:
    fields = [f.strip().lower() for f in line.split("\t")]
    return len(fields) >= 2 and fields[0] in ("id", "docid", "_id", "doc_id", "pid") and fields[1] in ("text", "passage")


def _format_from_suffix(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in _JSONL_SUFFIXES:
        return "jsonl"
    if last == ".tsv":
        return "tsv"
    return None  # sniff
