"""`m3search tune`: report, stored defaults used by `query` and shown by `info`, one-line errors."""
from __future__ import annotations

import json
import random

import pytest

import m3search
from m3search.indexes.search_defaults import DEFAULTS_NAME


@pytest.fixture
def judged(tmp_path):
    """An index of random-word documents, a TSV of queries made from them and TREC qrels."""
    rng = random.Random(11)
    vocab = [f"w{i}" for i in range(50)]
    docs = [{"docid": f"d{i}", "text": " ".join(rng.choices(vocab, k=10))} for i in range(30)]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    topics, qrels = [], []
    for j in range(16):
        t = rng.randrange(30)
        topics.append(f"q{j}\t{' '.join(rng.sample(docs[t]['text'].split(), 2) + rng.choices(vocab, k=2))}\n")
        qrels.append(f"q{j} Q0 d{t} 1\n")
    (tmp_path / "topics.tsv").write_text("".join(topics))
    (tmp_path / "qrels.tsv").write_text("".join(qrels))
    return tmp_path, corpus


def test_tune_stores_defaults_that_query_and_info_use(run, judged):
    folder, corpus = judged
    idx = folder / "idx"
    assert run(["index", corpus, "-o", idx, "-q"]).exit_code == 0
    result = run(["tune", idx, "--queries", folder / "topics.tsv", "--qrels", folder / "qrels.tsv", "--folds", "2",
                  "--force", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["n_queries"] == 16 and len(report["folds"]) == 2 and report["saved"]
    weights = report["chosen_weights"]

    info = run(["info", idx])
    assert "search      " + ",".join(f"{c}={w:g}" for c, w in weights.items()) in info.output

    out = run(["query", idx, "w1 w2 w3", "--json", "-k", "5"])
    got = [(h["docid"], h["score"]) for h in json.loads(out.output)["hits"]]
    with m3search.open_index(idx) as index:
        want = [(h.docid, h.score) for h in index.search("w1 w2 w3", k=5, weights=weights)]
    assert got == want

    assert run(["tune", idx, "--reset"]).exit_code == 0
    assert not (idx / DEFAULTS_NAME).exists()
    assert "built-in defaults" in run(["info", idx]).output


def test_tune_no_save_reports_and_changes_nothing(run, judged):
    folder, corpus = judged
    idx = folder / "idx"
    run(["index", corpus, "-o", idx, "-q"])
    result = run(["tune", idx, "--queries", folder / "topics.tsv", "--qrels", folder / "qrels.tsv", "--no-save"])
    assert result.exit_code == 0, result.output
    assert "held out (2-fold cross-validation)" in result.output and "not saved" in result.output
    assert not (idx / DEFAULTS_NAME).exists()


def test_tune_bad_qrels_is_one_line(run, judged):
    folder, corpus = judged
    idx = folder / "idx"
    run(["index", corpus, "-o", idx, "-q"])
    (folder / "empty.tsv").write_text("")
    result = run(["tune", idx, "--queries", folder / "topics.tsv", "--qrels", folder / "empty.tsv"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "hold no judgements" in result.output
    (folder / "other.tsv").write_text("q1 Q0 d1 1\nzz Q0 d2 1\n")
    result = run(["tune", idx, "--queries", folder / "topics.tsv", "--qrels", folder / "other.tsv"])
    assert result.exit_code == 1 and "judge query 'zz'" in result.output
    assert run(["tune", idx, "--queries", folder / "topics.tsv"]).exit_code == 2
