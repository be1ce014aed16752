"""Exact scores of the three M3 representations, as BGE-M3 defines them.

These are the references: indexes, the planner and the tests check their fast paths against them.

- dense:    s = <q, p>, both L2-normalised.
- sparse:   s = sum over token ids t in both q and p of w_q(t) * w_p(t)   (FlagEmbedding's
            compute_lexical_matching_score).
- multivec: s = (1 / |q|) * sum over query tokens i of max over passage tokens j of <q_i, p_j>
            (ColBERT MaxSim averaged over the query tokens, as FlagEmbedding's colbert_score).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from m3search.types import EncodedBatch


def dense_scores(xq: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """(m, n) inner products of query rows with document rows."""
    return np.asarray(xq, dtype=np.float32) @ np.asarray(xb, dtype=np.float32).T


def sparse_scores(q: sp.csr_matrix, docs: sp.csr_matrix) -> np.ndarray:
    """(m, n) lexical matching scores."""
    return np.asarray((q @ docs.T).toarray(), dtype=np.float32)


def maxsim(q_vecs: np.ndarray, d_vecs: np.ndarray) -> float:
    """MaxSim of one query's token vectors against one document's token vectors."""
    if len(q_vecs) == 0 or len(d_vecs) == 0:
        return 0.0
    sim = np.asarray(q_vecs, dtype=np.float32) @ np.asarray(d_vecs, dtype=np.float32).T
    return float(sim.max(axis=1).sum() / len(q_vecs))


def multivec_scores(queries: EncodedBatch, docs: EncodedBatch) -> np.ndarray:
    """(m, n) MaxSim scores, one matrix product per query."""
    q_off, d_off = queries.offsets, docs.offsets
    out = np.zeros((len(queries), len(docs)), dtype=np.float32)
    if len(docs) == 0:
        return out
    nonempty = docs.multivec_lengths > 0
    for i in range(len(queries)):
        qv = queries.multivec[q_off[i] : q_off[i + 1]]
        if len(qv) == 0:
            continue
        sim = qv @ docs.multivec.T  # (len_q, T_docs)
        # max over each document's token span, by reduceat over the span starts
        starts = d_off[:-1][nonempty]
        per_doc = np.maximum.reduceat(sim, starts, axis=1) if len(starts) else np.zeros((len(qv), 0))
        out[i, nonempty] = per_doc.sum(axis=0) / len(qv)
    return out


def all_scores(queries: EncodedBatch, docs: EncodedBatch) -> dict[str, np.ndarray]:
    """Exact (m, n) score matrices for every representation."""
    return {
        "dense": dense_scores(queries.dense, docs.dense),
        "sparse": sparse_scores(queries.sparse, docs.sparse),
        "multivec": multivec_scores(queries, docs),
    }
