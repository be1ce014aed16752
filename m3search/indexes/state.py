"""The committed state of an index: generation, id counter, segment list. Stored in the document store.

Internal ids are global int64s handed out in increasing order and never reused. A freshly built segment
covers the contiguous range [lo, lo + n). A merged segment holds the surviving documents of adjacent
segments, so its ids are an increasing subset of [lo, hi) listed in its `ids.npy`; ids stay stable across
merges, so the document store is never rewritten by a merge. Segment ranges never overlap and the list
is ordered by `lo`, which lets readers route an id to its segment with one binary search.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

from m3search.errors import IndexFormatError


SEGMENT_NAME = re.compile(r"seg-\d{12}-[0-9a-f]{8}")  # what the writer names segments; nothing else is read


@dataclasses.dataclass(frozen=True)
class SegmentInfo:
    name: str
    lo: int  # smallest internal id the segment may hold
    hi: int  # one past the largest
    n: int  # documents stored, deleted ones included (local ids 0..n-1)
    id_map: bool  # False: local id i is internal id lo + i; True: `ids.npy` lists the internal ids
    metas: dict[str, dict]  # component kind -> the metadata its build/merge returned
    files: dict[str, int]  # relative path -> size at commit, checked when the segment is opened
    n_deleted: int = 0

    @property
    def n_live(self) -> int:
        return self.n - self.n_deleted

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "SegmentInfo":
        try:
            info = cls(
                name=str(d["name"]), lo=int(d["lo"]), hi=int(d["hi"]), n=int(d["n"]), id_map=bool(d["id_map"]),
                metas=dict(d["metas"]), files={str(k): int(v) for k, v in d["files"].items()},
                n_deleted=int(d["n_deleted"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise IndexFormatError(f"{where}: a segment record is malformed ({e!r}); the index is damaged") from e
        if not SEGMENT_NAME.fullmatch(info.name):  # used as a path: never '../x' or '/abs'
            raise IndexFormatError(f"{where}: segment name {info.name[:80]!r} is not one m3search writes; the index "
                                   "is damaged or was tampered with")
        if not (0 <= info.n_deleted <= info.n and info.lo + info.n <= info.hi) or (
            not info.id_map and info.hi != info.lo + info.n
        ):
            raise IndexFormatError(f"{where}: segment {info.name} has inconsistent counts {d}; the index is damaged")
        return info


@dataclasses.dataclass(frozen=True)
class CommitState:
    generation: int
    next_id: int
    segments: tuple[SegmentInfo, ...]

    @classmethod
    def empty(cls) -> "CommitState":
        return cls(generation=0, next_id=0, segments=())

    @property
    def n_live(self) -> int:
        return sum(s.n_live for s in self.segments)

    @property
    def n_deleted(self) -> int:
        return sum(s.n_deleted for s in self.segments)

    def to_dict(self) -> dict:
        return {
            "generation": self.generation,
            "next_id": self.next_id,
            "segments": [s.to_dict() for s in self.segments],
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "CommitState":
        try:
            state = cls(
                generation=int(d["generation"]),
                next_id=int(d["next_id"]),
                segments=tuple(SegmentInfo.from_dict(s, where) for s in d["segments"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise IndexFormatError(f"{where}: the committed state is malformed ({e!r}); the index is damaged") from e
        prev_hi = 0
        for s in state.segments:
            if s.lo < prev_hi or s.hi > state.next_id:
                raise IndexFormatError(f"{where}: segment {s.name} overlaps its neighbours; the index is damaged")
            prev_hi = s.hi
        return state
