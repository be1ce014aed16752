"""File locks: one writer per index, and pins that keep a segment's files while a reader uses them.

- `WriterLock`: an exclusive flock on `<index>/writer.lock`, taken without waiting; a second writer (in
  this or another process) gets IndexLockedError naming the path.
- Segment pins: every segment folder holds an empty `.lock` file. A reader that opens a segment keeps a
  shared flock on it for as long as it holds the segment's readers. The writer deletes a segment folder
  that no commit refers to any more only if it gets an exclusive flock on that file at once; otherwise a
  reader still uses it and the deletion waits for a later commit (or the next writer). So segments
  merged away stay on disk until no snapshot in any process holds them; nothing relies on Linux keeping
  unlinked files readable.

flock locks belong to the open file description: two opens in one process conflict like two processes,
which is what makes a second writer in the same process fail too. They need a POSIX system and a local
file system (flock over NFS is not reliable).
"""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from m3search.errors import IndexLockedError

WRITER_LOCK_NAME = "writer.lock"
SEGMENT_LOCK_NAME = ".lock"


class WriterLock:
    """Held from acquisition until `release()`; the pid written into the file only improves the message."""

    def __init__(self, index_dir: Path):
        self.path = index_dir / WRITER_LOCK_NAME
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise IndexLockedError(
                    f"{index_dir} is being written by another writer{holder} (lock file {self.path}); close "
                    "that writer first, or open the index read-only (writable=False) to search it"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (process {pid})" if pid.isdigit() else ""


class SegmentPin:
    """A shared flock on a segment's `.lock`; `ok` is False when the folder vanished or is being deleted.

    The writer renames a folder away only while holding the exclusive lock, so after taking the shared
    lock the pin checks that the path still names the same file: if not, the writer deleted (or is
    deleting) the segment after the caller read the segment list, and the caller must re-read it.
    """

    def __init__(self, segment_dir: Path):
        self.fd: int | None = None
        path = segment_dir / SEGMENT_LOCK_NAME
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a writer renames the folder away
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return
        self.fd = fd

    @property
    def ok(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def create_segment_lock(segment_dir: Path) -> None:
    with open(segment_dir / SEGMENT_LOCK_NAME, "wb") as f:
        os.fsync(f.fileno())


def try_lock_for_deletion(segment_dir: Path) -> int | None:
    """An fd holding the exclusive lock when no reader pins the segment (or it has no lock file: an
    incomplete folder no reader ever opened, returned as -1); None when a reader still pins it."""
    try:
        fd = os.open(segment_dir / SEGMENT_LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd
