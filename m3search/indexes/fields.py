"""The metadata field index: one roaring bitmap of internal ids per (field, value), in `docs.lmdb/`.

It lives in its own LMDB table (`fields`) of the document store, so the writer updates it in the same
transaction that commits the documents: a filter always sees exactly the documents of its generation.

Keys (the value is a portable-format roaring bitmap of internal ids, `pyroaring.BitMap.serialize`):
- `field \\x00 tag value`: the documents whose `field` holds `value` (a list holds each of its elements).
  Tags: `N` null, `B` bool, `F` number (float64, encoded so byte order is numeric order, for range scans),
  `S` string (UTF-8), `H` a string too long for an LMDB key (its BLAKE2b digest; equality only).
- `\\xff field`: the documents that have `field` at all ($exists).
- `\\xfd`: the table's format record.
Field names are metadata keys; nested objects are flattened with dots (`{"a": {"b": 1}}` is field `a.b`).
0xfd and 0xff never occur in UTF-8, so the three kinds of keys can't clash.

Internal ids are never reused and merges keep them, so merges leave the table alone; deletes remove a
document's ids using its stored record, read in the commit transaction before the record goes.
An index written before this table existed gets it filled by its next writer; until then readers build
the same bitmaps in memory from the records (`MemoryFieldReader`).
"""
from __future__ import annotations

import bisect
import hashlib
import math
import struct
from typing import Any, Callable, ContextManager, Iterable, Iterator, Mapping

import lmdb
from pyroaring import BitMap

from m3search.errors import IndexFormatError, InputError
from m3search.indexes.docstore import DocStore, pack, seal, unpack, unpack_record, unseal

FIELDS_FORMAT = "m3search.fieldindex"
FIELDS_VERSION = 1
DB_FIELDS = b"fields"
KEY_FORMAT = b"\xfd"
EXISTS = b"\xff"
SEP = b"\x00"
MAX_ID = (1 << 32) - 1  # roaring bitmaps hold 32-bit ids
_MAX_STRING_KEY = 400
Scalar = str | int | float | bool | None


# -- keys ---------------------------------------------------------------------------------------------

def number_bytes(x: float) -> bytes:
    """8 bytes whose unsigned byte order is the numeric order of float64 `x` (not NaN)."""
    b = bytearray(struct.pack(">d", float(x) + 0.0))  # + 0.0 turns -0.0 into 0.0
    if b[0] & 0x80:
        return bytes(~v & 0xFF for v in b)
    b[0] |= 0x80
    return bytes(b)


def value_key(field: str, value: Scalar) -> bytes:
    """The key of (field, value); `value` is a JSON scalar (numbers compare as float64)."""
    prefix = field.encode("utf-8") + SEP
    if value is None:
        return prefix + b"N"
    if isinstance(value, bool):
        return prefix + b"B" + (b"\x01" if value else b"\x00")
    if isinstance(value, (int, float)):
        return prefix + b"F" + number_bytes(value)
    raw = value.encode("utf-8")
    if len(prefix) + len(raw) > _MAX_STRING_KEY:
        return prefix + b"H" + hashlib.blake2b(raw, digest_size=32).digest()
    return prefix + b"S" + raw


def exists_key(field: str) -> bytes:
    return EXISTS + field.encode("utf-8")


def is_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isnan(value)
    return value is None or isinstance(value, (str, bool, int))


