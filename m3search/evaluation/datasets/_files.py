"""Reading the benchmark files: gzip or plain text, JSONL, topic TSVs and qrels, with errors naming
file:line and the field at fault."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator, Sequence

from m3search.data.lines import iter_lines  # the one gzip-aware line reader
from m3search.errors import InputError

def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line, which must hold one JSON object."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(
                f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno}): each line must be one JSON object"
            ) from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{lineno}: a JSON {type(obj).__name__}, expected one object per line")
        yield lineno, obj


def get_field(obj: dict, names: Sequence[str], where: str, kind: type | tuple = str, optional: bool = False):
    """The value of the first of `names` present in `obj`, checked against `kind`.

    `where` is "file:line" for the message. A missing field raises unless optional (then None); null is
    returned as None for optional fields.
    """
    for name in names:
        if name in obj:
            value = obj[name]
            if value is None and optional:
                return None
            if kind is str and isinstance(value, int) and not isinstance(value, bool):
                return str(value)  # numeric ids are common in the wild (e.g. MKQA's example_id)
            if not isinstance(value, kind):
                expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
                raise InputError(
                    f"{where}: field {name!r} is {type(value).__name__} ({value!r:.60}), expected {expected}"
                )
            return value
    if optional:
        return None
    alternatives = " or ".join(repr(n) for n in names)
    raise InputError(f"{where}: field {alternatives} is missing (fields present: {sorted(obj)})")


def read_topics(path: Path) -> dict[str, str]:
    """`qid<TAB>query` lines (MIRACL topics, the offline query TSVs) -> {qid: query}."""
    queries: dict[str, str] = {}
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        qid, tab, text = line.partition("\t")
        if not tab:
            raise InputError(f"{path}:{lineno}: expected 'qid<TAB>query', found no tab in {line!r:.80}")
        qid = qid.strip()
        if qid in queries:
            raise InputError(f"{path}:{lineno}: query id {qid!r} appears twice; query ids must be unique")
        queries[qid] = text.strip()
    return queries


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Relevance judgements -> {qid: {docid: rel}}.

    TREC format `qid iteration docid rel` (tab- or space-separated, as MIRACL and trec_eval write it) or
    BEIR's `query-id<TAB>corpus-id<TAB>score` with its header line.
    """
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in iter_lines(path):
        cols = line.split()
        if not cols:
            continue
        if lineno == 1 and cols[0].lower() in ("query-id", "qid", "query_id"):
            continue  # BEIR's header
        if len(cols) == 4:
            qid, _, docid, rel_text = cols
        elif len(cols) == 3:
            qid, docid, rel_text = cols
        else:
            raise InputError(
                f"{path}:{lineno}: expected 'qid Q0 docid rel' (TREC) or 'qid docid rel' (BEIR), got {len(cols)} "
                f"columns in {line!r:.80}"
            )
        try:
            rel = int(rel_text)
        except ValueError:
            try:
                rel = int(float(rel_text))  # some exports write 1.0
            except ValueError:
                raise InputError(f"{path}:{lineno}: relevance {rel_text!r} is not an integer") from None
        qrels.setdefault(qid, {})[docid] = rel
    return qrels


def first_existing(folder: Path, names: Sequence[str]) -> Path | None:
    """The first of `names` (each also tried with .gz) that is a file in `folder`."""
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def files_hash(paths: Sequence[Path], salt: str = "") -> str:
    """sha256 over the bytes of `paths`, in order: a corpus's content identity for caches."""
    h = hashlib.sha256(salt.encode())
    for path in paths:
        h.update(b"\0file\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
