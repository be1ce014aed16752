"""The interfaces of the three index components.

An index holds immutable segments; each segment has one folder per component. A component type
(`ComponentType`) builds, merges and opens its segment folders; what it opens is a reader. The same
reader methods exist at two levels: per segment (local ids 0..n-1) and for the whole index (global
internal ids, deleted documents filtered), so the planner depends on these methods alone.

Conventions (faiss's): queries `xq` are (m, d) float32; results are `(D, I)` arrays of shape (m, k),
scores descending, padded with I = -1 and D = -inf when fewer than k documents qualify.
Scores mean exactly what `m3search.scoring` computes.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import scipy.sparse as sp

from m3search.types import EncodedBatch


class SegmentReader(abc.ABC):
    """An opened, read-only component of one segment (or of the whole index)."""

    @property
    @abc.abstractmethod
    def n_docs(self) -> int:
        """Documents in this segment, deleted ones included (ids are 0..n_docs-1)."""

    @abc.abstractmethod
    def nbytes(self) -> int:
        """Bytes on disk."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release memory maps and file handles."""


class DenseReader(SegmentReader):
    @abc.abstractmethod
    def search(
        self, xq: np.ndarray, k: int, deleted: np.ndarray | None = None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate (or exact, for flat) top-k by inner product; `deleted` is a (n_docs,) bool mask
        of ids never to return. params: e.g. nprobe, refine (re-rank depth)."""

    @abc.abstractmethod
    def score_pairs(self, xq: np.ndarray, q_index: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """(P,) float32: <xq[q_index[p]], doc ids[p]> from the stored (refinement) vectors."""

    @abc.abstractmethod
    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids), d) float32 stored vectors (for merges)."""


class SparseReader(SegmentReader):
    @abc.abstractmethod
    def search(
        self, q: sp.csr_matrix, k: int, deleted: np.ndarray | None = None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by lexical matching score over the quantized impacts; exact unless params ask for a
        pruned approximation."""

    @abc.abstractmethod
    def score_pairs(self, q: sp.csr_matrix, q_index: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """(P,) float32 lexical matching scores from the stored (forward) weights."""

    @abc.abstractmethod
    def doc_weights(self, ids: np.ndarray) -> sp.csr_matrix:
        """(len(ids), vocab) float32 stored lexical weights (for explain and merges)."""


class MultivecReader(SegmentReader):
    def search(
        self, q_vecs: np.ndarray, q_lengths: np.ndarray, k: int, deleted: np.ndarray | None = None,
        scored: list | None = None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by MaxSim of each query (its rows of q_vecs, by q_lengths) over the stored token vectors;
        `deleted` as for dense. params: e.g. nprobe, candidates (the candidate generator's knobs).
        scored: a list that receives (query index, ids, exact scores) of every document the search scored
        from its stored vectors, the top-k among them (a caller re-scoring other candidates reuses these)."""
        raise NotImplementedError(f"{type(self).__name__} has no candidate generator")

    @abc.abstractmethod
    def score_pairs(
        self, q_vecs: np.ndarray, q_lengths: np.ndarray, q_index: np.ndarray, ids: np.ndarray
    ) -> np.ndarray:
        """(P,) float32 MaxSim of query q_index[p] (its rows of q_vecs, by q_lengths) against doc ids[p],
        from the stored (compressed) token vectors, decompressed in bulk."""

    @abc.abstractmethod
    def token_vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vectors (T, d') float32, lengths (len(ids),) int64) as stored, decompressed (for merges)."""

    def fidelity(self) -> dict:
        """How lossy the stored vectors are (e.g. mean reconstruction cosine); reported by `info`."""
        return {}


class ComponentType(abc.ABC):
    """Builds, merges and opens one kind of component. Configs are plain JSON-able dicts.

    `shared` is the component's index-wide folder (e.g. for a codec trained once and reused by every
    segment). Whatever a component writes there is written once, atomically, and never changed.
    Segment folders are written completely and fsync'd before `build`/`merge` return.
    """

    kind: ClassVar[str]  # "dense" | "sparse" | "multivec"

    def __init__(self, config: dict | None = None):
        self.config = self.validate_config(dict(config or {}))

    @classmethod
    @abc.abstractmethod
    def validate_config(cls, config: dict) -> dict:
        """Fill defaults; raise ConfigError naming the bad key and the valid choices."""

    @abc.abstractmethod
    def build(self, path: Path, batch: EncodedBatch, shared: Path) -> dict:
        """Write a segment's component for `batch` into the empty folder `path`; return its metadata."""

    @abc.abstractmethod
    def open(self, path: Path, meta: dict, shared: Path) -> SegmentReader:
        """Open a segment folder written by build/merge; raise IndexFormatError if it is unreadable."""

    @abc.abstractmethod
    def merge(self, path: Path, sources: Sequence[SegmentReader], keep: Sequence[np.ndarray], shared: Path) -> dict:
        """Write one segment holding, in order, the documents `keep[i]` (local ids) of `sources[i]`;
        return its metadata. Built from the stored representations, without the original batch."""

    def stale(self, meta: dict, shared: Path) -> bool:
        """True when rewriting this segment alone (a merge of one) would now store it better, e.g. it was
        written before the index-wide codec existed. The writer's merge policy rewrites such segments."""
        return False

    def trains_on_write(self, shared: Path) -> bool:
        """True while the next segment this component writes would first train index-wide state (a codec):
        memory-heavy work that the writer then runs in the foreground of a commit, not beside the caller's
        encoding on the merge thread."""
        return False

    def searched_alone(self, meta: dict) -> bool:
        """True when a search pays for this segment on its own (e.g. its own dense graph), not in one pass
        with the others; the merge policy caps how many such segments an index keeps."""
        return False
