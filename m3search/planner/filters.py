"""Metadata filters: parsed once at the edge (API, CLI, server) into one validated `Filter`, evaluated per
snapshot into a bool mask over the index's internal id space, which the planner hands to every candidate
source (as their `deleted=` mask, negated), so filtering happens inside the index searches.

The syntax is JSON-shaped like Chroma's and MongoDB's `where`:

    {"lang": "de"}                                  equality (a list field matches if any element does)
    {"year": {"$gte": 2020, "$lt": 2024}}           $eq $ne $in $nin $gt $gte $lt $lte $exists
    {"$and": [...]}, {"$or": [...]}, {"$not": {...}}
    {"$id": "doc-7"}, {"$id": {"$in": ["a", "b"]}}  document ids ($eq $ne $in $nin)

Several keys in one object are ANDed. Nested metadata objects are reached with dotted names (`"a.b"`).
`$ne` / `$nin` also match documents that lack the field (as in MongoDB); range operators take numbers
only and match numeric values only. Null is a value: `{"f": null}` matches documents whose `f` is null.

>>> f = Filter.parse({"lang": {"$in": ["de", "fr"]}, "year": {"$gte": 2020}})
>>> f.matches("x", {"lang": "de", "year": 2021}), f.matches("y", {"lang": "de", "year": 2019})
(True, False)
>>> Filter.parse({"year": {"$gt": "2020"}})
Traceback (most recent call last):
...
m3search.errors.InputError: filter.year.$gt: takes a number, got the string '2020'
"""
from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from pyroaring import BitMap

from m3search.errors import InputError
from m3search.indexes.fields import field_values, flatten, is_scalar

if TYPE_CHECKING:  # pragma: no cover
    from m3search.indexes.fields import FieldReader

COMPARISONS = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists")
LOGICAL = ("$and", "$or", "$not")
ID_FIELD = "$id"
_RANGE = {"$gt": (True, False), "$gte": (True, True), "$lt": (False, False), "$lte": (False, True)}
MAX_FILTER_BYTES = 1 << 20


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"{type(value).__name__} {value!r}"


# -- the parsed tree ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Node:
    path: str  # where in the filter this came from, for errors

    def bitmap(self, ctx: "_Context") -> BitMap:
        raise NotImplementedError

    def matches(self, docid: str, fields: Mapping[str, Any]) -> bool:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class _And(_Node):
    children: tuple[_Node, ...]

    def bitmap(self, ctx):
        out = None
        for c in sorted(self.children, key=lambda c: isinstance(c, (_Not, _Or))):  # selective parts first
            bm = c.bitmap(ctx)
            out = bm if out is None else out & bm
            if not out:
                break
        return out if out is not None else ctx.universe()

    def matches(self, docid, fields):
        return all(c.matches(docid, fields) for c in self.children)


@dataclasses.dataclass(frozen=True)
class _Or(_Node):
    children: tuple[_Node, ...]

    def bitmap(self, ctx):
        return BitMap.union(*(c.bitmap(ctx) for c in self.children))

    def matches(self, docid, fields):
        return any(c.matches(docid, fields) for c in self.children)


@dataclasses.dataclass(frozen=True)
class _Not(_Node):
    child: _Node

    def bitmap(self, ctx):
        return ctx.universe() - self.child.bitmap(ctx)

    def matches(self, docid, fields):
        return not self.child.matches(docid, fields)


@dataclasses.dataclass(frozen=True)
class _Compare(_Node):
    field: str
    op: str
    value: Any  # a scalar, a tuple of scalars ($in/$nin), or a bool ($exists)

    def bitmap(self, ctx):
        reader = ctx.reader()
        if self.field not in reader.fields:
            known = ", ".join(sorted(reader.fields)[:20]) or "none"
            raise InputError(
                f"{self.path}: unknown metadata field {self.field!r} (fields in this index: {known}); "
                "check the name (nested objects use dotted names, document ids use $id)")
        op, v = self.op, self.value
        if op == "$eq":
            return reader.equal(self.field, v)
        if op == "$in":
            return BitMap.union(BitMap(), *(reader.equal(self.field, x) for x in v))
        if op in ("$ne", "$nin"):
            hit = reader.equal(self.field, v) if op == "$ne" else BitMap.union(BitMap(), *(reader.equal(self.field, x) for x in v))
            return ctx.universe() - hit
        if op == "$exists":
            return reader.exists(self.field) if v else ctx.universe() - reader.exists(self.field)
        lo_side, incl = _RANGE[op]
        if lo_side:
            return reader.between(self.field, v, None, incl, False)
        return reader.between(self.field, None, v, False, incl)

    def matches(self, docid, fields):
        op, v = self.op, self.value
        if op == "$exists":
            return (self.field in fields) == v
        values = field_values(fields[self.field]) if self.field in fields else []
        if op == "$eq":
            return any(_same(x, v) for x in values)
        if op == "$ne":
            return not any(_same(x, v) for x in values)
        if op == "$in":
            return any(_same(x, y) for x in values for y in v)
        if op == "$nin":
            return not any(_same(x, y) for x in values for y in v)
        nums = [float(x) for x in values if isinstance(x, (int, float)) and not isinstance(x, bool)]
        return any(_compare(x, op, float(v)) for x in nums)


