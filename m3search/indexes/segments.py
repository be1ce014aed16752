"""Index-level readers: the segment readers' methods over global internal ids, deleted documents hidden.

A snapshot holds a fixed list of segments (`SegmentView`: opened component readers, the id map and the
deletion mask). Searches run on every segment with its deletion mask and merge the per-segment top-k;
`score_pairs`, `vectors`, `doc_weights` and `token_vectors` route ids to segments with one binary search
over the segments' first ids, call each segment once for its group, and put results back in input order.

At this level `n_docs` is the size of the internal id space (one past the largest id ever handed out), so
a caller's `deleted` mask (e.g. a metadata filter) is indexed by internal id. Ties in merged top-k are
broken by the smaller internal id, so results do not depend on how documents are split into segments.
An id that is not a live document of the snapshot (deleted, merged away, never assigned) is refused with
an InputError rather than scored as garbage.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from m3search.errors import InputError
from m3search.indexes.base import DenseReader, MultivecReader, SegmentReader, SparseReader
from m3search.indexes.state import SegmentInfo


@dataclasses.dataclass(frozen=True, eq=False)
class SegmentView:
    info: SegmentInfo
    readers: dict[str, SegmentReader]
    ids: np.ndarray | None  # (n,) increasing internal ids; None when they are info.lo + arange(n)
    deleted: np.ndarray  # (n,) bool

    @property
    def n(self) -> int:
        return self.info.n

    def global_ids(self, local: np.ndarray | None = None) -> np.ndarray:
        if local is None:
            return self.ids if self.ids is not None else np.arange(self.info.lo, self.info.lo + self.n, dtype=np.int64)
        return self.ids[local] if self.ids is not None else local + self.info.lo

    def local_ids(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(local ids, found mask) for internal ids routed to this segment; found excludes deleted ones."""
        if self.ids is None:
            local = ids - self.info.lo
            found = (local >= 0) & (local < self.n)
        else:
            local = np.searchsorted(self.ids, ids)
            found = local < self.n
            found[found] = self.ids[local[found]] == ids[found]
        local = np.where(found, local, 0)
        if self.n and self.info.n_deleted:  # (the mask is all False without deletions)
            found &= ~self.deleted[local]
        return local, found


