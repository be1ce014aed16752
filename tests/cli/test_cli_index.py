"""`m3search index`: input formats, resume, and malformed inputs (file:line, no traceback, last commit kept)."""
from __future__ import annotations

import gzip
import json

import pytest

import m3search


def count(index_path) -> int:
    with m3search.open_index(index_path) as index:
        return len(index)


def test_jsonl_then_resume_skips_what_is_indexed(run, jsonl, tmp_path, docs):
    first = run(["index", jsonl, "-o", tmp_path / "idx"])
    assert first.exit_code == 0, first.output
    assert f"Indexed {len(docs)} documents" in first.stderr
    again = run(["index", jsonl, "-o", tmp_path / "idx"])
    assert again.exit_code == 0
    assert "Added 0 documents" in again.stderr and f"Skipped {len(docs)} documents already in the index" in again.stderr
    assert count(tmp_path / "idx") == len(docs)


def test_tsv_gzip_folder_and_stdin(run, tmp_path, docs):
    tsv = tmp_path / "c.tsv"
    tsv.write_text("id\ttext\n" + "".join(f"{d['docid']}\t{d['text']}\n" for d in docs[:3]), encoding="utf-8")
    gz = tmp_path / "c.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": d["docid"], "title": d["title"], "text": d["text"]}) + "\n" for d in docs[3:5])
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(docs[5]["text"], encoding="utf-8")
    (folder / "sub" / "b.md").write_text(docs[6]["text"], encoding="utf-8")
    (folder / "ignored.bin").write_bytes(b"\0\1")
    stdin = json.dumps({"id": "zh-1", "text": docs[7]["text"]}, ensure_ascii=False) + "\n"
    result = run(["index", tsv, gz, folder, "-", "-o", tmp_path / "idx"], input=stdin)
    assert result.exit_code == 0, result.output
    with m3search.open_index(tmp_path / "idx") as index:
        assert len(index) == 8
        assert index.search("ganze Spalte löschen", k=1)[0].docid == "de-2"
        assert index.search(docs[6]["text"], k=1)[0].docid == "sub/b.md"
        top = index.search("Press F5 Navigator", k=1)[0]
        assert top.docid == "en-1" and top.title is None  # TSV without a title column


def test_sample_corpus_and_its_queries(run, tmp_path):
    from m3search.data import SAMPLE_QUERIES

    result = run(["index", "--sample", "-o", tmp_path / "idx"])
    assert result.exit_code == 0, result.output
    assert "Indexed 300 documents" in result.stderr
    run_file = tmp_path / "run.txt"
    assert run(["query", tmp_path / "idx", "--queries", SAMPLE_QUERIES, "--trec", run_file]).exit_code == 0
    qrels: dict = {}
    for line in (SAMPLE_QUERIES.parent / "sample_qrels.tsv").read_text().splitlines():
        qid, _, docid, _ = line.split()
        qrels.setdefault(qid, set()).add(docid)
    found: dict = {}
    for line in run_file.read_text().splitlines():
        qid, _, docid, *_ = line.split()
        found.setdefault(qid, set()).add(docid)
    same_language = [q for q in qrels if "->" not in q]
    assert len(qrels) == 95 and len(same_language) == 80
    # the hashing encoder matches words only, yet finds most same-language answers: qrels and docids agree
    assert sum(bool(qrels[q] & found.get(q, set())) for q in same_language) >= 0.6 * len(same_language)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("corpus.jsonl", '{"docid": "a", "text": "fine"}\n{"docid": "b", "text": "broken\n', "corpus.jsonl:2: not valid JSON"),
        ("corpus.jsonl", '{"docid": "a", "text": "fine"}\n{"docid": "b", "title": "t"}\n',
         "corpus.jsonl:2: document 'b' has no 'text' field"),
        ("corpus.jsonl", '{"docid": "a", "text": "x"}\n\n{"docid": "a", "text": "y"}\n', "corpus.jsonl:3: duplicate id 'a'"),
        ("corpus.jsonl", '{"text": "x"}\n', "corpus.jsonl:1: no id field"),
        ("corpus.jsonl", '["a", "b"]\n', "corpus.jsonl:1: expected a JSON object"),
        ("corpus.jsonl", '{"docid": "a", "text": 5}\n', "corpus.jsonl:1: document 'a' has a int as 'text'"),
        ("c.tsv", "a\tfine\nb has no tab\n", "c.tsv:2: expected 'id<TAB>text', found no tab"),
        ("c.tsv", "a\tx\n\ty\n", "c.tsv:2: the id (first field) is empty"),
        ("c.tsv", "a\tx\ta\tb\n", "c.tsv:1: expected 'id<TAB>text' or 'id<TAB>text<TAB>title', found 4 fields"),
    ],
)
def test_malformed_corpus_names_file_and_line(run, tmp_path, name, content, message):
    corpus = tmp_path / name
    corpus.write_text(content, encoding="utf-8")
    result = run(["index", corpus, "-o", tmp_path / "idx"])
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_line_midway_keeps_the_last_commit_and_resumes(run, tmp_path, docs):
    corpus = tmp_path / "corpus.jsonl"
    lines = [json.dumps(d) for d in docs]
    lines.insert(5, '{"docid": "bad", "text": ')
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run(["index", corpus, "-o", tmp_path / "idx", "--batch-size", "2", "--commit-interval", "0"])
    assert result.exit_code == 1
    assert "corpus.jsonl:6: not valid JSON" in result.stderr
    assert "stays at its last commit, 4 documents;" in result.stderr
    assert count(tmp_path / "idx") == 4
    del lines[5]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    again = run(["index", corpus, "-o", tmp_path / "idx"])
    assert "Added 4 documents" in again.stderr and "Skipped 4 documents" in again.stderr
    assert count(tmp_path / "idx") == 8


