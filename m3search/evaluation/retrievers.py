"""The retrieval side of a benchmark run: the same three questions asked of two implementations.

- `EngineRetriever`: the real thing: an on-disk m3search index (m3search.indexes) searched by the planner.
- `ExactRetriever`: brute force over the `EncodedBatch` with the reference scorers of `m3search.scoring`;
  the reference for tests, and for corpora small enough not to need an index.

Both answer `search` (top-k by weighted fusion, with each hit's component scores: those weighted, or all
three with `all_scores`) and `nbytes` (bytes per component). They differ in what they score: the planner
re-scores the union of the dense and sparse indexes' top `depth` candidates (BGE-M3's multi-vector
re-ranking), the exact retriever every document.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, NamedTuple, Protocol, Sequence

import numpy as np

from m3search import scoring
from m3search.document import Document
from m3search.evaluation.modes import SIGNALS
from m3search.types import EncodedBatch, EncoderIdentity


class Scored(NamedTuple):
    docid: str
    score: float
    scores: dict[str, float]


class Retriever(Protocol):
    def search(
        self, queries: EncodedBatch, weights: Mapping[str, float], k: int, all_scores: bool = False
    ) -> list[list[Scored]]: ...

    def nbytes(self) -> dict[str, int]: ...

    def close(self) -> None: ...


class ExactRetriever:
    """Exact scores of every query against every document (m3search.scoring), fused by weighted sum."""

    def __init__(self, docids: Sequence[str], batch: EncodedBatch):
        self.docids = list(docids)
        self.batch = batch

    def _scores(self, queries: EncodedBatch, signals: Sequence[str]) -> dict[str, np.ndarray]:
        out = {}
        if "dense" in signals:
            out["dense"] = scoring.dense_scores(queries.dense, self.batch.dense)
        if "sparse" in signals:
            out["sparse"] = scoring.sparse_scores(queries.sparse, self.batch.sparse)
        if "multivec" in signals:
            out["multivec"] = scoring.multivec_scores(queries, self.batch)
        return out

    def search(
        self, queries: EncodedBatch, weights: Mapping[str, float], k: int, all_scores: bool = False
    ) -> list[list[Scored]]:
        signals = [s for s in SIGNALS if weights.get(s, 0) > 0]
        scores = self._scores(queries, SIGNALS if all_scores else signals)
        fused = sum(weights[s] * scores[s] for s in signals)
        # an index finds no document for a signal with no match: sparse-only scores of 0 are not retrieved
        matchless = signals == ["sparse"]
        out = []
        for i in range(len(queries)):
            top = _top_k(fused[i], k)
            if matchless:
                top = top[fused[i, top] > 0]
            out.append([Scored(self.docids[j], float(fused[i, j]), {s: float(v[i, j]) for s, v in scores.items()})
                        for j in top])
        return out

    def nbytes(self) -> dict[str, int]:
        b = self.batch
        return {
            "dense": int(b.dense.nbytes),
            "sparse": int(b.sparse.data.nbytes + b.sparse.indices.nbytes + b.sparse.indptr.nbytes),
            "multivec": int(b.multivec.nbytes + np.asarray(b.multivec_lengths).nbytes),
        }

    def close(self) -> None:
        pass


def _top_k(row: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, best first (ties by index, for determinism)."""
    k = min(k, len(row))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
    return part[np.lexsort((part, -row[part]))]


class EngineRetriever:
    """An m3search index built in `path` (a folder this object creates) and searched by the planner with
    `depth` candidates per source."""

    def __init__(self, index, depth: int):
        from m3search.planner import Planner

        self._index = index
        self._snapshot = index.snapshot()
        self._planner = Planner(self._snapshot)
        self.depth = depth

    @classmethod
    def build(
        cls,
        path: Path,
        identity: EncoderIdentity,
        model: str | None,
        docs: Sequence[Document],
        batch: EncodedBatch,
        depth: int = 100,
        components: Mapping[str, dict] | None = None,
        chunk: int = 2048,
    ) -> "EngineRetriever":
        """Index `docs`, whose encodings are the rows of `batch` (computed earlier, e.g. cached, with
        `m3search.ingest.encode_documents`), through `m3search.ingest` as every index is built."""
        from m3search.indexes.index import Index
        from m3search.ingest import ingest

        row = {d.id: i for i, d in enumerate(docs)}

        def precomputed(part: Sequence[Document]) -> EncodedBatch:
            return batch.select(np.array([row[d.id] for d in part], dtype=np.int64))

        index = Index.create(path, identity, model, components=dict(components) if components else None)
        try:
            result = ingest(index, docs, precomputed, batch_size=chunk, commit_interval=float("inf"))
        finally:
            index.close()
        if result.added != len(docs):
            raise ValueError(f"indexed {result.added} of {len(docs)} benchmark documents: give only documents with text")
        return cls(Index.open(path, writable=False, identity=identity), depth)

    def search(
        self, queries: EncodedBatch, weights: Mapping[str, float], k: int, all_scores: bool = False,
        query_texts: Sequence[str] | None = None,
    ) -> list[list[Scored]]:
        """query_texts: the queries' texts, for the text (BM25) signal of an index that has one."""
        hits = self._planner.search(queries, k=k, weights=dict(weights), depths=self.depth, all_scores=all_scores,
                                    with_text=False, query_texts=query_texts)
        return [[Scored(h.docid, h.score, dict(h.scores)) for h in row] for row in hits]

    def nbytes(self) -> dict[str, int]:
        """Bytes on disk per component, its index-wide state (codecs, quantizers) included."""
        return {kind: int(c["bytes"]) for kind, c in self._index.info()["components"].items()}

    def close(self) -> None:
        self._snapshot.close()
        self._index.close()