class SegmentSet:
    """The segments of one snapshot, with id routing."""

    def __init__(self, views: Sequence[SegmentView], id_space: int, generation: int):
        self.views = list(views)
        self.id_space = id_space
        self.generation = generation
        self._los = np.asarray([v.info.lo for v in self.views], dtype=np.int64)
        # every segment a plain range [lo, lo + n) with nothing deleted (e.g. a fresh CLI build): ids are
        # routed with array operations over all segments at once, not one segment at a time
        self._ranges = (np.asarray([v.n for v in self.views], dtype=np.int64)
                        if all(v.ids is None and not v.info.n_deleted for v in self.views) else None)

    def locate(self, ids: np.ndarray) -> list[tuple[SegmentView, np.ndarray, np.ndarray]]:
        """Group `ids` by segment: [(view, positions in ids, local ids)]; refuse ids that are not live."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        seg = np.searchsorted(self._los, ids, side="right") - 1
        groups = []
        order = np.argsort(seg, kind="stable")
        bounds = np.searchsorted(seg[order], np.arange(len(self.views) + 1))
        if self._ranges is not None and len(self.views):
            at = np.maximum(seg, 0)
            local_all = ids - self._los[at]
            bad = (seg < 0) | (local_all >= self._ranges[at])
            for s, view in enumerate(self.views):
                pos = order[bounds[s] : bounds[s + 1]]
                if len(pos):
                    groups.append((view, pos, local_all[pos]))
        else:
            bad = seg < 0
            for s, view in enumerate(self.views):
                pos = order[bounds[s] : bounds[s + 1]]
                if not len(pos):
                    continue
                local, found = view.local_ids(ids[pos])
                if not found.all():
                    bad[pos[~found]] = True
                groups.append((view, pos, local))
        if bad.any():
            shown = ids[bad][:5].tolist()
            raise InputError(
                f"internal ids {shown}{' ...' if bad.sum() > 5 else ''} are not live documents of this snapshot "
                f"(generation {self.generation}): deleted, merged away or never assigned; take candidate ids "
                "from this snapshot's own search results"
            )
        return groups

    def segment_masks(self, deleted: np.ndarray | None) -> list[tuple[np.ndarray | None, int]]:
        """Per segment: (mask of ids to skip or None, live count), its deletions OR'd with the caller's
        mask over internal ids. Without a caller mask the counts come from the commit, in O(1)."""
        if deleted is None:
            return [(v.deleted if v.info.n_deleted else None, v.info.n_live) for v in self.views]
        deleted = np.asarray(deleted, dtype=bool)
        if deleted.shape != (self.id_space,):
            raise InputError(
                f"deleted mask must have shape ({self.id_space},) (one entry per internal id of this snapshot), "
                f"got {deleted.shape}"
            )
        out = []
        for v in self.views:
            mask = v.deleted | deleted[v.global_ids()]
            n_live = v.n - int(np.count_nonzero(mask))
            out.append((mask if n_live < v.n else None, n_live))
        return out


def merge_topk(Ds: list[np.ndarray], Is: list[np.ndarray], m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k per row of the concatenated (D, I) lists; ties go to the smaller id; pad with (-inf, -1)."""
    if not Ds:
        return np.full((m, k), -np.inf, dtype=np.float32), np.full((m, k), -1, dtype=np.int64)
    D = np.concatenate(Ds, axis=1).astype(np.float32, copy=False)
    I = np.concatenate(Is, axis=1).astype(np.int64, copy=False)
    if D.shape[1] < k:
        pad = k - D.shape[1]
        D = np.concatenate([D, np.full((m, pad), -np.inf, dtype=np.float32)], axis=1)
        I = np.concatenate([I, np.full((m, pad), -1, dtype=np.int64)], axis=1)
    D = np.where(I < 0, -np.inf, D).astype(np.float32)
    # padding (I = -1, D = -inf) sorts last; lexsort's last key is the primary one
    order = np.lexsort((np.where(I < 0, np.iinfo(np.int64).max, I), -D), axis=1)[:, :k]
    return np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)


def _search(segset: SegmentSet, kind: str, q: Any, m: int, k: int, deleted, params) -> tuple[np.ndarray, np.ndarray]:
    if k < 0:
        raise InputError(f"k must be >= 0, got {k}")
    Ds, Is = _search_each(zip(segset.views, segset.segment_masks(deleted)), kind, q, k, params)
    return merge_topk(Ds, Is, m, k)


