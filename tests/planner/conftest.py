"""Exact in-memory readers over an EncodedBatch, brute force through m3search.scoring.

They implement the reader interfaces of m3search.indexes.base, so the planner is tested without the
index engine; their search results are exact top-k, so a small depth gives one-sided candidates.
"""
from __future__ import annotations


import numpy as np
import pytest
import scipy.sparse as sp

from m3search import scoring
from m3search.document import Document
from m3search.indexes.base import DenseReader, MultivecReader, SparseReader
from m3search.types import EncodedBatch


def _top_k(scores: np.ndarray, k: int, zero_is_miss: bool = False) -> tuple[np.ndarray, np.ndarray]:
    m, n = scores.shape
    D = np.full((m, k), -np.inf, dtype=np.float32)
    I = np.full((m, k), -1, dtype=np.int64)
    for i in range(m):
        order = np.lexsort((np.arange(n), -scores[i]))
        if zero_is_miss:  # an inverted index only finds documents sharing a term
            order = order[scores[i, order] > 0]
        order = order[:k]
        D[i, : len(order)] = scores[i, order]
        I[i, : len(order)] = order
    return D, I


class ExactDense(DenseReader):
    def __init__(self, batch: EncodedBatch):
        self.xb = batch.dense

    @property
    def n_docs(self):
        return len(self.xb)

    def nbytes(self):
        return self.xb.nbytes

    def search(self, xq, k, deleted=None, **params):
        return _top_k(scoring.dense_scores(xq, self.xb), k)

    def score_pairs(self, xq, q_index, ids):
        return np.einsum("pd,pd->p", xq[q_index], self.xb[ids]).astype(np.float32)

    def vectors(self, ids):
        return self.xb[ids]


class ExactSparse(SparseReader):
    def __init__(self, batch: EncodedBatch):
        self.docs = batch.sparse

    @property
    def n_docs(self):
        return self.docs.shape[0]

    def nbytes(self):
        return self.docs.data.nbytes

    def search(self, q, k, deleted=None, **params):
        return _top_k(scoring.sparse_scores(q, self.docs), k, zero_is_miss=True)

    def score_pairs(self, q, q_index, ids):
        return np.asarray(q[q_index].multiply(self.docs[ids]).sum(axis=1)).ravel().astype(np.float32)

    def doc_weights(self, ids):
        return self.docs[ids]


class ExactMultivec(MultivecReader):
    def __init__(self, batch: EncodedBatch):
        self.batch = batch

    @property
    def n_docs(self):
        return len(self.batch)

    def nbytes(self):
        return self.batch.multivec.nbytes

    def score_pairs(self, q_vecs, q_lengths, q_index, ids):
        q_off = np.concatenate([[0], np.cumsum(q_lengths)])
        return np.array(
            [scoring.maxsim(q_vecs[q_off[q] : q_off[q + 1]], self.batch.token_vectors(d)) for q, d in zip(q_index, ids)],
            dtype=np.float32,
        )

    def search(self, q_vecs, q_lengths, k, deleted=None, **params):
        m, n = len(q_lengths), self.n_docs
        scores = self.score_pairs(q_vecs, q_lengths, np.repeat(np.arange(m), n), np.tile(np.arange(n), m))
        return _top_k(scores.reshape(m, n), k)

    def token_vectors(self, ids):
        sub = self.batch.select(ids)
        return sub.multivec, sub.multivec_lengths


class ExactSnapshot:
    """Stands in for the engine's Snapshot: three exact readers plus the document store."""

    def __init__(self, ids, texts, batch, components=("dense", "sparse", "multivec")):
        self.ids, self.texts, self.batch = list(ids), list(texts), batch
        self.dense = ExactDense(batch) if "dense" in components else None
        self.sparse = ExactSparse(batch) if "sparse" in components else None
        self.multivec = ExactMultivec(batch) if "multivec" in components else None

    @property
    def n_docs(self):
        return len(self.ids)

    def docs(self, internal_ids):
        return [Document(self.ids[i], self.texts[i], f"title {self.ids[i]}") for i in internal_ids]


WORDS = (
    "search index query dense sparse vector token weight model corpus passage language retrieval "
    "fusion rank score multilingual document engine batch encoder lexical term hybrid".split()
)


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(7)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(60)]
    return [f"d{i}" for i in range(len(texts))], texts


@pytest.fixture(scope="session")
def make_snapshot():
    """ExactSnapshot(ids, texts, batch, components=...) for tests that need their own."""
    return ExactSnapshot


@pytest.fixture(scope="module")
def snapshot(corpus, hashing_encoder):
    ids, texts = corpus
    return ExactSnapshot(ids, texts, hashing_encoder.encode(texts, kind="passage"))


@pytest.fixture(scope="module")
def queries(hashing_encoder):
    texts = ["hybrid search fusion", "multilingual passage retrieval", "sparse lexical weight", "token"]
    return texts, hashing_encoder.encode(texts, kind="query")
