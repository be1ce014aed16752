"""How many records a corpus holds, counted cheaply before indexing so progress can show a total and ETA.

Lines of plain files are counted in 1 MiB binary chunks (~1 GB/s); gzip files are decompressed and counted
only up to `max_gz_bytes` of compressed data (~100-300 MB/s); folders count their text files. Blank lines
and a TSV header make the count an upper bound by a line or so, which is all an ETA needs. stdin, or a
source too large to count quickly, gives None: the bar then shows a count and a rate, without a total.
"""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Iterable

from m3search.data.corpus import TEXT_SUFFIXES

_CHUNK = 1 << 20


def count_records(sources: Iterable[str | Path], max_gz_bytes: int = 256 << 20) -> int | None:
    total = 0
    for source in sources:
        if str(source) == "-":
            return None
        path = Path(source)
        if path.is_dir():
            total += sum(1 for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
            continue
        try:
            if path.suffix == ".gz":
                if path.stat().st_size > max_gz_bytes:
                    return None
                total += _count_lines(gzip.open(path, "rb"))
            else:
                total += _count_lines(open(path, "rb"))
        except (OSError, EOFError, gzip.BadGzipFile):
            return None  # the reader reports the problem properly
    return total


def _count_lines(stream) -> int:
    n, last = 0, b"\n"
    with stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")  # a last line without a newline
