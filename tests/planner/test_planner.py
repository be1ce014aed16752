"""The planner against brute force (m3search.scoring) on exact in-memory readers."""
from __future__ import annotations

import numpy as np
import pytest

from m3search import scoring
from m3search.errors import ConfigError
from m3search.planner import MODES, Planner


def brute_force(snapshot, q_batch):
    return scoring.all_scores(q_batch, snapshot.batch)


def expected_top_k(fused_row: np.ndarray, k: int, allowed=None) -> list[int]:
    ids = np.arange(len(fused_row)) if allowed is None else np.asarray(sorted(allowed))
    order = np.lexsort((ids, -fused_row[ids]))
    return ids[order][:k].tolist()


def assert_top_k(row, fused_row: np.ndarray, k: int, allowed=None, tol=1e-5):
    """Hits are a top-k of fused_row over `allowed`, tolerant of ties (float32 rounding reorders them)."""
    want = expected_top_k(fused_row, k, allowed)
    got = [h.internal_id for h in row]
    assert len(got) == len(want) and len(set(got)) == len(got)
    np.testing.assert_allclose([h.score for h in row], fused_row[got], atol=tol)
    np.testing.assert_allclose(fused_row[got], fused_row[want], atol=tol)
    if allowed is not None:
        assert set(got) <= set(allowed)


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_with_full_depth_is_brute_force(mode, snapshot, queries):
    _, q = queries
    exact = brute_force(snapshot, q)
    weights = MODES[mode]
    fused = sum(w * exact[c].astype(np.float64) for c, w in weights.items())
    hits = Planner(snapshot).search(q, k=7, mode=mode, depths=snapshot.n_docs)
    for qi, row in enumerate(hits):
        # the sparse index only finds documents sharing a term, so for pure sparse that's the pool
        pool = None if mode != "sparse" else set(np.flatnonzero(exact["sparse"][qi] > 0).tolist())
        assert_top_k(row, fused[qi], 7, pool)
        assert set(row[0].scores) == set(weights)


def test_one_sided_candidates_get_their_true_scores(snapshot, queries):
    _, q = queries
    exact = brute_force(snapshot, q)
    planner = Planner(snapshot)
    hits = planner.search(q, k=6, mode="all", depths=3)
    one_sided = 0
    for qi, row in enumerate(hits):
        dense_top = set(snapshot.dense.search(q.dense[qi : qi + 1], 6)[1][0].tolist())
        sparse_top = set(snapshot.sparse.search(q.sparse[qi], 6)[1][0].tolist())
        for h in row:
            for c in ("dense", "sparse", "multivec"):
                assert h.scores[c] == pytest.approx(float(exact[c][qi, h.internal_id]), abs=1e-5)
            one_sided += (h.internal_id in dense_top) != (h.internal_id in sparse_top)
            assert h.score == pytest.approx(
                h.scores["dense"] + 0.3 * h.scores["sparse"] + h.scores["multivec"], abs=1e-5
            )
    assert one_sided > 0, "the fixture should produce documents found by only one index"


def test_candidates_are_the_union_of_both_sources(snapshot, queries):
    _, q = queries
    exact = brute_force(snapshot, q)
    planner = Planner(snapshot)
    for qi in range(len(q)):
        dense_ids = snapshot.dense.search(q.dense[qi : qi + 1], 4)[1][0]
        sparse_ids = snapshot.sparse.search(q.sparse[qi], 5)[1][0]
        union = set(dense_ids.tolist()) | set(sparse_ids[sparse_ids >= 0].tolist())
        # k <= depths: the hits are the best k of exactly that union
        row = planner.search(q.select([qi]), k=3, mode="all", depths={"dense": 4, "sparse": 5})[0]
        fused = exact["dense"][qi] + 0.3 * exact["sparse"][qi] + exact["multivec"][qi]
        assert_top_k(row, fused.astype(np.float64), 3, union)
        # k beyond the depths: each source is asked for k, so k hits still come back
        assert len(planner.search(q.select([qi]), k=12, mode="dense", depths=4)[0]) == 12


def test_weights_as_dict_or_string_and_their_fused_score(snapshot, queries):
    _, q = queries
    planner = Planner(snapshot)
    a = planner.search(q, k=5, weights={"dense": 0.5, "multivec": 2})
    b = planner.search(q, k=5, weights="dense=0.5, multivec=2, sparse=0")
    assert [[h.docid for h in r] for r in a] == [[h.docid for h in r] for r in b]
    for h in a[0]:
        assert set(h.scores) == {"dense", "multivec"}
        assert h.score == pytest.approx(0.5 * h.scores["dense"] + 2 * h.scores["multivec"], abs=1e-5)


