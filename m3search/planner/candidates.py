"""Candidate generation: top documents from the dense ANN index, the sparse inverted index and the
token-vector store's candidate generator (m3search.indexes.multivec.generator), unioned.

Which sources run follows the weights: each source whose weight is positive. Explicit depths override
this: a depth of 0 turns a source off, a positive depth turns it on.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from m3search.errors import ConfigError
from m3search.indexes.base import DenseReader, MultivecReader, SegmentReader, SparseReader
from m3search.types import EncodedBatch

SOURCES = ("dense", "sparse", "multivec", "text")  # text: full-text BM25, on indexes that have it
DEFAULT_DEPTH = 100


def resolve_depths(
    weights: Mapping[str, float],
    depths: int | Mapping[str, int] | None,
    k: int,
    available: Iterable[str] = SOURCES,
) -> dict[str, int]:
    """How many candidates each source contributes per query; sources with depth 0 are left out.

    By default only the `available` sources (the index's own) are used; asking for another one explicitly
    is an error.

    >>> resolve_depths({"dense": 1.0}, None, k=10)
    {'dense': 100}
    >>> resolve_depths({"multivec": 1.0}, {"sparse": 50}, k=10)
    {'multivec': 100, 'sparse': 50}
    >>> resolve_depths({"dense": 1.0, "multivec": 1.0}, None, k=10, available=["dense"])
    {'dense': 100}
    """
    available = set(available)
    wanted = {s: DEFAULT_DEPTH for s in SOURCES if s in available and weights.get(s, 0) > 0}
    if isinstance(depths, (int, np.integer)) and not isinstance(depths, bool):
        depths = {s: int(depths) for s in wanted}
    for name, depth in dict(depths or {}).items():
        if name not in SOURCES:
            raise ConfigError(f"unknown candidate source {name!r}: candidates come from {', '.join(SOURCES)}")
        if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 0:
            raise ConfigError(f"depth for {name} must be an integer >= 0, got {depth!r}")
        if depth > 0 and name not in available:
            raise ConfigError(f"this index has no {name} component to take candidates from: set its depth to 0")
        wanted[name] = int(depth)
    # a source never returns fewer than k candidates, so a one-source search can fill k hits
    out = {s: max(d, k) for s, d in wanted.items() if d > 0}
    if not out:
        raise ConfigError("every candidate source has depth 0: give the dense, sparse, multivec or text source a positive depth")
    return out


def search_source(reader: SegmentReader, source: str, queries: EncodedBatch, depth: int,
                  exclude: np.ndarray | None = None, params: Mapping[str, Any] | None = None,
                  scored: list | None = None):
    """(D, I) of one candidate source, each interface given its part of the queries; `exclude` is a bool
    mask over internal ids never to return (deleted or filtered out), applied inside the index's search.
    scored: for the multi-vector source, a list that receives what its search scored exactly."""
    extra = {} if exclude is None else {"deleted": exclude}
    if source == "text":  # a reader bound to the analysed query texts (planner.BoundText)
        return reader.search(depth, **extra, **dict(params or {}))
    if isinstance(reader, DenseReader):
        return reader.search(queries.dense, depth, **extra, **dict(params or {}))
    if isinstance(reader, SparseReader):
        return reader.search(queries.sparse, depth, **extra, **dict(params or {}))
    if isinstance(reader, MultivecReader):
        if scored is not None:
            extra["scored"] = scored
        return reader.search(queries.multivec, queries.multivec_lengths, depth, **extra, **dict(params or {}))
    raise TypeError(f"the {source} candidate source is a {type(reader).__name__}, which has no search")


def gather(
    readers: Mapping[str, SegmentReader],
    queries: EncodedBatch,
    depths: Mapping[str, int],
    params: Mapping[str, Mapping[str, Any]] | None = None,
    exclude: np.ndarray | None = None,
    found_scores: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Union of every source's candidates as unique (q_index, ids) pairs, sorted by query then id.
    exclude: (id_space,) bool mask of documents no source may return (e.g. those a filter rejects),
    passed to each source's search as its `deleted` mask, so filtering happens inside the search.
    found_scores, if given, receives each source's own (q_index, ids, scores) of what it found; for the
    multi-vector source, of every document its generator scored from the full codes (a few times depth),
    so re-scoring pays only for the other sources' candidates."""
    params = params or {}
    q_parts, id_parts = [], []
    m = len(queries)
    for source, depth in depths.items():
        reader = readers[source]
        scored: list | None = [] if found_scores is not None and isinstance(reader, MultivecReader) else None
        dist, found = search_source(reader, source, queries, depth, exclude, params.get(source), scored)
        found = np.asarray(found, dtype=np.int64).reshape(m, -1)
        if scored:
            found_scores[source] = (np.concatenate([np.full(len(ids), qi, np.int64) for qi, ids, _ in scored]),
                                    np.concatenate([np.asarray(ids, np.int64) for _, ids, _ in scored]),
                                    np.concatenate([np.asarray(v, np.float32) for _, _, v in scored]))
        elif found_scores is not None:
            valid = found.ravel() >= 0
            found_scores[source] = (np.repeat(np.arange(m, dtype=np.int64), found.shape[1])[valid],
                                    found.ravel()[valid], np.asarray(dist, np.float32).ravel()[valid])
        q_parts.append(np.repeat(np.arange(m, dtype=np.int64), found.shape[1]))
        id_parts.append(found.ravel())
    q_index = np.concatenate(q_parts) if q_parts else np.zeros(0, dtype=np.int64)
    ids = np.concatenate(id_parts) if id_parts else np.zeros(0, dtype=np.int64)
    keep = ids >= 0  # -1 pads rows with fewer than depth results
    q_index, ids = q_index[keep], ids[keep]
    if len(ids) == 0:
        return q_index, ids
    pairs = np.unique(np.stack([q_index, ids], axis=1), axis=0)
    return pairs[:, 0].copy(), pairs[:, 1].copy()