def _search_each(views_masks, kind: str, q: Any, k: int, params) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per segment (view, (mask, n_live)): its top-k in global ids, for merge_topk."""
    Ds, Is = [], []
    for view, (mask, n_live) in views_masks:
        if n_live == 0 or k == 0:
            continue
        args = q if isinstance(q, tuple) else (q,)  # multivec queries are (token vectors, lengths)
        D, I = view.readers[kind].search(*args, min(k, n_live), deleted=mask, **params)
        I = np.asarray(I, dtype=np.int64)
        valid = I >= 0
        Ds.append(np.asarray(D, dtype=np.float32))
        Is.append(np.where(valid, view.global_ids(np.where(valid, I, 0)), -1))
    return Ds, Is


def _search_with_floors(segset: SegmentSet, kind: str, q: Any, m: int, k: int, deleted,
                        params) -> tuple[np.ndarray, np.ndarray]:
    """Segments one after the other, the largest first, each given the k-th best score found so far as
    its floor (sparse: blocks that can't beat it are skipped), so later segments skip most of their work.
    Exact: a document below the floor has k better ones already; ties are left to merge_topk."""
    if k < 0:
        raise InputError(f"k must be >= 0, got {k}")
    masks = segset.segment_masks(deleted)
    floor = np.full(m, -np.inf, np.float32)
    Ds, Is = [], []
    for p in sorted(range(len(segset.views)), key=lambda p: -masks[p][1]):
        view, (mask, n_live) = segset.views[p], masks[p]
        if n_live == 0 or k == 0:
            continue
        D, I = _search_each([(view, (mask, n_live))], kind, q, k, {**params, "floor": floor})
        Ds += D
        Is += I
        # the k-th best score so far (-inf while fewer than k are known): a partition, not a full merge
        S = np.concatenate(Ds, axis=1) if len(Ds) > 1 else Ds[0]
        S = np.where(np.concatenate(Is, axis=1) < 0, -np.inf, S) if len(Is) > 1 else np.where(Is[0] < 0, -np.inf, S)
        if S.shape[1] >= k:
            floor = np.ascontiguousarray(-np.partition(-S, k - 1, axis=1)[:, k - 1], dtype=np.float32)
    return merge_topk(Ds, Is, m, k)


def _multivec_search(segset: SegmentSet, q_vecs: np.ndarray, q_lengths: np.ndarray, k: int, deleted,
                     params, scored: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The segments sharing the index's codec searched in one pass (multivec/multiseg.py), the others one
    by one; merged. scored, if a list, receives (query, internal ids, scores) of what they scored exactly."""
    from m3search.indexes.multivec import multiseg

    if k < 0:
        raise InputError(f"k must be >= 0, got {k}")
    m = len(q_lengths)
    masks = segset.segment_masks(deleted)
    live = [p for p, (_, n_live) in enumerate(masks) if n_live > 0]
    group, rest = multiseg.shared_codec_groups([segset.views[p].readers["multivec"] for p in live])
    if len(group) < 2 or k == 0:
        Ds, Is = _multivec_each(zip(segset.views, masks), (q_vecs, q_lengths), k, params, scored)
        return merge_topk(Ds, Is, m, k)
    views = [segset.views[live[g]] for g in group]
    n_live = sum(masks[live[g]][1] for g in group)
    found: list | None = None if scored is None else []
    D, P, starts = multiseg.search([v.readers["multivec"] for v in views], [masks[live[g]][0] for g in group],
                                   n_live, q_vecs, q_lengths, min(k, n_live), scored=found, **params)

    def internal(pos: np.ndarray) -> np.ndarray:  # positions of the one-pass search -> internal ids
        seg = np.searchsorted(np.asarray(starts), pos, side="right") - 1
        gids = np.empty(len(pos), np.int64)
        for s, view in enumerate(views):
            sel = seg == s
            gids[sel] = view.global_ids(pos[sel] - starts[s])
        return gids

    I = np.full(P.shape, -1, np.int64)
    valid = P >= 0
    I[valid] = internal(P[valid])
    for qi, pos, values in found or []:
        scored.append((qi, internal(pos), values))
    Ds, Is = _multivec_each(((segset.views[live[r]], masks[live[r]]) for r in rest), (q_vecs, q_lengths), k,
                            params, scored)
    return merge_topk([D, *Ds], [I, *Is], m, k)


def _multivec_each(views_masks, q: tuple, k: int, params, scored: list | None):
    """_search_each for multi-vector segments, with what each scored exactly mapped to internal ids."""
    if scored is None:
        return _search_each(views_masks, "multivec", q, k, params)
    Ds, Is = [], []
    for view, vm in views_masks:
        mine: list = []
        D, I = _search_each([(view, vm)], "multivec", q, k, {**params, "scored": mine})
        Ds += D
        Is += I
        scored.extend((qi, view.global_ids(local), values) for qi, local, values in mine)
    return Ds, Is


def _input_order(groups, n: int) -> np.ndarray:
    """For each input position, the row of the results concatenated in group order that belongs there."""
    order = np.concatenate([pos for _, pos, _ in groups]) if groups else np.zeros(0, dtype=np.int64)
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    return inverse


class _IndexReader(SegmentReader):
    kind: str

    def __init__(self, segset: SegmentSet):
        self.segset = segset

    @property
    def n_docs(self) -> int:
        """Size of the internal id space: masks passed as `deleted` have this length."""
        return self.segset.id_space

    def nbytes(self) -> int:
        return sum(v.readers[self.kind].nbytes() for v in self.segset.views)

    def _score_pairs(self, q_index: np.ndarray, ids: np.ndarray, call) -> np.ndarray:
        q_index = np.asarray(q_index, dtype=np.int64).ravel()
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if q_index.shape != ids.shape:
            raise InputError(f"q_index and ids must have the same length, got {len(q_index)} and {len(ids)}")
        out = np.zeros(len(ids), dtype=np.float32)
        for view, pos, local in self.segset.locate(ids):
            out[pos] = call(view.readers[self.kind], q_index[pos], local)
        return out

    def fidelity(self) -> dict:
        """How lossy the stored representations are: the segments' figures, numeric ones averaged weighted
        by segment size, others listed when segments differ ({} when the component reports none)."""
        reports = [(v.n, _segment_fidelity(v.readers[self.kind])) for v in self.segset.views]
        reports = [(n, f) for n, f in reports if f]
        if not reports:
            return {}
        out: dict[str, Any] = {}
        total = sum(n for n, _ in reports) or 1
        for key in reports[0][1]:
            values = [(n, f.get(key)) for n, f in reports]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for _, v in values):
                out[key] = float(sum(n * v for n, v in values) / total)
            else:
                distinct = sorted({json.dumps(v, sort_keys=True, default=str) for _, v in values})
                out[key] = reports[0][1][key] if len(distinct) == 1 else [json.loads(d) for d in distinct]
        return out


