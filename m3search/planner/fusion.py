"""Fusion of exact component scores over (query, document) pairs, vectorised over a batch of queries.

Pairs are flat arrays: `q_index[p]` is the query and `ids[p]` the document of pair p. Within a query,
ties are broken by ascending internal id so results are deterministic.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

DEFAULT_RRF_K = 60
# Component scores this close (relative) rank as ties, ordered by id. One document's exact score can differ in
# its last float32 bits between candidate batches (a matrix product's summation order differs by batch size
# and CPU), and that must not reorder exactly tied documents: a shard and the whole index, or two runs,
# would give them different ranks and so different RRF scores.
RANK_TIE_TOLERANCE = 1e-6


def _group_order(q_index: np.ndarray, ids: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs sorted by query, then score descending, then id; and each sorted pair's 0-based rank in its query."""
    order = np.lexsort((ids, -score, q_index))
    q_sorted = q_index[order]
    # the first position of every query's run in the sorted order
    starts = np.searchsorted(q_sorted, q_sorted, side="left")
    return order, np.arange(len(order)) - starts


def rank_order(q_index: np.ndarray, ids: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """As `_group_order`, with scores within RANK_TIE_TOLERANCE (relative) of their neighbour in the sorted
    order counted as tied: a run of such scores is ordered by id. What RRF ranks by."""
    order, _ = _group_order(q_index, ids, score)
    if len(order) < 2:
        return order, np.zeros(len(order), dtype=np.int64)
    s, q = score[order].astype(np.float64), q_index[order]
    with np.errstate(invalid="ignore"):  # -inf next to -inf: a tie
        gap = s[:-1] - s[1:] > RANK_TIE_TOLERANCE * np.maximum(1.0, np.abs(s[:-1]))
    starts_group = np.ones(len(order), dtype=bool)
    starts_group[1:] = (q[1:] != q[:-1]) | gap
    order = order[np.lexsort((ids[order], np.cumsum(starts_group)))]
    q_sorted = q_index[order]
    return order, np.arange(len(order)) - np.searchsorted(q_sorted, q_sorted, side="left")


def weighted_sum(scores: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """sum over components of weight * exact score."""
    n = len(next(iter(scores.values())))
    out = np.zeros(n, dtype=np.float64)
    for name, w in weights.items():
        out += w * scores[name].astype(np.float64)
    return out


def reciprocal_rank(
    q_index: np.ndarray,
    ids: np.ndarray,
    scores: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    rrf_k: float = DEFAULT_RRF_K,
) -> np.ndarray:
    """Weighted reciprocal-rank fusion: sum over components of weight / (rrf_k + rank).

    The rank of a document is its 1-based position among its query's candidates by that component's
    exact score (`rank_order`: near-equal scores are ties, ordered by id), so every candidate has a rank on
    every component.
    """
    out = np.zeros(len(ids), dtype=np.float64)
    for name, w in weights.items():
        order, rank0 = rank_order(q_index, ids, scores[name])
        ranks = np.empty(len(ids), dtype=np.float64)
        ranks[order] = rank0 + 1
        out += w / (rrf_k + ranks)
    return out


def top_k_per_query(q_index: np.ndarray, ids: np.ndarray, fused: np.ndarray, k: int) -> np.ndarray:
    """Positions of each query's k best pairs, grouped by query in ascending order, best first."""
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    order, rank0 = _group_order(q_index, ids, fused)
    return order[rank0 < k]
