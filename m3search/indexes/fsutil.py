"""Small file-system helpers for crash-safe writes.

Durability order matters more than speed here: a file's bytes are fsync'd before its name is published
(os.replace), and a directory is fsync'd after entries are added to or removed from it, so that what a
commit refers to is on disk before the commit record is.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from m3search.errors import IndexFormatError


def fsync_file(path: Path) -> None:
    """Persist a file's bytes (for files written by someone else, e.g. FAISS or a memory map)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Persist the directory's entries (names created, renamed or removed in it)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))  # the flag is POSIX-only
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dirs(root: Path) -> None:
    """fsync every directory under `root`, `root` included, so the names created in them persist.
    (Files are fsync'd by whoever wrote them: the ComponentType contract says components do.)"""
    for dirpath, _dirnames, _filenames in os.walk(root):
        fsync_dir(Path(dirpath))


def write_synced(path: Path, data: bytes | memoryview) -> None:
    """Write `data` to `path` and fsync it before returning (publishing the name is the caller's)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_json(path: Path, obj: dict) -> None:
    """Write a header as indented, key-sorted JSON and fsync it (a segment's header is its last file)."""
    write_synced(path, json.dumps(obj, indent=1, sort_keys=True).encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    write_synced(tmp, data)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write a small JSON record (a header, a manifest) so that a crash leaves the old file or the new one."""
    atomic_write_bytes(path, json.dumps(obj, indent=1).encode("utf-8"))


def json_digest(body: dict) -> str:
    """sha256 of a JSON object's canonical form (sorted keys), the checksum of small sealed JSON files."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def sealed_json(body: dict) -> dict:
    """`body` plus its checksum under "sha256", for `read_versioned_json(..., sealed_from=...)` to verify."""
    return {**body, "sha256": json_digest(body)}


def read_versioned_json(file: Path, fmt: str, version: int, fix: str, sealed_from: int | None = None) -> dict:
    """A versioned JSON header: an object whose `format` is `fmt` and whose `version` this m3search reads
    (1..`version`). From version `sealed_from` on, the object must carry the "sha256" `sealed_json` wrote,
    which is checked and removed. Anything else, unreadable or damaged included, is an IndexFormatError
    naming the file, with `fix` as the way out."""
    try:
        header = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise IndexFormatError(f"{file} is unreadable or damaged ({e}); {fix}") from e
    if not isinstance(header, dict) or header.get("format") != fmt:
        got = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise IndexFormatError(f"{file}: format {got!r} is not {fmt!r}; {fix}")
    v = header.get("version")
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise IndexFormatError(f"{file}: version {v!r} is not a format version; {fix}")
    if v > version:
        raise IndexFormatError(f"{file}: version {v} is newer than this m3search reads ({version}); upgrade m3search")
    if sealed_from is not None and v >= sealed_from:
        stored = header.pop("sha256", None)
        if stored != json_digest(header):
            raise IndexFormatError(f"{file}: fails its checksum (the file was changed or damaged); {fix}")
    return header


def file_sizes(root: Path, skip: tuple[str, ...] = ()) -> dict[str, int]:
    """{relative posix path: size in bytes} of every regular file under `root` (names in `skip` left out)."""
    sizes = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if name in skip:
                continue
            p = Path(dirpath) / name
            sizes[p.relative_to(root).as_posix()] = p.stat().st_size
    return dict(sorted(sizes.items()))


def check_file_sizes(root: Path, expected: dict[str, int], what: str) -> None:
    """Raise IndexFormatError naming the first file under `root` that is missing or has another size than
    recorded at commit: the cheap check that catches truncated or half-copied indexes before any reader
    maps garbage."""
    for rel, size in expected.items():
        p = root / rel
        try:
            actual = p.stat().st_size
        except FileNotFoundError:
            raise IndexFormatError(
                f"{what}: file {p} is missing; the index is damaged (restore it from a copy or rebuild it)"
            ) from None
        if actual != size:
            raise IndexFormatError(
                f"{what}: file {p} has {actual} bytes but {size} were committed (truncated or overwritten); "
                "restore the index from a copy or rebuild it"
            )


def tree_bytes(root: Path) -> int:
    """Total size of the regular files under `root` (0 if it does not exist)."""
    if not root.exists():
        return 0
    return sum(file_sizes(root).values())
