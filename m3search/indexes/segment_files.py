"""The files of a segment component: checked arrays and opaque blobs described by a JSON header.

One array format for every component (`m3search.array`, version 1): a file holds the array's raw
little-endian bytes from offset 0 (so it memory-maps as it is), followed by a trailer of one CRC-32 per
`BLOCK_BYTES` block of those bytes. The header entry records dtype, shape, sizes, the block size and the
CRC-32 of the trailer. Opening reads and checks the trailer (4 bytes per 64 KiB); each data block is
checked the first time a reader touches it (`CheckedArray`), so every byte is verified before it is
served, a multi-GB segment still opens at once, and `verify_all()` (used by `m3search check`) reads it all.

Opaque blobs (FAISS files, read whole when opened) get a size and a whole-file CRC-32 (`describe` /
`check_file`).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np

from m3search.errors import IndexFormatError
from m3search.indexes.fsutil import fsync_dir
from m3search.indexes.heap import drop_file_pages

logger = logging.getLogger(__name__)

ARRAY_FORMAT = "m3search.array"
ARRAY_VERSION = 1
BLOCK_BYTES = 64 << 10
_READ_CHUNK = 1 << 20
_DAMAGED = "the index is damaged: restore it from a copy or rebuild it (`m3search check INDEX` lists every damaged file)"


# -- opaque files ----------------------------------------------------------------------------------

def _file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def describe(path: Path) -> dict:
    """Size and whole-file checksum of a written file, for the header."""
    return {"bytes": path.stat().st_size, "crc32": _file_crc(path)}


def check_file(folder: Path, name: str, entry: dict) -> Path:
    """Raise IndexFormatError unless folder/name has the size and checksum its header entry records."""
    path = folder / name
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise IndexFormatError(f"{path} is missing: the segment is incomplete; {_DAMAGED}") from None
    if size != entry.get("bytes"):
        raise IndexFormatError(
            f"{path} has {size} bytes but its header records {entry.get('bytes')}: the file is truncated or "
            f"overwritten; {_DAMAGED}"
        )
    if _file_crc(path) != entry.get("crc32"):
        raise IndexFormatError(f"{path} fails its checksum: the file is corrupt; {_DAMAGED}")
    return path


# -- checked arrays --------------------------------------------------------------------------------

class _BlockWriter:
    """Streams bytes into a file while computing the CRC-32 of every BLOCK_BYTES block."""

    def __init__(self, f):
        self.f = f
        self.crcs: list[int] = []
        self._crc = 0
        self._fill = 0
        self.nbytes = 0

    def write(self, data: memoryview) -> None:
        self.f.write(data)
        self.nbytes += len(data)
        pos = 0
        while pos < len(data):
            take = min(BLOCK_BYTES - self._fill, len(data) - pos)
            self._crc = zlib.crc32(data[pos : pos + take], self._crc)
            self._fill += take
            pos += take
            if self._fill == BLOCK_BYTES:
                self.crcs.append(self._crc)
                self._crc, self._fill = 0, 0

    def finish(self) -> bytes:
        if self._fill:
            self.crcs.append(self._crc)
        trailer = np.asarray(self.crcs, dtype="<u4").tobytes()
        self.f.write(trailer)
        return trailer


def _le(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    return dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype


def write_array(folder: Path, name: str, arr: np.ndarray) -> dict:
    """Write `arr` to folder/name in the checked array format, fsync it, return its header entry."""
    arr = np.ascontiguousarray(arr)
    arr = arr.astype(_le(arr.dtype), copy=False)
    return write_array_chunks(folder, name, arr.shape, arr.dtype, [arr] if arr.size else [])


def write_array_chunks(folder: Path, name: str, shape: tuple[int, ...], dtype, chunks: Iterable[np.ndarray]) -> dict:
    """Stream chunks along the first axis into folder/name (the whole array is never in memory), fsync it
    and return the header entry."""
    dtype = _le(dtype)
    shape = tuple(int(s) for s in shape)
    expect = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    path = folder / name
    with open(path, "wb") as f:
        w = _BlockWriter(f)
        for chunk in chunks:
            chunk = np.ascontiguousarray(chunk, dtype=dtype)
            w.write(memoryview(chunk.reshape(-1).view(np.uint8)))
        if w.nbytes != expect:
            raise ValueError(f"{path}: {w.nbytes} bytes written for a {dtype}{list(shape)} array of {expect}")
        trailer = w.finish()
        f.flush()
        os.fsync(f.fileno())
    return {
        "format": ARRAY_FORMAT, "version": ARRAY_VERSION, "dtype": dtype.str, "shape": list(shape),
        "nbytes": expect, "bytes": expect + len(trailer), "block_bytes": BLOCK_BYTES,
        "crc32": zlib.crc32(trailer),
    }


class CheckedArray:
    """A memory-mapped array whose blocks are checked against their CRC-32s the first time they are read.

    Indexing (`a[rows]`, `a[lo:hi]`) verifies the rows it reads; code that hands `.raw` to a compiled
    kernel verifies first (`verify_rows`, `verify_spans`, `verify_all`). A damaged block raises
    IndexFormatError naming the file and the byte range, every time it is read.
    """

    def __init__(self, path: Path, array: np.ndarray, crcs: np.ndarray, block_bytes: int):
        self.path = path
        self.raw = array
        self._bytes = array.reshape(-1).view(np.uint8) if array.size else np.zeros(0, np.uint8)
        self._crcs = crcs
        self._block = block_bytes
        self._ok = np.zeros(len(crcs), dtype=bool)
        self._row_bytes = (array.dtype.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
                           if array.ndim else array.dtype.itemsize)
        self._lock = threading.Lock()

    # array-like surface used by the readers
    shape = property(lambda self: self.raw.shape)
    dtype = property(lambda self: self.raw.dtype)
    ndim = property(lambda self: self.raw.ndim)
    size = property(lambda self: self.raw.size)
    nbytes = property(lambda self: self.raw.nbytes)

    def __len__(self) -> int:
        return len(self.raw)

    def drop_pages(self) -> None:
        """Take this array's mapped pages out of the resident set (heap.drop_file_pages); checks are kept."""
        drop_file_pages(self.raw)

    def __getitem__(self, key):
        # a tuple indexes several axes (codes[:, 0]): the first one says which rows (blocks) are read
        self._verify_key(key[0] if isinstance(key, tuple) and key else key)
        return self.raw[key]

    def _verify_key(self, key) -> None:
        if isinstance(key, slice):
            lo, hi, step = key.indices(len(self.raw))
            if step == 1:
                self.verify_spans(np.asarray([lo]), np.asarray([max(lo, hi)]))
            else:
                self.verify_all()
        elif isinstance(key, (int, np.integer)):
            i = int(key) + (len(self.raw) if key < 0 else 0)
            self.verify_spans(np.asarray([i]), np.asarray([i + 1]))
        else:
            idx = np.asarray(key)
            if idx.dtype == bool or idx.dtype == object:  # masks, Ellipsis, None: check every block
                self.verify_all()
            else:
                self.verify_rows(idx)

    def __array__(self, dtype=None, copy=None):
        self.verify_all()
        return self.raw if dtype is None else self.raw.astype(dtype)

    def verify_all(self) -> "CheckedArray":
        if not self._ok.all():
            self._verify_blocks(np.flatnonzero(~self._ok))
        return self

    def verify_rows(self, rows) -> None:
        """Verify the blocks holding these rows (first-axis indices)."""
        if self._ok.all():  # every block checked already (the common case once warm)
            return
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size:
            rows = np.where(rows < 0, rows + len(self.raw), rows)
            self.verify_spans(rows, rows + 1)

    def verify_spans(self, starts, ends) -> None:
        """Verify the blocks holding rows [starts[i], ends[i]) for every i."""
        if self._ok.all() or not self._row_bytes:
            return
        starts = np.asarray(starts, np.int64).reshape(-1)
        ends = np.asarray(ends, np.int64).reshape(-1)
        keep = ends > starts
        if not keep.any():
            return
        b0 = starts[keep] * self._row_bytes // self._block
        b1 = ((ends[keep] * self._row_bytes - 1) // self._block) + 1
        if len(b0) == 1:
            blocks = np.arange(b0[0], b1[0])
        else:
            lengths = b1 - b0
            blocks = np.repeat(b0 - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        blocks = np.unique(np.clip(blocks, 0, len(self._ok) - 1))
        todo = blocks[~self._ok[blocks]]
        if len(todo):
            self._verify_blocks(todo)

    def _verify_blocks(self, blocks: np.ndarray) -> None:
        b = self._block
        for i in blocks.tolist():
            part = self._bytes[i * b : (i + 1) * b]
            try:
                crc = zlib.crc32(part)
            except OSError as e:  # an I/O error under the memory map
                raise IndexFormatError(f"{self.path}: can't read bytes {i * b}..{i * b + len(part)} ({e}); {_DAMAGED}") from e
            if crc != int(self._crcs[i]):
                raise IndexFormatError(
                    f"{self.path}: bytes {i * b}..{i * b + len(part)} fail their checksum: the file is corrupt; {_DAMAGED}"
                )
        with self._lock:
            self._ok[blocks] = True


def open_checked(folder: Path, name: str, entry: dict) -> CheckedArray:
    """Open an array written by `write_array` memory-mapped; its trailer is checked now, its data blocks
    when first read."""
    path = folder / name
    try:
        if entry.get("format") != ARRAY_FORMAT:
            raise IndexFormatError(
                f"{path}: array format {entry.get('format')!r} is not {ARRAY_FORMAT!r} (an index written by an "
                "older m3search): rebuild the index with this version"
            )
        version = entry.get("version")
        if not isinstance(version, int) or not 1 <= version <= ARRAY_VERSION:
            raise IndexFormatError(f"{path}: array format version {version!r} is not one this m3search reads "
                                   f"(1..{ARRAY_VERSION}); upgrade m3search")
        dtype = np.dtype(entry["dtype"])
        shape = tuple(int(s) for s in entry["shape"])
        nbytes, size, block = int(entry["nbytes"]), int(entry["bytes"]), int(entry["block_bytes"])
    except (KeyError, TypeError, ValueError) as e:
        raise IndexFormatError(f"{path}: its header entry is malformed ({e!r}); {_DAMAGED}") from e
    n_blocks = -(-nbytes // block) if block > 0 else -1
    if block <= 0 or nbytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize or size != nbytes + 4 * n_blocks:
        raise IndexFormatError(f"{path}: its header entry is inconsistent ({entry}); {_DAMAGED}")
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        raise IndexFormatError(f"{path} is missing: the segment is incomplete; {_DAMAGED}") from None
    if actual != size:
        raise IndexFormatError(
            f"{path} has {actual} bytes but its header records {size}: the file is truncated or overwritten; {_DAMAGED}"
        )
    with open(path, "rb") as f:
        f.seek(nbytes)
        trailer = f.read()
    if zlib.crc32(trailer) != entry.get("crc32"):
        raise IndexFormatError(f"{path}: its block checksums are corrupt; {_DAMAGED}")
    crcs = np.frombuffer(trailer, dtype="<u4")
    if nbytes == 0:
        array = np.zeros(shape, dtype)
    else:
        array = np.memmap(path, dtype=dtype, mode="r", shape=shape).view(np.ndarray)  # plain ndarray for numba
    return CheckedArray(path, array, crcs, block)


def open_array(folder: Path, name: str, entry: dict) -> np.ndarray:
    """Open a small array and verify it whole now (offsets, codebooks): a plain memory-mapped ndarray."""
    return open_checked(folder, name, entry).verify_all().raw


# -- headers and publishing ------------------------------------------------------------------------

def read_header(path: Path, fmt: str, version: int, min_version: int = 1) -> dict:
    """Load a component header, refusing other formats, versions newer than `version` and versions older
    than `min_version` (formats this m3search no longer reads)."""
    try:
        header = json.loads(path.read_text())
    except FileNotFoundError:
        raise IndexFormatError(f"{path} is missing: the segment folder is incomplete; {_DAMAGED}") from None
    except (OSError, ValueError) as e:
        raise IndexFormatError(f"{path} is unreadable or not JSON ({e}): the segment is corrupt; {_DAMAGED}") from e
    if not isinstance(header, dict) or header.get("format") != fmt:
        got = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise IndexFormatError(f"{path}: format {got!r} is not {fmt!r}")
    v = header.get("version")
    if isinstance(v, int) and 1 <= v < min_version:
        raise IndexFormatError(
            f"{path}: version {v} was written by an older m3search whose array files carry no full checksums; "
            f"this m3search reads version {min_version}..{version}: rebuild the index"
        )
    if not isinstance(v, int) or v < 1 or v > version:
        raise IndexFormatError(
            f"{path}: version {v!r} is not one this m3search reads ({min_version}..{version}); upgrade m3search"
        )
    return header


def publish_dir(tmp: Path, final: Path) -> bool:
    """Atomically rename the complete folder `tmp` to `final`. False if `final` already exists (another
    writer published first); the caller then uses theirs and removes its own `tmp`."""
    fsync_dir(tmp)
    try:
        os.rename(tmp, final)
    except OSError:
        if final.exists():
            return False
        raise
    fsync_dir(final.parent)
    return True
