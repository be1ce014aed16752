"""Metrics agree with pytrec_eval (trec_eval's C code) on the same runs to 1e-6, ties included."""
from __future__ import annotations

import numpy as np
import pytest

from m3search.errors import ConfigError, InputError
from m3search.evaluation.metrics import evaluate, evaluate_per_query, parse_metric, rank

pytrec_eval = pytest.importorskip("pytrec_eval")

KS = (1, 3, 5, 10, 20)


def random_case(seed: int, n_queries: int = 40, n_docs: int = 60):
    """Runs with many tied scores, graded and negative judgements, unjudged documents, a query with no
    relevant document, an empty ranking, and queries on only one side."""
    rng = np.random.default_rng(seed)
    docs = [f"d{i}" for i in range(n_docs)] + ["é1", "z", "Z", "ab", "a"]  # byte order matters for ties
    run, qrels = {}, {}
    for q in range(n_queries):
        qid = f"q{q}"
        chosen = rng.choice(len(docs), size=int(rng.integers(0, 40)), replace=False)
        # scores from a handful of values, so ties are common
        run[qid] = {docs[i]: float(rng.integers(0, 6)) / 4 for i in chosen}
        judged = rng.choice(len(docs), size=int(rng.integers(1, 12)), replace=False)
        qrels[qid] = {docs[i]: int(rng.choice([-1, 0, 0, 1, 1, 2, 3])) for i in judged}
    qrels["q0"] = {"d1": 0, "d2": 0}  # judged, nothing relevant
    run["q1"] = {}  # retrieved nothing
    run["only-in-run"] = {"d1": 1.0}
    qrels["only-in-qrels"] = {"d1": 1}
    return run, qrels


def reference(run, qrels, k):
    measures = {f"ndcg_cut.{k}", f"recall.{k}"}
    ev = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    # trec_eval has no MRR cut-off: recip_rank of the run truncated to its top k (trec_eval's order)
    top = {q: {d: s[d] for d in rank(s)[:k]} for q, s in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top)
    return {q: {f"ndcg@{k}": v[f"ndcg_cut_{k}"], f"recall@{k}": v[f"recall_{k}"], f"mrr@{k}": rr[q]["recip_rank"]}
            for q, v in ev.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_query_metrics_match_pytrec_eval(seed):
    run, qrels = random_case(seed)
    for k in KS:
        ours = evaluate_per_query(run, qrels, [f"ndcg@{k}", f"recall@{k}", f"mrr@{k}"])
        ref = reference(run, qrels, k)
        assert ours.keys() == ref.keys()  # same queries: those on both sides, empty rankings included
        for qid in ref:
            for name, value in ref[qid].items():
                assert ours[qid][name] == pytest.approx(value, abs=1e-6), (seed, k, qid, name)


def test_means_match_pytrec_eval():
    run, qrels = random_case(7)
    ref = reference(run, qrels, 10)
    ours = evaluate(run, qrels, ["ndcg@10", "recall@10", "mrr@10"])
    for name in ours:
        assert ours[name] == pytest.approx(sum(v[name] for v in ref.values()) / len(ref), abs=1e-6)


def test_uncut_ndcg_matches_trec_eval():
    run, qrels = random_case(3)
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg"}).evaluate(run)
    ours = evaluate_per_query(run, qrels, ["ndcg"])
    for qid, v in ref.items():
        assert ours[qid]["ndcg"] == pytest.approx(v["ndcg"], abs=1e-6)


def test_ties_break_by_docid_descending():
    assert rank({"a": 1.0, "b": 1.0, "c": 2.0, "ab": 1.0, "B": 1.0}) == ["c", "b", "ab", "a", "B"]
    # a tie decides the metric: with trec_eval's order 'b' (relevant) comes first
    assert evaluate({"q": {"a": 1.0, "b": 1.0}}, {"q": {"b": 1}}, ["mrr@1"]) == {"mrr@1": 1.0}


def test_graded_gains_and_negative_judgements():
    qrels = {"q": {"a": 3, "b": 1, "c": -2}}
    # gain = relevance: a (3) first is ideal; a negative judgement gains nothing
    assert evaluate({"q": {"a": 2, "b": 1}}, qrels, ["ndcg@2"])["ndcg@2"] == pytest.approx(1.0)
    swapped = evaluate({"q": {"a": 1, "b": 2}}, qrels, ["ndcg@2"])["ndcg@2"]
    assert swapped == pytest.approx((1 + 3 / np.log2(3)) / (3 + 1 / np.log2(3)))
    assert evaluate({"q": {"c": 2, "a": 1}}, qrels, ["ndcg@2", "mrr@2"]) == pytest.approx(
        {"ndcg@2": (3 / np.log2(3)) / (3 + 1 / np.log2(3)), "mrr@2": 0.5}
    )


def test_metric_names_and_errors():
    assert str(parse_metric("NDCG@10")) == "ndcg@10"
    assert parse_metric("recall@100").k == 100
    for bad in ("ndcg@0", "precision@5", "ndcg@", "map"):
        with pytest.raises(ConfigError, match="unknown metric"):
            parse_metric(bad)
    with pytest.raises(InputError, match="no query of the run has judgements"):
        evaluate({"x": {"a": 1.0}}, {"y": {"a": 1}}, ["ndcg@10"])
