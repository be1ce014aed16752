"""Benchmarks: loaders (MIRACL, MKQA, MLDR, BEIR), metrics, and the runner behind `m3search bench`.

- `datasets`: local files in each benchmark's format -> `RetrievalTask` (corpus, queries, qrels, answers);
- `metrics`: nDCG@k, Recall@k, MRR@k with trec_eval's conventions; `answers`: MKQA's answer-string recall;
- `bm25`: the tantivy BM25 baseline; `cache`: corpus encodings cached by model and corpus content;
- `runner`: every mode plus BM25 over every language; `report`: markdown tables, JSON, plots.

>>> from m3search.evaluation import evaluate
>>> evaluate({"q1": {"d1": 2.0, "d2": 1.0}}, {"q1": {"d2": 1}}, ["recall@1", "mrr@10"])
{'recall@1': 0.0, 'mrr@10': 0.5}
"""
from m3search.evaluation.datasets import RetrievalTask, load_task, load_tasks, task_languages
from m3search.evaluation.metrics import evaluate, evaluate_per_query

__all__ = ["RetrievalTask", "evaluate", "evaluate_per_query", "load_task", "load_tasks", "task_languages"]
