"""One shard's side of a sharded search: candidates, exact scores, hits, over one snapshot of its index.

The router (`router.py`) calls these three steps on every shard, in-process or as Ray Serve deployments;
each is a thin use of the planner's own readers and hit builder, so a shard scores exactly as an
unsharded index does.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from m3search.planner.candidates import search_source
from m3search.planner.planner import hit_fields
from m3search.planner import Planner
from m3search.planner.hits import Hit
from m3search.sharding.layout import global_keys, read_order
from m3search.types import EncodedBatch

log = logging.getLogger(__name__)


class ShardSearcher:
    """Searches shard number `number` of the sharded index at `root`.

    `candidates` searches the shard's latest commit and returns its generation; `score` and `hits` take
    that generation back, so the three steps of one search read one snapshot even when the shard commits
    in between (the last few snapshots are kept for that).
    """

    KEEP = 4  # snapshots kept for searches in flight

    def __init__(self, root: str | Path, name: str, number: int,
                 token_strings: Callable[[Sequence[int]], list[str]] | None = None):
        from m3search.indexes.index import Index

        self.root, self.name, self.number = Path(root), name, number
        self._index = Index.open(self.root / name, writable=False)
        self._token_strings = token_strings
        self._views: dict[int, tuple[Planner, np.ndarray]] = {}
        self._lock = threading.Lock()

    @property
    def identity(self):
        return self._index.identity

    def _latest(self) -> tuple[int, Planner, np.ndarray]:
        with self._lock:
            gen = int(self._index.generation)
            if gen not in self._views:
                snapshot = self._index.snapshot()
                gen = int(snapshot.generation)
                if gen not in self._views:
                    self._views[gen] = (Planner(snapshot, token_strings=self._token_strings),
                                        read_order(self.root, self.name))
                    for old in sorted(self._views)[: -self.KEEP]:
                        self._views.pop(old)[0].snapshot.close()
                else:
                    snapshot.close()
            return (gen, *self._views[gen])

    def _view(self, generation: int | None) -> tuple[Planner, np.ndarray]:
        with self._lock:
            if generation in self._views:
                return self._views[generation]
        return self._latest()[1:]

    def refresh(self) -> None:
        """Forget the snapshots taken: the next search reads the latest commit."""
        with self._lock:
            for planner, _ in self._views.values():
                planner.snapshot.close()
            self._views = {}

    def n_docs(self) -> int:
        return int(self._latest()[1].snapshot.n_docs)

    def components(self) -> list[str]:
        return list(self._latest()[1].readers())

    def candidates(self, queries: EncodedBatch, depths: Mapping[str, int],
                   params: Mapping[str, Mapping[str, Any]] | None = None, flt: Any = None):
        """(generation, {source: (scores, local ids, global keys)}), each (m, depth); rows padded with
        (-inf, -1, -1)."""
        generation, planner, order = self._latest()
        readers = planner.readers()
        params = params or {}
        m = len(queries)
        out = {}
        exclude = None if flt is None or planner.snapshot.n_docs == 0 else ~flt.mask(planner.snapshot)
        for source, depth in depths.items():
            if planner.snapshot.n_docs == 0:
                D, I = np.full((m, 0), -np.inf, np.float32), np.full((m, 0), -1, np.int64)
            else:
                D, I = search_source(readers[source], source, queries, depth, exclude, params.get(source))
            D = np.asarray(D, dtype=np.float32).reshape(m, -1)
            I = np.asarray(I, dtype=np.int64).reshape(m, -1)
            keys = np.where(I >= 0, global_keys(order, self.number, I), -1)
            out[source] = (D, I, keys)
        return generation, out

    def score(self, generation: int, queries: EncodedBatch, q_index: np.ndarray, ids: np.ndarray,
              components: Sequence[str]) -> dict[str, np.ndarray]:
        """Exact scores of (query, local id) pairs on each component asked for."""
        planner, _ = self._view(generation)
        readers = planner.readers()
        return {c: Planner._score(readers[c], queries, q_index, ids) for c in components}

    def hits(self, generation: int, queries: EncodedBatch, q_index: np.ndarray, ids: np.ndarray, keys: np.ndarray,
             fused: np.ndarray, scores: Mapping[str, np.ndarray], explain: bool, with_text: bool,
             want: frozenset[str] | None = None) -> list[Hit]:
        """Hits for the given pairs, in the order given; internal_id is the global insertion number."""
        planner, _ = self._view(generation)
        if len(ids) == 0:
            return []
        per_query = planner._hits(queries, q_index, ids, fused, scores, len(queries), explain, with_text,
                                  want if want is not None else hit_fields(None))
        # _hits groups by query, keeping the given order within each: undo the grouping
        flat, cursor = [], [0] * len(queries)
        for qi in q_index.tolist():
            flat.append(per_query[qi][cursor[qi]])
            cursor[qi] += 1
        return [dataclasses.replace(h, internal_id=int(k)) for h, k in zip(flat, keys.tolist())]

    def live_ids(self) -> list[str]:
        """External ids of the live documents (tests, exports)."""
        return [e for e, _ in self._latest()[1].snapshot.iter_ids()]

    def close(self) -> None:
        self.refresh()
        self._index.close()