@dataclasses.dataclass(frozen=True)
class _Ids(_Node):
    op: str  # $in or $nin
    ids: tuple[str, ...]

    def bitmap(self, ctx):
        found = ctx.internal_ids(self.ids)
        bm = BitMap(found[found >= 0].tolist())
        return bm if self.op == "$in" else ctx.universe() - bm

    def matches(self, docid, fields):
        return (docid in self.ids) == (self.op == "$in")


def _same(a: Any, b: Any) -> bool:
    """Equality as the index keys see it: bools, numbers, strings and null are distinct kinds."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return type(a) is type(b) and a == b


def _compare(x: float, op: str, v: float) -> bool:
    return {"$gt": x > v, "$gte": x >= v, "$lt": x < v, "$lte": x <= v}[op]


class _Context:
    """What evaluating a filter against one snapshot needs, computed lazily and once."""

    def __init__(self, snapshot: Any):
        self.snapshot = snapshot
        self._reader = None

    def reader(self) -> "FieldReader":
        if self._reader is None:
            self._reader = self.snapshot.fields()
        return self._reader

    def universe(self) -> BitMap:
        bm = BitMap()
        bm.add_range(0, int(self.snapshot.id_space))
        return bm

    def internal_ids(self, ids: Sequence[str]) -> np.ndarray:
        return np.asarray(self.snapshot.internal_ids(list(ids)), dtype=np.int64)


# -- parsing --------------------------------------------------------------------------------------------

class Filter:
    """A parsed, validated filter. `Filter.parse(obj)` raises InputError naming the bad part."""

    def __init__(self, root: _Node, source: Any):
        self._root = root
        self.source = source  # the JSON it was parsed from (what a client sends)

    @classmethod
    def parse(cls, obj: Any, where: str = "filter") -> "Filter | None":
        """None for None or {} (no filter); a Filter for a filter object, or its JSON text."""
        if obj is None or isinstance(obj, Filter):
            return obj
        if isinstance(obj, (str, bytes)):
            if len(obj) > MAX_FILTER_BYTES:
                raise InputError(f"{where}: longer than {MAX_FILTER_BYTES} bytes")
            try:
                obj = json.loads(obj)
            except json.JSONDecodeError as e:
                raise InputError(f"{where}: not valid JSON ({e.msg} at position {e.pos}); give a JSON object "
                                 'such as {"lang": "de"}') from None
        if not isinstance(obj, Mapping):
            raise InputError(f"{where}: must be an object such as {{\"lang\": \"de\"}}, got {_describe(obj)}")
        if not obj:
            return None
        return cls(_parse_object(obj, where), obj)

    def matches(self, docid: str, metadata: Any) -> bool:
        """Whether one document passes (the reference semantics the bitmaps implement)."""
        return self._root.matches(docid, dict(flatten(metadata)))

    def bitmap(self, snapshot: Any) -> BitMap:
        """Internal ids of the snapshot's id space that pass (deleted ones may be included)."""
        return self._root.bitmap(_Context(snapshot))

    def mask(self, snapshot: Any) -> np.ndarray:
        """(snapshot.id_space,) bool: True where the document passes."""
        out = np.zeros(int(snapshot.id_space), dtype=bool)
        ids = np.frombuffer(self.bitmap(snapshot).to_array(), dtype=np.uint32)
        out[ids[ids < len(out)]] = True
        return out

    def to_json(self) -> Any:
        return self.source

    def __repr__(self) -> str:
        return f"Filter({json.dumps(self.source, ensure_ascii=False)})"


