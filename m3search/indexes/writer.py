"""The single writer of an index: buffered adds, deletes, atomic commits, merges, clean-up.

How a commit works
------------------
Adds are buffered with their internal ids already assigned (increasing, never reused); their token vectors
wait in an unlinked temporary file, not in memory (token_spill.py). When the
buffer grows past `buffer_bytes` it is flushed into a pending segment: a new folder
`segments/<name>/` holding a `.lock` file and one sub-folder per component written by that component's
`build`, all fsync'd. Pending segments are invisible: readers only see what the committed state lists.
`commit()` flushes the rest of the buffer the same way, then runs ONE LMDB write transaction that stores
the id maps, the new document records, removes deleted ones, updates deletion bitmaps and writes the new
committed state (generation + 1, segment list, id counter). That transaction is the commit point. A merge
writes its merged segment the same way and commits the replaced segment list in one transaction.

Folders under `segments/` that the committed state does not list are garbage: pending segments of a
writer that crashed, merged-away segments, or half-deleted ones (`.trash-<name>`). The writer removes
them when it opens the index, after each commit, and when it closes, except those a reader still pins
(see `locking.py`), which wait for a later clean-up.

Crash points (kill -9 at any instant; each is recoverable, and the names are the `crash_hook` names
used by the tests to kill the writer exactly there)
--------------------------------------------------------------------------------------------------
- During `Index.create`, before `manifest.json` exists ("create:before-manifest"): the folder is not an
  index yet (open refuses it, naming the cause); `Index.create` on the same path clears what it had made
  (only the names it creates) and starts again. The manifest itself is written with temp + fsync +
  os.replace, so it is either absent or complete.
- While a component writes a segment, or after the segment is complete but before the commit
  transaction ("flush:segment-built", "commit:before-txn"): the folder is not listed by any commit; the
  index opens at the previous generation and the next writer deletes the folder.
- During the LMDB commit transaction: LMDB commits atomically (copy-on-write pages, then the meta page),
  so the index opens either at the previous generation or at the new one, never in between.
- After the commit transaction, before or during clean-up ("commit:after-txn", "gc:renamed"): the new
  generation is complete; leftover folders (renamed `.trash-*` or not) are deleted by the next writer.
- During a merge, after the merged segment is written but before its transaction ("merge:built"): the
  sources are still the committed segments; the merged folder is garbage. After the transaction
  ("merge:after-txn"): the merged segment is committed and the sources are garbage. Merges never touch
  the document store's records or id maps (ids are stable across merges), so there is nothing else to
  undo.

Background merges (the default, `background_merge=True`)
-------------------------------------------------------
`commit()` returns once its transaction is durable; the merges the policy then asks for run on a worker
thread (background.py) while the caller goes on adding and committing. Until a component's index-wide
state is trained (`trains_on_write`: the multi-vector codec) they run inside `commit()` instead, since the
merge that trains it is the memory-heavy one. A merge and commits interleave
safely because every commit point runs under the writer's lock against the state committed just before:
a merge reads the deletion bitmaps of its sources when it starts, writes its segment, then, in its own
transaction, replaces its sources (found by name: commits only append segments, and merges run one at a
time) and carries over to the merged segment the deletions committed on them in the meantime. Folders
being written (a flush, a merge) are never collected. Components write their segments one call at a time
(`_build_lock`), since some keep index-wide state (a codec, a quantizer) they create on first use.
`Index.close()` waits for the merges under way; `optimize()` runs when none is.
- Uncommitted work is lost by design: a crash loses exactly what was added/deleted since the last
  `commit()`, never anything committed.

Durability assumes fsync works: components fsync their files (the ComponentType contract), the engine
fsyncs its own files and every folder it creates or renames in, and LMDB fsyncs at commit. A kill -9 needs
only the page cache; a power cut needs the fsyncs. Should a component break that contract, the file
sizes recorded at commit turn a lost write into a clear IndexFormatError when the segment is opened.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import secrets
import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypedDict

import lmdb
import numpy as np

from m3search.errors import IndexFormatError, InputError
from m3search.indexes import fields
from m3search.indexes.background import BackgroundMerges
from m3search.indexes.base import ComponentType
from m3search.document import Document
from m3search.indexes.heap import release_free_memory
from m3search.ingest import passage_text
from m3search.indexes.docstore import DocStore, begin, ext_key, grow_map, guarded, id_value, int_key, pack, pack_record
from m3search.indexes.fsutil import file_sizes, fsync_dir, fsync_dirs
from m3search.indexes.handles import HandleCache, load_ids, write_ids
from m3search.indexes.inputs import check_values
from m3search.indexes.locking import SEGMENT_LOCK_NAME, create_segment_lock, try_lock_for_deletion
from m3search.indexes.merge_policy import TieredMergePolicy, merge_all
from m3search.indexes.state import CommitState, SegmentInfo
from m3search.indexes.token_spill import TokenSpill
from m3search.types import EncodedBatch, EncoderIdentity

logger = logging.getLogger(__name__)

SEGMENTS_DIR = "segments"
COMPONENTS_DIR = "components"
TRASH_PREFIX = ".trash-"
SEGMENT_NAME = re.compile(r"^seg-\d{12}-[0-9a-f]{8}$")
DEFAULT_BUFFER_BYTES = 256 << 20
_DOC_KEYS = {"text", "title", "metadata", "id"}
_MAX_MERGE_ROUNDS = 32


class WriterOptions(TypedDict, total=False):
    """The keyword options of a writable Index (`Index.create`, `Index.open`), passed on to IndexWriter,
    whose signature holds their defaults. crash_hook: tests only, called with each crash point's name."""

    merge_policy: TieredMergePolicy | None
    auto_merge: bool
    background_merge: bool
    buffer_bytes: int
    crash_hook: Callable[[str], None] | None


