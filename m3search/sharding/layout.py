"""The on-disk layout of a sharded index: a header, N complete indexes, and each shard's insertion order.

    INDEX/sharded.json     {"format": "m3search.sharded_index", "version": 1, "n_shards": N,
                            "hash": "blake2b64", "shards": ["shard-000", ...], "encoder": {...}, "model": ...}
    INDEX/shard-000/       a complete m3search index (all three stores, its own docs.lmdb)
    INDEX/shard-000.order.npy   int64, local internal id -> global insertion number (-1: unknown)

A document lives in shard `blake2b64(id) % N`: stable across processes, machines and Python versions.
The insertion numbers are what an unsharded index would have used as internal ids; the router breaks
ties between equal scores by them, exactly as the planner breaks ties by internal id.
"""
from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Sequence

import numpy as np

from m3search.errors import IndexFormatError
from m3search.indexes.fsutil import read_versioned_json

FORMAT = "m3search.sharded_index"
VERSION = 1
HEADER = "sharded.json"
HASH = "blake2b64"
UNKNOWN = -1


def is_sharded(path: str | Path) -> bool:
    return (Path(path) / HEADER).is_file()


def shard_of(doc_id: str, n_shards: int) -> int:
    """The shard that owns `doc_id`: the first 8 bytes of its BLAKE2b digest, little-endian, mod n."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n_shards


def shards_of(ids: Sequence[str], n_shards: int) -> np.ndarray:
    return np.fromiter((shard_of(i, n_shards) for i in ids), dtype=np.int64, count=len(ids))


def shard_name(i: int) -> str:
    return f"shard-{i:03d}"


def read_header(path: Path) -> dict:
    file = path / HEADER
    header = read_versioned_json(file, FORMAT, VERSION, "restore it from a backup")
    if header.get("hash") != HASH:
        raise IndexFormatError(f"{file}: unknown shard hash {header.get('hash')!r} (this m3search knows {HASH!r})")
    if not isinstance(header.get("n_shards"), int) or len(header.get("shards", [])) != header["n_shards"]:
        raise IndexFormatError(f"{file}: n_shards and the shard list disagree; the index is damaged")
    return header


def order_file(path: Path, shard: str) -> Path:
    return path / f"{shard}.order.npy"


def read_order(path: Path, shard: str) -> np.ndarray:
    file = order_file(path, shard)
    if not file.is_file():
        return np.zeros(0, dtype=np.int64)
    try:
        arr = np.load(file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise IndexFormatError(f"{file} is unreadable ({e}); the sharded index is damaged") from e
    if arr.dtype != np.int64 or arr.ndim != 1:
        raise IndexFormatError(f"{file}: expected a 1-d int64 array, got {arr.dtype} {arr.shape}")
    return arr


def write_order(path: Path, shard: str, order: np.ndarray) -> None:
    file = order_file(path, shard)
    tmp = file.with_name(f".{file.name}.{secrets.token_hex(4)}.npy")
    with open(tmp, "wb") as f:
        np.save(f, np.asarray(order, dtype=np.int64), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, file)


def global_keys(order: np.ndarray, shard: int, local_ids: np.ndarray) -> np.ndarray:
    """Insertion numbers of `local_ids`; ids without one (a write interrupted before its order was saved)
    sort after every known one, by shard then local id."""
    local_ids = np.asarray(local_ids, dtype=np.int64)
    out = np.full(local_ids.shape, UNKNOWN, dtype=np.int64)
    inside = (local_ids >= 0) & (local_ids < len(order))
    out[inside] = np.asarray(order)[local_ids[inside]]
    missing = (out < 0) & (local_ids >= 0)
    out[missing] = (1 << 62) + (shard << 40) + local_ids[missing]
    return out
