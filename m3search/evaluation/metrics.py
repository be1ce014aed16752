"""Ranking metrics from qrels with trec_eval's conventions (so they agree with pytrec_eval).

Conventions, as trec_eval applies them:
- a run is ranked by score descending, ties broken by docid descending (byte order);
- a document is relevant when its judged relevance is >= 1; unjudged documents are not relevant;
- nDCG@k: gain = relevance (negative judgements count 0), discount 1/log2(rank + 1), divided by the DCG of
  the ideal ranking of all judged documents cut at k; 0 when no document is relevant;
- Recall@k: relevant in the top k / all relevant (0 when none is relevant); MRR@k: 1/rank of the first
  relevant document in the top k, else 0;
- the mean is over the queries present in both the run and the qrels (a query with an empty ranking counts,
  with 0); queries with qrels but no relevant document count too, with 0. Put every query in the run.

>>> evaluate({"q": {"a": 0.9, "b": 0.5}}, {"q": {"b": 1}}, ["mrr@10", "recall@1"])
{'mrr@10': 0.5, 'recall@1': 0.0}
"""
from __future__ import annotations

import math
import re
from typing import Mapping, NamedTuple, Sequence

from m3search.errors import ConfigError, InputError

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

_METRIC = re.compile(r"^(?P<name>ndcg|recall|mrr)(?:@(?P<k>[1-9][0-9]*))?$")


class Metric(NamedTuple):
    name: str  # "ndcg" | "recall" | "mrr"
    k: int | None  # None: the whole ranking

    def __str__(self) -> str:
        return self.name if self.k is None else f"{self.name}@{self.k}"


def parse_metric(spec: str) -> Metric:
    m = _METRIC.match(spec.strip().lower())
    if not m:
        raise ConfigError(f"unknown metric {spec!r}: use ndcg@K, recall@K or mrr@K (K a positive integer), e.g. 'ndcg@10'")
    return Metric(m["name"], int(m["k"]) if m["k"] else None)


def rank(scores: Mapping[str, float]) -> list[str]:
    """Docids in trec_eval's order: score descending, then docid descending (UTF-8 byte order, as strcmp)."""
    return sorted(scores, key=lambda d: (float(scores[d]), d.encode("utf-8")), reverse=True)


def _dcg(gains: Sequence[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains) if g > 0)


def query_metric(ranking: Sequence[str], judged: Mapping[str, int], metric: Metric) -> float:
    """One metric for one ranked list against one query's judgements."""
    top = ranking if metric.k is None else ranking[: metric.k]
    if metric.name == "ndcg":
        ideal = sorted((r for r in judged.values() if r > 0), reverse=True)
        if metric.k is not None:
            ideal = ideal[: metric.k]
        idcg = _dcg(ideal)
        return _dcg([max(judged.get(d, 0), 0) for d in top]) / idcg if idcg > 0 else 0.0
    n_relevant = sum(1 for r in judged.values() if r >= 1)
    if metric.name == "recall":
        return sum(1 for d in top if judged.get(d, 0) >= 1) / n_relevant if n_relevant else 0.0
    for i, d in enumerate(top):  # mrr
        if judged.get(d, 0) >= 1:
            return 1.0 / (i + 1)
    return 0.0


def _metrics(metrics: Sequence[str | Metric]) -> list[Metric]:
    if isinstance(metrics, str):
        metrics = [metrics]
    return [m if isinstance(m, Metric) else parse_metric(m) for m in metrics]


def evaluate_per_query(run: Run, qrels: Qrels, metrics: Sequence[str]) -> dict[str, dict[str, float]]:
    """{qid: {metric: value}} for the queries in both `run` and `qrels`."""
    parsed = _metrics(metrics)
    out = {}
    for qid, scores in run.items():
        if qid not in qrels:
            continue
        ranking = rank(scores)
        out[qid] = {str(m): query_metric(ranking, qrels[qid], m) for m in parsed}
    return out


def mean(per_query: Mapping[str, Mapping[str, float]], metrics: Sequence[str]) -> dict[str, float]:
    names = [str(m) for m in _metrics(metrics)]
    if not per_query:
        raise InputError("no query of the run has judgements: check that the run's query ids match the qrels'")
    return {name: sum(v[name] for v in per_query.values()) / len(per_query) for name in names}


def evaluate(run: Run, qrels: Qrels, metrics: Sequence[str]) -> dict[str, float]:
    """Mean of each metric over the queries in both `run` and `qrels`, e.g. {"ndcg@10": 0.61}."""
    return mean(evaluate_per_query(run, qrels, metrics), metrics)
