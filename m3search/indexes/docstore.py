"""The document store `docs.lmdb/`: documents, id maps, and the committed state of the index.

One LMDB environment with four named databases, all values msgpack (no pickle), and every value but the
format record sealed with a CRC-32 (`seal` / `unseal`: 4 bytes little-endian, then the payload), checked
on every read, so a flipped bit in a text, an id map entry or a bitmap is reported, never served:

- `meta`:    b"format" -> {"format": "m3search.docstore", "version": 1};
             b"state"  -> the committed state (`CommitState`: generation, next internal id, segment list).
- `ext2int`: external id -> internal id (8-byte big-endian, sealed). Ids longer than LMDB's key limit are keyed by
             b"\\xff" + their BLAKE2b-256 digest (0xff never occurs in UTF-8, so the two kinds can't clash).
- `docs`:    internal id (8-byte big-endian, so keys sort by id) -> [external id, text, title, metadata].
             Only live documents have a record: a delete removes it in the same transaction.
- `deleted`: segment name -> its deletion bitmap (numpy packbits, little bit order).

Because every change of a commit goes into one write transaction, that transaction is the commit point.
A read transaction sees one committed generation for as long as it is open (LMDB's MVCC), which is how a
`Snapshot` keeps the documents of its generation while a writer goes on.

LMDB forbids opening one environment twice in a process, so environments are shared per folder through a
small reference-counted table (`open_env` / `release_env`).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

import lmdb
import msgpack
import numpy as np

from m3search.document import Document
from m3search.errors import IndexFormatError, InputError
from m3search.indexes.state import CommitState

DOCSTORE_FORMAT = "m3search.docstore"
DOCSTORE_VERSION = 2  # 2: sealed values (1: unsealed; no longer read)
DOCS_DIR = "docs.lmdb"

# Address space reserved for the map: twice the file (at least 256 MiB), doubled by the writer when a commit
# fills it (`grow_map`); readers adopt a map another process grew (`begin`). A fixed 1 TiB map kept every
# index from opening under `ulimit -v`.
MIN_MAP_SIZE = 256 << 20
MAX_READERS = 1024
_MAX_PLAIN_KEY = 400  # LMDB's default key limit is 511 bytes

DB_META, DB_EXT2INT, DB_DOCS, DB_DELETED = b"meta", b"ext2int", b"docs", b"deleted"
KEY_FORMAT, KEY_STATE = b"format", b"state"


# The store gives back the one document type; the old name stays as an alias.
DocRecord = Document


def ext_key(ext_id: str) -> bytes:
    raw = ext_id.encode("utf-8")
    if len(raw) <= _MAX_PLAIN_KEY:
        return raw
    return b"\xff" + hashlib.blake2b(raw, digest_size=32).digest()


def int_key(internal_id: int) -> bytes:
    return int(internal_id).to_bytes(8, "big")


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException, RecursionError) as e:
        raise IndexFormatError(f"{what} in the document store is not valid msgpack ({e}); the index is damaged") from e


def seal(data: bytes) -> bytes:
    """Prefix `data` with its CRC-32 (checked by `unseal` on every read)."""
    return zlib.crc32(data).to_bytes(4, "little") + data


def unseal(raw: bytes, what: str, where: Path | str = "") -> bytes:
    raw = bytes(raw)
    if len(raw) < 4 or zlib.crc32(raw[4:]) != int.from_bytes(raw[:4], "little"):
        raise IndexFormatError(
            f"{where}: {what} fails its checksum: the document store is damaged; restore the index from a copy"
            " (`m3search check INDEX` lists every damaged record)"
        )
    return raw[4:]


def storage_error(path: Path | str, e: BaseException) -> IndexFormatError:
    """One clear error for whatever LMDB raises on a damaged or unreadable file."""
    return IndexFormatError(
        f"{path}: the document store can't be read ({type(e).__name__}: {e}); the index is damaged: restore it "
        "from a copy (`m3search check INDEX` reports what is readable)"
    )


@contextlib.contextmanager
def guarded(path: Path | str) -> Iterator[None]:
    """Turn LMDB errors raised inside the block into IndexFormatError naming the store."""
    try:
        yield
    except lmdb.Error as e:
        raise storage_error(path, e) from e


def pack_record(ext_id: str, doc: Document | None) -> bytes:
    fields = [None, None, None] if doc is None else [doc.text, doc.title, doc.metadata]
    try:
        return seal(pack([ext_id, *fields]))
    except (TypeError, ValueError, OverflowError) as e:
        raise InputError(
            f"document {ext_id!r}: its fields can't be stored ({e}); metadata must be JSON-like "
            "(dicts with string keys, lists, strings, numbers, booleans, None)"
        ) from None


def unpack_record(data: bytes, internal_id: int, where: Path | str = "") -> Document:
    data = unseal(data, f"document record {internal_id}", where)
    rec = unpack(data, f"document record {internal_id}")
    if (not isinstance(rec, list) or len(rec) != 4 or not isinstance(rec[0], str)
            or not all(v is None or isinstance(v, str) for v in rec[1:3])):
        raise IndexFormatError(f"{where}: document record {internal_id} has an unknown layout; the index is damaged")
    return Document(*rec)


def record_ext_id(data: bytes, internal_id: int = -1, where: Path | str = "") -> str:
    """The external id of a packed record (checked like any read)."""
    return unpack_record(data, internal_id, where).id


def id_value(internal_id: int) -> bytes:
    """The ext2int value of an internal id."""
    return seal(int_key(internal_id))


# -- environments shared per folder ------------------------------------------------------------------

_envs: dict[tuple[int, int], list] = {}  # (st_dev, st_ino) of docs.lmdb/ -> [env, refcount]
# Re-entrant: a garbage-collected Index can run release_env from inside open_env on the same thread.
_envs_lock = threading.RLock()


def open_env(index_dir: Path, create: bool = False) -> lmdb.Environment:
    """The process's environment for `index_dir/docs.lmdb`, opened on first use; pair with `release_env`."""
    path = index_dir / DOCS_DIR
    if create:
        path.mkdir(exist_ok=True)
    elif not path.is_dir():
        raise IndexFormatError(f"{path} is missing: the index's document store is gone; restore it from a copy")
    st = path.stat()
    key = (st.st_dev, st.st_ino)
    with _envs_lock:
        while True:
            entry = _envs.get(key)
            if entry is None:
                env = _open_new_env(path, create)
                entry = _envs[key] = [env, 0]
            entry[1] += 1
            # A collection between the lookup and the count may have released this entry to zero and
            # closed it; our count now pins whatever is still registered, so check it is the same one.
            if _envs.get(key) is entry:
                return entry[0]


