"""`Index`: an index directory, opened for reading or for writing.

Layout::

    INDEX/
      manifest.json          format, versions, encoder identity and model, component configs (manifest.py)
      docs.lmdb/             documents, id maps, deletion bitmaps, committed state (docstore.py)
      segments/<name>/       immutable segments: .lock, <kind>/ per component, ids.npy after merges
      components/<kind>/     index-wide state a component shares between its segments (e.g. a codec)
      writer.lock            flock'd by the one writer

Readers take `snapshot()`s, which see one committed generation however long they are kept; a writable
Index (one per index at a time, enforced by `writer.lock`) buffers `add`/`upsert`/`delete` until `commit()`,
which is atomic and crash-safe (the crash-point analysis is in `writer.py`). Closing a writable Index
without committing discards the uncommitted changes.
"""
from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from m3search.document import Document
from m3search.errors import ConfigError, EncoderMismatchError, IndexFormatError, InputError
from m3search.indexes.docstore import DOCS_DIR, DocStore, begin, guarded, open_env, release_env
from m3search.indexes.fsutil import fsync_dir, fsync_dirs, tree_bytes
from m3search.indexes.handles import HandleCache
from m3search.indexes.locking import WRITER_LOCK_NAME, WriterLock
from m3search.indexes.manifest import FORMAT, MANIFEST_NAME, Manifest, read_manifest, write_manifest
from m3search.indexes.registry import Registry, make_components
from m3search.indexes.snapshot import Snapshot, take_snapshot
from m3search.indexes.state import CommitState
from m3search.indexes.writer import COMPONENTS_DIR, SEGMENTS_DIR, IndexWriter, WriterOptions, check_writer_options
from m3search.types import EncodedBatch, EncoderIdentity

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

logger = logging.getLogger(__name__)

DEFAULT_COMPONENT_CONFIGS: dict[str, dict] = {"dense": {}, "sparse": {}, "multivec": {}}
# names only an index folder holds: a folder with any of them but no manifest is a damaged index, not free space
_INDEX_NAMES = {MANIFEST_NAME + ".tmp", DOCS_DIR, SEGMENTS_DIR, COMPONENTS_DIR, WRITER_LOCK_NAME}


