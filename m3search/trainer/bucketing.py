"""Batches drawn from one length bucket at a time (BGE-M3 paper, "efficient batching").

Examples are grouped by their length in tokens so a batch pads to similar lengths: short texts get no long
padding and the long buckets can use a smaller batch size. The order is a pure function of (seed, epoch), so
a resumed run continues with exactly the batches it would have seen.
"""
from __future__ import annotations

import bisect
from typing import Sequence

import numpy as np

from m3search.errors import ConfigError


def check_edges(edges: Sequence[int]) -> list[int]:
    edges = [int(e) for e in edges]
    if any(e <= 0 for e in edges) or any(a >= b for a, b in zip(edges, edges[1:])):
        raise ConfigError(f"bucket edges must be positive and strictly increasing, got {edges}")
    return edges


def bucket_of(length: int, edges: Sequence[int]) -> int:
    """Bucket i holds lengths in (edges[i-1], edges[i]]; lengths above the last edge go to bucket len(edges)."""
    return bisect.bisect_left(edges, length)


class BucketBatchSampler:
    """Yields lists of example indices, each list from a single bucket (and a single `group` label).

    lengths: one length per example (e.g. the longest of its passages in tokens).
    edges: bucket edges, see `bucket_of`.
    batch_size: one size for all buckets, or one per bucket (len(edges) + 1 values).
    groups: optional label per example (e.g. the task); batches never mix labels, like FlagEmbedding's
        batches from one dataset at a time.
    drop_last: drop each bucket's incomplete last batch (a distributed run needs equal batches everywhere).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        edges: Sequence[int],
        batch_size: int | Sequence[int],
        seed: int,
        groups: Sequence[str] | None = None,
        drop_last: bool = True,
    ):
        self.edges = check_edges(edges)
        n_buckets = len(self.edges) + 1
        sizes = [int(batch_size)] * n_buckets if np.isscalar(batch_size) else [int(b) for b in batch_size]
        if len(sizes) != n_buckets or any(b <= 0 for b in sizes):
            raise ConfigError(
                f"batch sizes must be one positive number or one per bucket ({n_buckets} for edges {self.edges}), "
                f"got {batch_size}"
            )
        self.batch_sizes = sizes
        self.seed = int(seed)
        self.drop_last = drop_last
        self.buckets = [bucket_of(int(n), self.edges) for n in lengths]
        labels = list(groups) if groups is not None else [""] * len(self.buckets)
        if len(labels) != len(self.buckets):
            raise ConfigError(f"{len(labels)} group labels for {len(self.buckets)} examples")
        self._members: dict[tuple[str, int], list[int]] = {}
        for i, key in enumerate(zip(labels, self.buckets)):
            self._members.setdefault(key, []).append(i)

    def epoch(self, epoch: int) -> list[list[int]]:
        """All batches of one epoch, in order."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        batches: list[list[int]] = []
        for key in sorted(self._members):
            members = np.array(self._members[key])
            rng.shuffle(members)
            size = self.batch_sizes[key[1]]
            for start in range(0, len(members), size):
                chunk = members[start : start + size].tolist()
                if len(chunk) < size and self.drop_last:
                    continue
                batches.append(chunk)
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]

    def __len__(self) -> int:
        return len(self.epoch(0))
