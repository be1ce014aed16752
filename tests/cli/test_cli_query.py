"""`m3search query`: table, JSON and TREC output, modes and weights, explain, errors."""
from __future__ import annotations

import json

import pytest

from m3search import scoring
from m3search.ingest import passage_text, to_document

ALL = ("dense", "sparse", "multivec")


def test_table_shows_scores_and_passages(run, built):
    result = run(["query", built, "delete an entire column", "-k", "2"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "[1] delete an entire column"
    assert lines[1].split()[:6] == ["rank", "score", "dense", "sparse", "multivec", "docid"]
    assert lines[2].split()[0] == "1" and "en-3" in lines[2] and "Columns" in lines[2]


def test_json_has_exact_component_scores(run, built, docs, hashing_encoder):
    query = "Spalte löschen column"
    result = run(["query", built, query, "--json", "-k", "8", "--depth", "1"])
    record = json.loads(result.stdout)
    assert record["qid"] == "1" and record["query"] == query
    q = hashing_encoder.encode([query], kind="query")
    d = hashing_encoder.encode([passage_text(to_document(x, "test")) for x in docs])  # "title text"
    exact = scoring.all_scores(q, d)
    row = {x["docid"]: i for i, x in enumerate(docs)}
    assert len(record["hits"]) >= 2
    for rank, hit in enumerate(record["hits"], start=1):
        assert hit["rank"] == rank and set(hit["scores"]) == set(ALL)
        for c in ALL:
            assert hit["scores"][c] == pytest.approx(float(exact[c][0, row[hit["docid"]]]), abs=2e-3)
        assert "text" not in hit


@pytest.mark.parametrize("mode", ["dense", "sparse", "multivec", "dense+sparse", "all", "sparse+multivec"])
def test_every_mode(run, built, mode):
    result = run(["query", built, "Navigator F5", "--mode", mode, "--json", "-k", "2"])
    assert result.exit_code == 0, result.stderr  # bench --modes accepts sparse+multivec: so does query
    hits = json.loads(result.stdout)["hits"]
    assert hits[0]["docid"] in {"en-1", "de-1"}
    weights = {"all": {"dense": 1, "sparse": 0.3, "multivec": 1}, "sparse+multivec": {"sparse": 0.3, "multivec": 1}}.get(mode)
    if weights:
        s = hits[0]["scores"]
        assert hits[0]["score"] == pytest.approx(sum(w * s[c] for c, w in weights.items()), abs=1e-4)


def test_weights_and_rrf(run, built):
    result = run(["query", built, "sort cells", "--weights", "sparse=2,multivec=0.5", "--json", "-k", "3"])
    hit = json.loads(result.stdout)["hits"][0]
    assert hit["docid"] == "en-2"
    assert hit["score"] == pytest.approx(2 * hit["scores"]["sparse"] + 0.5 * hit["scores"]["multivec"], abs=1e-4)
    rrf = run(["query", built, "sort cells", "--fusion", "rrf", "--rrf-k", "10", "--json", "-k", "3"])
    hit = json.loads(rrf.stdout)["hits"][0]
    assert hit["docid"] == "en-2" and hit["score"] == pytest.approx(1 / 11 + 0.3 / 11 + 1 / 11)


def test_queries_file_to_trec(run, built, tmp_path):
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\tdelete column\nq2\tNavigator öffnen\n", encoding="utf-8")
    run_file = tmp_path / "run.txt"
    result = run(["query", built, "--queries", topics, "--trec", run_file, "-k", "3", "--mode", "dense+sparse"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in run_file.read_text().splitlines()]
    assert len(rows) == 6 and {r[0] for r in rows} == {"q1", "q2"}
    for qid in ("q1", "q2"):
        mine = [r for r in rows if r[0] == qid]
        assert [r[1] for r in mine] == ["Q0"] * 3 and [int(r[3]) for r in mine] == [1, 2, 3]
        scores = [float(r[4]) for r in mine]
        assert scores == sorted(scores, reverse=True)
        assert {r[5] for r in mine} == {"m3search-dense+sparse"}
    assert rows[0][2] == "en-3"


def test_trec_to_stdout_and_json_queries(run, built, tmp_path):
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"_id": "b1", "text": "sort cells"}\n{"_id": "b2", "text": "F5"}\n', encoding="utf-8")
    result = run(["query", built, "--queries", queries, "--trec", "-", "-k", "1", "--run-name", "mine"])
    assert result.stdout.splitlines()[0].split() == ["b1", "Q0", "en-2", "1", result.stdout.split()[4], "mine"]


def test_explain_lists_terms_with_weights(run, built):
    table = run(["query", built, "delete column", "-k", "1", "--explain"])
    matched = [line for line in table.stdout.splitlines() if "matched:" in line][0]
    assert "delete (" in matched and "column (" in matched and "\u00d7" in matched
    record = json.loads(run(["query", built, "delete column", "-k", "1", "--explain", "--json"]).stdout)
    terms = record["hits"][0]["matched_terms"]
    assert {t["token"] for t in terms} == {"delete", "column"}
    assert sum(t["query_weight"] * t["doc_weight"] for t in terms) == pytest.approx(
        record["hits"][0]["scores"]["sparse"], rel=1e-2
    )


def test_json_text_and_several_queries(run, built):
    result = run(["query", built, "F5", "Spalte", "-k", "1", "--json", "--text"])
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["qid"] for r in records] == ["1", "2"]
    assert records[1]["hits"][0]["text"].startswith("Um eine ganze Spalte")


def test_index_from_environment(run, built, monkeypatch):
    monkeypatch.setenv("M3SEARCH_INDEX", str(built))
    result = run(["query", "sort cells", "-k", "1", "--json"])
    assert json.loads(result.stdout)["hits"][0]["docid"] == "en-2"


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--mode", "all", "--weights", "dense=1", "x"], 2, "not both"),
        (["--weights", "bm25=1", "x"], 1, "unknown weight 'bm25'"),
        (["--mode", "hybrid", "x"], 1, "unknown mode 'hybrid'"),
        (["--json", "--trec", "-", "x"], 2, "both write to stdout"),
        ([], 2, "give a query TEXT"),
        (["--dense-depth", "0", "--sparse-depth", "0", "--multivec-depth", "0", "x"], 1,
         "every candidate source has depth 0"),
        (["--param", "multivec", "x"], 2, "SOURCE.NAME=VALUE"),
        (["--queries", "missing.tsv"], 1, "does not exist"),
    ],
)
def test_usage_errors_are_one_line(run, built, args, code, message):
    result = run(["query", built, *args])
    assert result.exit_code == code and message in result.stderr and "Traceback" not in result.output


