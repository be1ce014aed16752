"""SearchIndex.search_groups: several searches with their own options share one encoder pass and each gets
exactly what search_many gives it alone (the server's micro-batcher serves concurrent requests with it)."""
from __future__ import annotations

import pytest

from m3search.errors import InputError
from m3search.planner.filters import Filter

GROUPS = [
    (["delete an entire column", "navigator"], {"k": 3, "mode": "dense"}),
    (["Spalte löschen"], {"k": 5, "mode": "sparse", "offset": 1}),
    (["sort cells"], {"k": 4, "mode": "dense+sparse", "filter": {"$id": {"$nin": ["en-1", "en-3"]}}, "fields": ["scores"]}),
    (["open the navigator"], {"k": 3, "weights": {"dense": 1, "sparse": 2}, "fusion": "rrf", "rrf_k": 10}),
    (["delete an entire column"], {"k": 2, "filter": Filter.parse({"$id": {"$in": ["en-3", "de-3"]}})}),
    (["navigator", "columns"], {"k": 3, "all_scores": True, "explain": True}),
]


def _same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert [h.docid for h in g] == [h.docid for h in w]
        assert [h.score for h in g] == pytest.approx([h.score for h in w], rel=1e-6)
        assert [h.scores for h in g] == [pytest.approx(h.scores, rel=1e-6) for h in w]
        assert [(h.text, h.title, h.metadata, h.matched_terms is None) for h in g] == \
            [(h.text, h.title, h.metadata, h.matched_terms is None) for h in w]


def _counting(monkeypatch, index) -> list[int]:
    calls: list[int] = []
    encode = index.encoder.encode

    def counted(texts, *args, **kwargs):
        calls.append(len(texts))
        return encode(texts, *args, **kwargs)

    monkeypatch.setattr(index.encoder, "encode", counted)
    return calls


def test_groups_get_what_search_many_gives_each_from_one_encoder_pass(shared_index, monkeypatch):
    want = [shared_index.search_many(q, **o) for q, o in GROUPS]
    calls = _counting(monkeypatch, shared_index)
    got = shared_index.search_groups(GROUPS)
    assert calls == [sum(len(q) for q, _ in GROUPS)]  # one pass over every query of every group
    for g, w in zip(got, want):
        _same(g, w)


def test_a_failing_group_fails_alone_with_return_exceptions(shared_index):
    bad_option = (["navigator"], {"k": 3, "mode": "nonsense"})
    bad_filter = (["navigator"], {"k": 3, "filter": {"langx": "de"}})  # unknown field: known only to the index
    bad_query = (["   "], {"k": 3})
    groups = [GROUPS[0], bad_option, GROUPS[1], bad_filter, bad_query, GROUPS[2], ([], {"k": 1})]
    got = shared_index.search_groups(groups, return_exceptions=True)
    assert [isinstance(g, Exception) for g in got] == [False, True, False, True, True, False, False]
    assert "nonsense" in str(got[1]) and "langx" in str(got[3]) and "empty" in str(got[4])
    assert got[6] == []
    for i in (0, 2, 5):
        _same(got[i], shared_index.search_many(*groups[i][:1], **groups[i][1]))
    with pytest.raises(InputError, match="langx"):
        shared_index.search_groups([GROUPS[0], bad_filter])


def test_a_text_the_encoder_refuses_fails_only_its_group(shared_index, monkeypatch):
    encode = shared_index.encoder.encode

    def picky(texts, *args, **kwargs):  # the encoder refuses one text (as it refuses one too long)
        if "poison" in texts:
            raise InputError("text 'poison' is too long")
        return encode(texts, *args, **kwargs)

    monkeypatch.setattr(shared_index.encoder, "encode", picky)
    got = shared_index.search_groups([GROUPS[0], (["poison"], {"k": 2}), GROUPS[3]], return_exceptions=True)
    assert isinstance(got[1], InputError)
    _same(got[0], shared_index.search_many(GROUPS[0][0], **GROUPS[0][1]))
    _same(got[2], shared_index.search_many(GROUPS[3][0], **GROUPS[3][1]))


def test_groups_with_different_max_length_are_encoded_apart(shared_index, monkeypatch):
    groups = [(["delete an entire column"], {"k": 3, "max_length": 4}), (["navigator", "sort"], {"k": 3}),
              (["columns"], {"k": 3, "max_length": 4})]
    want = [shared_index.search_many(q, **o) for q, o in groups]
    calls = _counting(monkeypatch, shared_index)
    got = shared_index.search_groups(groups)
    assert sorted(calls) == [2, 2]
    for g, w in zip(got, want):
        _same(g, w)