def check_writer_options(options: Mapping[str, Any], caller: str) -> dict:
    """`options` as a dict; a name WriterOptions lacks is refused as Python refuses an unknown keyword."""
    for name in options:
        if name not in WriterOptions.__annotations__:
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}")
    return dict(options)


class IndexWriter:
    def __init__(
        self,
        index_dir: Path,
        store: DocStore,
        components: Mapping[str, ComponentType],
        identity: EncoderIdentity,
        cache: HandleCache,
        *,
        merge_policy: TieredMergePolicy | None = None,
        auto_merge: bool = True,
        background_merge: bool = True,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        crash_hook: Callable[[str], None] | None = None,
    ):
        self.index_dir = index_dir
        self.segments_dir = index_dir / SEGMENTS_DIR
        self.store = store
        self.components = dict(components)
        self.identity = identity
        self.cache = cache
        self.merge_policy = merge_policy or TieredMergePolicy()
        self.auto_merge = auto_merge
        self.buffer_bytes = buffer_bytes
        self._crash = crash_hook or (lambda point: None)
        self._lock = threading.RLock()  # commit points, the committed state and garbage collection
        self._build_lock = threading.Lock()  # one component build/merge call at a time
        self._writing: set[str] = set()  # segment folders being written (not yet pending or committed)
        self._merges = BackgroundMerges(self._merge_by_policy) if auto_merge and background_merge else None
        with guarded(store.path), begin(store.env) as txn:
            self.committed: CommitState = store.state(txn)
        fields.ensure_table(store)
        self._uses_text = any(getattr(c, "uses_text", False) for c in self.components.values())
        self._reset_pending()

    # -- the uncommitted changes -------------------------------------------------------------------
    def _reset_pending(self) -> None:
        self._next_id = self.committed.next_id
        if getattr(self, "_spill", None) is not None:
            self._spill.close()
        # buffered adds: (first id, dense, sparse, multivec_lengths); their token vectors are in _spill
        self._buffer: list[tuple[int, np.ndarray, Any, np.ndarray]] = []
        self._spill: TokenSpill | None = None
        self._buffer_texts: list[str] = []  # the buffered documents' texts, for components with uses_text
        self._buffered_bytes = 0
        self._pending: list[SegmentInfo] = []  # built, not yet committed
        self._ext_changes: dict[str, int] = {}  # external id -> new internal id, or -1 once deleted
        self._records: dict[int, bytes] = {}  # packed records of added, not deleted documents
        self._deletes: set[int] = set()  # internal ids deleted since the last commit

    @property
    def has_changes(self) -> bool:
        return bool(self._buffer or self._pending or self._deletes or self._ext_changes)

    def _lookup(self, ext_ids: Sequence[str]) -> np.ndarray:
        """Internal ids as the writer sees them (committed state plus uncommitted changes); -1 if absent."""
        out = np.full(len(ext_ids), -1, dtype=np.int64)
        unchanged = [i for i, e in enumerate(ext_ids) if e not in self._ext_changes]
        if unchanged:
            with guarded(self.store.path), begin(self.store.env) as txn:
                out[unchanged] = self.store.lookup(txn, [ext_ids[i] for i in unchanged])
        for i, e in enumerate(ext_ids):
            if e in self._ext_changes:
                out[i] = self._ext_changes[e]
        return out

    def contains(self, ext_ids: Sequence[str]) -> np.ndarray:
        ext_ids = _check_ids(ext_ids, "contains", allow_duplicates=True)
        return self._lookup(ext_ids) >= 0

    def add(self, ids: Sequence[str], batch: EncodedBatch, docs: Sequence[Document | dict | None] | None, replace: bool) -> None:
        action = "upsert" if replace else "add"
        ids = _check_ids(ids, action, allow_duplicates=False)
        if not isinstance(batch, EncodedBatch):
            raise InputError(f"{action}: batch must be an EncodedBatch, got {type(batch).__name__}")
        if len(batch) != len(ids):
            raise InputError(f"{action}: {len(ids)} ids but the batch encodes {len(batch)} texts; give one id per row")
        batch = self._check_batch(batch, ids, action)
        checked = _check_docs(docs, ids, action)
        records = [pack_record(e, d) for e, d in zip(ids, checked)]
        current = self._lookup(ids)
        if not replace and (current >= 0).any():
            present = [e for e, c in zip(ids, current) if c >= 0]
            raise InputError(
                f"add: ids {present[:5]}{' ...' if len(present) > 5 else ''} are already in the index; use upsert "
                "to replace them, or skip the ids the index contains (index.contains)"
            )
        if not ids:
            return
        if replace:
            self._delete_internal(current[current >= 0])
        start = self._next_id
        self._next_id += len(ids)
        if self._spill is None:
            self._spill = TokenSpill(self.segments_dir, batch.multivec.shape[1])
        self._spill.append(batch.multivec)  # out of memory until the flush (token_spill.py)
        self._buffer.append((start, batch.dense, batch.sparse, batch.multivec_lengths))
        if self._uses_text:  # components that index the words (text) get title + text as the encoder saw it
            self._buffer_texts.extend(passage_text(d) if d is not None else "" for d in checked)
        self._buffered_bytes += _batch_bytes(batch)
        for j, (ext, rec) in enumerate(zip(ids, records)):
            self._ext_changes[ext] = start + j
            self._records[start + j] = rec
        if self._buffered_bytes >= self.buffer_bytes:
            self._flush()

    def delete(self, ids: Sequence[str]) -> int:
        ids = _check_ids(ids, "delete", allow_duplicates=True)
        current = self._lookup(ids)
        live = np.unique(current[current >= 0])
        self._delete_internal(live)
        for ext, cur in zip(ids, current):
            if cur >= 0:
                self._ext_changes[ext] = -1
        return len(live)

    def _delete_internal(self, internal_ids: np.ndarray) -> None:
        for i in internal_ids.tolist():
            self._deletes.add(i)
            self._records.pop(i, None)

    def _check_batch(self, batch: EncodedBatch, ids: list[str], action: str) -> EncodedBatch:
        """The representations of every configured component must match the encoder and hold sane values
        (inputs.check_values); returns the batch with dense rows renormalised."""
        ident = self.identity
        checks = {
            "dense": ("dense", batch.dense.shape[1], ident.dense_dim),
            "sparse": ("sparse (term columns)", batch.sparse.shape[1], ident.sparse_width),
            "multivec": ("multivec", batch.multivec.shape[1], ident.multivec_dim),
        }
        for kind in self.components:
            if kind not in checks:
                continue
            label, got, want = checks[kind]
            if got != want:
                raise InputError(
                    f"{action}: the batch's {label} dimension is {got} but the index's encoder "
                    f"{ident.name!r} has {want}; encode with the encoder the index was built with"
                )
        return check_values(batch, [k for k in self.components if k in checks], ids, action)

    # -- commits ------------------------------------------------------------------------------------
    def _flush(self) -> None:
        """Write the buffered documents into a pending (uncommitted) segment."""
        if not self._buffer:
            return
        release_free_memory()  # freed encoder batches, before the segment's build allocates
        start = self._buffer[0][0]
        batch = _buffered_batch(self._buffer, self._spill)
        assert start + len(batch) == self._next_id, "buffered ids must be contiguous"
        texts = self._buffer_texts

        def build(comp: ComponentType, path: Path, shared: Path) -> dict:
            if getattr(comp, "uses_text", False):
                return comp.build(path, batch, shared, texts=texts)
            return comp.build(path, batch, shared)

        info = self._write_segment(start, len(batch), None, build)
        with self._lock:
            self._pending.append(info)
            self._writing.discard(info.name)
        self._spill.close()
        self._buffer, self._spill, self._buffer_texts, self._buffered_bytes = [], None, [], 0
        self._crash("flush:segment-built")

    def commit(self) -> int:
        self._flush()
        if not self.has_changes:
            return self.committed.generation
        self._crash("commit:before-txn")
        with self._lock:
            state = self._commit_locked()
        self._crash("commit:after-txn")
        self.collect_garbage()
        if self._merges is not None and not self._merge_trains():
            self._merges.request()
        elif self.auto_merge:
            try:
                with self._merges.paused() if self._merges is not None else contextlib.nullcontext():
                    self._merge_by_policy()
            except Exception:  # the commit above is durable: a failed merge must not report it as failed
                logger.exception(
                    "merging segments after generation %d failed; the index stays as committed", state.generation
                )
        return self.committed.generation

    def _merge_trains(self) -> bool:
        """Whether a merge now may train a component's index-wide state (the multi-vector codec: a 200k-token
        sample and k-means' buffers). Such merges run in the commit, not on the merge thread: beside an
        encoder still encoding, the two working sets stacked into the indexing run's peak RSS."""
        return any(c.trains_on_write(self.index_dir / COMPONENTS_DIR / kind) for kind, c in self.components.items())

    def _commit_locked(self) -> CommitState:
        old = self.committed
        segments = list(old.segments) + self._pending
        store = self.store
        def write(txn) -> CommitState:
            masks = self._new_deletion_masks(txn, segments)
            listed = [
                dataclasses.replace(s, n_deleted=int(masks[s.name].sum())) if s.name in masks else s for s in segments
            ]
            state = CommitState(generation=old.generation + 1, next_id=self._next_id, segments=tuple(listed))
            for ext, internal in self._ext_changes.items():
                if internal >= 0:
                    txn.put(ext_key(ext), id_value(internal), db=store.ext2int)
                else:
                    txn.delete(ext_key(ext), db=store.ext2int)
            fields.update(txn, store, self._records, (i for i in self._deletes if i < old.next_id))
            for internal, record in self._records.items():
                txn.put(int_key(internal), record, db=store.docs)
            for internal in self._deletes:
                if internal < old.next_id:
                    txn.delete(int_key(internal), db=store.docs)
            for name, mask in masks.items():
                store.put_bitmap(txn, name, mask)
            store.put_state(txn, state)
            return state

        state = self._transact(write)
        self._committed_now(state)
        return state

    def _new_deletion_masks(self, txn, segments: list[SegmentInfo]) -> dict[str, np.ndarray]:
        """Full deletion masks of the segments that get new deletions in this commit."""
        if not self._deletes:
            return {}
        deleted = np.fromiter(sorted(self._deletes), dtype=np.int64, count=len(self._deletes))
        committed_names = {s.name for s in self.committed.segments}
        masks = {}
        for s in segments:
            sel = deleted[(deleted >= s.lo) & (deleted < s.hi)]
            if not len(sel):
                continue
            local = sel - s.lo if not s.id_map else np.searchsorted(self._segment_ids(s), sel)
            if s.name in committed_names:
                mask = self.store.deleted_bitmap(txn, s.name, s.n).copy()
            else:
                mask = np.zeros(s.n, dtype=bool)
            mask[local] = True
            masks[s.name] = mask
        return masks

    def _transact(self, write):
        """Run write(txn) in one write transaction (the commit point); if the map is full, LMDB aborts it:
        grow the map and run it again."""
        for _ in range(40):
            try:
                with guarded(self.store.path), begin(self.store.env, write=True) as txn:
                    return write(txn)
            except IndexFormatError as e:
                if not isinstance(e.__cause__, lmdb.MapFullError):
                    raise
                grow_map(self.store.env)
        raise IndexFormatError(f"{self.store.path}: the document store can't grow its map; free address space")

    def _segment_ids(self, info: SegmentInfo) -> np.ndarray:
        return load_ids(self.segments_dir / info.name, info)

    def _committed_now(self, state: CommitState) -> None:
        self._set_committed(state)
        self._reset_pending()

    def _set_committed(self, state: CommitState) -> None:
        self.committed = state
        self.cache.set_current({s.name for s in state.segments})

    def rollback(self) -> None:
        """Forget every change since the last commit (pending segment folders are deleted)."""
        for info in self._pending:
            shutil.rmtree(self.segments_dir / info.name, ignore_errors=True)
        self._reset_pending()

    # -- segments -----------------------------------------------------------------------------------
    def _write_segment(
        self, lo: int, n: int, ids: np.ndarray | None, write: Callable[[ComponentType, Path, Path], dict]
    ) -> SegmentInfo:
        """Write a complete, fsync'd segment folder; on failure remove it and re-raise."""
        name = f"seg-{lo:012d}-{secrets.token_hex(4)}"
        seg_dir = self.segments_dir / name
        with self._lock:  # registered before it exists: garbage collection keeps it (the caller unregisters)
            self._writing.add(name)
        try:
            seg_dir.mkdir()
        except BaseException:
            with self._lock:
                self._writing.discard(name)
            raise
        try:
            create_segment_lock(seg_dir)
            metas = {}
            for kind, component in self.components.items():
                (seg_dir / kind).mkdir()
                with self._build_lock:
                    meta = write(component, seg_dir / kind, self.index_dir / COMPONENTS_DIR / kind)
                metas[kind] = _checked_meta(kind, meta)
            if ids is not None:
                write_ids(seg_dir, ids)
            fsync_dirs(seg_dir)
            fsync_dir(self.segments_dir)
            files = file_sizes(seg_dir, skip=(SEGMENT_LOCK_NAME,))
        except BaseException:
            shutil.rmtree(seg_dir, ignore_errors=True)
            with self._lock:
                self._writing.discard(name)
            raise
        hi = lo + n if ids is None else int(ids[-1]) + 1
        return SegmentInfo(name=name, lo=lo, hi=hi, n=n, id_map=ids is not None, metas=metas, files=files)

    # -- merges -------------------------------------------------------------------------------------
    def _merge_by_policy(self) -> None:
        for _ in range(_MAX_MERGE_ROUNDS):
            segs = self.committed.segments
            stale = [any(c.stale(s.metas.get(kind, {}), self.index_dir / COMPONENTS_DIR / kind)
                         for kind, c in self.components.items()) for s in segs]
            alone = [any(c.searched_alone(s.metas.get(kind, {})) for kind, c in self.components.items()) for s in segs]
            runs = self.merge_policy.plan([s.n for s in segs], [s.n_deleted for s in segs], stale, alone)
            if not runs:
                return
            self.merge(runs)

    def optimize(self) -> int:
        """Commit pending changes, then merge every segment into one without deleted documents."""
        self.commit()
        with self._merges.paused() if self._merges is not None else contextlib.nullcontext():
            segs = self.committed.segments
            runs = merge_all(len(segs), [s.n_deleted for s in segs])
            if runs:
                self.merge(runs)
        return self.committed.generation

    def wait_for_merges(self) -> None:
        """Block until the background merges asked for so far are done (at once without them)."""
        if self._merges is not None:
            self._merges.wait()

    def finish(self) -> None:
        """Wait for background merges and accept no more (before the index closes)."""
        if self._merges is not None:
            self._merges.close()

    def merge(self, runs: Sequence[range]) -> None:
        """Replace each run of adjacent committed segments by one segment of their live documents, all in
        one commit. Safe beside commits of this writer (background merges): see the module's docstring."""
        base = self.committed
        segs = list(base.segments)
        involved = [segs[p] for run in runs for p in run]
        handles = dict(zip((s.name for s in involved), self.cache.acquire(involved)))
        written: list[SegmentInfo] = []
        try:
            with guarded(self.store.path), begin(self.store.env) as txn:
                keeps = {s.name: np.flatnonzero(~self.store.deleted_bitmap(txn, s.name, s.n)) for s in involved}
            merged: list[tuple[list[SegmentInfo], SegmentInfo | None]] = []
            for run in runs:
                sources = [segs[p] for p in run]
                info = self._merge_run(sources, handles, keeps)
                merged.append((sources, info))
                if info is not None:
                    written.append(info)
            self._crash("merge:built")
            with self._lock:
                state = self._transact(lambda txn: self._replace_segments(txn, merged, keeps))
                self._set_committed(state)
        except BaseException:
            for info in written:  # the transaction did not commit: these folders are ours to remove
                shutil.rmtree(self.segments_dir / info.name, ignore_errors=True)
            raise
        finally:
            self.cache.release(list(handles.values()))
            with self._lock:
                self._writing.difference_update(info.name for info in written)
        logger.info(
            "merged %d segments into %d (generation %d)", len(involved), len(written), state.generation
        )
        self._crash("merge:after-txn")
        self.collect_garbage()

    def _replace_segments(self, txn, merged, keeps: dict[str, np.ndarray]) -> CommitState:
        """In the merge's transaction (under the lock): the committed list with each run's sources replaced
        by its merged segment, carrying over deletions committed on the sources since the merge began."""
        current = self.committed  # the store's state: only this writer commits, and only under the lock
        listed = {s.name for s in current.segments}
        replaced, first_of_run = set(), {}
        for sources, info in merged:
            missing = [s.name for s in sources if s.name not in listed]
            if missing:
                raise RuntimeError(f"segments {missing} to merge are no longer committed")
            replaced.update(s.name for s in sources)
            if info is None:
                continue
            late = np.concatenate([self.store.deleted_bitmap(txn, s.name, s.n)[keeps[s.name]] for s in sources])
            if late.any():  # deleted by commits made while the merge ran
                self.store.put_bitmap(txn, info.name, late)
                info = dataclasses.replace(info, n_deleted=int(late.sum()))
            first_of_run[sources[0].name] = info
        new_segments = []
        for s in current.segments:
            if s.name in first_of_run:
                new_segments.append(first_of_run[s.name])
            elif s.name not in replaced:
                new_segments.append(s)
        for name in replaced:
            txn.delete(name.encode(), db=self.store.deleted)
        state = CommitState(generation=current.generation + 1, next_id=current.next_id, segments=tuple(new_segments))
        self.store.put_state(txn, state)
        return state

    def _merge_run(self, sources: list[SegmentInfo], handles, keeps: dict[str, np.ndarray]) -> SegmentInfo | None:
        keep = [keeps[s.name] for s in sources]
        if sum(len(k) for k in keep) == 0:
            return None  # nothing live: the run is dropped
        hs = [handles[s.name] for s in sources]
        gids = np.concatenate(
            [(h.ids[k] if h.ids is not None else k + s.lo) for h, k, s in zip(hs, keep, sources)]
        ).astype(np.int64)
        contiguous = int(gids[-1] - gids[0]) + 1 == len(gids)

        def write(component: ComponentType, path: Path, shared: Path) -> dict:
            return component.merge(path, [h.readers[component.kind] for h in hs], keep, shared)

        return self._write_segment(int(gids[0]), len(gids), None if contiguous else gids, write)

    # -- clean-up -----------------------------------------------------------------------------------
    def collect_garbage(self) -> None:
        """Delete segment folders no commit lists (crash leftovers, merged-away segments) that no reader
        pins; only names this engine creates are touched."""
        with self._lock:
            self._collect_garbage_locked()

    def _collect_garbage_locked(self) -> None:
        keep = {s.name for s in self.committed.segments} | {s.name for s in self._pending} | self._writing
        removed = False
        for entry in sorted(self.segments_dir.iterdir()):
            if entry.name.startswith(TRASH_PREFIX) and SEGMENT_NAME.match(entry.name[len(TRASH_PREFIX) :]):
                shutil.rmtree(entry, ignore_errors=True)
                removed = True
                continue
            if entry.name in keep or not SEGMENT_NAME.match(entry.name) or not entry.is_dir():
                continue
            fd = try_lock_for_deletion(entry)
            if fd is None:
                logger.debug("segment %s is still used by a reader; it will be removed later", entry.name)
                continue
            trash = self.segments_dir / (TRASH_PREFIX + entry.name)
            try:
                os.rename(entry, trash)  # readers that race us see the name vanish and re-read the state
            finally:
                if fd >= 0:
                    os.close(fd)
            self._crash("gc:renamed")
            shutil.rmtree(trash, ignore_errors=True)
            removed = True
        if removed:
            fsync_dir(self.segments_dir)


