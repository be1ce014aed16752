"""Length-sorted batches under a token budget, so padding waste stays small whatever the length mix.

A batch's cost is its padded size: (number of sequences) x (longest sequence). Sorting by length and filling
each batch up to `batch_tokens` padded tokens keeps every batch near-rectangular; a fixed count per batch
(FlagEmbedding's batch_size) either wastes memory on long inputs or under-fills on short ones.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def plan_batches(lengths: Sequence[int], batch_tokens: int) -> list[np.ndarray]:
    """Group positions into batches, longest first; each batch's padded size is <= batch_tokens.

    A sequence longer than the budget gets a batch of its own. Within a batch positions are in descending
    length order (ties keep input order); callers restore their order with the returned indices.

    >>> [b.tolist() for b in plan_batches([3, 10, 4, 9], batch_tokens=20)]
    [[1, 3], [2, 0]]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        size = max(batch_tokens // longest, 1)
        batches.append(order[start : start + size])
        start += size
    return batches


def padding_ratio(lengths: Sequence[int], batches: Sequence[np.ndarray]) -> float:
    """Padded tokens over real tokens (1.0 means no padding at all); for benchmarks and logs."""
    lengths = np.asarray(lengths, dtype=np.int64)
    real = int(lengths.sum())
    padded = sum(len(b) * int(lengths[b].max()) for b in batches if len(b))
    return padded / real if real else 1.0
