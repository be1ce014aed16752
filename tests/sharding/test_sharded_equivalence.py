"""A sharded index answers exactly like one unsharded index built by the same writes: same top-k ids, same
internal ids (insertion numbers), scores to 1e-5, in every mode, with weighted and RRF fusion, after adds,
upserts and deletes."""
from __future__ import annotations


import pytest

import m3search
from m3search.data import SAMPLE_CORPUS, CorpusReader
from m3search.planner import MODES
from m3search.sharding import ShardedIndex, shard_of

MODEL = "hashing:dim=32,vocab_size=5000"
QUERIES = ["open the navigator", "Spalte löschen", "sort cells ascending", "列を削除", "trier les colonnes",
           "how do I print a page", "insert a chart", "F5", "zzz unknown words", "merge cells table"]


def _docs():
    return [{"id": d.id, "text": d.text, "title": d.title} for d in CorpusReader([str(SAMPLE_CORPUS)])]


def _apply_writes(index, docs):
    # the first add is one chunk, so the sharded index trains its shared token-vector codec on the same
    # tokens as the unsharded index's first segment
    index.add(docs[:180], batch_size=180)
    index.add(docs[150:], batch_size=50)  # overlaps: the first 30 are skipped
    index.upsert([{**d, "text": d["text"] + " updated column"} for d in docs[10:20]], batch_size=7)
    assert index.delete([d["id"] for d in docs[40:60]] + ["no-such-id"]) == 20


@pytest.fixture(scope="module", params=[2, 3], ids=["2-shards", "3-shards"])
def pair(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"sharded{request.param}")
    components = {"dense": {}, "sparse": {}, "multivec": {}}
    docs = _docs()
    plain = m3search.build_index(folder / "plain", model=MODEL, components=components)
    sharded = m3search.build_index(folder / "sharded", model=MODEL, components=components, shards=request.param)
    for index in (plain, sharded):
        _apply_writes(index, docs)
    yield plain, sharded
    plain.close()
    sharded.close()


def _same(expected, got):
    assert [h.docid for h in got] == [h.docid for h in expected]
    assert [h.internal_id for h in got] == [h.internal_id for h in expected]
    for a, b in zip(expected, got):
        assert b.score == pytest.approx(a.score, abs=1e-5)
        assert b.scores.keys() == a.scores.keys()
        for c in a.scores:
            assert b.scores[c] == pytest.approx(a.scores[c], abs=1e-5)
        assert (b.text, b.title) == (a.text, a.title)


def test_layout_and_routing(pair):
    plain, sharded = pair
    assert isinstance(sharded, ShardedIndex)
    assert len(sharded) == len(plain) == 280
    per_shard = [s.n_docs() for s in sharded.searchers()]
    assert sum(per_shard) == 280 and min(per_shard) > 0
    with m3search.open_index(sharded.path) as again:  # open_index sees a sharded index
        assert isinstance(again, ShardedIndex) and len(again) == 280
    # every document lives in the shard its id hashes to
    for i, s in enumerate(sharded.searchers()):
        ids = s.live_ids()
        assert all(shard_of(e, sharded.n_shards) == i for e in ids)


@pytest.mark.parametrize("fusion", ["weighted", "rrf"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("depths", [None, 12])
def test_same_results_as_unsharded(pair, mode, fusion, depths):
    plain, sharded = pair
    opts = dict(k=10, mode=mode, fusion=fusion, depths=depths, all_scores=True)
    expected = plain.search_many(QUERIES, **opts)
    got = sharded.search_many(QUERIES, **opts)
    assert len(got) == len(QUERIES)
    assert sum(len(h) for h in got) > 0
    for e, g in zip(expected, got):
        _same(e, g)


def test_explain_and_single_query(pair):
    plain, sharded = pair
    e = plain.search("delete a column", k=5, explain=True)
    g = sharded.search("delete a column", k=5, explain=True)
    _same(e, g)
    assert [h.matched_terms for h in g] == [h.matched_terms for h in e]
    assert any(h.matched_terms for h in g)


def test_weights_and_deleted_documents_never_returned(pair):
    plain, sharded = pair
    opts = dict(k=30, weights="dense=0.5,multivec=2", fusion="rrf", rrf_k=10)
    for e, g in zip(plain.search_many(QUERIES, **opts), sharded.search_many(QUERIES, **opts)):
        _same(e, g)
        assert not {h.docid for h in g} & {d["id"] for d in _docs()[40:60]}


def test_trained_codec_is_shared(tmp_path):
    """With a trained (lossy) token-vector codec, every shard uses the one codec the unsharded index trains.

    Scores are compared to 1e-5 and ids up to ties: the codec makes some MaxSim scores exactly equal, and
    the matrix product behind MaxSim rounds the last bit differently for different candidate batches (in
    one index too), which may swap tied documents."""
    components = {"dense": {}, "sparse": {}, "multivec": {"compression": "sq8", "min_train_tokens": 500}}
    docs = _docs()[:200]
    plain = m3search.build_index(tmp_path / "plain", docs, model=MODEL, components=components, batch_size=200)
    sharded = m3search.build_index(tmp_path / "sharded", docs, model=MODEL, components=components, batch_size=200,
                                   shards=3)
    with plain, sharded:
        fid = [i["components"]["multivec"]["fidelity"] for i in sharded.info()["shards"]]
        assert {f["compression"] for f in fid} == {"sq8"}
        assert {f["codec_id"] for f in fid} == {plain.info()["components"]["multivec"]["fidelity"]["codec_id"]}
        opts = dict(k=10, mode="all", depths=12, all_scores=True)
        for e, g in zip(plain.search_many(QUERIES, **opts), sharded.search_many(QUERIES, **opts)):
            assert [h.score for h in g] == pytest.approx([h.score for h in e], abs=1e-5)
            groups = lambda hits: {round(h.score, 5): set() for h in hits}  # noqa: E731
            ge, gg = groups(e), groups(g)
            for h in e:
                ge[round(h.score, 5)].add(h.docid)
            for h in g:
                gg[round(h.score, 5)].add(h.docid)
            last = round(e[-1].score, 5) if e else None  # the group cut at k may hold either of two ties
            assert {s: v for s, v in ge.items() if s != last} == {s: v for s, v in gg.items() if s != last}


def test_shard_command_copies_an_index_exactly(pair, tmp_path):
    from m3search.sharding.reshard import shard_index

    plain, _ = pair
    assert shard_index(plain.path, tmp_path / "copy", 2) == len(plain)
    with m3search.open_index(tmp_path / "copy") as copy:
        for fusion in ("weighted", "rrf"):
            opts = dict(k=10, mode="all", fusion=fusion, depths=12)
            for e, g in zip(plain.search_many(QUERIES, **opts), copy.search_many(QUERIES, **opts)):
                _same(e, g)


@pytest.mark.parametrize("fusion", ["weighted", "rrf"])
def test_filters_offset_and_fields_match_the_unsharded_index(pair, fusion):
    plain, sharded = pair
    ids = [d["id"] for d in _docs()[::7]]  # about 1 in 7 documents pass (some of them deleted)
    opts = dict(k=5, mode="all", fusion=fusion, filter={"$id": {"$in": ids}}, offset=3, fields=["title"])
    for e, g in zip(plain.search_many(QUERIES, **opts), sharded.search_many(QUERIES, **opts)):
        assert [h.docid for h in g] == [h.docid for h in e]
        assert all(h.docid in ids for h in g)
        for a, b in zip(e, g):
            assert b.score == pytest.approx(a.score, abs=1e-5)
            assert (b.text, b.title) == (a.text, a.title)
