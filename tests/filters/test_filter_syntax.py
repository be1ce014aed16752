"""Filter parsing: every malformed part is refused with an error that names it."""
from __future__ import annotations

import pytest

from m3search.errors import InputError
from m3search.planner.filters import Filter


@pytest.mark.parametrize("raw, where", [
    ({"year": {"$gt": "2020"}}, r"filter\.year\.\$gt: takes a number"),
    ({"year": {"$gt": True}}, r"filter\.year\.\$gt: takes a number"),
    ({"year": {"$between": [1, 2]}}, r"filter\.year\.\$between: unknown operator"),
    ({"$nor": []}, r"filter\.\$nor: unknown operator"),
    ({"lang": ["de", "en"]}, r"filter\.lang: a list can't be matched literally"),
    ({"lang": {"$in": "de"}}, r"filter\.lang\.\$in: takes a list"),
    ({"lang": {"$in": [{"a": 1}]}}, r"filter\.lang\.\$in\[0\]: takes a string"),
    ({"lang": {"$exists": 1}}, r"filter\.lang\.\$exists: takes true or false"),
    ({"$and": []}, r"filter\.\$and: takes a non-empty list"),
    ({"$or": [{"a": 1}, 3]}, r"filter\.\$or\[1\]: must be a non-empty filter object"),
    ({"$not": []}, r"filter\.\$not: takes a non-empty filter object"),
    ({"$id": 5}, r"filter\.\$id: takes an id"),
    ({"$id": {"$in": [1]}}, r"filter\.\$id\.\$in: takes a list of document ids"),
    ({"$id": {"$gt": "a"}}, r"filter\.\$id\.\$gt: unknown operator"),
    ({"a": {"b": 1}}, r"filter\.a\.b: nested objects are not matched literally; use the dotted name a\.b"),
    ({"a": {}}, r"filter\.a: empty object"),
    ("[1, 2]", r"filter: must be an object"),
    ("{not json", r"filter: not valid JSON"),
    ({"x": float("nan")}, r"filter\.x: takes a string, number"),
])
def test_bad_filters_name_the_part(raw, where):
    with pytest.raises(InputError, match=where):
        Filter.parse(raw)


def test_empty_and_none_mean_no_filter():
    assert Filter.parse(None) is None and Filter.parse({}) is None and Filter.parse("{}") is None


@pytest.mark.parametrize("raw, meta, docid, expected", [
    ({"n": 1}, {"n": 1.0}, "a", True),
    ({"n": 1}, {"n": True}, "a", False),  # booleans are not numbers
    ({"n": True}, {"n": 1}, "a", False),
    ({"n": None}, {"n": None}, "a", True),
    ({"n": None}, {}, "a", False),
    ({"n": {"$ne": 1}}, {}, "a", True),  # $ne matches documents without the field
    ({"n": {"$gt": 1}}, {"n": "5"}, "a", False),  # range operators see numbers only
    ({"t": "x"}, {"t": ["y", "x"]}, "a", True),
    ({"t": {"$nin": ["x"]}}, {"t": ["y", "x"]}, "a", False),
    ({"a.b": 2}, {"a": {"b": 2}}, "a", True),
    ({"a.b": {"$exists": True}}, {"a": {"c": 2}}, "a", False),
    ({"$id": {"$ne": "a"}}, {}, "a", False),
    ({"$or": [{"$id": "b"}, {"n": 1}]}, {"n": 1}, "a", True),
])
def test_reference_semantics(raw, meta, docid, expected):
    assert Filter.parse(raw).matches(docid, meta) is expected


def test_json_text_parses_like_the_object():
    a = Filter.parse('{"lang": "de", "y": {"$gte": 3}}')
    assert a.to_json() == {"lang": "de", "y": {"$gte": 3}}
    assert a.matches("x", {"lang": "de", "y": 3}) and not a.matches("x", {"lang": "de", "y": 2})


def test_docstring_examples_run():
    import doctest

    import m3search.planner.filters

    result = doctest.testmod(m3search.planner.filters, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
