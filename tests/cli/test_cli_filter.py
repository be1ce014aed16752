"""`m3search query --filter / --offset / --fields`, on a corpus whose records carry metadata."""
from __future__ import annotations

import json

import pytest

from helpers.sample_docs import sample_docs


@pytest.fixture
def meta_index(run, tmp_path):
    docs = [dict(d, lang=d["docid"].split("-")[0], metadata={"n": i}) for i, d in enumerate(sample_docs("docid"))]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    result = run(["index", corpus, "-o", tmp_path / "idx", "--quiet"])
    assert result.exit_code == 0, result.output
    return tmp_path / "idx"


def test_filter_offset_fields(run, meta_index):
    out = run(["query", meta_index, "column Spalte", "--json", "-k", "8", "--filter", '{"lang": {"$in": ["de", "ja"]}}'])
    hits = json.loads(out.stdout)["hits"]
    assert {h["docid"] for h in hits} == {"de-1", "de-2", "ja-1"}
    assert all(h["metadata"]["lang"] in ("de", "ja") and "n" in h["metadata"] for h in hits)
    full = json.loads(run(["query", meta_index, "column", "--json", "-k", "6"]).stdout)["hits"]
    page = json.loads(run(["query", meta_index, "column", "--json", "-k", "2", "--offset", "3"]).stdout)["hits"]
    assert [(h["rank"], h["docid"]) for h in page] == [(h["rank"], h["docid"]) for h in full[3:5]]
    only = json.loads(run(["query", meta_index, "column", "--json", "--fields", "text"]).stdout)["hits"]
    assert all("text" in h and "metadata" not in h and h["scores"] == {} for h in only)


@pytest.mark.parametrize("flt, message", [
    ('{"n": {"$gt": "3"}}', "--filter.n.$gt: takes a number"),
    ("{bad", "--filter: not valid JSON"),
    ('{"missing": 1}', "unknown metadata field 'missing'"),
])
def test_bad_filter_is_one_line(run, meta_index, flt, message):
    result = run(["query", meta_index, "column", "--filter", flt])
    assert result.exit_code != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
