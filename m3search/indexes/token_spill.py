"""Token vectors waiting in the writer's buffer, kept in an unlinked temporary file rather than in memory.

They are most of a buffered add (1.5 KB per token at 384-d: 2,000 short passages ~240 MB) and are only
read again when the buffer is flushed into a segment, so the writer appends each batch's vectors to the
file (the page cache holds them, not the process) and hands the multi-vector component a read-only
mapping of it at the flush. The file is created unlinked (O_TMPFILE where the filesystem has it) in the
index's segments folder: a crash leaves nothing behind, and the bytes sit on the index's own disk.
"""
from __future__ import annotations

import mmap
import tempfile
from pathlib import Path

import numpy as np

from m3search.indexes.heap import drop_file_pages


class MappedRows(np.ndarray):
    """A read-only array over a shared read-only file mapping: `drop_pages()` takes its pages out of the
    process's resident set (MADV_DONTNEED; they are read again from the page cache if used again)."""

    def drop_pages(self) -> None:
        drop_file_pages(self)


class TokenSpill:
    """Appended (n, dim) float32 rows; `array()` maps them all as one read-only (rows, dim) MappedRows."""

    def __init__(self, folder: Path, dim: int):
        self.dim, self.rows = int(dim), 0
        self._file = tempfile.TemporaryFile(dir=folder, prefix=".buffer-")

    def append(self, x: np.ndarray) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) token vectors, got {x.shape}")
        if x.size:  # no tokens, or no token vectors at all: nothing to write (and a cast would refuse it)
            self._file.write(memoryview(np.ascontiguousarray(x, dtype=np.float32)).cast("B"))
        self.rows += len(x)

    def array(self) -> np.ndarray:
        if not self.rows * self.dim:
            return np.zeros((self.rows, self.dim), np.float32)
        self._file.flush()
        view = mmap.mmap(self._file.fileno(), self.rows * self.dim * 4, access=mmap.ACCESS_READ)
        rows = np.frombuffer(view, np.float32).reshape(self.rows, self.dim)  # keeps the mapping alive
        return rows.view(MappedRows)

    def close(self) -> None:
        self._file.close()  # a mapping taken by array() stays valid until it is dropped