def flatten(metadata: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted field, value) of a metadata object; nested objects are walked, lists are values."""
    if not isinstance(metadata, Mapping):
        return
    for key, value in metadata.items():
        if not isinstance(key, str) or "\x00" in key:
            continue
        name = prefix + key
        if isinstance(value, Mapping):
            yield from flatten(value, name + ".")
        else:
            yield name, value


def field_values(value: Any) -> list[Scalar]:
    """The scalars a field value is matched by: itself, or each scalar element of a list."""
    if isinstance(value, (list, tuple)):
        return [v for v in value if is_scalar(v)]
    return [value] if is_scalar(value) else []


def entry_keys(metadata: Any) -> set[bytes]:
    """Every key a document with this metadata belongs to."""
    keys = set()
    for name, value in flatten(metadata):
        keys.add(exists_key(name))
        for v in field_values(value):
            keys.add(value_key(name, v))
    return keys


# -- reading -------------------------------------------------------------------------------------------

def load_bitmap(raw: bytes, key: bytes) -> BitMap:
    """A stored bitmap, its checksum verified first (a damaged one is an error, never a wrong filter)."""
    data = unseal(raw, f"the field index entry {key!r}")
    try:
        return BitMap.deserialize(data)
    except Exception as e:  # pyroaring raises ValueError/RuntimeError on malformed input
        raise IndexFormatError(f"the field index entry {key!r} can't be read ({e}); the index is damaged") from e


class FieldReader:
    """Bitmaps of one committed generation. `fields` is the set of field names ever indexed."""

    fields: frozenset[str]

    def equal(self, field: str, value: Scalar) -> BitMap:
        raise NotImplementedError

    def between(self, field: str, lo: float | None, hi: float | None, lo_incl: bool, hi_incl: bool) -> BitMap:
        raise NotImplementedError

    def exists(self, field: str) -> BitMap:
        raise NotImplementedError


def _number_range(field: str, lo, hi, lo_incl, hi_incl) -> tuple[bytes, bytes, bytes | None, bytes | None]:
    """(start key, end key (exclusive bound of the tag), key to skip at the start, key to stop at)."""
    prefix = field.encode("utf-8") + SEP + b"F"
    start = prefix + (number_bytes(lo) if lo is not None else b"")
    end = prefix + b"\xff" * 9
    skip = start if lo is not None and not lo_incl else None
    stop = prefix + number_bytes(hi) if hi is not None else None
    return start, end, skip, stop


def _in_range(key: bytes, end: bytes, skip, stop, hi_incl: bool) -> int:
    """-1: skip this key, 0: take it, 1: past the range."""
    if key >= end:
        return 1
    if stop is not None and (key > stop or (key == stop and not hi_incl)):
        return 1
    if skip is not None and key == skip:
        return -1
    return 0


class LmdbFieldReader(FieldReader):
    """Reads the `fields` table through a snapshot's transaction (`reading()` yields it under its lock)."""

    def __init__(self, db, reading: Callable[[], ContextManager[lmdb.Transaction]]):
        self._db = db
        self._reading = reading
        with reading() as txn:
            cursor = txn.cursor(db=db)
            names = []
            if cursor.set_range(EXISTS):
                for key in cursor.iternext(values=False):
                    names.append(bytes(key[1:]).decode("utf-8"))
        self.fields = frozenset(names)

    def _get(self, key: bytes) -> BitMap:
        with self._reading() as txn:
            raw = txn.get(key, db=self._db)
        return load_bitmap(raw, key) if raw is not None else BitMap()

    def equal(self, field, value):
        return self._get(value_key(field, value))

    def exists(self, field):
        return self._get(exists_key(field))

    def between(self, field, lo, hi, lo_incl, hi_incl):
        start, end, skip, stop = _number_range(field, lo, hi, lo_incl, hi_incl)
        parts = []
        with self._reading() as txn:
            cursor = txn.cursor(db=self._db)
            if cursor.set_range(start):
                for key, raw in cursor.iternext():
                    where = _in_range(bytes(key), end, skip, stop, hi_incl)
                    if where > 0:
                        break
                    if where == 0:
                        parts.append(load_bitmap(raw, bytes(key)))
        return BitMap.union(*parts) if parts else BitMap()


class MemoryFieldReader(FieldReader):
    """The same bitmaps built in memory from documents' metadata (indexes written before the table)."""

    def __init__(self, records: Iterable[tuple[int, Any]]):
        table: dict[bytes, BitMap] = {}
        for internal_id, metadata in records:
            for key in entry_keys(metadata):
                table.setdefault(key, BitMap()).add(internal_id)
        self._table = table
        self._keys = sorted(table)
        self.fields = frozenset(k[1:].decode("utf-8") for k in table if k[:1] == EXISTS)

    def equal(self, field, value):
        return self._table.get(value_key(field, value), BitMap())

    def exists(self, field):
        return self._table.get(exists_key(field), BitMap())

    def between(self, field, lo, hi, lo_incl, hi_incl):
        start, end, skip, stop = _number_range(field, lo, hi, lo_incl, hi_incl)
        parts = []
        for key in self._keys[bisect.bisect_left(self._keys, start):]:
            where = _in_range(key, end, skip, stop, hi_incl)
            if where > 0:
                break
            if where == 0:
                parts.append(self._table[key])
        return BitMap.union(*parts) if parts else BitMap()


