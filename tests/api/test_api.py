"""The embedded Python API over the real index engine, with the hashing encoder."""
from __future__ import annotations

import pytest

import m3search
from m3search import scoring
from m3search.api import AddResult
from m3search.errors import EncoderMismatchError, IndexFormatError, InputError
from m3search.planner import Hit


def brute_force(encoder, docs, query):
    q = encoder.encode([query], kind="query")
    # what ingestion embeds: "title text" (m3search.ingest.passage_text)
    d = encoder.encode([f"{x['title']} {x['text']}" if x.get("title") else x["text"] for x in docs], kind="passage")
    exact = scoring.all_scores(q, d)
    return {doc["id"]: {c: float(exact[c][0, i]) for c in exact} for i, doc in enumerate(docs)}


def test_build_search_one_or_many(tmp_path, docs, model):
    with m3search.build_index(tmp_path / "idx", docs, model=model) as index:
        hits = index.search("delete an entire column", k=3)
        assert isinstance(hits, list) and all(isinstance(h, Hit) for h in hits)
        assert hits[0].docid == "en-3" and hits[0].title == "Columns"
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        many = index.search_many(["delete an entire column", "navigator"], k=2)
        assert len(many) == 2 and [h.docid for h in many[0]] == [h.docid for h in hits[:2]]
        assert many[1][0].docid in {"en-1", "de-1"}
        assert index.search_many([], k=2) == []
        assert len(index) == len(docs)


def test_search_of_a_list_still_works_but_is_deprecated(tmp_path, docs, model):
    with m3search.build_index(tmp_path / "idx", docs, model=model) as index:
        with pytest.warns(DeprecationWarning, match="search_many"):
            old = index.search(["delete an entire column", "navigator"], k=2)
        new = index.search_many(["delete an entire column", "navigator"], k=2)
        assert [[h.docid for h in row] for row in old] == [[h.docid for h in row] for row in new]
        with pytest.raises(InputError, match="not one string"):
            index.search_many("navigator")


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_an_empty_query_is_refused_not_answered_with_arbitrary_hits(shared_index, bad):
    with pytest.raises(InputError, match="empty"):
        shared_index.search(bad)
    with pytest.raises(InputError, match="position 1 is empty"):
        shared_index.search_many(["navigator", bad])


def test_component_scores_are_the_exact_scores(tmp_path, docs, model, hashing_encoder):
    query = "Spalte löschen column delete"
    exact = brute_force(hashing_encoder, docs, query)
    with m3search.build_index(tmp_path / "idx", docs, model=model) as index:
        # shallow depths: some hits come from one index only, and must still get every true score
        hits = index.search(query, k=len(docs), depths=1, all_scores=True)
    assert len(hits) >= 2
    for h in hits:
        for c in ("dense", "sparse", "multivec"):
            assert h.scores[c] == pytest.approx(exact[h.docid][c], abs=2e-3), (h.docid, c)  # fp16 storage
        assert h.score == pytest.approx(h.scores["dense"] + 0.3 * h.scores["sparse"] + h.scores["multivec"], abs=1e-4)


@pytest.mark.parametrize("mode", ["dense", "sparse", "multivec", "dense+sparse", "all"])
def test_modes_score_what_they_weigh(shared_index, mode):
    hits = shared_index.search("Navigator F5", k=2, mode=mode)
    assert set(hits[0].scores) == set(m3search.planner.MODES[mode])
    assert hits[0].docid in {"en-1", "de-1"}


def test_open_index_uses_the_stored_model_and_refuses_another(tmp_path, docs, model):
    m3search.build_index(tmp_path / "idx", docs[:3], model=model).close()
    with m3search.open_index(tmp_path / "idx") as index:
        assert index.model == model
        assert index.search("sort cells", k=1)[0].docid == "en-2"
    with pytest.raises(EncoderMismatchError, match="dense_dim"):
        m3search.open_index(tmp_path / "idx", model="hashing:dim=16,vocab_size=5000")
    with pytest.raises(IndexFormatError, match="does not exist"):
        m3search.open_index(tmp_path / "nowhere")


def test_add_skips_ids_already_indexed_and_upsert_replaces(tmp_path, docs, model):
    with m3search.build_index(tmp_path / "idx", docs[:4], model=model) as index:
        result = index.add(docs)
        assert result == AddResult(added=len(docs) - 4, skipped=4, generation=result.generation)
        assert len(index) == len(docs)
        replaced = index.upsert([{"id": "en-2", "text": "quarterly revenue figures"}])
        assert (replaced.added, replaced.replaced) == (0, 1)
        assert index.search("quarterly revenue", k=1)[0].docid == "en-2"
        assert len(index) == len(docs)


def test_delete_removes_documents_from_results(tmp_path, docs, model):
    with m3search.build_index(tmp_path / "idx", docs, model=model) as index:
        assert index.delete(["en-3", "de-2", "not-there"]) == 2
        found = {h.docid for h in index.search("delete column Spalte", k=len(docs))}
        assert "en-3" not in found and "de-2" not in found
        assert len(index) == len(docs) - 2


def test_documents_without_text_are_skipped_and_counted_as_the_cli_does(tmp_path, model):
    docs = [{"id": "a", "text": None, "title": "t"}, ("b", ""), ("c", " \n\t "), ("d", "real words here")]
    with m3search.build_index(tmp_path / "idx", model=model) as index:
        result = index.add(docs)
        assert (result.added, result.skipped_empty) == (1, 3)
        assert len(index) == 1 and [h.docid for h in index.search("anything at all", k=5)] == ["d"]


def test_a_failure_midway_leaves_the_last_commit(tmp_path, docs, model):
    def stream():
        yield from docs[:5]
        yield {"id": "broken", "title": "no text here"}

    with pytest.raises(InputError, match=r"docs\[5\]: document 'broken' has no 'text' field"):
        m3search.build_index(tmp_path / "idx", stream(), model=model, batch_size=2, commit_interval=0)
    with m3search.open_index(tmp_path / "idx") as index:
        assert len(index) == 4  # two full batches were committed; the third never was
        assert index.add(docs).skipped == 4


@pytest.mark.parametrize(
    "bad, message",
    [
        ([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], "docs\\[1\\]: duplicate id 'a'"),
        ([{"text": "x"}], "docs\\[0\\]: no id field"),
        (["just a string"], "docs\\[0\\]: a str is not a document"),
        ([{"id": "a", "text": 7}], "docs\\[0\\]: document 'a' has a int as 'text'"),
        ({"id": "a", "text": "x"}, "not a single dict"),
    ],
)
def test_bad_documents_are_refused_by_position(tmp_path, model, bad, message):
    with m3search.build_index(tmp_path / "idx", model=model) as index:
        with pytest.raises(InputError, match=message):
            index.add(bad)
        assert len(index) == 0


def test_tuples_and_explain(tmp_path, model):
    with m3search.build_index(tmp_path / "idx", [("a", "red apples and green pears"), ("b", "blue sky")],
                              model=model) as index:
        hit = index.search("green apples", k=1, explain=True)[0]
    assert hit.docid == "a"
    assert {t.token for t in hit.matched_terms} == {"green", "apples"}
    assert sum(t.contribution for t in hit.matched_terms) == pytest.approx(hit.scores["sparse"], rel=1e-2)
