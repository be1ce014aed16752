"""One API, two transports: every test here runs on the embedded index and on the remote client."""
from __future__ import annotations

import pytest

from m3search.errors import ConfigError, InputError
from m3search.planner import Hit
from helpers.sample_docs import sample_docs


def test_search_one_and_many(any_index):
    hits = any_index.search("delete an entire column", k=3)
    assert all(isinstance(h, Hit) for h in hits)
    assert hits[0].docid == "en-3" and hits[0].title == "Columns" and hits[0].text
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    many = any_index.search(["delete an entire column", "navigator"], k=2)
    assert [h.docid for h in many[0]] == [h.docid for h in hits[:2]]
    assert any_index.search([], k=2) == []
    assert len(any_index) == 8


def test_filter_metadata_offset_fields(any_index):
    docs = [dict(d, metadata={"lang": d["id"].split("-")[0], "n": i}) for i, d in enumerate(sample_docs("id"))]
    assert any_index.upsert(docs).replaced == len(docs)
    hits = any_index.search("column Spalte", k=5, filter={"lang": {"$in": ["de", "ja"]}})
    assert {h.docid.split("-")[0] for h in hits} <= {"de", "ja"} and len(hits) == 3
    assert all(h.metadata["lang"] in ("de", "ja") for h in hits)
    full = any_index.search("column", k=8, mode="dense")
    page = any_index.search("column", k=3, offset=2, mode="dense")
    assert [h.docid for h in page] == [h.docid for h in full[2:5]]
    bare = any_index.search("column", k=2, fields=["metadata"])
    assert all(h.text is None and h.title is None and h.scores == {} and "n" in h.metadata for h in bare)
    ids = any_index.search("column", k=8, filter={"$id": {"$in": ["fr-1", "zh-1"]}, "n": {"$gte": 6}})
    assert [h.docid for h in ids] == ["zh-1"]


def test_add_upsert_delete_are_visible_at_once(any_index):
    r = any_index.add([{"id": "new-1", "text": "pivot tables summarise data", "metadata": {"lang": "en"}},
                       {"id": "en-1", "text": "duplicate id, skipped"}])
    assert (r.added, r.skipped) == (1, 1) and r.generation > 0
    assert any_index.search("pivot tables", k=1)[0].docid == "new-1"
    r = any_index.upsert([{"id": "new-1", "text": "charts and graphs"}])
    assert r.replaced == 1
    assert any_index.search("charts graphs", k=1)[0].docid == "new-1"
    assert any_index.delete(["new-1", "missing"]) == 1
    assert all(h.docid != "new-1" for h in any_index.search("charts graphs", k=9))
    assert any_index.info()["n_docs"] == 8


@pytest.mark.parametrize("options, error, match", [
    ({"filter": {"year": {"$gt": "x"}}}, InputError, r"filter\.year\.\$gt: takes a number"),
    ({"filter": {"nope": 1}}, InputError, "unknown metadata field 'nope'"),
    ({"mode": "bogus"}, ConfigError, "bogus"),
    ({"fields": ["txt"]}, ConfigError, "unknown hit field"),
])
def test_errors_are_the_same_types(any_index, options, error, match):
    with pytest.raises(error, match=match):
        any_index.search("column", **options)


def test_explain_and_all_scores(any_index):
    hit = any_index.search("Navigator F5", k=1, mode="dense+sparse", explain=True, all_scores=True)[0]
    assert set(hit.scores) == {"dense", "sparse", "multivec"}
    assert hit.matched_terms and sum(t.contribution for t in hit.matched_terms) == pytest.approx(
        hit.scores["sparse"], rel=1e-3)
