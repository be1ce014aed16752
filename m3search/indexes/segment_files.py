"""The files of one segment component: .npy arrays and opaque blobs described by a JSON header.

Every file is fsync'd when written and described in the header by its size and a checksum, so opening a
segment detects truncation and most corruption with an `IndexFormatError` instead of serving garbage.
Checksums are CRC32: over the whole file below `FULL_CRC_BYTES`; above it over a fixed set of sampled
windows (head, tail and evenly spaced), which keeps opening a multi-GB segment cheap while the size check
still catches every truncation.
"""
from __future__ import annotations

import json
import logging
import os
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np

from m3search.errors import IndexFormatError
from m3search.indexes.fsutil import fsync_dir, fsync_file

logger = logging.getLogger(__name__)

FULL_CRC_BYTES = 64 << 20
_WINDOW = 64 << 10
_N_WINDOWS = 32


def _crc(path: Path, size: int) -> int:
    with open(path, "rb") as f:
        if size <= FULL_CRC_BYTES:
            crc = 0
            while chunk := f.read(1 << 20):
                crc = zlib.crc32(chunk, crc)
            return crc
        crc = 0
        for start in np.linspace(0, size - _WINDOW, _N_WINDOWS).astype(np.int64):
            f.seek(int(start))
            crc = zlib.crc32(f.read(_WINDOW), crc)
        return crc


def describe(path: Path) -> dict:
    """Size and checksum of a written file, for the header."""
    size = path.stat().st_size
    return {"bytes": size, "crc32": _crc(path, size)}


def write_array(folder: Path, name: str, arr: np.ndarray) -> dict:
    """Save `arr` as folder/name (.npy, no pickle), fsync it, return its header entry."""
    path = folder / name
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    return {**describe(path), "shape": list(arr.shape), "dtype": str(arr.dtype)}


def write_array_chunks(folder: Path, name: str, shape: tuple[int, int], dtype, chunks: Iterable[np.ndarray]) -> dict:
    """Stream row chunks into folder/name (.npy, memory-mapped: the whole array is never in memory), fsync
    it and return the same header entry as `write_array`."""
    if shape[0] == 0:
        for chunk in chunks:
            assert len(chunk) == 0
        return write_array(folder, name, np.zeros(shape, dtype))
    path = folder / name
    target = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    filled = 0
    for chunk in chunks:
        target[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    assert filled == shape[0], (filled, shape[0])
    target.flush()
    del target
    fsync_file(path)
    return {**describe(path), "shape": list(shape), "dtype": str(np.dtype(dtype))}


def read_header(path: Path, fmt: str, version: int) -> dict:
    """Load a component header, refusing other formats and versions newer than `version`."""
    try:
        header = json.loads(path.read_text())
    except FileNotFoundError:
        raise IndexFormatError(f"{path} is missing: the segment folder is incomplete") from None
    except (OSError, ValueError) as e:
        raise IndexFormatError(f"{path} is unreadable or not JSON ({e}): the segment is corrupt") from e
    if not isinstance(header, dict) or header.get("format") != fmt:
        got = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise IndexFormatError(f"{path}: format {got!r} is not {fmt!r}")
    v = header.get("version")
    if not isinstance(v, int) or v < 1 or v > version:
        raise IndexFormatError(
            f"{path}: version {v!r} is not one this m3search reads (1..{version}); upgrade m3search"
        )
    return header


def check_file(folder: Path, name: str, entry: dict) -> Path:
    """Raise IndexFormatError unless folder/name has the size and checksum its header entry records."""
    path = folder / name
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise IndexFormatError(f"{path} is missing: the segment is incomplete") from None
    if size != entry["bytes"]:
        raise IndexFormatError(
            f"{path} has {size} bytes but its header records {entry['bytes']}: the file is truncated or corrupt"
        )
    if _crc(path, size) != entry["crc32"]:
        raise IndexFormatError(f"{path} fails its checksum: the file is corrupt")
    return path


def open_array(folder: Path, name: str, entry: dict, mmap: bool = True) -> np.ndarray:
    """Load an array written by `write_array` (memory-mapped by default), checked against its entry."""
    path = check_file(folder, name, entry)
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise IndexFormatError(f"{path} is not a readable .npy array ({e}): the file is corrupt") from e
    if list(arr.shape) != entry["shape"] or str(arr.dtype) != entry["dtype"]:
        raise IndexFormatError(
            f"{path} holds {arr.dtype}{list(arr.shape)} but its header records {entry['dtype']}{entry['shape']}"
        )
    return arr


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
