"""One shard's side of a sharded search: candidates, exact scores, hits, over one snapshot of its index.

The router (`router.py`) calls these three steps on every shard, in-process or as Ray Serve deployments;
each is a thin use of the planner's own readers and hit builder, so a shard scores exactly as an
unsharded index does.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from m3search.planner import Planner
from m3search.planner.hits import Hit
from m3search.planner.weights import COMPONENTS
from m3search.sharding.layout import global_keys, read_order
from m3search.types import EncodedBatch

log = logging.getLogger(__name__)


class ShardSearcher:
    """Searches the last commit of shard number `number` of the sharded index at `root`."""

    def __init__(self, root: str | Path, name: str, number: int,
                 token_strings: Callable[[Sequence[int]], list[str]] | None = None):
        from m3search.indexes.index import Index

        self.root, self.name, self.number = Path(root), name, number
        self._index = Index.open(self.root / name, writable=False)
        self._token_strings = token_strings
        self._snapshot = None
        self._planner: Planner | None = None
        self._order = None

    @property
    def identity(self):
        return self._index.identity

    def _planner_now(self) -> Planner:
        if self._planner is None:
            self._snapshot = self._index.snapshot()
            self._order = read_order(self.root, self.name)
            self._planner = Planner(self._snapshot, token_strings=self._token_strings)
        return self._planner

    def refresh(self) -> None:
        """See the shard's latest commit on the next call."""
        if self._snapshot is not None:
            self._snapshot.close()
        self._snapshot = self._planner = self._order = None

    def n_docs(self) -> int:
        return int(self._planner_now().snapshot.n_docs)

    def components(self) -> list[str]:
        return list(self._planner_now().readers())

    def candidates(self, queries: EncodedBatch, depths: Mapping[str, int],
                   params: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, tuple[np.ndarray, ...]]:
        """Per source: (scores, local ids, global keys), each (m, depth); rows padded with (-inf, -1, -1)."""
        planner = self._planner_now()
        readers = planner.readers()
        params = params or {}
        m = len(queries)
        out = {}
        for source, depth in depths.items():
            if planner.snapshot.n_docs == 0:
                D, I = np.full((m, 0), -np.inf, np.float32), np.full((m, 0), -1, np.int64)
            else:
                query_input = queries.dense if source == "dense" else queries.sparse
                D, I = readers[source].search(query_input, depth, **dict(params.get(source, {})))
            D = np.asarray(D, dtype=np.float32).reshape(m, -1)
            I = np.asarray(I, dtype=np.int64).reshape(m, -1)
            keys = np.where(I >= 0, global_keys(self._order, self.number, I), -1)
            out[source] = (D, I, keys)
        return out

    def score(self, queries: EncodedBatch, q_index: np.ndarray, ids: np.ndarray,
              components: Sequence[str]) -> dict[str, np.ndarray]:
        """Exact scores of (query, local id) pairs on each component asked for."""
        planner = self._planner_now()
        readers = planner.readers()
        return {c: Planner._score(readers[c], c, queries, q_index, ids) for c in components}

    def hits(self, queries: EncodedBatch, q_index: np.ndarray, ids: np.ndarray, keys: np.ndarray, fused: np.ndarray,
             scores: Mapping[str, np.ndarray], explain: bool, with_text: bool) -> list[Hit]:
        """Hits for the given pairs, in the order given; internal_id is the global insertion number."""
        planner = self._planner_now()
        if len(ids) == 0:
            return []
        per_query = planner._hits(queries, q_index, ids, fused, scores, len(queries), explain, with_text)
        # _hits groups by query, keeping the given order within each: undo the grouping
        flat, cursor = [], [0] * len(queries)
        for qi in q_index.tolist():
            flat.append(per_query[qi][cursor[qi]])
            cursor[qi] += 1
        return [dataclasses.replace(h, internal_id=int(k)) for h, k in zip(flat, keys.tolist())]

    def close(self) -> None:
        self.refresh()
        self._index.close()


def all_components() -> tuple[str, ...]:
    return COMPONENTS
