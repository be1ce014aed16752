"""`m3search index --text LANG`: the text (BM25) component from the CLI; `query --mode text|all+text`
returns the API's hits; info lists the component; the choice is refused where it can't apply."""
from __future__ import annotations

import json

import m3search


def test_index_text_then_query_matches_the_api(run, jsonl, tmp_path):
    idx = tmp_path / "idx"
    result = run(["index", jsonl, "-o", idx, "--text", "en", "-q"])
    assert result.exit_code == 0, result.output
    info = run(["info", idx])
    assert any(line.split()[:1] == ["text"] and "language=en" in line for line in info.output.splitlines())
    with m3search.open_index(idx) as ix:
        for mode in ("text", "all+text"):
            out = run(["query", idx, "delete the column", "--mode", mode, "--json", "-k", "5"])
            assert out.exit_code == 0, out.output
            got = [h["docid"] for h in json.loads(out.output.splitlines()[0])["hits"]]
            assert got == [h.docid for h in ix.search("delete the column", mode=mode, k=5)]
            assert got  # the sample corpus holds these words


def test_text_option_refused_on_an_existing_index_without_it_and_with_shards(run, jsonl, tmp_path):
    idx = tmp_path / "idx"
    assert run(["index", jsonl, "-o", idx, "-q"]).exit_code == 0
    result = run(["index", jsonl, "-o", idx, "--text", "en", "-q"])
    assert result.exit_code != 0 and "created without a text component" in result.output
    result = run(["index", jsonl, "-o", tmp_path / "sh", "--text", "en", "--shards", "2", "-q"])
    assert result.exit_code != 0 and "--shards" in result.output
    result = run(["index", jsonl, "-o", tmp_path / "bad", "--text", "xx", "-q"])
    assert result.exit_code != 0 and "text language" in result.output