def _parse_object(obj: Mapping, where: str) -> _Node:
    parts = []
    for key, value in obj.items():
        if not isinstance(key, str):
            raise InputError(f"{where}: keys must be strings, got {key!r}")
        path = f"{where}.{key}"
        if key in ("$and", "$or"):
            if not isinstance(value, (list, tuple)) or not value:
                raise InputError(f"{path}: takes a non-empty list of filters, got {_describe(value)}")
            children = []
            for i, item in enumerate(value):
                if not isinstance(item, Mapping) or not item:
                    raise InputError(f"{path}[{i}]: must be a non-empty filter object, got {_describe(item)}")
                children.append(_parse_object(item, f"{path}[{i}]"))
            parts.append((_And if key == "$and" else _Or)(path, tuple(children)))
        elif key == "$not":
            if not isinstance(value, Mapping) or not value:
                raise InputError(f"{path}: takes a non-empty filter object, got {_describe(value)}")
            parts.append(_Not(path, _parse_object(value, path)))
        elif key == ID_FIELD:
            parts.append(_parse_ids(value, path))
        elif key.startswith("$"):
            raise InputError(f"{path}: unknown operator {key!r}; at this level use $and, $or, $not, $id or a "
                             "field name")
        elif not key or "\x00" in key:
            raise InputError(f"{path}: field names must be non-empty and free of NUL characters")
        else:
            parts.extend(_parse_field(key, value, path))
    return parts[0] if len(parts) == 1 else _And(where, tuple(parts))


def _parse_field(field: str, value: Any, path: str) -> list[_Node]:
    if not isinstance(value, Mapping):
        if isinstance(value, (list, tuple)):
            raise InputError(f"{path}: a list can't be matched literally; use {{\"$in\": [...]}} to match any of "
                             "its values")
        return [_Compare(path, field, "$eq", _scalar(value, path))]
    if not value:
        raise InputError(f"{path}: empty object; give an operator such as {{\"$eq\": ...}}")
    out = []
    for op, arg in value.items():
        opath = f"{path}.{op}"
        if not isinstance(op, str) or not op.startswith("$"):
            raise InputError(f"{opath}: nested objects are not matched literally; use the dotted name "
                             f"{field}.{op!s} or an operator ({', '.join(COMPARISONS)})")
        if op not in COMPARISONS:
            raise InputError(f"{opath}: unknown operator {op!r}; choose one of {', '.join(COMPARISONS)}")
        if op in ("$eq", "$ne"):
            out.append(_Compare(opath, field, op, _scalar(arg, opath)))
        elif op in ("$in", "$nin"):
            if not isinstance(arg, (list, tuple)):
                raise InputError(f"{opath}: takes a list of values, got {_describe(arg)}")
            out.append(_Compare(opath, field, op, tuple(_scalar(x, f"{opath}[{i}]") for i, x in enumerate(arg))))
        elif op == "$exists":
            if not isinstance(arg, bool):
                raise InputError(f"{opath}: takes true or false, got {_describe(arg)}")
            out.append(_Compare(opath, field, op, arg))
        else:
            if isinstance(arg, bool) or not isinstance(arg, (int, float)) or not is_scalar(arg):
                raise InputError(f"{opath}: takes a number, got {_describe(arg)}")
            out.append(_Compare(opath, field, op, arg))
    return out


def _scalar(value: Any, path: str) -> Any:
    if not is_scalar(value):
        raise InputError(f"{path}: takes a string, number, boolean or null, got {_describe(value)}")
    return value


def _parse_ids(value: Any, path: str) -> _Node:
    if isinstance(value, str):
        return _Ids(path, "$in", (value,))
    if not isinstance(value, Mapping) or len(value) != 1:
        raise InputError(f"{path}: takes an id or one of {{\"$eq\"|\"$ne\"|\"$in\"|\"$nin\": ...}}, "
                         f"got {_describe(value)}")
    op, arg = next(iter(value.items()))
    opath = f"{path}.{op}"
    if op in ("$eq", "$ne"):
        if not isinstance(arg, str):
            raise InputError(f"{opath}: takes a document id (a string), got {_describe(arg)}")
        return _Ids(opath, "$in" if op == "$eq" else "$nin", (arg,))
    if op in ("$in", "$nin"):
        if not isinstance(arg, (list, tuple)) or not all(isinstance(x, str) for x in arg):
            raise InputError(f"{opath}: takes a list of document ids (strings), got {_describe(arg)}")
        return _Ids(opath, op, tuple(arg))
    raise InputError(f"{opath}: unknown operator for document ids; choose $eq, $ne, $in or $nin")
