"""Which segments to merge after a commit: a logarithmic, tiered policy over adjacent segments.

Segments are kept in id order and only adjacent runs are merged, so a merged segment's ids stay an
increasing range (see `state.py`). Each segment has a tier, floor(log_factor(live docs / floor_docs)); a
run of `merge_factor` adjacent segments of the same tier merges into one of the next tier. Every document
is thus rewritten O(log n) times and the segment count stays O(merge_factor * log n). Independently, a
segment whose deleted share exceeds `max_deleted_ratio` is rewritten to purge them, and a segment with
no live document is dropped without rewriting anything, and a segment a component calls stale (multi-vector
codes written as fp16 before the index's codec was trained) is rewritten once.

Tiers alone let a 100k-document CLI build (a commit every 1,000) keep three dense graphs ([64k, 16k, 16k,
4k]), and a graph costs a whole search however small it is: the CLI-built index answered dense queries
2.05x slower than the same index optimized (bench/results/query_latency_cli_dense_sparse_n100000.md). So
segments that a component searches on their own (`searched_alone`: a dense HNSW or IVF segment; flat ones
are scanned together in one pass) are capped at `max_searched_alone`: the newer ones beyond the cap merge
into one, and into the one before them once they hold a `grow_ratio`-th of its documents. The dense
component extends the oldest segment's graph instead of rebuilding it when that segment loses no document
(dense/component.py), so the merges this adds cost mostly the new documents. Simulated, a commit every 1,000
documents: at 100k the segments end [80k, 16k, 4k] (tiers alone: [64k, 16k, 16k, 4k]) and at 1M never more
than 2 graphs (tiers alone: up to 8), for ~2x the documents rewritten at 1M (10 vs 4.7 rewrites each).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from m3search.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class TieredMergePolicy:
    # 4, not 8: a CLI build (a commit every 1,000 docs) holds at most 6 segments at 30k docs and 9 at 100k
    # (8: 9 and 14; on average 3.5-4.5 vs 5-7), for ~1.4x the merge writes; query cost grows per segment.
    merge_factor: int = 4
    floor_docs: int = 1000  # segments below this size share the lowest tier
    max_deleted_ratio: float = 0.3
    max_searched_alone: int = 2  # segments each searched on its own (see the module's docstring)
    grow_ratio: float = 4.0

    def __post_init__(self) -> None:
        if self.merge_factor < 2:
            raise ConfigError(f"merge_factor must be >= 2, got {self.merge_factor}")
        if self.floor_docs < 1:
            raise ConfigError(f"floor_docs must be >= 1, got {self.floor_docs}")
        if not 0.0 < self.max_deleted_ratio <= 1.0:
            raise ConfigError(f"max_deleted_ratio must be in (0, 1], got {self.max_deleted_ratio}")
        if self.max_searched_alone < 1:
            raise ConfigError(f"max_searched_alone must be >= 1, got {self.max_searched_alone}")
        if not self.grow_ratio >= 1.0:
            raise ConfigError(f"grow_ratio must be >= 1, got {self.grow_ratio}")

    def tier(self, n_live: int) -> int:
        if n_live < self.floor_docs:
            return 0
        return 1 + int(math.log(n_live / self.floor_docs, self.merge_factor) + 1e-9)

    def plan(self, n_docs: Sequence[int], n_deleted: Sequence[int], stale: Sequence[bool] | None = None,
             searched_alone: Sequence[bool] | None = None) -> list[range]:
        """Non-overlapping runs (ranges of positions in the segment list) to merge, each into one segment.

        A run of length 1 rewrites one segment without its deleted documents (or drops it if empty);
        `stale[p]` asks for that rewrite too (a segment a component would now store better).
        `searched_alone[p]`: segment p costs a search of its own; when the tiers plan nothing, the segments
        beyond `max_searched_alone` of those are merged (the writer plans again after each merge).
        """
        live = [n - d for n, d in zip(n_docs, n_deleted)]
        runs: list[range] = []
        i = 0
        while i < len(live):
            j = i
            while j < len(live) and self.tier(live[j]) == self.tier(live[i]):
                j += 1
            for start in range(i, j - self.merge_factor + 1, self.merge_factor):
                runs.append(range(start, start + self.merge_factor))
            i = j
        taken = {p for r in runs for p in r}
        for p, (n, d) in enumerate(zip(n_docs, n_deleted)):
            if p not in taken and n and (d / n > self.max_deleted_ratio or d == n or (stale and stale[p])):
                runs.append(range(p, p + 1))
        if not runs and searched_alone is not None:
            runs = self._cap_searched_alone(live, searched_alone)
        return sorted(runs, key=lambda r: r.start)

    def _cap_searched_alone(self, live: Sequence[int], searched_alone: Sequence[bool]) -> list[range]:
        alone = [p for p, a in enumerate(searched_alone) if a and live[p] > 0]
        cap = self.max_searched_alone
        if len(alone) <= cap:
            return []
        tail = alone[cap - 1 :]  # these become one segment, or join the one before them once big enough
        before = alone[cap - 2] if cap >= 2 else None
        grown = before is not None and sum(live[p] for p in tail) * self.grow_ratio >= live[before]
        return [range(before if grown else tail[0], tail[-1] + 1)]


def merge_all(n_segments: int, n_deleted: Sequence[int]) -> list[range]:
    """The plan of `optimize()`: one run over everything, unless that would change nothing."""
    if n_segments > 1 or (n_segments == 1 and n_deleted[0] > 0):
        return [range(0, n_segments)]
    return []
