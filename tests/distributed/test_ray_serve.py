"""A sharded index served on Ray Serve (a deployment per shard behind a router) answers like the local
sharded index, and therefore like the unsharded one; writes through it are seen by the next search."""
from __future__ import annotations

import pytest

import m3search
from m3search.data import SAMPLE_CORPUS, CorpusReader
from m3search.planner import MODES

pytestmark = pytest.mark.slow

MODEL = "hashing:dim=32,vocab_size=5000"
QUERIES = ["open the navigator", "Spalte löschen", "sort cells ascending", "列を削除", "merge cells table"]


def _docs():
    return [{"id": d.id, "text": d.text, "title": d.title} for d in CorpusReader([str(SAMPLE_CORPUS)])]


def _same(expected, got):
    assert [h.docid for h in got] == [h.docid for h in expected]
    assert [h.internal_id for h in got] == [h.internal_id for h in expected]
    for a, b in zip(expected, got):
        assert b.score == pytest.approx(a.score, abs=1e-5)
        assert b.scores == pytest.approx(a.scores, abs=1e-5)
        assert (b.text, b.matched_terms) == (a.text, a.matched_terms)


def test_served_sharded_index_answers_like_the_local_ones(ray_cluster, tmp_path):
    from m3search.distributed.serve import deploy

    docs = _docs()
    plain = m3search.build_index(tmp_path / "plain", docs[:250], model=MODEL, batch_size=250)
    local = m3search.build_index(tmp_path / "sharded", docs[:250], model=MODEL, batch_size=250, shards=3)
    served = deploy(tmp_path / "sharded")
    try:
        assert len(served) == len(local) == 250
        for mode in MODES:
            for fusion in ("weighted", "rrf"):
                opts = dict(k=8, mode=mode, fusion=fusion, depths=15, all_scores=True)
                want = plain.search_many(QUERIES, **opts)
                for e, g, l in zip(want, served.search_many(QUERIES, **opts), local.search_many(QUERIES, **opts)):
                    _same(e, g)
                    _same(e, l)
        _same(plain.search("delete a column", k=5, explain=True), served.search("delete a column", k=5, explain=True))

        # over HTTP: the single-node server's app on the served index (what `m3search serve INDEX --ray` runs)
        import httpx

        from helpers.live_server import serve

        with serve(served) as url:
            r = httpx.post(url + "/v1/search", json={"queries": QUERIES, "k": 5, "mode": "all"}, timeout=60)
        assert r.status_code == 200
        for res, hits in zip(r.json()["results"], plain.search_many(QUERIES, k=5, mode="all")):
            assert [h["docid"] for h in res["hits"]] == [h.docid for h in hits]

        # writes go to the shards' files; the replicas see the commit at the next search
        for index in (plain, served):
            index.add(docs[250:], batch_size=64)
            assert index.delete([d["id"] for d in docs[:30]]) == 30
        assert len(served) == len(plain) == 270
        opts = dict(k=10, mode="all", fusion="rrf")
        for e, g in zip(plain.search_many(QUERIES, **opts), served.search_many(QUERIES, **opts)):
            _same(e, g)
        assert served.info()["n_docs"] == 270
    finally:
        served.close()
        local.close()
        plain.close()
