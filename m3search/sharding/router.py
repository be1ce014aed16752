"""Fan-out and merge: a sharded search that returns exactly what one unsharded index would.

The planner of one index (1) takes each source's top-`depth` candidates, (2) scores their union exactly on
every weighted component, (3) fuses: a weighted sum, or reciprocal ranks over that union, ties broken by
internal id. The router reproduces each step over the shards:
(1) every shard returns its top-`depth` per source with the source's scores; the global top-`depth` of a
    source is the best `depth` of those lists (ties by insertion number), which is the set one index finds;
(2) each shard scores its own members of the union exactly (all three stores live in every shard);
(3) the router fuses with the planner's own functions over the union, using the global insertion numbers
    as ids, so RRF ranks and tie-breaks are the unsharded ones.
Lexical weights carry no collection statistics, so no score depends on which shard holds a document.

`fan(method, args_per_shard)` runs one step on every shard and returns the results in shard order: a loop
in one process (`local_fan`), or Ray Serve handles (`m3search.distributed.serve`).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from m3search.errors import ConfigError
from m3search.planner import candidates as cand
from m3search.planner import fusion as fuse
from m3search.planner.hits import Hit
from m3search.planner.filters import Filter
from m3search.planner.planner import FUSIONS, MAX_K, _skip_per_query, hit_fields
from m3search.planner.weights import COMPONENTS, resolve_weights
from m3search.types import EncodedBatch

Fan = Callable[[str, Sequence[tuple]], list]


def local_fan(shards: Sequence[Any]) -> Fan:
    def fan(method: str, args: Sequence[tuple]) -> list:
        return [getattr(s, method)(*a) for s, a in zip(shards, args)]

    return fan


def search_encoded(fan: Fan, n_shards: int, components: Sequence[str], n_docs: int, queries: EncodedBatch, *,
                   k: int = 10, mode: str | None = None, weights: Mapping[str, float] | str | None = None,
                   depths: int | Mapping[str, int] | None = None, fusion: str | None = "weighted",
                   rrf_k: float | None = fuse.DEFAULT_RRF_K, explain: bool = False, all_scores: bool = False,
                   with_text: bool = True, params: Mapping[str, Mapping[str, Any]] | None = None,
                   filter: Any = None, offset: int = 0, fields: Sequence[str] | None = None,
                   drop_pieces: Any = None) -> list[list[Hit]]:
    """The planner's search (same options, same validation) over `n_shards` shards reached through `fan`.
    A filter is parsed once here and applied inside every shard's candidate search."""
    fusion = "weighted" if fusion is None else fusion  # None: the default (no tuned defaults on shards yet)
    rrf_k = fuse.DEFAULT_RRF_K if rrf_k is None else rrf_k
    if drop_pieces:
        raise ConfigError("drop_pieces is not available on a sharded index yet: search without it")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    if k > MAX_K:
        raise ConfigError(f"k={k} is above the limit of {MAX_K} hits per query; ask for fewer")
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
        raise ConfigError(f"offset must be an integer >= 0, got {offset!r}")
    want = hit_fields(fields)
    flt = Filter.parse(filter)
    if fusion not in FUSIONS:
        raise ConfigError(f"unknown fusion {fusion!r}: choose one of {', '.join(FUSIONS)}")
    if fusion == "rrf" and not rrf_k > 0:
        raise ConfigError(f"rrf_k must be > 0, got {rrf_k!r}")
    w = resolve_weights(mode, weights)
    if "text" in w or (isinstance(depths, Mapping) and (depths.get("text") or 0) > 0):
        # BM25 needs collection statistics over all shards, which the fan-out does not gather yet
        raise ConfigError("the text (BM25) signal is not available on a sharded index yet: search it without "
                          "'text' in the mode, weights or depths")
    absent = [c for c in w if c not in components]
    if absent:
        raise ConfigError(f"this index has no {' or '.join(absent)} component (it has: {', '.join(components) or 'none'}): "
                          "choose a mode or weights over the components it has")
    k, offset = int(k), int(offset)
    depth_of = cand.resolve_depths(w, depths, k + offset, available=[s for s in cand.SOURCES if s in components])
    m = len(queries)
    if m == 0 or n_docs == 0:
        return [[] for _ in range(m)]

    # (1) per-source candidates from every shard, merged to the global top-depth of each source
    gens, found = zip(*fan("candidates", [(queries, depth_of, params, flt)] * n_shards))
    parts_q, parts_shard, parts_id, parts_key = [], [], [], []
    for source, depth in depth_of.items():
        D = np.concatenate([f[source][0] for f in found], axis=1)
        I = np.concatenate([f[source][1] for f in found], axis=1)
        K = np.concatenate([f[source][2] for f in found], axis=1)
        S = np.concatenate([np.full(f[source][1].shape, s, np.int64) for s, f in enumerate(found)], axis=1)
        valid = I >= 0
        # best first: score descending, then insertion number (an unsharded index's internal id)
        order = np.lexsort((np.where(valid, K, np.iinfo(np.int64).max), -np.where(valid, D, -np.inf)), axis=1)
        top = order[:, :depth]
        rows = np.arange(m)[:, None]
        keep = valid[rows, top]
        parts_q.append(np.broadcast_to(rows, top.shape)[keep])
        parts_shard.append(S[rows, top][keep])
        parts_id.append(I[rows, top][keep])
        parts_key.append(K[rows, top][keep])
    q_all = np.concatenate(parts_q)
    shard_all, id_all, key_all = np.concatenate(parts_shard), np.concatenate(parts_id), np.concatenate(parts_key)
    if len(key_all) == 0:
        return [[] for _ in range(m)]
    # the union: unique (query, document), sorted by query then insertion number, as the planner's gather
    _, first = np.unique(np.stack([q_all, key_all], axis=1), axis=0, return_index=True)
    q_index, shard_ix, ids, keys = q_all[first], shard_all[first], id_all[first], key_all[first]

    # (2) exact scores, each shard for its own documents
    scored = [c for c in COMPONENTS if c in components and (all_scores or c in w)]
    members = [np.flatnonzero(shard_ix == s) for s in range(n_shards)]
    got = fan("score", [(gens[s], queries, q_index[p], ids[p], scored) for s, p in enumerate(members)])
    scores = {c: np.zeros(len(ids), dtype=np.float32) for c in scored}
    for p, shard_scores in zip(members, got):
        for c in scored:
            scores[c][p] = shard_scores[c]

    # (3) fusion over the union with the planner's functions, global insertion numbers as ids
    if fusion == "rrf":
        fused = fuse.reciprocal_rank(q_index, keys, scores, w, rrf_k)
    else:
        fused = fuse.weighted_sum(scores, w)
    top = fuse.top_k_per_query(q_index, keys, fused, k + offset)
    if offset:
        top = _skip_per_query(top, q_index, offset)
    positions = [top[shard_ix[top] == s] for s in range(n_shards)]
    shard_hits = fan("hits", [(gens[s], queries, q_index[p], ids[p], keys[p], fused[p],
                               {c: v[p] for c, v in scores.items()}, explain, with_text, want)
                              for s, p in enumerate(positions)])
    by_pos: dict[int, Hit] = {}
    for p, hits in zip(positions, shard_hits):
        by_pos.update(zip(p.tolist(), hits))
    out: list[list[Hit]] = [[] for _ in range(m)]
    for p in top.tolist():
        out[int(q_index[p])].append(by_pos[p])
    return out
