"""Loaders: genuine MIRACL samples, the offline tasks, and small files in MKQA, MLDR and BEIR formats."""
from __future__ import annotations

import gzip
import json

import pytest

from m3search.errors import ConfigError, InputError
from m3search.evaluation.datasets import load_task, load_tasks, miracl, task_languages

from helpers.evaluation import write_jsonl

MIRACL_LANGS = ["ar", "bn", "de", "en", "es", "fa", "fi", "fr", "hi", "id", "ja", "ko", "ru", "sw", "te", "th", "yo", "zh"]


# -- MIRACL: the genuine samples ---------------------------------------------------------------------


def test_miracl_samples_every_language_loads(miracl_fixtures):
    assert task_languages("miracl", miracl_fixtures) == MIRACL_LANGS
    for lang in MIRACL_LANGS:
        task = load_task("miracl", miracl_fixtures, lang)
        passages = task.corpus.passages()
        assert passages and task.queries and task.qrels
        assert all(p.docid.count("#") == 1 for p in passages)  # MIRACL ids are <article>#<passage>


def test_miracl_samples_splits_match_official_counts(miracl_fixtures):
    official = json.loads((miracl_fixtures / "official_counts.json").read_text())
    for lang in MIRACL_LANGS:
        expected = {key.split("/")[2] for key in official if key.startswith(f"miracl/{lang}/")}
        assert set(miracl.splits(miracl_fixtures, lang)) == expected, lang
        # a sample can't hold more than the release: corpus docs and, for judged splits, qrels lines
        task = load_task("miracl", miracl_fixtures, lang)
        assert len(task.corpus.passages()) <= official[f"miracl/{lang}"]
        assert sum(len(v) for v in task.qrels.values()) <= official[f"miracl/{lang}/dev"]


def test_miracl_samples_values(miracl_fixtures):
    task = load_task("miracl", miracl_fixtures, "ar")
    # qrels keep judged non-relevant documents (rel 0), and qids may carry '#'
    assert task.qrels["0"] == {"151236#1": 1, "3645940#4": 0}
    passages = {p.docid: p for p in task.corpus}
    assert passages["7#0"].text == ""  # null text in the sample reads as empty, title kept
    assert passages["7#0"].title
    de = load_task("miracl", miracl_fixtures, "de")
    assert de.queries["81674#0"] == "Wo ist das Gebiet der Irokesen-Indianer in Kanada?"
    assert load_task("miracl", miracl_fixtures, "ar", split="train").qrels["1"]["26569#0"] == 1


def test_miracl_split_without_qrels_is_refused(miracl_fixtures):
    with pytest.raises(InputError, match="qrels .* dev"):
        load_task("miracl", miracl_fixtures, "de", split="test-b")


def test_miracl_official_layout(tmp_path):
    topics = tmp_path / "miracl-v1.0-sw" / "topics"
    qrels = tmp_path / "miracl-v1.0-sw" / "qrels"
    corpus = tmp_path / "miracl-corpus-v1.0-sw"
    for d in (topics, qrels, corpus):
        d.mkdir(parents=True)
    (topics / "topics.miracl-v1.0-sw-dev.tsv").write_text("7\tswali\n")
    (qrels / "qrels.miracl-v1.0-sw-dev.tsv").write_text("7 Q0 1#0 1\n")
    write_jsonl(corpus / "docs-10.jsonl.gz", [{"docid": "2#0", "title": "t", "text": "b"}], gz=True)
    write_jsonl(corpus / "docs-2.jsonl.gz", [{"docid": "1#0", "title": "t", "text": "a"}], gz=True)
    assert task_languages("miracl", tmp_path) == ["sw"]
    task = load_task("miracl", tmp_path, "sw")
    assert [f.name for f in task.corpus.files] == ["docs-2.jsonl.gz", "docs-10.jsonl.gz"]  # shard order
    assert [p.docid for p in task.corpus] == ["1#0", "2#0"]
    assert task.qrels == {"7": {"1#0": 1}}


# -- the offline tasks ---------------------------------------------------------------------------------


