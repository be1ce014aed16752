"""TREC run files: `qid Q0 docid rank score tag`, ranked as trec_eval ranks them."""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Mapping

from m3search.errors import InputError
from m3search.evaluation.datasets._files import iter_lines
from m3search.evaluation.metrics import rank


def write_run(path: str | Path, run: Mapping[str, Mapping[str, float]], tag: str) -> None:
    """Write atomically (temp file + os.replace), gzip-compressed when the name ends in .gz; ranks start at
    1; scores in full precision, so reading the file back ranks exactly as the run did."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    lines = (
        f"{qid} Q0 {docid} {i} {float(scores[docid])!r} {tag}\n"
        for qid, scores in run.items()
        for i, docid in enumerate(rank(scores), start=1)
    )
    data = "".join(lines).encode("utf-8")
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