def test_wrong_index_path(run, tmp_path):
    result = run(["query", tmp_path / "nope", "hello"])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: index '{tmp_path / 'nope'}' does not exist: build one with " \
                                    f"`m3search index CORPUS -o {tmp_path / 'nope'}`"
    not_index = tmp_path / "folder"
    not_index.mkdir()
    result = run(["query", not_index, "hello"])
    assert result.exit_code == 1 and "is not an m3search index" in result.stderr


def test_queries_from_stdin(run, built):
    result = run(["query", built, "--queries", "-", "--json", "-k", "1"], input="q1\tsort cells\nNavigator F5\n")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["qid"], r["hits"][0]["docid"]) for r in records][0] == ("q1", "en-2")
    assert records[1]["qid"] == "2"


def test_table_clips_wide_characters_to_the_terminal():
    from m3search.cli.output import _clip, _columns

    clipped = _clip("列全体を削除するには列を選択します", 10)
    assert _columns(clipped) <= 10 and clipped.endswith("\u2026")
    assert _clip("short", 10) == "short"


def test_an_empty_query_is_an_error_not_arbitrary_hits(run, built, tmp_path):
    """The same rule as the API's search(): an empty query has nothing to match."""
    result = run(["query", built, "navigator", "  "])
    assert result.exit_code == 1 and "query 2 is empty" in result.stderr and result.stdout == ""
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\tnavigator\nq2\t \n", encoding="utf-8")
    result = run(["query", built, "--queries", topics, "--json"])
    assert result.exit_code == 1 and "topics.tsv:2: query 'q2' is empty" in result.stderr


def test_multivec_search_knobs_per_query(run, built):
    """--param reaches the token-vector generator: all centroids probed gives the same hits as the defaults
    on this small index, and a bad knob is refused by name."""
    base = json.loads(run(["query", built, "Spalte", "--mode", "multivec", "-k", "3", "--json"]).stdout)
    full = run(["query", built, "Spalte", "--mode", "multivec", "-k", "3", "--json",
                "--param", "multivec.nprobe=65536", "--param", "multivec.candidates=100000"])
    assert [h["docid"] for h in json.loads(full.stdout)["hits"]] == [h["docid"] for h in base["hits"]]
    bad = run(["query", built, "Spalte", "--mode", "multivec", "--param", "multivec.nprobe=0"])
    assert bad.exit_code == 1 and "nprobe" in bad.stderr and "Traceback" not in bad.output
