"""The query planner: candidates -> exact re-scoring on every signal asked for -> fusion -> typed hits.

Every candidate, whichever index found it, is scored exactly on each component with a positive weight
(through the readers' `score_pairs`), so a document found only by the sparse index still gets its true
dense and multi-vector scores. The whole batch of queries shares one search call per index and one
`score_pairs` call per component.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

import numpy as np
import scipy.sparse as sp

from m3search.document import Document
from m3search.errors import ConfigError
from m3search.indexes.base import DenseReader, MultivecReader, SegmentReader, SparseReader
from m3search.indexes.inputs import check_values
from m3search.planner import candidates as cand
from m3search.planner import fusion as fuse
from m3search.planner.filters import Filter
from m3search.planner.hits import HIT_FIELDS, Hit, MatchedTerm
from m3search.planner.weights import ALL_SIGNALS, TEXT, resolve_weights
from m3search.types import EncodedBatch

log = logging.getLogger(__name__)

FUSIONS = ("weighted", "rrf")
# the interface each component's reader implements, by the name weights and modes use
_INTERFACES: dict[str, type[SegmentReader]] = {"dense": DenseReader, "sparse": SparseReader, "multivec": MultivecReader}


class SnapshotLike(Protocol):
    """What the planner needs from an index snapshot (m3search.indexes.snapshot.Snapshot provides it):
    index-level readers implementing the interfaces of `m3search.indexes.base` (None for a component the
    index lacks), the live document count, and the documents by internal id."""

    dense: DenseReader | None
    sparse: SparseReader | None
    multivec: MultivecReader | None

    @property
    def n_docs(self) -> int: ...

    def docs(self, internal_ids: Sequence[int]) -> list[Document]: ...


MAX_K = 10_000  # hits per query: more is an export, not a search (iterate the snapshot instead)
MAX_DEPTH = 100_000  # candidates per source and query


class Planner:
    """Searches one consistent snapshot of an index.

    token_strings: maps lexical token ids to readable strings for `explain` (an encoder's
    `token_strings`); without it, matched terms are shown as '#<id>'.
    """

    def __init__(self, snapshot: SnapshotLike, token_strings: Callable[[Sequence[int]], list[str]] | None = None):
        self.snapshot = snapshot
        self.token_strings = token_strings

    def readers(self) -> dict[str, SegmentReader]:
        """The snapshot's readers by component name (the names weights use), each checked against its
        interface in `m3search.indexes.base`."""
        out: dict[str, SegmentReader] = {}
        for name, interface in _INTERFACES.items():
            reader = getattr(self.snapshot, name)
            if reader is None:
                continue
            if not isinstance(reader, interface):
                raise TypeError(f"the snapshot's {name} reader is a {type(reader).__name__}, not a "
                                f"{interface.__name__} (m3search.indexes.base): the planner needs that interface")
            out[name] = reader
        return out

    def search(
        self,
        queries: EncodedBatch,
        k: int = 10,
        mode: str | None = None,
        weights: Mapping[str, float] | str | None = None,
        depths: int | Mapping[str, int] | None = None,
        fusion: str = "weighted",
        rrf_k: float = fuse.DEFAULT_RRF_K,
        explain: bool = False,
        all_scores: bool = False,
        with_text: bool = True,
        params: Mapping[str, Mapping[str, Any]] | None = None,
        timings: dict[str, float] | None = None,
        filter: Any = None,
        offset: int = 0,
        fields: Sequence[str] | None = None,
        query_texts: Sequence[str] | None = None,
    ) -> list[list[Hit]]:
        """The top-k hits of every query in `queries` (encoded with kind='query'), best first.

        mode / weights: a mode name ('dense', 'sparse', 'multivec', 'dense+sparse', 'all'; default 'all')
            or explicit weights ({'dense': 1, 'sparse': 0.3} or 'dense=1,sparse=0.3'), not both.
        depths:     candidates per source and query: an int for every source, or {'dense': n, 'sparse': n}.
        fusion:     'weighted' (sum of weight * exact score) or 'rrf' (sum of weight / (rrf_k + rank)).
        explain:    attach the matched lexical terms with their query and document weights.
        all_scores: score every component the index has, not only the weighted ones.
        params:     per-source search parameters passed to the readers, e.g. {'dense': {'nprobe': 32}}.
        timings:    if given, filled with seconds per stage: candidates, rescore, fuse, fetch.
        filter:     a metadata filter (a `Filter`, or its JSON object); only documents that pass are
                    candidates, in every source (the filter's mask goes into each index search).
        offset:     skip this many of the best hits (paging: offset=10, k=10 gives hits 11..20).
        fields:     which of the hit fields text, title, metadata, scores to fill (default all; docid and
                    score always come back).
        query_texts: the queries' texts, which the full-text signal ('text', BM25) analyses; needed when
                    it is weighted or searched, and all_scores scores it only when they are given.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        if k > MAX_K:
            raise ConfigError(f"k={k} is above the limit of {MAX_K} hits per query; ask for fewer")
        if fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {fusion!r}: choose one of {', '.join(FUSIONS)}")
        if fusion == "rrf" and not rrf_k > 0:
            raise ConfigError(f"rrf_k must be > 0, got {rrf_k!r}")
        if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
            raise ConfigError(f"offset must be an integer >= 0, got {offset!r}")
        want = hit_fields(fields)
        flt = Filter.parse(filter)
        w = resolve_weights(mode, weights)
        readers = self.readers()
        text_wanted = TEXT in w or (isinstance(depths, Mapping) and (depths.get(TEXT) or 0) > 0)
        if getattr(self.snapshot, TEXT, None) is not None and (text_wanted or (all_scores and query_texts is not None)):
            readers[TEXT] = BoundText.bind(self.snapshot.text, query_texts, len(queries))
        self._check_components(w, readers)
        queries = check_values(queries, readers, what="search")  # NaN or out-of-range query values: an error
        n_docs = max(1, self.snapshot.n_docs)  # never more hits (or memory for them) than documents
        k, offset = min(int(k), n_docs), min(int(offset), n_docs)
        depth_of = cand.resolve_depths(w, depths, k + offset, available=[s for s in cand.SOURCES if s in readers])
        too_deep = {s: d for s, d in depth_of.items() if d > MAX_DEPTH}
        if too_deep:
            raise ConfigError(f"depth {too_deep} is above the limit of {MAX_DEPTH} candidates per source and query")
        depth_of = {s: min(d, n_docs) for s, d in depth_of.items()}
        timings = timings if timings is not None else {}
        m = len(queries)
        if m == 0 or self.snapshot.n_docs == 0:
            return [[] for _ in range(m)]
        exclude = None
        if flt is not None:
            with _timed(timings, "filter"):
                exclude = ~flt.mask(self.snapshot)
            if exclude.all():
                return [[] for _ in range(m)]

        found: dict = {}
        with _timed(timings, "candidates"):
            q_index, ids = cand.gather(readers, queries, depth_of, params, exclude=exclude, found_scores=found)
        scored = [c for c in ALL_SIGNALS if c in readers and (all_scores or c in w)]
        with _timed(timings, "rescore"):
            scores = {c: self._score(readers[c], queries, q_index, ids, found.get(c) if c == "multivec" else None)
                      for c in scored}
        with _timed(timings, "fuse"):
            if fusion == "rrf":
                fused = fuse.reciprocal_rank(q_index, ids, scores, w, rrf_k)
            else:
                fused = fuse.weighted_sum(scores, w)
            top = fuse.top_k_per_query(q_index, ids, fused, int(k) + int(offset))
            if offset:
                top = _skip_per_query(top, q_index, int(offset))
        with _timed(timings, "fetch"):
            return self._hits(queries, q_index[top], ids[top], fused[top], {c: s[top] for c, s in scores.items()},
                              m, explain, with_text, want)

    # -- stages -------------------------------------------------------------------------------

    @staticmethod
    def _check_components(weights: Mapping[str, float], readers: Mapping[str, SegmentReader]) -> None:
        absent = [c for c in weights if c not in readers]
        if absent:
            have = ", ".join(readers) or "none"
            raise ConfigError(
                f"this index has no {' or '.join(absent)} component (it has: {have}): choose a mode or weights "
                "over the components it has"
            )

    @staticmethod
    def _score(reader: SegmentReader, queries: EncodedBatch, q_index: np.ndarray, ids: np.ndarray,
               known: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Exact scores of the (query, document) pairs, each interface given its part of the queries.
        known: (q_index, ids, scores) a source already computed exactly (the token-vector generator scores
        what it finds from the same codes): those pairs are not scored again."""
        if len(ids) == 0:
            return np.zeros(0, dtype=np.float32)
        if isinstance(reader, BoundText):
            return reader.score_pairs(q_index, ids)
        if known is not None and len(known[1]):
            n_ids = max(int(ids.max()), int(known[1].max())) + 1
            have = known[0] * n_ids + known[1]
            order = np.argsort(have)
            pos = np.searchsorted(have[order], q_index * n_ids + ids)
            pos = np.minimum(pos, len(have) - 1)
            hit = have[order][pos] == q_index * n_ids + ids
            out = np.zeros(len(ids), dtype=np.float32)
            out[hit] = known[2][order][pos[hit]]
            if (~hit).any():
                out[~hit] = Planner._score(reader, queries, q_index[~hit], ids[~hit])
            return out
        if isinstance(reader, DenseReader):
            out = reader.score_pairs(queries.dense, q_index, ids)
        elif isinstance(reader, SparseReader):
            out = reader.score_pairs(queries.sparse, q_index, ids)
        elif isinstance(reader, MultivecReader):
            out = reader.score_pairs(queries.multivec, queries.multivec_lengths, q_index, ids)
        else:
            raise TypeError(f"{type(reader).__name__} implements none of the reader interfaces of m3search.indexes.base")
        return np.asarray(out, dtype=np.float32)

    def _hits(
        self,
        queries: EncodedBatch,
        q_index: np.ndarray,
        ids: np.ndarray,
        fused: np.ndarray,
        scores: Mapping[str, np.ndarray],
        m: int,
        explain: bool,
        with_text: bool,
        want: frozenset[str] = frozenset(HIT_FIELDS),
    ) -> list[list[Hit]]:
        records = self.snapshot.docs(ids.tolist()) if len(ids) else []
        with_scores = "scores" in want
        terms = self._matched_terms(queries, q_index, ids) if explain else [None] * len(ids)
        out: list[list[Hit]] = [[] for _ in range(m)]
        for p, (qi, doc_id) in enumerate(zip(q_index.tolist(), ids.tolist())):
            rec = records[p]
            out[qi].append(
                Hit(
                    docid=rec.id,
                    score=float(fused[p]),
                    scores={c: float(s[p]) for c, s in scores.items()} if with_scores else {},
                    text=rec.text if with_text and "text" in want else None,
                    title=rec.title if with_text and "title" in want else None,
                    matched_terms=terms[p],
                    internal_id=int(doc_id),
                    metadata=rec.metadata if "metadata" in want else None,
                )
            )
        return out

    def _matched_terms(
        self, queries: EncodedBatch, q_index: np.ndarray, ids: np.ndarray
    ) -> list[tuple[MatchedTerm, ...]]:
        sparse = self.snapshot.sparse
        if sparse is None:
            log.warning("explain asked for, but this index has no sparse component: no matched terms to show")
            return [() for _ in range(len(ids))]
        q_rows = sp.csr_matrix(queries.sparse[q_index], dtype=np.float32)
        d_rows = sp.csr_matrix(sparse.doc_weights(ids), dtype=np.float32)
        q_rows.sort_indices()
        d_rows.sort_indices()
        both = sp.csr_matrix(q_rows.multiply(d_rows))
        both.eliminate_zeros()
        both.sort_indices()
        token_ids = np.unique(both.indices)
        names = self.token_strings(token_ids.tolist()) if self.token_strings else [f"#{t}" for t in token_ids]
        name_of = dict(zip(token_ids.tolist(), names))
        out = []
        for p in range(len(ids)):
            tids = both.indices[both.indptr[p] : both.indptr[p + 1]]
            qw = _row_values(q_rows, p, tids)
            dw = _row_values(d_rows, p, tids)
            terms = [
                MatchedTerm(token=name_of[int(t)], token_id=int(t), query_weight=float(a), doc_weight=float(b))
                for t, a, b in zip(tids.tolist(), qw.tolist(), dw.tolist())
            ]
            terms.sort(key=lambda t: (-t.contribution, t.token_id))
            out.append(tuple(terms))
        return out


class BoundText:
    """The full-text reader with one search's queries analysed and weighed (idf of this snapshot), in the
    shape the candidate gathering and re-scoring use: search(depth, deleted) and score_pairs(q_index, ids)."""

    def __init__(self, reader, queries):
        self.reader, self.queries = reader, queries

    @classmethod
    def bind(cls, reader, query_texts: Sequence[str] | None, m: int) -> "BoundText":
        if query_texts is None:
            raise ConfigError("the text (BM25) signal needs the queries' texts: search with query strings "
                              "(search/search_many), or pass query_texts= with the encoded queries")
        texts = list(query_texts)
        if len(texts) != m:
            raise ConfigError(f"{len(texts)} query texts for {m} encoded queries; give one text per query")
        return cls(reader, reader.prepare(texts))

    def search(self, depth: int, deleted: np.ndarray | None = None, **params: Any):
        if params:
            raise ConfigError(f"the text source takes no search parameters, got {sorted(params)}")
        return self.reader.search(self.queries, depth, deleted)

    def score_pairs(self, q_index: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return self.reader.score_pairs(self.queries, q_index, ids)


def hit_fields(fields: Sequence[str] | str | None) -> frozenset[str]:
    """The validated set of optional hit fields to fill (None: all of them)."""
    if fields is None:
        return frozenset(HIT_FIELDS)
    names = [f.strip() for f in fields.split(",")] if isinstance(fields, str) else list(fields)
    bad = [f for f in names if f not in HIT_FIELDS]
    if bad:
        raise ConfigError(f"unknown hit field(s) {bad}: choose from {', '.join(HIT_FIELDS)}")
    return frozenset(names)


def _skip_per_query(top: np.ndarray, q_index: np.ndarray, offset: int) -> np.ndarray:
    """Drop each query's first `offset` entries of `top` (grouped by query, best first)."""
    q = q_index[top]
    starts = np.searchsorted(q, q, side="left")
    return top[np.arange(len(top)) - starts >= offset]


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


def _row_values(m: sp.csr_matrix, row: int, cols: np.ndarray) -> np.ndarray:
    """m[row, cols] for columns known to be stored in that row (indices sorted)."""
    lo, hi = m.indptr[row], m.indptr[row + 1]
    return m.data[lo:hi][np.searchsorted(m.indices[lo:hi], cols)]
