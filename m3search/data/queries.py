"""Query files: TSV topics (`qid<TAB>query`, MIRACL's topics.*.tsv), JSON lines (BEIR's `{_id, text}`,
MLDR's `{query_id, query}`), or plain lines (one query per line, numbered from 1)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import IO

from m3search.data.lines import iter_lines
from m3search.errors import InputError

QID_KEYS = ("qid", "query_id", "_id", "id")
QUERY_KEYS = ("query", "text")


@dataclasses.dataclass(frozen=True)
class Query:
    qid: str
    text: str


def read_queries(source: str | Path, stdin: IO | None = None) -> list[Query]:
    """All queries of a file (or '-' for stdin), in file order; qids must be unique."""
    source = str(source)
    if source != "-" and not Path(source).expanduser().is_file():
        raise InputError(f"queries file {source!r} does not exist: give a TSV (qid<TAB>query) or JSON-lines file")
    name = "<stdin>" if source == "-" else str(Path(source).expanduser())
    lines = iter_lines("-" if source == "-" else Path(source).expanduser(), stdin)
    out: list[Query] = []
    seen: dict[str, str] = {}
    for lineno, line in lines:
        where = f"{name}:{lineno}"
        if not line.strip():
            continue
        query = _parse_line(line, where, default_qid=str(lineno))
        if not query.text.strip():  # the API refuses it too: an empty query has nothing to match
            raise InputError(f"{where}: query {query.qid!r} is empty: give it some text or remove the line")
        if query.qid in seen:
            raise InputError(f"{where}: duplicate query id {query.qid!r} (first at {seen[query.qid]}): qids must be unique")
        seen[query.qid] = where
        out.append(query)
    if not out:
        raise InputError(f"{name} holds no queries")
    return out


def _parse_line(line: str, where: str, default_qid: str) -> Query:
    if line.lstrip().startswith("{"):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not valid JSON ({e.msg}: column {e.colno}): fix or remove this line") from None
        except RecursionError:
            raise InputError(f"{where}: the JSON is nested too deeply to be a query: fix or remove this line") from None
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object like {{\"_id\": ..., \"text\": ...}}")
        qid = next((obj[k] for k in QID_KEYS if k in obj), None)
        text = next((obj[k] for k in QUERY_KEYS if k in obj), None)
        if qid is None or not isinstance(text, str):
            raise InputError(
                f"{where}: a JSON query needs an id ({', '.join(QID_KEYS)}) and a text ({', '.join(QUERY_KEYS)})"
            )
        return Query(str(qid), text)
    qid, tab, text = line.partition("\t")
    if not tab:  # a plain line: the query itself, numbered by its line
        return Query(default_qid, line.strip())
    if not qid.strip():
        raise InputError(f"{where}: the query id (first field) is empty")
    return Query(qid.strip(), text.strip())
