"""Raw little-endian arrays described by a JSON header: write with fsync, open memory-mapped, check.

A segment folder holds one `<name>.bin` per array and a header naming each array's dtype, length,
size in bytes and CRC-32s. Opening checks every size against the header (a truncated or extended file
is refused) and the CRC-32s: of the whole file for small arrays, of the first and last MiB for large
ones unless a full check is asked for (`verify="full"`), so opening stays cheap for big segments.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from m3search.errors import IndexFormatError
from m3search.indexes.fsutil import write_synced

FULL_CRC_MAX_BYTES = 16 << 20  # arrays up to this size get a whole-file CRC at every open
EDGE_BYTES = 1 << 20  # larger ones: CRC of this many bytes at each end


def _edges(raw: np.ndarray, edge: int) -> tuple[np.ndarray, np.ndarray]:
    return raw[:edge], raw[max(0, len(raw) - edge) :]


def array_record(arr: np.ndarray) -> dict:
    """The header entry of one array: dtype, length, bytes and checksums."""
    raw = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    head, tail = _edges(raw, EDGE_BYTES)
    return {
        "dtype": np.dtype(arr.dtype).newbyteorder("<").str,
        "length": int(arr.size),
        "nbytes": int(raw.size),
        "crc32": zlib.crc32(raw),
        "crc32_head": zlib.crc32(head),
        "crc32_tail": zlib.crc32(tail),
        "edge_bytes": EDGE_BYTES,
    }


def write_array(folder: Path, name: str, arr: np.ndarray) -> dict:
    """Write `arr` to folder/name.bin, fsync it, return its header entry."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    write_synced(folder / f"{name}.bin", memoryview(arr.reshape(-1).view(np.uint8)))
    return array_record(arr)


def read_array(folder: Path, name: str, record: dict, verify: str) -> np.ndarray:
    """Memory-map folder/name.bin as described by `record`; IndexFormatError if it doesn't match."""
    path = folder / f"{name}.bin"
    try:
        dtype = np.dtype(record["dtype"])
        length, nbytes = int(record["length"]), int(record["nbytes"])
    except (KeyError, TypeError, ValueError) as e:
        raise IndexFormatError(f"{folder}: the header entry of array {name!r} is malformed ({e})") from e
    if not path.is_file():
        raise IndexFormatError(f"{path} is missing: the segment is incomplete; rebuild it or restore the file")
    size = path.stat().st_size
    if size != nbytes or nbytes != length * dtype.itemsize:
        raise IndexFormatError(
            f"{path} has {size} bytes but its header says {nbytes} ({length} x {dtype}): the file is "
            "truncated or corrupt; rebuild the segment or restore it from a backup"
        )
    if nbytes == 0:
        return np.zeros(0, dtype=dtype)
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    if verify == "full" or nbytes <= FULL_CRC_MAX_BYTES:
        checks = [("crc32", raw)]
    else:
        head, tail = _edges(raw, int(record.get("edge_bytes", EDGE_BYTES)))
        checks = [("crc32_head", head), ("crc32_tail", tail)]
    for key, part in checks:
        if zlib.crc32(part) != record.get(key):
            raise IndexFormatError(
                f"{path}: checksum mismatch ({key}), the file is corrupt; rebuild the segment or restore it"
            )
    return raw.view(dtype).view(np.ndarray)  # plain ndarray: numba types it on its fast path