def test_empty_corpus_creates_nothing(run, tmp_path):
    corpus = tmp_path / "empty.jsonl"
    corpus.write_text("\n\n", encoding="utf-8")
    result = run(["index", corpus, "-o", tmp_path / "idx"])
    assert result.exit_code == 1 and "no documents in" in result.stderr
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize("text", ["null", '""', '"  \\n "'])
def test_texts_null_empty_or_blank_are_skipped_and_reported(run, tmp_path, text):
    corpus = tmp_path / "miracl.jsonl"
    corpus.write_text('{"docid": "1#0", "title": "t", "text": %s}\n{"docid": "1#1", "text": "real words"}\n' % text)
    result = run(["index", corpus, "-o", tmp_path / "idx"])
    assert result.exit_code == 0
    assert "Indexed 1 document into" in result.stderr
    assert "Skipped 1 record (no text" in result.stderr and "the first at" in result.stderr
    assert "miracl.jsonl:1" in result.stderr


def test_missing_corpus_file_and_usage_errors(run, tmp_path):
    missing = run(["index", tmp_path / "nope.jsonl", "-o", tmp_path / "idx"])
    assert missing.exit_code == 1 and "does not exist" in missing.stderr
    both = run(["index", "--sample", tmp_path / "x.jsonl", "-o", tmp_path / "idx"])
    assert both.exit_code == 2 and "not both" in both.stderr
    neither = run(["index", "-o", tmp_path / "idx"])
    assert neither.exit_code == 2


def test_index_path_from_environment_and_model_mismatch(run, jsonl, tmp_path, monkeypatch):
    monkeypatch.setenv("M3SEARCH_INDEX", str(tmp_path / "env-idx"))
    assert run(["index", jsonl, "-q"]).exit_code == 0
    assert count(tmp_path / "env-idx") == 8
    other = run(["index", jsonl, "--model", "hashing:dim=16"])
    assert other.exit_code == 1 and "does not match" in other.stderr


def test_quiet_prints_nothing(run, jsonl, tmp_path):
    result = run(["index", jsonl, "-o", tmp_path / "idx", "--quiet"])
    assert result.exit_code == 0 and result.output == ""


def test_replace_reindexes_existing_ids(run, jsonl, tmp_path):
    assert run(["index", jsonl, "-o", tmp_path / "idx", "-q"]).exit_code == 0
    changed = tmp_path / "changed.jsonl"
    changed.write_text('{"docid": "en-1", "text": "quarterly revenue report"}\n', encoding="utf-8")
    result = run(["index", changed, "-o", tmp_path / "idx", "--replace"])
    assert "Replaced 1 document already" in result.stderr
    top = json.loads(run(["query", tmp_path / "idx", "quarterly revenue", "--json", "-k", "1"]).stdout)
    assert top["hits"][0]["docid"] == "en-1" and count(tmp_path / "idx") == 8


def test_a_new_index_that_got_nothing_is_removed(run, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"docid": "a", "text": "fine"}\n{"docid": "b"}\n', encoding="utf-8")
    result = run(["index", corpus, "-o", tmp_path / "idx"])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: {corpus}:2: document 'b' has no 'text' field: every line needs a " \
                                    '"text" (nothing was indexed)'
    assert not (tmp_path / "idx").exists()


def test_an_option_the_model_does_not_take(run, jsonl, tmp_path):
    result = run(["index", jsonl, "-o", tmp_path / "idx", "--batch-tokens", "512"])
    assert result.exit_code == 1 and "can't take the options {'batch_tokens': 512}" in result.stderr


def test_a_second_writer_is_refused_in_one_line(run, jsonl, tmp_path):
    from m3search.indexes.index import Index

    assert run(["index", jsonl, "-o", tmp_path / "idx", "-q"]).exit_code == 0
    with Index.open(tmp_path / "idx", writable=True):
        result = run(["index", jsonl, "-o", tmp_path / "idx"])
        assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
        assert "another writer" in result.stderr and "resume" not in result.stderr
        # readers are not blocked by a writer
        assert run(["query", tmp_path / "idx", "F5", "--json", "-k", "1"]).exit_code == 0
