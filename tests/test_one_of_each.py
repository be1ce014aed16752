"""One implementation per concept: TREC runs, gzip-aware line reading, duplicate ids, encoder identity."""
from __future__ import annotations

import gzip
import json

import pytest
from click.testing import CliRunner

import m3search
from m3search.cli import main
from m3search.data import CorpusReader, read_queries
from m3search.errors import EncoderMismatchError, InputError
from m3search.evaluation.trec import read_run, write_run
from m3search.trainer.data import read_examples

MODEL = "hashing:dim=32"
DOCS = [{"id": f"d{i}", "text": f"passage number {i} about cells and columns"} for i in range(6)]


def test_query_trec_output_is_the_benchmark_writer_s(tmp_path, monkeypatch):
    """`query --trec` and the benchmark's write_run give byte-identical files for the same hits."""
    monkeypatch.delenv("M3SEARCH_INDEX", raising=False)
    m3search.build_index(tmp_path / "idx", DOCS, model=MODEL).close()
    run = CliRunner().invoke(main, ["query", str(tmp_path / "idx"), "cells columns", "-k", "5", "--mode", "dense",
                                    "--trec", str(tmp_path / "cli.trec"), "-q", "--run-name", "r"],
                             catch_exceptions=False)
    assert run.exit_code == 0, run.output
    with m3search.open_index(tmp_path / "idx") as index:
        hits = index.search("cells columns", k=5, mode="dense")
    write_run(tmp_path / "bench.trec", {"1": {h.docid: h.score for h in hits}}, tag="r")
    assert (tmp_path / "cli.trec").read_bytes() == (tmp_path / "bench.trec").read_bytes()
    assert read_run(tmp_path / "cli.trec") == {"1": {h.docid: h.score for h in hits}}  # full precision


def test_every_reader_takes_gzip_by_content_whatever_the_name(tmp_path):
    def gz(name, text):
        path = tmp_path / name
        path.write_bytes(gzip.compress(text.encode("utf-8")))
        return path

    corpus = gz("corpus.jsonl", '{"id": "a", "text": "x"}\n')
    assert [d.id for d in CorpusReader([corpus])] == ["a"]
    assert [q.qid for q in read_queries(gz("topics.tsv", "q1\tsome query\n"))] == ["q1"]
    assert read_run(gz("run.trec", "q1 Q0 a 1 0.5 t\n")) == {"q1": {"a": 0.5}}
    assert read_examples(gz("pairs.jsonl", json.dumps({"query": "q", "pos": ["p"]}) + "\n"))[0].query == "q"


def test_a_truncated_gzip_is_one_clear_error_in_every_reader(tmp_path):
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"id": "a", "text": "x"}\n' * 200)[:40])
    for read in (lambda: list(CorpusReader([path])), lambda: read_queries(path), lambda: read_examples(path)):
        with pytest.raises(InputError, match="broken.jsonl.gz: can't read it"):
            read()


def test_duplicate_ids_are_reported_the_same_by_every_reader(tmp_path):
    from m3search.evaluation.datasets.task import Corpus

    path = tmp_path / "dup.jsonl"
    path.write_text('{"docid": "a", "text": "x"}\n{"docid": "a", "text": "y"}\n', encoding="utf-8")
    messages = []
    for read in (lambda: list(CorpusReader([path])), lambda: list(Corpus([path])),
                 lambda: m3search.build_index(tmp_path / "idx", [("a", "x"), ("a", "y")], model=MODEL)):
        with pytest.raises(InputError, match="duplicate id 'a' \\(it appeared earlier in the input\\)") as err:
            read()
        messages.append(str(err.value).split(": ", 1)[1])
    assert len(set(messages)) == 1


def test_the_api_and_the_engine_refuse_another_encoder_with_one_message(tmp_path):
    from m3search.encoder import load_encoder
    from m3search.indexes.index import Index

    m3search.build_index(tmp_path / "idx", DOCS, model=MODEL).close()
    other = load_encoder("hashing:dim=16")
    with pytest.raises(EncoderMismatchError) as api_err:
        m3search.open_index(tmp_path / "idx", model=other)
    with pytest.raises(EncoderMismatchError) as engine_err:
        Index.open(tmp_path / "idx", identity=other.identity)
    assert str(api_err.value) == str(engine_err.value) and "dense_dim" in str(api_err.value)
