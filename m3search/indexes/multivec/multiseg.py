"""Searching and scoring all multi-vector segments of a snapshot in one pass.

Searched one segment at a time, every segment gets the candidate generator's whole budget (a pool of 2,048
documents for centroid interaction and 256 for full-code MaxSim by default, generator.py), so a snapshot of
s segments does about s times the work of one segment holding the same documents. Here the generator's three
stages run over the union of the segments that share the index's codec:

1. probe: each segment's own centroid lists give its documents' estimates (cost: the postings reached);
2. the best `pool` estimates over all segments get centroid interaction, each segment's share on its codes;
3. the best `candidates` of those, and the best `mean_candidates` over all segments by mean vector
   (m3search.indexes.multivec.means; segments without mean vectors take no part), are scored from their
   full codes;

with `pool` and `candidates` sized by the snapshot's live documents, as for one segment. A document's
estimate and scores depend only on its codes, and ties go to the smaller internal id at every stage
(segments are ordered by internal id), so a snapshot of many segments returns what one merged segment with
the same codes returns. The query's coarse similarities and lookup tables are computed once per query, not
once per segment. Segments that can't join (stored as fp16 before the codec existed, or without lists) are
searched on their own and merged by the caller.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from m3search.errors import InputError
from m3search.indexes.multivec import generator as gen
from m3search.indexes.multivec import means as mv
from m3search.indexes.multivec.reader import MultivecSegmentReader, scoring_threads, search_threads


def shared_codec_groups(readers: Sequence[object]) -> tuple[list[int], list[int]]:
    """(positions of the readers that share one codec with lists, the other positions). The group is the
    codec most segments use; a reader that is not a MultivecSegmentReader is always left out."""
    ids = [r.codec.codec_id if isinstance(r, MultivecSegmentReader) and r.lists is not None else None
           for r in readers]
    counts: dict[str, int] = {}
    for c in ids:
        if c is not None:
            counts[c] = counts.get(c, 0) + 1
    if not counts:
        return [], list(range(len(readers)))
    best = max(counts, key=lambda c: counts[c])
    return [p for p, c in enumerate(ids) if c == best], [p for p, c in enumerate(ids) if c != best]


def _check_param(name: str, v) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
        raise InputError(f"multivec search parameter {name} must be an integer >= 1, got {v!r}")


class _Part:
    """One segment in the pass: its reader, its mask of ids to skip, and where its positions start."""

    def __init__(self, reader: MultivecSegmentReader, skip: np.ndarray | None, start: int):
        self.reader, self.skip, self.start = reader, skip, start
        self.n = reader.n_docs


def search(readers: Sequence[MultivecSegmentReader], skips: Sequence[np.ndarray | None], n_live: int,
           q_vecs: np.ndarray, q_lengths: np.ndarray, k: int, nprobe=None, candidates=None, pool=None,
           scorer=None, threads=None, scored=None,
           mean_candidates=None) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Top-k over the readers (one codec, lists in every one) as if they were one segment.

    skips[s]: reader s's mask of local ids never to return (deleted or filtered), or None; n_live: live
    documents over all readers. Returns (D (m, k), positions (m, k) into the concatenated local id spaces,
    -1 padded, starts): position p of reader s is local id p - starts[s]. scored: a list that receives
    (query, positions, scores) of every document scored from its full codes."""
    for name, v in (("nprobe", nprobe), ("candidates", candidates), ("pool", pool)):
        _check_param(name, v)
    first = readers[0]
    n_means = (mv.default_mean_candidates(sum(r.n_docs for r in readers), first.dim) if mean_candidates is None
               else mv.check_mean_candidates(mean_candidates))
    q_vecs, q_lengths = first._check_queries(q_vecs, q_lengths)
    use_lut = first._use_lut(scorer)
    m = len(q_lengths)
    parts, start = [], 0
    for r, skip in zip(readers, skips):
        parts.append(_Part(r, skip, start))
        start += r.n_docs
    total = start
    D = np.full((m, k), -np.inf, np.float32)
    P = np.full((m, k), -1, np.int64)
    if k == 0 or n_live == 0:
        return D, P, [p.start for p in parts]
    starts = np.asarray([p.start for p in parts], np.int64)
    live = np.ones(total, bool)
    for p in parts:
        if p.skip is not None:
            live[p.start : p.start + p.n] = ~p.skip
    live_pos = np.flatnonzero(live)
    cands = min(n_live, max(k, candidates or gen.default_candidates(k, n_live)))
    codec = first.codec
    coarse = codec.arrays["coarse"]
    n_centroids = len(coarse)
    q_off = np.zeros(m + 1, np.int64)
    np.cumsum(q_lengths, out=q_off[1:])
    with search_threads(first.config.get("threads") if threads is None else threads):
        for qi in range(m):
            q = q_vecs[q_off[qi] : q_off[qi + 1]]
            if not len(q):
                continue  # a query without tokens matches nothing
            sims = gen.centroid_sims(q, coarse)  # (lq, K), shared by every segment
            if cands >= n_live:
                pos = live_pos
            else:
                probe = nprobe or gen.default_nprobe(n_centroids)
                est = np.concatenate([p.reader.probe_estimates(sims, p.skip, probe) for p in parts])
                size = min(n_live, max(cands, pool or gen.default_pool(cands, n_live)))
                pooled = gen.top_positions(est, size)
                if len(pooled) < size:  # too few reached: fill up with unreached live documents, by id
                    unreached = np.isinf(est) & live
                    pooled = np.concatenate([pooled, np.flatnonzero(unreached)[: size - len(pooled)]])
                pooled = np.sort(pooled)
                ci = _per_segment(parts, starts, pooled, lambda p, local: p.reader.centroid_scores(local, sims))
                pos = np.sort(gen.top_ids(ci, pooled, gen.default_refine(cands, len(pooled))))
                if len(pos) > cands:  # stage 2.5: the centroid and the first sub-codes of every token
                    partial = gen.partial_tables(codec, q, sims)
                    ps = _per_segment(parts, starts, pos, lambda p, local: p.reader.partial_scores(local, partial))
                    pos = np.sort(gen.top_ids(ps, pos, cands))
                if n_means and any(p.reader.means is not None for p in parts):
                    est = np.concatenate([p.reader.mean_estimates(q, p.skip) for p in parts])
                    pos = np.union1d(pos, gen.top_positions(est, n_means))
            tables = codec.lut_tables(q, sims) if use_lut else None  # sims: the coarse table
            scores = _per_segment(parts, starts, pos, lambda p, local: p.reader.full_scores(q, local, tables))
            if scored is not None:
                scored.append((qi, pos, scores))
            top = gen.top_ids(scores, pos, k)
            P[qi, : len(top)] = top
            D[qi, : len(top)] = scores[np.searchsorted(pos, top)]
    return D, P, [p.start for p in parts]