def test_rrf_ranks_candidates_by_each_exact_score(snapshot, queries):
    _, q = queries
    exact = brute_force(snapshot, q)
    hits = Planner(snapshot).search(q, k=4, mode="dense+sparse", depths=snapshot.n_docs, fusion="rrf", rrf_k=10)
    for qi, row in enumerate(hits):
        n = snapshot.n_docs
        rrf = np.zeros(n)
        for c, w in MODES["dense+sparse"].items():
            order = np.lexsort((np.arange(n), -exact[c][qi]))
            ranks = np.empty(n)
            ranks[order] = np.arange(1, n + 1)
            rrf += w / (10 + ranks)
        assert_top_k(row, rrf, 4, tol=1e-7)


def test_explain_lists_matched_terms_that_sum_to_the_sparse_score(snapshot, queries, hashing_encoder):
    texts, q = queries
    hits = Planner(snapshot, token_strings=hashing_encoder.token_strings).search(q, k=5, explain=True)
    checked = 0
    for qi, row in enumerate(hits):
        q_weights = q.lexical_weights(qi)
        for h in row:
            terms = h.matched_terms
            assert terms is not None
            assert sum(t.contribution for t in terms) == pytest.approx(h.scores["sparse"], abs=1e-5)
            contributions = [t.contribution for t in terms]
            assert contributions == sorted(contributions, reverse=True)
            for t in terms:
                assert t.query_weight == pytest.approx(q_weights[t.token_id])
                assert t.token in texts[qi].split() and t.token in h.text.split()
                checked += 1
    assert checked > 0


def test_no_explain_means_no_terms_and_all_scores_on_request(snapshot, queries):
    _, q = queries
    planner = Planner(snapshot)
    plain = planner.search(q, k=3, mode="dense")
    assert plain[0][0].matched_terms is None and set(plain[0][0].scores) == {"dense"}
    full = planner.search(q, k=3, mode="dense", all_scores=True)
    assert set(full[0][0].scores) == {"dense", "sparse", "multivec"}
    assert [h.docid for h in full[0]] == [h.docid for h in plain[0]]


def test_batch_equals_one_query_at_a_time(snapshot, queries):
    _, q = queries
    planner = Planner(snapshot)
    batch = planner.search(q, k=5, depths=8)
    for i in range(len(q)):
        single = planner.search(q.select([i]), k=5, depths=8)[0]
        assert [(h.docid, h.score) for h in single] == [(h.docid, h.score) for h in batch[i]]


def test_hits_carry_document_fields_and_timings(snapshot, queries):
    _, q = queries
    timings: dict = {}
    hit = Planner(snapshot).search(q, k=1, timings=timings)[0][0]
    assert hit.docid == snapshot.ids[hit.internal_id] and hit.text == snapshot.texts[hit.internal_id]
    assert hit.title == f"title {hit.docid}"
    assert set(timings) == {"candidates", "rescore", "fuse", "fetch"}
    assert hit.to_dict(text=False) == {"docid": hit.docid, "score": hit.score, "scores": hit.scores}


def test_a_mode_needs_only_its_own_components(corpus, queries, hashing_encoder, make_snapshot):
    ids, texts = corpus
    _, q = queries
    dense_only = make_snapshot(ids, texts, hashing_encoder.encode(texts), components=("dense",))
    assert len(Planner(dense_only).search(q, k=3, mode="dense")[0]) == 3
    with pytest.raises(ConfigError, match="no sparse component"):
        Planner(dense_only).search(q, k=3, mode="dense+sparse")
    with pytest.raises(ConfigError, match="no sparse or multivec component"):
        Planner(dense_only).search(q, k=3)


def test_empty_index_and_empty_query_batch(queries, hashing_encoder, make_snapshot):
    _, q = queries
    empty = make_snapshot([], [], hashing_encoder.encode([]))
    assert Planner(empty).search(q, k=3) == [[] for _ in range(len(q))]
    assert Planner(empty).search(q.select([]), k=3) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "bm25"}, "unknown mode 'bm25'"),
        ({"weights": "dense=-1"}, "must be a finite number >= 0"),
        ({"weights": "colbert=1"}, "unknown weight 'colbert'"),
        ({"weights": "dense"}, "must look like name=value"),
        ({"weights": "dense=0"}, "all weights are zero"),
        ({"mode": "all", "weights": "dense=1"}, "not both"),
        ({"k": 0}, "k must be a positive integer"),
        ({"fusion": "max"}, "unknown fusion 'max'"),
        ({"depths": {"colbert": 5}}, "unknown candidate source 'colbert'"),
        ({"depths": 0}, "every candidate source has depth 0"),
    ],
)
def test_bad_options_are_refused_by_name(kwargs, message, snapshot, queries):
    _, q = queries
    with pytest.raises(ConfigError, match=message):
        Planner(snapshot).search(q, **kwargs)


