"""The one reader of text files line by line: plain or gzip (recognised by content, not by name), UTF-8,
stdin included, with errors that name `file:line` and the fix. The corpus and query readers, the benchmark
loaders, TREC runs and the trainer's JSON lines all read through it.

>>> import gzip, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "q.tsv"           # no .gz suffix, gzip content
>>> _ = path.write_bytes(gzip.compress("\\ufeff1\\tfirst\\r\\n2\\tsecond\\n".encode()))
>>> list(iter_lines(path))
[(1, '1\\tfirst'), (2, '2\\tsecond')]
"""
from __future__ import annotations

import gzip
import io
import sys
import zlib
from pathlib import Path
from typing import IO, BinaryIO, Iterable, Iterator

from m3search.errors import InputError

GZIP_MAGIC = b"\x1f\x8b"


def open_binary(path: str | Path) -> BinaryIO:
    """A file opened for reading bytes, gunzipped when its content is gzip."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise InputError(f"{path}: can't open it ({e.strerror})") from None
    if f.read(2) == GZIP_MAGIC:
        f.seek(0)
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    f.seek(0)
    return f


def binary_lines(source: str | Path, stdin: IO | None = None) -> Iterator[bytes]:
    """The raw lines of a file (or '-' for stdin, binary or text), with read errors as InputError."""
    if str(source) == "-":
        yield from _stream_lines(stdin if stdin is not None else sys.stdin)
        return
    try:
        with open_binary(source) as f:
            yield from f
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:  # truncated or damaged gzip, I/O error
        raise InputError(f"{source}: can't read it ({e}): the file is truncated or damaged; get it again") from None


def decode_line(raw: bytes, where: str, strip_bom: bool = False) -> str:
    """A raw line as text, without its line break; invalid UTF-8 is an InputError naming `where`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{where}: not valid UTF-8 (byte {e.start}): convert the file to UTF-8, e.g. with iconv") from None
    if strip_bom:
        text = text.lstrip("\ufeff")
    return text.rstrip("\r\n")


def iter_lines(source: str | Path, stdin: IO | None = None) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line break) of a file or '-'; a leading BOM is dropped."""
    name = "<stdin>" if str(source) == "-" else str(source)
    for lineno, raw in enumerate(binary_lines(source, stdin), start=1):
        yield lineno, decode_line(raw, f"{name}:{lineno}", strip_bom=lineno == 1)


def _stream_lines(stream: IO) -> Iterable[bytes]:
    """Lines of a binary or text stream as bytes (stdin may be either, e.g. under click's CliRunner)."""
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        yield from buffer
    elif isinstance(stream, io.TextIOBase) or (hasattr(stream, "read") and isinstance(stream.read(0), str)):
        for line in stream:
            yield line.encode("utf-8", "surrogateescape")
    else:
        yield from stream