def release_env(env: lmdb.Environment) -> None:
    with _envs_lock:
        for key, entry in list(_envs.items()):
            if entry[0] is env:
                entry[1] -= 1
                if entry[1] == 0:
                    del _envs[key]
                    env.close()
                return


def _open_new_env(path: Path, create: bool) -> lmdb.Environment:
    data_file = path / "data.mdb"
    if not create and not data_file.is_file():
        raise IndexFormatError(f"{data_file} is missing: the document store is gone; restore the index from a copy")
    used = data_file.stat().st_size if data_file.exists() else 0
    options = dict(map_size=max(MIN_MAP_SIZE, -(-2 * used // (1 << 20)) << 20), subdir=True, max_dbs=8, max_readers=MAX_READERS, create=create, readahead=False)
    try:
        # Opened read-write even for readers: the environment is shared with any writer in this process.
        # Readers never begin a write transaction.
        env = lmdb.open(str(path), **options)
    except lmdb.Error as e:
        if create or os.access(data_file, os.W_OK):
            raise IndexFormatError(
                f"{path}: the document store can't be opened ({e}); restore the index from a copy"
            ) from e
        try:  # a read-only copy of an index (e.g. on a read-only mount)
            env = lmdb.open(str(path), readonly=True, **options)
        except lmdb.Error as e2:
            raise IndexFormatError(f"{path}: the document store can't be opened ({e2})") from e2
    check_not_truncated(env, data_file)
    if not env.flags().get("readonly"):
        env.reader_check()  # free the reader slots of processes that were killed
    return env


def check_not_truncated(env: lmdb.Environment, data_file: Path) -> None:
    """A truncated data.mdb would make LMDB read past the end of its map (SIGBUS): refuse it up front."""
    need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    have = data_file.stat().st_size
    if have < need:
        env.close()
        raise IndexFormatError(
            f"{data_file} has {have} bytes but its last committed page ends at byte {need}: the file is "
            "truncated; restore the index from a copy"
        )


def begin(env: lmdb.Environment, **kwargs) -> lmdb.Transaction:
    """env.begin(), adopting the larger map another process grew the file to (MDB_MAP_RESIZED)."""
    for _ in range(8):
        try:
            return env.begin(**kwargs)
        except lmdb.MapResizedError:
            env.set_mapsize(0)  # 0: take the size the file now has
    return env.begin(**kwargs)


def grow_map(env: lmdb.Environment) -> None:
    """Double the map after a commit found it full (LMDB raised MapFullError and aborted it)."""
    env.set_mapsize(2 * int(env.info()["map_size"]))


# -- the store ---------------------------------------------------------------------------------------


class DocStore:
    """Typed access to the four databases. Methods take the transaction so callers decide its scope."""

    def __init__(self, env: lmdb.Environment, path: Path):
        self.env = env
        self.path = path
        self.meta = env.open_db(DB_META)
        self.ext2int = env.open_db(DB_EXT2INT)
        self.docs = env.open_db(DB_DOCS)
        self.deleted = env.open_db(DB_DELETED)
        self._last_state: tuple[bytes, CommitState] | None = None  # (sealed record, parsed): see state()
        # the metadata field index (m3search/indexes/fields.py); opened here, before any read transaction
        # begins, because LMDB table handles opened later are not valid in older transactions
        try:
            self.fields = env.open_db(b"fields", create=not env.flags().get("readonly"))
        except lmdb.NotFoundError:
            self.fields = None

    @classmethod
    def initialize(cls, env: lmdb.Environment, path: Path, state: CommitState) -> "DocStore":
        store = cls(env, path)
        with begin(env, write=True) as txn:
            txn.put(KEY_FORMAT, pack({"format": DOCSTORE_FORMAT, "version": DOCSTORE_VERSION}), db=store.meta)
            txn.put(KEY_STATE, seal(pack(state.to_dict())), db=store.meta)
        return store

    @classmethod
    def open(cls, env: lmdb.Environment, path: Path) -> "DocStore":
        try:
            with begin(env) as txn:
                names = {k for k, _ in txn.cursor()}
        except lmdb.Error as e:
            raise IndexFormatError(
                f"{path}: the document store can't be read ({e}); restore the index from a copy"
            ) from e
        if DB_META not in names:
            raise IndexFormatError(
                f"{path}: the document store holds no m3search data (no '{DB_META.decode()}' table); "
                "restore the index from a copy"
            )
        with guarded(path):
            store = cls(env, path)
            with begin(env) as txn:
                raw = txn.get(KEY_FORMAT, db=store.meta)
        fmt = unpack(raw, "the format record") if raw is not None else None
        if not isinstance(fmt, dict) or fmt.get("format") != DOCSTORE_FORMAT:
            raise IndexFormatError(f"{path}: format record {fmt!r} is not {DOCSTORE_FORMAT!r}")
        if isinstance(fmt.get("version"), int) and fmt["version"] < DOCSTORE_VERSION:
            raise IndexFormatError(
                f"{path}: document store version {fmt['version']} has no record checksums; this m3search reads "
                f"version {DOCSTORE_VERSION}: rebuild the index"
            )
        if not isinstance(fmt.get("version"), int) or fmt["version"] > DOCSTORE_VERSION:
            raise IndexFormatError(
                f"{path}: document store version {fmt.get('version')!r} is newer than this m3search reads "
                f"({DOCSTORE_VERSION}); upgrade m3search"
            )
        return store

    # -- reads
    def state(self, txn: lmdb.Transaction) -> CommitState:
        with guarded(self.path):
            raw = txn.get(KEY_STATE, db=self.meta)
        if raw is None:
            raise IndexFormatError(f"{self.path}: the committed state record is missing; restore the index from a copy")
        raw = bytes(raw)
        last = self._last_state
        if last is not None and last[0] == raw:
            # the record checked and parsed before (every search takes a snapshot: parsing costs ~8 us per
            # segment); CommitState is immutable, so sharing it is safe
            return last[1]
        state = CommitState.from_dict(unpack(unseal(raw, "the committed state", self.path), "the committed state"),
                                      where=str(self.path))
        self._last_state = (raw, state)
        return state

    def committed_generation(self) -> int:
        """The newest committed generation, read in a short transaction of its own (cheap: one key)."""
        with guarded(self.path), begin(self.env) as txn:
            return self.state(txn).generation

    def lookup(self, txn: lmdb.Transaction, ext_ids: Iterable[str]) -> np.ndarray:
        out = []
        with guarded(self.path):
            for ext in ext_ids:
                v = txn.get(ext_key(ext), db=self.ext2int)
                out.append(int.from_bytes(unseal(v, f"the id map entry of {ext!r}", self.path), "big")
                           if v is not None else -1)
        return np.asarray(out, dtype=np.int64)

    def record(self, txn: lmdb.Transaction, internal_id: int) -> Document | None:
        with guarded(self.path):
            raw = txn.get(int_key(internal_id), db=self.docs)
        return None if raw is None else unpack_record(raw, internal_id, self.path)

    def deleted_bitmap(self, txn: lmdb.Transaction, name: str, n: int) -> np.ndarray:
        """(n,) bool mask of deleted local ids of segment `name` (all False when it has no bitmap)."""
        with guarded(self.path):
            raw = txn.get(name.encode(), db=self.deleted)
        if raw is None:
            return np.zeros(n, dtype=bool)
        raw = unseal(raw, f"the deletion bitmap of segment {name}", self.path)
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n, bitorder="little")
        if len(bits) != n:
            raise IndexFormatError(
                f"{self.path}: the deletion bitmap of segment {name} is too short; the index is damaged"
            )
        return bits.astype(bool)

    def nbytes(self) -> int:
        return os.path.getsize(self.path / "data.mdb")

    # -- writes (inside the commit transaction)
    def put_bitmap(self, txn: lmdb.Transaction, name: str, mask: np.ndarray) -> None:
        if mask.any():
            txn.put(name.encode(), seal(np.packbits(mask, bitorder="little").tobytes()), db=self.deleted)
        else:
            txn.delete(name.encode(), db=self.deleted)

    def put_state(self, txn: lmdb.Transaction, state: CommitState) -> None:
        txn.put(KEY_STATE, seal(pack(state.to_dict())), db=self.meta)
