"""TREC run files: `qid Q0 docid rank score tag`, ranked as trec_eval ranks them. The one writer of
runs: `m3search query --trec` and the benchmark runner both format their lines here.

>>> list(run_lines("q1", {"b": 0.5, "a": 0.5, "c": 0.9}, "m3search-all"))
['q1 Q0 c 1 0.9 m3search-all', 'q1 Q0 b 2 0.5 m3search-all', 'q1 Q0 a 3 0.5 m3search-all']
"""
from __future__ import annotations

import gzip
import os
import re
from pathlib import Path
from typing import Iterator, Mapping

from m3search.data.lines import iter_lines
from m3search.errors import InputError
from m3search.evaluation.metrics import rank

_SPACE = re.compile(r"\s")


def run_lines(qid: str, scores: Mapping[str, float], tag: str) -> Iterator[str]:
    """The lines of one query's run, without line breaks: ranks start at 1 in trec_eval's order (score
    descending, ties by docid descending), scores in full precision, so reading the run back ranks exactly
    as it was written. Ids with whitespace can't be held by the format: an InputError names them."""
    for what, value in (("query id", qid), ("run name", tag)):
        if _SPACE.search(value) or not value:
            raise InputError(f"{what} {value!r} is empty or contains whitespace, which a TREC run can't hold: rename it")
    for i, docid in enumerate(rank(scores), start=1):
        if _SPACE.search(docid):
            raise InputError(
                f"document id {docid!r} contains whitespace, which a TREC run file can't hold: use JSON output, or "
                "re-index with ids without spaces"
            )
        yield f"{qid} Q0 {docid} {i} {float(scores[docid])!r} {tag}"


def write_run(path: str | Path, run: Mapping[str, Mapping[str, float]], tag: str) -> None:
    """Write atomically (temp file + os.replace), gzip-compressed when the name ends in .gz."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    data = "".join(line + "\n" for qid, scores in run.items() for line in run_lines(qid, scores, tag)).encode("utf-8")
    # mtime=0: the same run gives the same bytes
    tmp.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    os.replace(tmp, path)


def read_run(path: str | Path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for lineno, line in iter_lines(Path(path)):
        cols = line.split()
        if not cols:
            continue
        if len(cols) != 6:
            raise InputError(f"{path}:{lineno}: expected 'qid Q0 docid rank score tag', got {len(cols)} columns")
        try:
            run.setdefault(cols[0], {})[cols[2]] = float(cols[4])
        except ValueError:
            raise InputError(f"{path}:{lineno}: score {cols[4]!r} is not a number") from None
    return run