class Index:
    """An open index directory. Use `Index.create` or `Index.open`, not the constructor."""

    def __init__(self, path: Path, manifest: Manifest, components, lock: WriterLock | None, writer_options: dict):
        self.path = path
        self.manifest = manifest
        self._components = components
        self._lock = lock
        self._snapshots: weakref.WeakSet[Snapshot] = weakref.WeakSet()
        self._closed = False
        try:
            self._env = open_env(path)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        try:
            if not (path / SEGMENTS_DIR).is_dir():
                raise IndexFormatError(
                    f"{path / SEGMENTS_DIR} is missing: the index is damaged; restore it from a copy"
                )
            self._store = DocStore.open(self._env, path / DOCS_DIR)
            with begin(self._env) as txn:
                self._store.state(txn)  # refuse a damaged state now rather than at the first search
            self._cache = HandleCache(path, components)
            self._writer: IndexWriter | None = None
            if lock is not None:
                self._writer = IndexWriter(
                    path, self._store, components, manifest.identity, self._cache, **writer_options
                )
                self._writer.collect_garbage()
        except BaseException:
            release_env(self._env)
            if lock is not None:
                lock.release()
            raise
        # an Index dropped without close() still releases its files and the writer lock when collected
        self._release = weakref.finalize(self, _release_resources, self._env, lock, self._cache, self._writer)

    # -- creation and opening ---------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        identity: EncoderIdentity,
        model: str | None = None,
        components: Mapping[str, dict] | None = None,
        *,
        registry: Registry | None = None,
        **writer_options: Unpack[WriterOptions],
    ) -> "Index":
        """Create an empty index at `path` (a new or empty folder) and open it for writing.

        components: kind -> config, e.g. {"dense": {}, "sparse": {}}; default all three with defaults.
        registry: kind -> ComponentType (default: the real implementations). writer_options: see
        WriterOptions (merge_policy, auto_merge, buffer_bytes; crash_hook for tests, see writer.py).
        """
        writer_options = check_writer_options(writer_options, "Index.create")
        path = Path(path)
        if not isinstance(identity, EncoderIdentity):
            raise InputError(f"identity must be an EncoderIdentity (encoder.identity), got {type(identity).__name__}")
        comps = make_components(DEFAULT_COMPONENT_CONFIGS if components is None else components, registry)
        if path.exists() and not path.is_dir():
            raise InputError(f"{path} exists and is not a folder; choose another path for the index")
        check_new_index_path(path)
        # Built in a hidden sibling folder and renamed into place, so an interrupted creation never leaves a
        # half-made index at `path` and nothing already at `path` is ever removed.
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"can't create the folder {path.parent} for the index ({e.strerror})") from None
        tmp = _make_temp_folder(path)
        lock = WriterLock(tmp)
        try:
            (tmp / SEGMENTS_DIR).mkdir()
            for kind in comps:
                (tmp / COMPONENTS_DIR / kind).mkdir(parents=True)
            env = open_env(tmp, create=True)
            try:
                DocStore.initialize(env, tmp / DOCS_DIR, CommitState.empty())
            finally:
                release_env(env)
            crash_hook = writer_options.get("crash_hook")
            if crash_hook:
                crash_hook("create:before-manifest")
            manifest = Manifest.new(identity, model, {kind: c.config for kind, c in comps.items()})
            fsync_dirs(tmp / COMPONENTS_DIR)
            fsync_dir(tmp)  # the folders above exist before the manifest says the index does
            write_manifest(tmp, manifest)
            _publish_new_index(tmp, path)
        except BaseException:
            lock.release()
            if tmp.exists():
                shutil.rmtree(tmp)  # made by this call, never published
            raise
        return cls(path, manifest, comps, lock, writer_options)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        writable: bool = False,
        identity: EncoderIdentity | None = None,
        *,
        registry: Registry | None = None,
        **writer_options: Unpack[WriterOptions],
    ) -> "Index":
        """Open an existing index. With `identity`, refuse (EncoderMismatchError) an index built with another
        encoder. writable=True takes the writer lock (IndexLockedError if another writer holds it) and
        removes crash leftovers. writer_options: as for `create`."""
        writer_options = check_writer_options(writer_options, "Index.open")
        path = Path(path)
        manifest = read_manifest(path)
        if identity is not None:
            check_encoder(path, manifest, identity)
        try:
            comps = make_components(manifest.components, registry)
        except ConfigError as e:
            raise IndexFormatError(f"{path / MANIFEST_NAME}: {e}") from e
        lock = WriterLock(path) if writable else None
        return cls(path, manifest, comps, lock, writer_options)

    # -- properties ---------------------------------------------------------------------------------
    @property
    def identity(self) -> EncoderIdentity:
        return self.manifest.identity

    @property
    def model(self) -> str | None:
        return self.manifest.model

    @property
    def components(self) -> dict[str, dict]:
        """kind -> config (defaults filled in)."""
        return {kind: dict(c.config) for kind, c in self._components.items()}

    @property
    def writable(self) -> bool:
        return self._writer is not None

    @property
    def generation(self) -> int:
        """The last committed generation."""
        return self._committed_state().generation

    @property
    def n_live(self) -> int:
        """Live documents as of the last commit."""
        return self._committed_state().n_live

    def last_txnid(self) -> int:
        """LMDB's id of the last committed write transaction: changes whenever anything is committed; cheap
        (no transaction), so readers poll it to notice other processes' commits."""
        self._check_open()
        return int(self._env.info()["last_txnid"])

    @property
    def has_uncommitted_changes(self) -> bool:
        return self._writer is not None and self._writer.has_changes

    def _committed_state(self) -> CommitState:
        self._check_open()
        with guarded(self._store.path), begin(self._env) as txn:
            return self._store.state(txn)

    # -- writes -------------------------------------------------------------------------------------
    def add(self, ids: Sequence[str], batch: EncodedBatch, docs: Sequence[Document | None] | None = None) -> None:
        """Buffer new documents (visible after `commit()`). docs: one `m3search.document.Document` per id
        (a dict {"text", "title"?, "metadata"?} is still accepted).
        An id already in the index (or twice in `ids`) is an InputError: use `upsert` to replace.
        The batch's arrays are kept, not copied, until they are written: don't modify them meanwhile."""
        self._need_writer("add documents").add(ids, batch, docs, replace=False)

    def upsert(self, ids: Sequence[str], batch: EncodedBatch, docs: Sequence[Document | None] | None = None) -> None:
        """Add documents, replacing any with the same ids (delete + add, in one commit)."""
        self._need_writer("upsert documents").add(ids, batch, docs, replace=True)

    def delete(self, ids: Sequence[str]) -> int:
        """Delete documents by id (visible after `commit()`); returns how many existed. Unknown ids are skipped."""
        return self._need_writer("delete documents").delete(ids)

    def contains(self, ids: Sequence[str]) -> np.ndarray:
        """(len(ids),) bool: whether each id is in the index, counting this writer's uncommitted changes."""
        if self._writer is not None:
            return self._writer.contains(ids)
        with self.snapshot() as snap:
            return snap.internal_ids(list(ids)) >= 0

    def commit(self) -> int:
        """Make buffered changes durable and visible, atomically; then merge segments if the policy asks.
        Returns the new generation (unchanged if there was nothing to commit)."""
        return self._need_writer("commit").commit()

    def rollback(self) -> None:
        """Discard every change since the last commit."""
        self._need_writer("roll back").rollback()

    def optimize(self) -> int:
        """Commit, then merge all segments into one without deleted documents. Returns the generation."""
        return self._need_writer("optimize").optimize()

    def wait_for_merges(self) -> None:
        """Block until the merges that commits started in the background are done (`close` waits too)."""
        self._need_writer("wait for merges").wait_for_merges()

    def _need_writer(self, what: str) -> IndexWriter:
        self._check_open()
        if self._writer is None:
            raise InputError(
                f"can't {what}: {self.path} is open read-only; open it with Index.open(path, writable=True)"
            )
        return self._writer

    # -- reads --------------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Readers over the last committed generation; stable until closed, whatever is committed later."""
        self._check_open()
        snap = take_snapshot(self._store, self._cache, self.identity, owner=self)
        self._snapshots.add(snap)
        return snap

    def info(self) -> dict:
        """Format, versions, encoder, counts, and bytes per component, from the last commit."""
        m = self.manifest
        with self.snapshot() as snap:
            components = {}
            for kind, config in self.components.items():
                reader = getattr(snap, kind)
                shared = tree_bytes(self.path / COMPONENTS_DIR / kind)
                components[kind] = {
                    "config": config,
                    "bytes": int(reader.nbytes()) + shared,
                    "fidelity": reader.fidelity(),
                }
            segments = [
                {"name": s.name, "n_docs": s.n, "n_deleted": s.n_deleted, "internal_ids": [s.lo, s.hi]}
                for s in snap.segments
            ]
            generation, n_docs, n_deleted = snap.generation, snap.n_docs, snap.n_deleted
        docstore_bytes = self._store.nbytes()
        return {
            "path": str(self.path),
            "format": FORMAT,
            "format_version": m.format_version,
            "m3search_version": m.m3search_version,
            "created_at": m.created_at,
            "encoder": m.identity.to_dict(),
            "model": m.model,
            "generation": generation,
            "n_docs": n_docs,
            "n_deleted": n_deleted,
            "n_segments": len(segments),
            "segments": segments,
            "components": components,
            "docstore_bytes": docstore_bytes,
            "total_bytes": docstore_bytes + sum(c["bytes"] for c in components.values()),
        }

    # -- lifetime -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Close snapshots taken from this Index, release files and the writer lock. Uncommitted changes
        are discarded (logged)."""
        if self._closed:
            return
        try:
            if self._writer is not None:
                self._writer.finish()  # background merges end before the files they use close
            if self._writer is not None and self._writer.has_changes:
                logger.warning("closing %s with uncommitted changes: they are discarded", self.path)
                self._writer.rollback()
            for snap in list(self._snapshots):
                snap.close()
            self._cache.close_all()
            if self._writer is not None:
                self._writer.collect_garbage()
        finally:
            self._closed = True
            self._release()

    def _check_open(self) -> None:
        if self._closed:
            raise InputError(f"the Index for {self.path} is closed; open it again with Index.open")

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "writable" if self.writable else "read-only"
        return f"Index({str(self.path)!r}, {mode}, components={sorted(self._components)})"


def _release_resources(env, lock: WriterLock | None, cache: HandleCache, writer: IndexWriter | None = None) -> None:
    if writer is not None:
        writer.finish()
    cache.close_all()
    release_env(env)
    if lock is not None:
        lock.release()


def check_encoder(path: Path, manifest: Manifest, identity: EncoderIdentity) -> None:
    """The one encoder-identity check (the engine's and the API's): raise EncoderMismatchError listing every
    differing field (a different sparse term scheme alone, with its own fix)."""
    from m3search.encoder.terms import require_same_terms

    require_same_terms(path, manifest.identity, identity)
    diffs = manifest.identity.mismatches(identity)
    if diffs:
        raise EncoderMismatchError(
            f"{path} was built with encoder {manifest.identity.name!r} (model {manifest.model!r}); the encoder "
            f"given does not match it ({'; '.join(diffs)}): open it with the model it was built with, or build a "
            "new index"
        )


def check_new_index_path(path: Path) -> None:
    """Refuse to create an index where a folder already holds anything: an index, a damaged index or a
    partial copy of one (say, without its manifest.json), or files of the user's. Nothing there is touched."""
    if not path.is_dir():
        return
    if (path / MANIFEST_NAME).exists():
        raise InputError(
            f"{path} is already an index; open it with Index.open(path, writable=True) to add documents"
        )
    names = sorted(os.listdir(path))
    if not names:
        return
    found = [n for n in names if n in _INDEX_NAMES]
    if found:
        raise IndexFormatError(
            f"{path} holds {', '.join(found)} but no {MANIFEST_NAME}: it is a damaged index or a partial copy of "
            f"one, and m3search will not overwrite or delete it. Restore {MANIFEST_NAME} (copy the whole index "
            "folder again), or, if you don't need what it holds, remove the folder yourself and build again"
        )
    raise InputError(f"{path} exists and holds {names[:5]}, which are not an index's; choose a new or empty folder")


def _publish_new_index(tmp: Path, path: Path) -> None:
    """Rename the finished index folder `tmp` to `path` (absent or an empty folder)."""
    try:
        os.rename(tmp, path)  # POSIX: replaces an empty folder, fails on a non-empty one
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            check_new_index_path(path)  # another process created something there meanwhile: say what
        raise InputError(f"can't move the new index into place at {path} ({e}); choose another path") from e
    fsync_dir(path.parent)


def _make_temp_folder(path: Path) -> Path:
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.creating-{secrets.token_hex(4)}")
        try:
            tmp.mkdir(0o777)  # the umask applies, as for any folder the user makes
            return tmp
        except FileExistsError:
            continue
        except OSError as e:
            raise InputError(
                f"can't create the index {path} ({e.strerror}): m3search builds a new index in a temporary folder "
                f"beside it and renames it into place, so {path.parent} must be writable"
            ) from None
    raise InputError(f"can't make a temporary folder beside {path}; clear the .{path.name}.creating-* folders there")
