"""The BM25 baseline: our analyser, and tantivy's scores checked against the BM25 formula."""
from __future__ import annotations

import math
from collections import Counter

import pytest

from m3search.errors import InputError
from m3search.evaluation.bm25 import BM25Index, analyze


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("Ganze Spalte(n) LÖSCHEN", ["ganze", "spalte", "n", "löschen"]),  # case-folded, no stemming
        ("Straße ﬁle", ["strasse", "file"]),  # NFKC + casefold
        ("列全体を削除", ["列全", "全体", "体を", "を削", "削除"]),  # CJK: overlapping bigrams
        ("한국어 문서", ["한국", "국어", "문서"]),
        ("x列y", ["x", "列", "y"]),  # a lone ideograph stays a unigram
        ("Office列表", ["office", "列表"]),
        ("สวัสดีครับ", ["สวั", "วัส", "สดี", "ดีค", "ครั", "รับ"]),  # Thai vowel signs stay on their consonant
        ("हिन्दी भाषा", ["हिन्दी", "भाषा"]),  # Devanagari marks stay inside the word
        ("ཇོང་ཁ་", ["ཇོང", "ཁ"]),  # Tibetan script splits at the syllable mark
        ("", []),
    ],
)
def test_analyze(text, terms):
    assert analyze(text) == terms


def reference_bm25(docs: list[list[str]], query: list[str], k1: float = 1.2, b: float = 0.75) -> list[float]:
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n
    df = Counter(t for d in docs for t in set(d))
    scores = []
    for d in docs:
        tf = Counter(d)
        s = 0.0
        for term, qtf in Counter(query).items():
            if tf[term]:
                idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
                s += qtf * idf * tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * len(d) / avgdl))
        scores.append(s)
    return scores


def test_scores_match_the_bm25_formula(tmp_path):
    texts = ["apple banana apple", "banana cherry", "cherry cherry cherry date", "date apple", "列全体 banana",
             "eggplant", "apple apple apple apple banana banana cherry date eggplant fig"]
    ids = [f"d{i}" for i in range(len(texts))]
    index = BM25Index.build(tmp_path / "bm25", ids, texts)
    for query in ["apple", "banana cherry", "apple apple date", "全体", "fig grape"]:
        ref = reference_bm25([analyze(t) for t in texts], analyze(query))
        hits = index.search_many([query], k=10)[0]
        expected = sorted(((ids[i], s) for i, s in enumerate(ref) if s > 0), key=lambda x: -x[1])
        assert {d for d, _ in hits} == {d for d, _ in expected}
        got = dict(hits)
        for docid, score in expected:
            assert got[docid] == pytest.approx(score, rel=1e-4), (query, docid)
    assert index.search_many(["grape"], k=5) == [[]]  # no shared term: nothing retrieved
    assert index.nbytes() > 0


def test_build_refuses_a_used_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        BM25Index.build(tmp_path / "x", ["a"], ["text"])
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("lang", ["de", "ja"])
def test_bm25_on_the_full_corpus_matches_the_data_readme(eval_dir, tmp_path, lang):
    """The data README: BM25 without stemming (bigrams for CJK) on the full miracl_like corpora gives nDCG@10
    0.30-0.52 and Recall@100 0.53-0.87."""
    from m3search.evaluation.datasets import load_task
    from m3search.evaluation.metrics import evaluate
    from m3search.ingest import passage_text

    task = load_task("miracl", eval_dir / "miracl_like", lang)
    passages = task.corpus.passages()
    index = BM25Index.build(tmp_path / "bm25", [p.docid for p in passages], [passage_text(p) for p in passages])
    qids = list(task.judged_queries)
    hits = index.search_many([task.queries[q] for q in qids], k=100)
    scores = evaluate({q: dict(h) for q, h in zip(qids, hits)}, task.qrels, ["ndcg@10", "recall@100"])
    assert 0.30 <= scores["ndcg@10"] <= 0.52
    assert 0.53 <= scores["recall@100"] <= 0.87
