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

from m3search.errors import ConfigError
from m3search.planner import candidates as cand
from m3search.planner import fusion as fuse
from m3search.planner.hits import Hit, MatchedTerm
from m3search.planner.weights import COMPONENTS, resolve_weights
from m3search.types import EncodedBatch

log = logging.getLogger(__name__)

FUSIONS = ("weighted", "rrf")


class SnapshotLike(Protocol):
    """What the planner needs from an index snapshot (m3search.indexes.index.Snapshot provides it)."""

    dense: Any
    sparse: Any
    multivec: Any

    @property
    def n_docs(self) -> int: ...

    def docs(self, internal_ids: Sequence[int]) -> list: ...


class Planner:
    """Searches one consistent snapshot of an index.

    token_strings: maps lexical token ids to readable strings for `explain` (an encoder's
    `token_strings`); without it, matched terms are shown as '#<id>'.
    """

    def __init__(self, snapshot: SnapshotLike, token_strings: Callable[[Sequence[int]], list[str]] | None = None):
        self.snapshot = snapshot
        self.token_strings = token_strings

    def readers(self) -> dict[str, Any]:
        return {name: getattr(self.snapshot, name) for name in COMPONENTS if getattr(self.snapshot, name) is not None}

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
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        if fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {fusion!r}: choose one of {', '.join(FUSIONS)}")
        if fusion == "rrf" and not rrf_k > 0:
            raise ConfigError(f"rrf_k must be > 0, got {rrf_k!r}")
        w = resolve_weights(mode, weights)
        readers = self.readers()
        self._check_components(w, readers)
        depth_of = cand.resolve_depths(w, depths, int(k), available=[s for s in cand.SOURCES if s in readers])
        timings = timings if timings is not None else {}
        m = len(queries)
        if m == 0 or self.snapshot.n_docs == 0:
            return [[] for _ in range(m)]

        found: dict = {}
        with _timed(timings, "candidates"):
            q_index, ids = cand.gather(readers, queries, depth_of, params, found)
        scored = [c for c in COMPONENTS if c in readers and (all_scores or c in w)]
        with _timed(timings, "rescore"):
            scores = {c: self._score(readers[c], c, queries, q_index, ids, found.get(c) if c == "multivec" else None)
                      for c in scored}
        with _timed(timings, "fuse"):
            if fusion == "rrf":
                fused = fuse.reciprocal_rank(q_index, ids, scores, w, rrf_k)
            else:
                fused = fuse.weighted_sum(scores, w)
            top = fuse.top_k_per_query(q_index, ids, fused, int(k))
        with _timed(timings, "fetch"):
            return self._hits(queries, q_index[top], ids[top], fused[top], {c: s[top] for c, s in scores.items()},
                              m, explain, with_text)

    # -- stages -------------------------------------------------------------------------------

    @staticmethod
    def _check_components(weights: Mapping[str, float], readers: Mapping[str, Any]) -> None:
        absent = [c for c in weights if c not in readers]
        if absent:
            have = ", ".join(readers) or "none"
            raise ConfigError(
                f"this index has no {' or '.join(absent)} component (it has: {have}): choose a mode or weights "
                "over the components it has"
            )

    @staticmethod
    def _score(reader: Any, name: str, queries: EncodedBatch, q_index: np.ndarray, ids: np.ndarray,
               known: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        if len(ids) == 0:
            return np.zeros(0, dtype=np.float32)
        if known is not None and len(known[1]):
            # the token-vector generator already scored what it found from the same codes: score the rest
            n_ids = max(int(ids.max()), int(known[1].max())) + 1
            have = known[0] * n_ids + known[1]
            order = np.argsort(have)
            pos = np.searchsorted(have[order], q_index * n_ids + ids)
            pos = np.minimum(pos, len(have) - 1)
            hit = have[order][pos] == q_index * n_ids + ids
            out = np.zeros(len(ids), dtype=np.float32)
            out[hit] = known[2][order][pos[hit]]
            if (~hit).any():
                out[~hit] = Planner._score(reader, name, queries, q_index[~hit], ids[~hit])
            return out
        if name == "dense":
            out = reader.score_pairs(queries.dense, q_index, ids)
        elif name == "sparse":
            out = reader.score_pairs(queries.sparse, q_index, ids)
        else:
            out = reader.score_pairs(queries.multivec, queries.multivec_lengths, q_index, ids)
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
    ) -> list[list[Hit]]:
        records = self.snapshot.docs(ids.tolist()) if len(ids) else []
        terms = self._matched_terms(queries, q_index, ids) if explain else [None] * len(ids)
        out: list[list[Hit]] = [[] for _ in range(m)]
        for p, (qi, doc_id) in enumerate(zip(q_index.tolist(), ids.tolist())):
            rec = records[p]
            out[qi].append(
                Hit(
                    docid=rec.id,
                    score=float(fused[p]),
                    scores={c: float(s[p]) for c, s in scores.items()},
                    text=rec.text if with_text else None,
                    title=rec.title if with_text else None,
                    matched_terms=terms[p],
                    internal_id=int(doc_id),
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
