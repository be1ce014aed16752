"""Corpus and query readers: the formats MIRACL, BEIR, MLDR and DPR ship, and precise errors."""
from __future__ import annotations

import gzip
import io

import pytest

import m3search
from m3search.data import SAMPLE_CORPUS, CorpusReader, read_queries
from m3search.errors import InputError
from m3search.ingest import DocumentStream


def read(*sources, **kwargs):
    reader = CorpusReader([str(s) for s in sources], **kwargs)
    return reader, list(reader)


def test_miracl_fixture_with_null_texts(shared_dir):
    path = shared_dir / "data" / "format_fixtures" / "miracl" / "de" / "corpus.sample.jsonl"
    reader, docs = read(path)
    assert [d.text is None for d in docs] == [True, False, True]  # null texts are read, ingest skips them
    stream = DocumentStream(docs)
    kept = list(stream)
    assert [d.id for d in kept] == ["1#9"]
    assert kept[0].title == "Alan Smithee" and kept[0].source == f"{path}:2"
    assert stream.skipped_empty == 2 and stream.first_empty == f"{path}:1"


def test_miracl_topics_and_mldr_queries(shared_dir):
    topics = read_queries(shared_dir / "data" / "format_fixtures" / "miracl" / "de" /
                          "topics.miracl-v1.0-de-dev.sample.tsv")
    assert topics[0].qid == "81674#0" and topics[0].text.startswith("Wo ist das Gebiet")
    mldr = read_queries(shared_dir / "data" / "eval" / "mldr_like" / "de" / "queries.dev.jsonl")
    assert mldr[0].qid.startswith("hb-") and mldr[0].text == "Andere Webserver"


def test_beir_jsonl_metadata_and_gzip(tmp_path):
    path = tmp_path / "corpus.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write('{"_id": 7, "title": "", "text": "t", "metadata": {"url": "u"}, "lang": "de"}\n')
    _, docs = read(path)
    assert docs[0].id == "7" and docs[0].title is None
    assert docs[0].metadata == {"url": "u", "lang": "de"}
    assert docs[0] == m3search.Document("7", "t", None, {"url": "u", "lang": "de"})


def test_dpr_tsv_with_header_and_title_and_a_bom(tmp_path):
    path = tmp_path / "psgs.tsv"
    path.write_bytes("\ufeffid\ttext\ttitle\n1\tsome text\tA title\n2\tmore\t\n".encode())
    _, docs = read(path)
    assert [(d.id, d.text, d.title) for d in docs] == [("1", "some text", "A title"), ("2", "more", None)]


def test_stdin_sniffs_the_format_and_plain_query_lines():
    _, docs = read("-", stdin=io.BytesIO(b"a\tfirst\nb\tsecond\n"))
    assert [d.id for d in docs] == ["a", "b"] and docs[0].source == "<stdin>:1"
    queries = read_queries("-", stdin=io.BytesIO("wie geht das\n\nq7\tmit id\n".encode()))
    assert [(q.qid, q.text) for q in queries] == [("1", "wie geht das"), ("q7", "mit id")]


def test_duplicates_across_files_and_bad_bytes(tmp_path):
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    a.write_text("x\tone\n")
    b.write_text("y\ttwo\nx\tthree\n")
    with pytest.raises(InputError, match=r"b\.tsv:2: duplicate id 'x'"):
        read(a, b)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"id": "1", "text": "ok"}\n{"id": "2", "text": "\xff"}\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:2: not valid UTF-8"):
        read(bad)


def test_duplicate_query_ids(tmp_path):
    path = tmp_path / "topics.tsv"
    path.write_text("1\ta\n1\tb\n")
    with pytest.raises(InputError, match=r"topics\.tsv:2: duplicate query id '1' \(first at .*topics\.tsv:1\)"):
        read_queries(path)


def test_unknown_format_and_empty_folder(tmp_path):
    with pytest.raises(InputError, match="unknown corpus format 'csv'"):
        CorpusReader(["x"], format="csv")
    with pytest.raises(InputError, match="holds no .txt/.md/.text files"):
        read(tmp_path)


def test_sample_corpus_ships_with_the_package():
    reader, docs = read(SAMPLE_CORPUS)
    assert len(docs) == 300 and all(d.text.strip() for d in docs)
    langs = {d.metadata["lang"] for d in docs}
    assert {"en", "de", "fr", "es", "it", "ru", "ja", "zh-CN", "ko"} == langs