def score_pairs(readers: Sequence[MultivecSegmentReader], q_vecs: np.ndarray, q_lengths: np.ndarray,
                local: Sequence[np.ndarray], q_of: Sequence[np.ndarray], scorer=None,
                threads=None) -> list[np.ndarray]:
    """MaxSim of pairs spread over readers that share one codec: reader s scores its local ids local[s]
    against queries q_of[s]; each query's lookup tables are built once for all readers."""
    first = readers[0]
    q_vecs, q_lengths = first._check_queries(q_vecs, q_lengths)
    tokens = sum(float(r.doc_lengths(np.asarray(ids, np.int64)).sum()) for r, ids in zip(readers, local))
    work = tokens * max(1.0, len(q_vecs) / max(1, len(q_lengths))) * first.dim
    with scoring_threads(work, first.config.get("threads") if threads is None else threads,
                         first._use_lut(scorer)):
        return _score_pairs(readers, q_vecs, q_lengths, local, q_of, scorer)


def _score_pairs(readers, q_vecs, q_lengths, local, q_of, scorer) -> list[np.ndarray]:
    first = readers[0]
    use_lut = first._use_lut(scorer)
    q_off = np.zeros(len(q_lengths) + 1, np.int64)
    np.cumsum(q_lengths, out=q_off[1:])
    outs = [np.zeros(len(ids), np.float32) for ids in local]
    groups = []  # per reader: (order, bounds) of its pairs grouped by query
    for qs in q_of:
        order = np.argsort(qs, kind="stable")
        groups.append((order, np.searchsorted(qs[order], np.arange(len(q_lengths) + 1))))
    for qi in np.unique(np.concatenate([np.asarray(qs) for qs in q_of])) if q_of else []:
        q = q_vecs[q_off[qi] : q_off[qi + 1]]
        if not len(q):
            continue  # a query without tokens scores 0, as in m3search.scoring.maxsim
        tables = first.codec.lut_tables(q) if use_lut else None
        for r, ids, out, (order, bounds) in zip(readers, local, outs, groups):
            sel = order[bounds[qi] : bounds[qi + 1]]
            if len(sel):
                out[sel] = r.full_scores(q, ids[sel], tables)
    return outs


def _per_segment(parts: list[_Part], starts: np.ndarray, pos: np.ndarray, score) -> np.ndarray:
    """score(part, local ids) for the sorted positions pos, split by segment, concatenated in order."""
    out = np.zeros(len(pos), np.float32)
    cuts = np.searchsorted(pos, np.append(starts, np.iinfo(np.int64).max))
    for s, p in enumerate(parts):
        a, b = cuts[s], cuts[s + 1]
        if b > a:
            out[a:b] = score(p, pos[a:b] - p.start)
    return out
