"""Opened segments, shared by the snapshots of one `Index` object.

Segments are immutable, so a segment opened for one snapshot serves every later snapshot that still
lists it: after a commit only the new segments are opened. A `SegmentHandle` pins its folder (see
`locking.py`) and checks, before any component maps a file, that every file recorded at commit is
there with its committed size; component errors are re-raised naming the segment.
"""
from __future__ import annotations

import contextlib
import json
import logging
import threading
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from m3search.errors import IndexFormatError
from m3search.indexes.base import ComponentType, SegmentReader
from m3search.indexes.fsutil import check_file_sizes, write_json
from m3search.indexes.segment_files import open_array, write_array
from m3search.indexes.locking import SegmentPin
from m3search.indexes.state import SegmentInfo

logger = logging.getLogger(__name__)

IDS_FILE = "ids.arr"  # a merged segment's internal ids: a checked array described by IDS_HEADER
IDS_HEADER = "ids.json"


class SegmentGone(Exception):
    """A listed segment's folder vanished: either the writer removed it after a newer commit (re-read the
    committed state and retry) or the index is damaged (the newest commit still lists it)."""

    def __init__(self, name: str, path: Path):
        super().__init__(name)
        self.name = name
        self.path = path


class SegmentHandle:
    def __init__(self, index_dir: Path, info: SegmentInfo, components: Mapping[str, ComponentType]):
        self.info = info
        seg_dir = index_dir / "segments" / info.name
        self._pin = SegmentPin(seg_dir)
        if not self._pin.ok:
            raise SegmentGone(info.name, seg_dir)
        self.readers: dict[str, SegmentReader] = {}
        self._mask: tuple[int, np.ndarray] | None = None
        try:
            what = f"segment {info.name}"
            check_file_sizes(seg_dir, info.files, what)
            self.ids = load_ids(seg_dir, info) if info.id_map else None
            for kind, component in components.items():
                if kind not in info.metas:
                    raise IndexFormatError(f"{what} has no {kind!r} component although the manifest lists one")
                self.readers[kind] = _open_component(component, seg_dir / kind, info, index_dir / "components" / kind)
        except BaseException:
            self.close()
            raise

    def deleted_mask(self, n_deleted: int, load) -> np.ndarray:
        """The deletion mask for a given deleted count. Bits are only ever added to a segment's bitmap, so
        the count identifies its content; `load()` reads it from the store on a miss."""
        if self._mask is None or self._mask[0] != n_deleted:
            mask = load()
            mask.setflags(write=False)
            if int(mask.sum()) != n_deleted:
                raise IndexFormatError(
                    f"segment {self.info.name}: its deletion bitmap marks {int(mask.sum())} documents but "
                    f"{n_deleted} were committed; the index is damaged"
                )
            self._mask = (n_deleted, mask)
        return self._mask[1]

    def close(self) -> None:
        for reader in self.readers.values():
            try:
                reader.close()
            except Exception:  # closing must not hide the error that got us here
                logger.exception("closing a reader of segment %s failed", self.info.name)
        self.readers = {}
        self._pin.release()


def write_ids(seg_dir: Path, ids: np.ndarray) -> None:
    entry = write_array(seg_dir, IDS_FILE, np.ascontiguousarray(ids, dtype=np.int64))
    write_json(seg_dir / IDS_HEADER, entry)