def _buffered_batch(buffer: list[tuple[int, np.ndarray, Any, np.ndarray]], spill: TokenSpill) -> EncodedBatch:
    """The buffered adds as one batch; its token vectors are a read-only mapping of the spill file."""
    import scipy.sparse as sp

    multivec = spill.array()
    if len(buffer) == 1:
        return EncodedBatch(dense=buffer[0][1], sparse=buffer[0][2], multivec=multivec, multivec_lengths=buffer[0][3])
    return EncodedBatch(dense=np.concatenate([b[1] for b in buffer]),
                        sparse=sp.vstack([b[2] for b in buffer], format="csr", dtype=np.float32),
                        multivec=multivec, multivec_lengths=np.concatenate([b[3] for b in buffer]))


def _batch_bytes(batch: EncodedBatch) -> int:
    s = batch.sparse
    return batch.dense.nbytes + s.data.nbytes + s.indices.nbytes + batch.multivec.nbytes


def _checked_meta(kind: str, meta: Any) -> dict:
    if not isinstance(meta, dict):
        raise TypeError(f"component {kind!r} returned {type(meta).__name__} from build/merge; it must return a dict")
    try:
        pack(meta)
    except (TypeError, ValueError) as e:
        raise TypeError(f"component {kind!r} returned metadata that can't be stored as msgpack: {e}") from e
    return meta