def _segment_fidelity(reader: SegmentReader) -> dict:
    fidelity = getattr(reader, "fidelity", None)
    return dict(fidelity()) if callable(fidelity) else {}


class IndexDenseReader(_IndexReader, DenseReader):
    kind = "dense"

    def __init__(self, segset: SegmentSet, dim: int):
        super().__init__(segset)
        self.dim = dim

    def search(self, xq: np.ndarray, k: int, deleted: np.ndarray | None = None, **params: Any):
        from m3search.indexes.dense import multiseg

        xq = np.ascontiguousarray(xq, dtype=np.float32)
        if not multiseg.can_search([v.readers[self.kind] for v in self.segset.views], params):
            return _search(self.segset, self.kind, xq, xq.shape[0], k, deleted, params)
        if k < 0:
            raise InputError(f"k must be >= 0, got {k}")
        Ds, Is = multiseg.search(list(zip(self.segset.views, self.segset.segment_masks(deleted))), xq, k, params)
        return multiseg.merge(Ds, Is, xq.shape[0], k)

    def score_pairs(self, xq: np.ndarray, q_index: np.ndarray, ids: np.ndarray) -> np.ndarray:
        from m3search.indexes.dense import multiseg

        xq = np.ascontiguousarray(xq, dtype=np.float32)
        if len(self.segset.views) < 2 or not multiseg.can_search([v.readers[self.kind] for v in self.segset.views], {}):
            return self._score_pairs(q_index, ids, lambda r, qi, loc: r.score_pairs(xq, qi, loc))
        q_index = np.asarray(q_index, dtype=np.int64).ravel()
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if q_index.shape != ids.shape:
            raise InputError(f"q_index and ids must have the same length, got {len(q_index)} and {len(ids)}")
        return multiseg.score_pairs(self.segset.locate(ids), xq, q_index, self.dim)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        for view, pos, local in self.segset.locate(ids):
            out[pos] = view.readers[self.kind].vectors(local)
        return out


