"""The multi-vector candidate generator runs once over all segments that share the codec: a snapshot of
many segments returns what the same documents merged into one segment return (multivec/multiseg.py)."""
from __future__ import annotations

import numpy as np
import pytest

from m3search.indexes.index import Index
from m3search.scoring import maxsim

COMPONENTS = {"multivec": {"coarse_k": 24, "min_train_tokens": 200, "train_tokens": 4000}}
WORDS = ("alpha river music theory engine golden castle harbor stone paper glass north delta quiet amber "
         "violet copper signal orbit meadow lantern").split()


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 16)))) for _ in range(n)]


@pytest.fixture
def segmented(tmp_path, hashing_encoder):
    """An index of 6 segments (no merges), all encoded with the codec the first one trained."""
    index = Index.create(tmp_path / "ix", hashing_encoder.identity, "hashing", components=COMPONENTS,
                         auto_merge=False)
    for s in range(6):
        texts = _texts(40, seed=s)
        ids = [f"d{s}-{i}" for i in range(40)]
        index.add(ids, hashing_encoder.encode(texts), [{"text": t} for t in texts])
        index.commit()
    index.delete([f"d1-{i}" for i in range(0, 40, 3)] + ["d4-7"])
    index.commit()
    yield index
    index.close()


def _search(index, q, k, **params):
    with index.snapshot() as snap:
        D, I = snap.multivec.search(q.multivec, q.multivec_lengths, k, **params)
        ext = [[snap.docs([i])[0].id if i >= 0 else None for i in row] for row in I.tolist()]
    return D, ext


@pytest.mark.parametrize("params", [{}, {"candidates": 12, "pool": 30, "nprobe": 2}, {"candidates": 5, "pool": 5}])
def test_many_segments_search_like_one(segmented, hashing_encoder, params):
    segs = segmented._committed_state().segments
    assert len(segs) == 6 and len({s.metas["multivec"]["codec_id"] for s in segs}) == 1
    q = hashing_encoder.encode(_texts(5, seed=99) + ["alpha river"], kind="query")
    before = _search(segmented, q, 7, **params)
    segmented.optimize()
    assert len(segmented._committed_state().segments) == 1
    after = _search(segmented, q, 7, **params)
    assert before[1] == after[1]
    np.testing.assert_allclose(before[0], after[0], rtol=1e-5, atol=1e-6)


def test_one_pass_exhaustive_equals_maxsim_of_stored_vectors(segmented, hashing_encoder):
    q = hashing_encoder.encode(["golden castle harbor", "quiet amber orbit"], kind="query")
    with segmented.snapshot() as snap:
        ids = np.array(sorted(i for _, i in snap.iter_ids()))
        mask = np.zeros(snap.id_space, bool)
        mask[ids[::5]] = True  # a caller's filter as well as the deletions
        D, I = snap.multivec.search(q.multivec, q.multivec_lengths, 10, deleted=mask, candidates=10_000)
        vecs, lens = snap.multivec.token_vectors(ids)
        offs = np.r_[0, np.cumsum(lens)]
        qoff = np.r_[0, np.cumsum(q.multivec_lengths)]
        for qi in range(2):
            qv = q.multivec[qoff[qi] : qoff[qi + 1]]
            s = np.array([maxsim(qv, vecs[offs[j] : offs[j + 1]]) for j in range(len(ids))])
            s[mask[ids]] = -np.inf
            best = np.sort(s)[::-1][:10]
            np.testing.assert_allclose(D[qi], best, rtol=1e-4, atol=1e-5)  # the top-10 scores
            pos = np.searchsorted(ids, I[qi])
            assert (ids[pos] == I[qi]).all() and not mask[I[qi]].any()
            np.testing.assert_allclose(D[qi], s[pos], rtol=1e-4, atol=1e-5)  # of the documents returned
        # score_pairs over several segments (one lookup table per query) equals the per-segment scorer
        pick = ids[::3]
        qi = np.arange(len(pick)) % 2
        got = snap.multivec.score_pairs(q.multivec, q.multivec_lengths, qi, pick)
        want = np.empty(len(pick), np.float32)
        for view, pos, local in snap.multivec.segset.locate(pick):
            want[pos] = view.readers["multivec"].score_pairs(q.multivec, q.multivec_lengths, qi[pos], local)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("one_pass", [True, False])
def test_scored_pairs_are_the_exact_scores_of_all_candidates(segmented, hashing_encoder, one_pass, monkeypatch):
    """`scored` hands the planner every document the generator scored from full codes (more than k), with
    the scores score_pairs gives, in internal ids; deleted and filtered documents never among them."""
    from m3search.indexes.multivec import multiseg

    if not one_pass:  # every segment searched on its own, as fp16 or codec-less segments are
        monkeypatch.setattr(multiseg, "shared_codec_groups", lambda readers: ([], list(range(len(readers)))))
    q = hashing_encoder.encode(_texts(3, seed=7), kind="query")
    with segmented.snapshot() as snap:
        mask = np.zeros(snap.id_space, bool)
        mask[::4] = True
        scored: list = []
        D, I = snap.multivec.search(q.multivec, q.multivec_lengths, 3, deleted=mask, candidates=12, pool=30,
                                    scored=scored)
        assert scored and {qi for qi, _, _ in scored} == {0, 1, 2}
        for qi in range(3):
            ids = np.concatenate([i for j, i, _ in scored if j == qi])
            values = np.concatenate([v for j, _, v in scored if j == qi])
            assert len(ids) > 3 and len(np.unique(ids)) == len(ids) and not mask[ids].any()
            assert set(I[qi][I[qi] >= 0].tolist()) <= set(ids.tolist())  # the top-k are among them
            want = snap.multivec.score_pairs(q.multivec, q.multivec_lengths, np.full(len(ids), qi), ids)
            np.testing.assert_allclose(values, want, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(D[qi], np.sort(values)[::-1][:3], rtol=1e-5, atol=1e-6)