def test_explain_without_a_sparse_component_gives_no_terms(corpus, queries, hashing_encoder, make_snapshot):
    ids, texts = corpus
    _, q = queries
    dense_only = make_snapshot(ids, texts, hashing_encoder.encode(texts), components=("dense",))
    hit = Planner(dense_only).search(q, k=1, mode="dense", explain=True)[0][0]
    assert hit.matched_terms == ()


def test_params_reach_the_readers_and_text_can_be_left_out(snapshot, queries):
    _, q = queries
    seen = {}
    original = snapshot.dense.search

    def spy(xq, k, deleted=None, **params):
        seen.update(params)
        return original(xq, k)

    snapshot.dense.search = spy
    try:
        hit = Planner(snapshot).search(q, k=1, mode="dense", params={"dense": {"nprobe": 7}}, with_text=False)[0][0]
    finally:
        del snapshot.dense.search
    assert seen == {"nprobe": 7}
    assert hit.text is None and hit.title is None and hit.docid


def test_multivec_takes_candidates_from_whichever_index_exists(corpus, queries, hashing_encoder, make_snapshot):
    ids, texts = corpus
    _, q = queries
    no_sparse = make_snapshot(ids, texts, hashing_encoder.encode(texts), components=("dense", "multivec"))
    assert len(Planner(no_sparse).search(q, k=4, mode="multivec")[0]) == 4
    with pytest.raises(ConfigError, match="no sparse component to take candidates from"):
        Planner(no_sparse).search(q, k=4, mode="multivec", depths={"sparse": 10})


def test_the_planner_takes_readers_by_their_interface_only(snapshot, queries):
    """The planner is typed against m3search.indexes.base: a reader that only looks like one is refused
    with a clear error naming the interface, rather than called by its component name."""
    import typing

    from m3search.indexes.base import DenseReader, SparseReader
    from m3search.planner.planner import SnapshotLike

    hints = typing.get_type_hints(SnapshotLike)
    assert hints["dense"] == DenseReader | None and hints["sparse"] == SparseReader | None

    class LooksDense:  # the right methods, not the interface
        def __init__(self, inner):
            self.search, self.score_pairs = inner.search, inner.score_pairs

    class Swapped:
        dense, sparse, multivec = LooksDense(snapshot.dense), snapshot.sparse, snapshot.multivec
        n_docs = snapshot.n_docs
        docs = snapshot.docs

    with pytest.raises(TypeError, match="not a DenseReader"):
        Planner(Swapped()).search(queries[1], k=3, mode="dense")


def test_multivec_pairs_the_search_scored_are_not_scored_again(corpus, queries, hashing_encoder, make_snapshot):
    """A multi-vector search that reports what it scored exactly (`scored`, as the candidate generator
    does) spares the re-score those pairs; the hits are the brute-force ones all the same."""
    from tests.planner.conftest import ExactMultivec, _top_k

    ids, texts = corpus
    batch = hashing_encoder.encode(texts)
    snap = make_snapshot(ids, texts, batch)
    rescored = []

    class Reporting(ExactMultivec):
        def search(self, q_vecs, q_lengths, k, deleted=None, scored=None, **params):
            m, n = len(q_lengths), self.n_docs
            every = ExactMultivec.score_pairs(self, q_vecs, q_lengths, np.repeat(np.arange(m), n), np.tile(np.arange(n), m))
            if scored is not None:  # it scored every document: all of them reported
                scored.extend((qi, np.arange(n), every[qi * n : (qi + 1) * n]) for qi in range(m))
            return _top_k(every.reshape(m, n), k)

        def score_pairs(self, q_vecs, q_lengths, q_index, ids):
            rescored.append(len(ids))
            return super().score_pairs(q_vecs, q_lengths, q_index, ids)

    snap.multivec = Reporting(batch)
    _, q = queries
    exact = brute_force(snap, q)
    hits = Planner(snap).search(q, k=6, mode="all", depths=4)
    for qi, row in enumerate(hits):
        for h in row:
            assert h.scores["multivec"] == pytest.approx(float(exact["multivec"][qi, h.internal_id]), abs=1e-5)
    assert rescored == []  # every candidate's multi-vector score came from the search