def test_miracl_like_small(eval_dir, shared_dir):
    stats = json.loads((shared_dir / "data" / "stats.json").read_text())["miracl_like"]
    root = eval_dir / "miracl_like_small"
    langs = task_languages("miracl", root)
    assert len(langs) == 32
    task = load_task("miracl", root, "de")
    docids = {p.docid for p in task.corpus}
    assert len(docids) == 3000
    assert task.corpus.files[0].name == "corpus.dev.jsonl.gz"  # the split's own corpus
    assert len(task.queries) == stats["de"]["dev"]
    assert all(d in docids for judged in task.qrels.values() for d in judged)


def test_mkqa_like_small(eval_dir):
    root = eval_dir / "mkqa_like_small"
    langs = task_languages("mkqa", root)
    assert len(langs) == 33 and "en" in langs
    de, ja = load_task("mkqa", root, "de"), load_task("mkqa", root, "ja")
    assert de.corpus.content_hash == ja.corpus.content_hash  # one English corpus for every language
    assert de.corpus_language == "en"
    shared = set(de.queries) & set(ja.queries)
    assert shared and all(de.qrels[q] == ja.qrels[q] for q in shared)  # a qid is shared by its translations
    assert de.judged_queries.keys() <= de.qrels.keys()


def test_mldr_like(eval_dir):
    root = eval_dir / "mldr_like"
    assert {"de", "en", "zh"} <= set(task_languages("mldr", root))
    task = load_task("mldr", root, "de")
    # the qrels file and the queries' positive_passages agree
    from m3search.evaluation.datasets.mldr import _read_queries

    _, positives = _read_queries(root / "de" / "queries.dev.jsonl")
    assert positives == task.qrels
    docids = {p.docid for p in task.corpus}
    assert all(d in docids for judged in task.qrels.values() for d in judged)


def test_load_tasks_checks_languages(eval_dir):
    with pytest.raises(ConfigError, match="no language \\['xx'\\]"):
        load_tasks("miracl", eval_dir / "miracl_like_small", ["de", "xx"])
    with pytest.raises(ConfigError, match="unknown benchmark"):
        load_tasks("msmarco", eval_dir)


# -- small files in the other formats ------------------------------------------------------------------


def test_mkqa_bge_format_with_answers(tmp_path):
    write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "p1", "title": "Paris", "text": "Capital of France."}])
    write_jsonl(tmp_path / "fr.jsonl", [{"id": 17, "question": "capitale de la France ?", "answers": ["Paris"]},
                                        {"id": "18", "question": "sans réponse", "answers": []}])
    assert task_languages("mkqa", tmp_path) == ["fr"]
    task = load_task("mkqa", tmp_path, "fr")
    assert task.queries == {"17": "capitale de la France ?", "18": "sans réponse"}
    assert task.answers == {"17": ["Paris"], "18": []}
    assert task.qrels == {}
    assert list(task.judged_queries) == ["17", "18"]
    assert [p.docid for p in task.corpus] == ["p1"]


def test_mkqa_apple_format(tmp_path):
    write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "p1", "title": "", "text": "x"}])
    rows = [{"example_id": 5, "queries": {"en": "who?", "ja": "誰？"},
             "answers": {"en": [{"type": "entity", "text": "Ann", "aliases": ["Anne"]}],
                         "ja": [{"type": "unanswerable", "text": None}]}}]
    (tmp_path / "mkqa.jsonl.gz").write_bytes(gzip.compress(json.dumps(rows[0]).encode()))
    assert task_languages("mkqa", tmp_path) == ["en", "ja"]
    en = load_task("mkqa", tmp_path, "en")
    assert en.queries == {"5": "who?"} and en.answers == {"5": ["Ann", "Anne"]}
    with pytest.raises(InputError, match="neither qrels"):
        load_task("mkqa", tmp_path, "ja")  # only an unanswerable answer: nothing to score


def test_mldr_release_format_qrels_from_positives(tmp_path):
    folder = tmp_path / "mldr-v1.0-ko"
    folder.mkdir()
    write_jsonl(folder / "corpus.jsonl", [{"docid": "d1", "text": "long"}, {"docid": "d2", "text": "other"}])
    write_jsonl(folder / "dev.jsonl", [{"query_id": "q1", "query": "what", "positive_passages": [{"docid": "d1", "text": "long"}],
                                        "negative_passages": [{"docid": "d2", "text": "other"}]}])
    assert task_languages("mldr", tmp_path) == ["ko"]
    task = load_task("mldr", tmp_path, "ko")
    assert task.qrels == {"q1": {"d1": 1}}
    assert task.queries == {"q1": "what"}