class IndexSparseReader(_IndexReader, SparseReader):
    kind = "sparse"

    def __init__(self, segset: SegmentSet, vocab_size: int):
        super().__init__(segset)
        self.vocab_size = vocab_size

    def search(self, q: sp.csr_matrix, k: int, deleted: np.ndarray | None = None, **params: Any):
        from m3search.indexes.sparse.reader import SparseSegmentReader

        views = self.segset.views
        if len(views) < 2 or "floor" in params or not all(isinstance(v.readers[self.kind], SparseSegmentReader)
                                                          for v in views):
            return _search(self.segset, self.kind, q, q.shape[0], k, deleted, params)
        return _search_with_floors(self.segset, self.kind, q, q.shape[0], k, deleted, params)

    def score_pairs(self, q: sp.csr_matrix, q_index: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return self._score_pairs(q_index, ids, lambda r, qi, loc: r.score_pairs(q, qi, loc))

    def doc_weights(self, ids: np.ndarray) -> sp.csr_matrix:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        groups = self.segset.locate(ids)
        if not groups:
            return sp.csr_matrix((0, self.vocab_size), dtype=np.float32)
        parts = [sp.csr_matrix(view.readers[self.kind].doc_weights(local)) for view, _, local in groups]
        stacked = sp.vstack(parts, format="csr", dtype=np.float32)
        return stacked[_input_order(groups, len(ids))]


class IndexMultivecReader(_IndexReader, MultivecReader):
    kind = "multivec"

    def __init__(self, segset: SegmentSet, dim: int):
        super().__init__(segset)
        self.dim = dim

    def score_pairs(
        self, q_vecs: np.ndarray, q_lengths: np.ndarray, q_index: np.ndarray, ids: np.ndarray
    ) -> np.ndarray:
        from m3search.indexes.multivec import multiseg

        q_vecs = np.ascontiguousarray(q_vecs, dtype=np.float32)
        q_lengths = np.asarray(q_lengths, dtype=np.int64)
        q_index = np.asarray(q_index, dtype=np.int64).ravel()
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if q_index.shape != ids.shape:
            raise InputError(f"q_index and ids must have the same length, got {len(q_index)} and {len(ids)}")
        groups = self.segset.locate(ids)
        group, rest = multiseg.shared_codec_groups([view.readers[self.kind] for view, _, _ in groups])
        if len(group) < 2:
            return self._score_pairs(q_index, ids, lambda r, qi, loc: r.score_pairs(q_vecs, q_lengths, qi, loc))
        # segments sharing the codec: each query's lookup tables built once, not once per segment
        out = np.zeros(len(ids), dtype=np.float32)
        if ((q_index < 0) | (q_index >= len(q_lengths))).any():
            raise InputError(f"q_index must be in [0, {len(q_lengths)})")
        scored = multiseg.score_pairs([groups[g][0].readers[self.kind] for g in group], q_vecs, q_lengths,
                                      [groups[g][2] for g in group], [q_index[groups[g][1]] for g in group])
        for g, values in zip(group, scored):
            out[groups[g][1]] = values
        for r in rest:
            view, pos, local = groups[r]
            out[pos] = view.readers[self.kind].score_pairs(q_vecs, q_lengths, q_index[pos], local)
        return out

    def search(self, q_vecs: np.ndarray, q_lengths: np.ndarray, k: int, deleted: np.ndarray | None = None,
               scored: list | None = None, **params: Any) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by MaxSim over the stored token codes (the segments' candidate generators; params:
        nprobe, candidates, pool, mean_candidates, see MultivecSegmentReader.search; scored: see MultivecReader.search)."""
        q_vecs = np.ascontiguousarray(q_vecs, dtype=np.float32)
        q_lengths = np.asarray(q_lengths, dtype=np.int64)
        return _multivec_search(self.segset, q_vecs, q_lengths, k, deleted, params, scored)

    def token_vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        groups = self.segset.locate(ids)
        if not groups:
            return np.zeros((0, self.dim), dtype=np.float32), np.zeros(0, dtype=np.int64)
        vecs, lens = zip(*(view.readers[self.kind].token_vectors(local) for view, _, local in groups))
        vecs = np.concatenate(vecs).astype(np.float32, copy=False)
        lens = np.concatenate(lens).astype(np.int64, copy=False)
        perm = _input_order(groups, len(ids))
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])[perm]
        out_lens = lens[perm]
        # row r of the output, inside output doc j, comes from starts[j] + (r - first output row of j)
        out_starts = np.concatenate([[0], np.cumsum(out_lens)[:-1]])
        rows = np.repeat(starts - out_starts, out_lens) + np.arange(int(out_lens.sum()))
        return vecs[rows], out_lens