def _check_ids(ids: Sequence[str], action: str, allow_duplicates: bool) -> list[str]:
    if isinstance(ids, str):
        raise InputError(f"{action}: ids must be a list of strings, not one string; wrap it as [id]")
    try:
        ids = list(ids)
    except TypeError:
        raise InputError(f"{action}: ids must be a list of strings, got {type(ids).__name__}") from None
    for i, e in enumerate(ids):
        if not isinstance(e, str) or not e:
            raise InputError(f"{action}: id at position {i} is {e!r}; ids must be non-empty strings")
        try:
            e.encode("utf-8")
        except UnicodeEncodeError as err:
            raise InputError(f"{action}: id at position {i} ({e!r}) holds a lone surrogate at character "
                             f"{err.start}, which is not valid Unicode; fix the id") from None
    if not allow_duplicates and len(set(ids)) != len(ids):
        seen, dup = set(), []
        for e in ids:
            if e in seen:
                dup.append(e)
            seen.add(e)
        raise InputError(
            f"{action}: ids {dup[:5]} occur more than once in this batch; each document needs a unique id "
            "(drop the repeats, or keep the last one per id)"
        )
    return ids


def _check_docs(docs: Sequence[Document | dict | None] | None, ids: list[str], action: str) -> list[Document | None]:
    """One Document (or None) per id. A dict {"text", "title"?, "metadata"?} is still taken and converted."""
    if docs is None:
        return [None] * len(ids)
    docs = list(docs)
    if len(docs) != len(ids):
        raise InputError(f"{action}: {len(ids)} ids but {len(docs)} docs; give one doc per id (or docs=None)")
    out: list[Document | None] = []
    for ext, doc in zip(ids, docs):
        if isinstance(doc, dict):
            unknown = set(doc) - _DOC_KEYS
            if unknown:
                raise InputError(
                    f"{action}: document {ext!r} has unknown fields {sorted(unknown)}; allowed: 'text', 'title', "
                    "'metadata' (put anything else under 'metadata')"
                )
            if "id" in doc and doc["id"] != ext:
                raise InputError(f"{action}: document {ext!r} carries a different 'id' {doc['id']!r}")
            doc = Document(ext, doc.get("text"), doc.get("title"), doc.get("metadata"))
        elif doc is not None and not isinstance(doc, Document):
            raise InputError(f"{action}: document {ext!r} is a {type(doc).__name__}; docs must be Documents")
        if doc is not None:
            if doc.id != ext:
                raise InputError(f"{action}: document {ext!r} carries a different id {doc.id!r}")
            for key in ("text", "title"):
                value = getattr(doc, key)
                if value is not None and not isinstance(value, str):
                    raise InputError(f"{action}: document {ext!r}: {key!r} must be a string, got {type(value).__name__}")
        out.append(doc)
    return out