def fields_db(store: DocStore):
    """The `fields` table's handle, opened with the store (None on a read-only copy that lacks it)."""
    return getattr(store, "fields", None)


def open_reader(store: DocStore, txn: lmdb.Transaction,
                reading: Callable[[], ContextManager[lmdb.Transaction]]) -> FieldReader:
    """A reader over the snapshot's transaction: the table if this generation has one, else in memory."""
    db = fields_db(store)
    if db is not None:
        with reading() as t:
            has_table = t.get(KEY_FORMAT, db=db) is not None
        if has_table:
            return LmdbFieldReader(db, reading)
    with reading() as t:
        records = [(int.from_bytes(k, "big"), unpack_record(v, int.from_bytes(k, "big")).metadata)
                   for k, v in t.cursor(db=store.docs)]
    return MemoryFieldReader(records)


# -- writing (inside the writer's commit transaction) --------------------------------------------------

def ensure_table(store: DocStore) -> None:
    """Create the table and fill it from the stored records if this index predates it (writer only)."""
    db = fields_db(store)
    if db is None:
        return
    with store.env.begin(write=True) as txn:
        raw = txn.get(KEY_FORMAT, db=db)
        if raw is not None:
            fmt = unpack(unseal(raw, "the field index's format record", store.path), "the field index's format record")
            if not isinstance(fmt, dict) or fmt.get("format") != FIELDS_FORMAT:
                raise IndexFormatError(f"{store.path}: field index format record {fmt!r} is not {FIELDS_FORMAT!r}")
            if not isinstance(fmt.get("version"), int) or fmt["version"] > FIELDS_VERSION:
                raise IndexFormatError(
                    f"{store.path}: field index version {fmt.get('version')!r} is newer than this m3search reads "
                    f"({FIELDS_VERSION}); upgrade m3search")
            return
        added = {int.from_bytes(k, "big"): bytes(v) for k, v in txn.cursor(db=store.docs)}
        _apply(txn, db, added, {})
        txn.put(KEY_FORMAT, seal(pack({"format": FIELDS_FORMAT, "version": FIELDS_VERSION})), db=db)


def update(txn: lmdb.Transaction, store: DocStore, added: Mapping[int, bytes], deleted: Iterable[int]) -> None:
    """Index the `added` records (internal id -> packed record) and un-index the committed documents
    `deleted` (their records are read here, so call this before they are removed)."""
    db = fields_db(store)
    if db is None:
        return
    old = {}
    for internal in deleted:
        raw = txn.get(int(internal).to_bytes(8, "big"), db=store.docs)
        if raw is not None:
            old[int(internal)] = bytes(raw)
    _apply(txn, db, added, old)


def _apply(txn, db, added: Mapping[int, bytes], removed: Mapping[int, bytes]) -> None:
    plus: dict[bytes, BitMap] = {}
    minus: dict[bytes, BitMap] = {}
    for target, records in ((plus, added), (minus, removed)):
        for internal, raw in records.items():
            if internal > MAX_ID:
                raise InputError(f"internal id {internal} is beyond the field index's 32-bit range")
            for key in entry_keys(unpack_record(raw, internal).metadata):
                target.setdefault(key, BitMap()).add(internal)
    for key in set(plus) | set(minus):
        raw = txn.get(key, db=db)
        bm = load_bitmap(raw, key) if raw is not None else BitMap()
        if key in minus:
            bm -= minus[key]
        if key in plus:
            bm |= plus[key]
        if bm:
            bm.run_optimize()
            txn.put(key, seal(bm.serialize()), db=db)
        elif raw is not None and key[:1] != EXISTS:
            txn.delete(key, db=db)
        elif raw is not None:
            txn.put(key, seal(bm.serialize()), db=db)  # keep the field known (an empty $exists bitmap)
