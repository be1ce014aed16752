"""A `Snapshot`: one committed generation of an index, frozen for as long as it is open.

It holds an LMDB read transaction (so documents, id maps and deletion bitmaps stay those of its
generation, whatever a writer commits meanwhile) and pins its segments' folders (so merges can't remove
their files). Close it when done (`with index.snapshot() as snap:`), since an open snapshot keeps merged-
away segment folders on disk and old LMDB pages from being reused; one that is garbage collected is
closed then. `Index.close()` closes the snapshots taken from it.

A snapshot can be shared by threads: its document-store reads are serialised by a lock (an LMDB
transaction must not be used by two threads at once); the component readers are the components' own.
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from typing import TYPE_CHECKING, Iterator, Sequence

import lmdb
import numpy as np

from m3search.errors import IndexFormatError, InputError
from m3search.document import Document
from m3search.indexes.docstore import DocStore, begin, guarded, int_key, record_ext_id
from m3search.indexes.fields import FieldReader, open_reader as open_field_reader
from m3search.indexes.handles import HandleCache, SegmentGone, SegmentHandle
from m3search.indexes.segments import (
    IndexDenseReader,
    IndexMultivecReader,
    IndexSparseReader,
    SegmentSet,
    SegmentView,
)
from m3search.indexes.state import CommitState, SegmentInfo

if TYPE_CHECKING:  # pragma: no cover
    from m3search.types import EncoderIdentity

_MAX_RETRIES = 20
_ITER_CHUNK = 4096


class Snapshot:
    """Readers over one committed generation.

    dense / sparse / multivec: index-level readers over internal ids (None when the index lacks that
    component). n_docs: live documents. id_space: one past the largest internal id (the length of masks
    passed to the readers' `deleted`).
    """

    def __init__(
        self,
        store: DocStore,
        txn: lmdb.Transaction,
        state: CommitState,
        handles: list[SegmentHandle],
        cache: HandleCache,
        identity: "EncoderIdentity",
        owner: object = None,
    ):
        self._owner = owner  # the Index it came from: kept alive (with its LMDB environment) while we are
        self.generation = state.generation
        self.n_docs = state.n_live
        self.n_deleted = state.n_deleted
        self.id_space = state.next_id
        self.segments: tuple[SegmentInfo, ...] = state.segments
        self._store = store
        self._txn = txn
        self._lock = threading.Lock()
        self._closed = False
        self._fields = None
        views = [
            SegmentView(
                info=info,
                readers=h.readers,
                ids=h.ids,
                deleted=h.deleted_mask(info.n_deleted, lambda i=info: store.deleted_bitmap(txn, i.name, i.n)),
            )
            for info, h in zip(state.segments, handles)
        ]
        segset = SegmentSet(views, state.next_id, state.generation)
        kinds = set(cache.components)
        self.dense = IndexDenseReader(segset, identity.dense_dim) if "dense" in kinds else None
        self.sparse = IndexSparseReader(segset, identity.sparse_width) if "sparse" in kinds else None
        self.multivec = IndexMultivecReader(segset, identity.multivec_dim) if "multivec" in kinds else None
        self.text = None  # the optional full-text BM25 component (m3search.indexes.text)
        if "text" in kinds:
            from m3search.indexes.text.reader import IndexTextReader

            self.text = IndexTextReader(segset, cache.components["text"].config)
        self._finalizer = weakref.finalize(self, _release, txn, cache, handles)

    # -- documents
    def docs(self, internal_ids: Sequence[int] | np.ndarray) -> list[Document]:
        """The stored records (id, text, title, metadata) of live documents, in the order asked."""
        ids = np.asarray(internal_ids, dtype=np.int64).ravel()
        out, missing = [], []
        with self._reading() as txn:
            for i in ids.tolist():
                rec = self._store.record(txn, i)
                if rec is None:
                    missing.append(i)
                out.append(rec)
        if missing:
            raise InputError(
                f"internal ids {missing[:5]}{' ...' if len(missing) > 5 else ''} are not live documents of "
                f"generation {self.generation} (no document record): take ids from this snapshot's own results "
                "(if they are, the document store is damaged: run `m3search check INDEX`)"
            )
        return out

    def internal_ids(self, ext_ids: Sequence[str]) -> np.ndarray:
        """(len(ext_ids),) int64 internal ids; -1 for ids not in this generation."""
        if isinstance(ext_ids, str):
            raise InputError("ext_ids must be a list of ids, not one string: wrap it as [id]")
        with self._reading() as txn:
            return self._store.lookup(txn, ext_ids)

    def fields(self) -> "FieldReader":
        """The metadata field index of this generation (bitmaps per field value), for filters."""
        if self._fields is None:
            self._fields = open_field_reader(self._store, self._txn, self._reading)
        return self._fields

    def iter_ids(self) -> Iterator[tuple[str, int]]:
        """(external id, internal id) of every live document, in internal id order (for exports)."""
        start = b""
        while True:
            with self._reading() as txn:
                cursor = txn.cursor(db=self._store.docs)
                pairs = []
                if cursor.set_range(start):
                    for (k, v), _ in zip(cursor.iternext(), range(_ITER_CHUNK)):
                        internal = int.from_bytes(k, "big")
                        pairs.append((record_ext_id(v, internal, self._store.path), internal))
            yield from pairs  # outside the lock: the caller may take its time between items
            if len(pairs) < _ITER_CHUNK:
                return
            start = int_key(pairs[-1][1] + 1)

    # -- lifetime
    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._finalizer()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Snapshot":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Snapshot(generation={self.generation}, n_docs={self.n_docs}, segments={len(self.segments)})"

    @contextlib.contextmanager
    def _reading(self) -> Iterator[lmdb.Transaction]:
        with self._lock:
            if self._closed:
                raise InputError("this snapshot is closed: take a new one with index.snapshot()")
            with guarded(self._store.path):
                yield self._txn


def _release(txn: lmdb.Transaction, cache: HandleCache, handles: list[SegmentHandle]) -> None:
    try:
        txn.abort()
    except lmdb.Error:  # the environment was closed first; the transaction went with it
        pass
    cache.release(handles)


def take_snapshot(store: DocStore, cache: HandleCache, identity: "EncoderIdentity", owner: object = None) -> Snapshot:
    """Pin the newest committed generation. If the writer removes a listed segment between our reading
    the segment list and pinning it (it can only do so after committing a newer list), read again."""
    for _ in range(_MAX_RETRIES):
        with guarded(store.path):
            txn = begin(store.env, buffers=False)
        try:
            state = store.state(txn)
            handles = cache.acquire(state.segments)
        except SegmentGone as gone:
            txn.abort()
            with guarded(store.path), begin(store.env) as fresh:
                latest = store.state(fresh)
            if gone.name in {s.name for s in latest.segments}:
                raise IndexFormatError(
                    f"segment folder {gone.path} is missing or incomplete (no lock file) although the last "
                    f"commit (generation {latest.generation}) lists it: the index is damaged; restore it from a copy"
                ) from None
            continue
        except BaseException:
            txn.abort()
            raise
        cache.set_current({s.name for s in state.segments})
        try:
            return Snapshot(store, txn, state, handles, cache, identity, owner)
        except BaseException:
            _release(txn, cache, handles)
            raise
    raise IndexFormatError(
        f"{store.path}: could not pin a committed generation in {_MAX_RETRIES} tries because a writer kept "
        "removing segments; try again"
    )