def test_beir_format(tmp_path):
    ds = tmp_path / "scifact"
    (ds / "qrels").mkdir(parents=True)
    write_jsonl(ds / "corpus.jsonl", [{"_id": "10", "title": "T", "text": "body"}])
    write_jsonl(ds / "queries.jsonl", [{"_id": "1", "text": "q one"}, {"_id": "2", "text": "unjudged"}])
    (ds / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\t10\t1\n")
    assert task_languages("beir", tmp_path) == ["scifact"]
    assert task_languages("beir", ds) == ["scifact"]
    task = load_task("beir", tmp_path, "scifact")
    assert task.qrels == {"1": {"10": 1}}
    assert list(task.judged_queries) == ["1"]
    assert task.split == "test"
    assert load_task("beir", ds, "scifact").qrels == task.qrels


# -- errors name the file, the line and the field -------------------------------------------------------


def test_malformed_json_names_file_and_line(tmp_path):
    (tmp_path / "corpus.jsonl").write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n')
    corpus = load_corpus(tmp_path / "corpus.jsonl")
    with pytest.raises(InputError, match=r"corpus\.jsonl:2: not valid JSON"):
        list(corpus)


def test_missing_field_and_duplicates_are_named(tmp_path):
    write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "a", "text": "x"}, {"title": "no id", "text": "y"}])
    with pytest.raises(InputError, match=r"corpus\.jsonl:2: field 'docid' or '_id' or 'id' is missing"):
        list(load_corpus(tmp_path / "corpus.jsonl"))
    write_jsonl(tmp_path / "dup.jsonl", [{"_id": "a", "text": "x"}, {"_id": "a", "text": "y"}])
    with pytest.raises(InputError, match=r"dup\.jsonl:2: duplicate id 'a'"):
        list(load_corpus(tmp_path / "dup.jsonl"))
    write_jsonl(tmp_path / "badtype.jsonl", [{"_id": "a", "text": ["x"]}])
    with pytest.raises(InputError, match=r"badtype\.jsonl:1: field 'text' is list"):
        list(load_corpus(tmp_path / "badtype.jsonl"))


def test_bad_qrels_and_topics_lines(tmp_path):
    from m3search.evaluation.datasets._files import read_qrels, read_topics

    (tmp_path / "q.tsv").write_text("1 Q0 d1 1\n2 d2\n")
    with pytest.raises(InputError, match=r"q\.tsv:2: expected 'qid Q0 docid rel'"):
        read_qrels(tmp_path / "q.tsv")
    (tmp_path / "r.tsv").write_text("1 Q0 d1 high\n")
    with pytest.raises(InputError, match=r"r\.tsv:1: relevance 'high' is not an integer"):
        read_qrels(tmp_path / "r.tsv")
    (tmp_path / "t.tsv").write_text("1\tfirst\n1\tagain\n")
    with pytest.raises(InputError, match=r"t\.tsv:2: query id '1' appears twice"):
        read_topics(tmp_path / "t.tsv")


def test_gzip_is_detected_by_content(tmp_path):
    rows = [{"_id": "a", "text": "x"}]
    write_jsonl(tmp_path / "plain.jsonl", rows)
    write_jsonl(tmp_path / "packed.jsonl", rows, gz=True)  # gzip under a plain name
    assert list(load_corpus(tmp_path / "plain.jsonl")) == list(load_corpus(tmp_path / "packed.jsonl"))
    (tmp_path / "broken.jsonl.gz").write_bytes(gzip.compress(b'{"_id": "a", "text": "x"}\n' * 50)[:30])
    with pytest.raises(InputError, match="broken.jsonl.gz: can't read"):
        list(load_corpus(tmp_path / "broken.jsonl.gz"))


def load_corpus(path):
    from m3search.evaluation.datasets import Corpus

    return Corpus([path])