def load_ids(seg_dir: Path, info: SegmentInfo) -> np.ndarray:
    path = seg_dir / IDS_FILE
    try:
        entry = json.loads((seg_dir / IDS_HEADER).read_text(encoding="utf-8"))
        if not isinstance(entry, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as e:
        raise IndexFormatError(
            f"segment {info.name}: {seg_dir / IDS_HEADER} is unreadable ({e}); the index is damaged"
        ) from e
    ids = open_array(seg_dir, IDS_FILE, entry)
    if ids.dtype != np.int64 or ids.shape != (info.n,):
        raise IndexFormatError(
            f"segment {info.name}: {path} holds {ids.dtype} {ids.shape}, expected int64 ({info.n},); "
            "the index is damaged"
        )
    if info.n and (ids[0] < info.lo or ids[-1] >= info.hi):
        raise IndexFormatError(
            f"segment {info.name}: {path} lists ids outside [{info.lo}, {info.hi}); the index is damaged"
        )
    if info.n > 1 and (np.diff(ids) <= 0).any():
        raise IndexFormatError(f"segment {info.name}: {path} does not list increasing ids; the index is damaged")
    return ids


def _open_component(component: ComponentType, path: Path, info: SegmentInfo, shared: Path) -> SegmentReader:
    what = f"segment {info.name}, component {component.kind!r}"
    try:
        reader = component.open(path, info.metas[component.kind], shared)
    except IndexFormatError as e:
        raise IndexFormatError(f"{what}: {e}") from e
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise IndexFormatError(f"{what}: can't be opened ({type(e).__name__}: {e}); the index is damaged") from e
    if reader.n_docs != info.n:
        reader.close()
        raise IndexFormatError(
            f"{what} holds {reader.n_docs} documents but {info.n} were committed; the index is damaged"
        )
    return reader


class HandleCache:
    """Reference-counted handles by segment name; thread-safe.

    Snapshots release their handles from a weakref finalizer, which the garbage collector may run inside
    any allocation, including one made while this cache holds its lock (opening a segment in `acquire`).
    Such a release must not wait for the lock its own thread holds: it is queued and carried out before
    the lock is let go."""

    def __init__(self, index_dir: Path, components: Mapping[str, ComponentType]):
        self.index_dir = index_dir
        self.components = components
        self._handles: dict[str, SegmentHandle] = {}
        self._refs: dict[str, int] = {}
        self._current: set[str] = set()  # segments of the newest state seen: kept open when unreferenced
        self._lock = threading.Lock()
        self._owner: int | None = None  # the thread holding _lock
        self._deferred: list[Sequence[SegmentHandle]] = []  # releases made while their thread held _lock

    @contextlib.contextmanager
    def _locked(self):
        self._lock.acquire()
        self._owner = threading.get_ident()
        try:
            yield
        finally:
            try:
                while self._deferred:
                    self._release_locked(self._deferred.pop())
                    self._close_unused_locked()
            finally:
                self._owner = None
                self._lock.release()

    def acquire(self, infos: Sequence[SegmentInfo]) -> list[SegmentHandle]:
        """Handles for these segments (opened if needed), each with one more reference."""
        with self._locked():
            got: list[SegmentHandle] = []
            try:
                for info in infos:
                    handle = self._handles.get(info.name)
                    if handle is None:
                        handle = self._handles[info.name] = SegmentHandle(self.index_dir, info, self.components)
                        self._refs[info.name] = 0
                    self._refs[info.name] += 1
                    got.append(handle)
            except BaseException:
                self._release_locked(got)
                raise
            return got

    def release(self, handles: Sequence[SegmentHandle]) -> None:
        if self._owner == threading.get_ident():  # a finalizer run inside our own locked section
            self._deferred.append(handles)
            return
        with self._locked():
            self._release_locked(handles)
            self._close_unused_locked()

    def set_current(self, names: set[str]) -> None:
        """Tell the cache which segments the newest commit lists; others close once unreferenced."""
        with self._locked():
            self._current = set(names)
            self._close_unused_locked()

    def close_all(self) -> None:
        with self._locked():
            for handle in self._handles.values():
                handle.close()
            self._handles.clear()
            self._refs.clear()

    def _release_locked(self, handles: Sequence[SegmentHandle]) -> None:
        for handle in handles:
            name = handle.info.name
            if name in self._refs:
                self._refs[name] -= 1

    def _close_unused_locked(self) -> None:
        for name in [n for n, r in self._refs.items() if r <= 0 and n not in self._current]:
            self._handles.pop(name).close()
            del self._refs[name]
