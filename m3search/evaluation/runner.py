"""The benchmark runner behind `m3search bench`: every mode plus BM25, over every language of a task.

For each distinct corpus (MKQA's languages share one): encode it once (cached by model and content), build
the m3search index and a BM25 index; then per language: encode the queries, search every mode, score the
runs, write TREC runs, and re-weight the fused scores over a small grid (the weight sweep). The result is
a plain dict (the JSON behind the report); `m3search.evaluation.report` renders it.
"""
from __future__ import annotations

import datetime
import hashlib
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from m3search.evaluation import metrics as M
from m3search.evaluation.answers import answer_recall_per_query
from m3search.evaluation.bm25 import BM25Index
from m3search.evaluation.cache import EncodingCache, cache_key, encoder_fingerprint
from m3search.evaluation.config import BenchConfig
from m3search.evaluation.datasets import RetrievalTask, load_tasks
from m3search.evaluation.modes import BM25, SIGNALS, mode_signals, mode_weights
from m3search.evaluation.retrievers import EngineRetriever, ExactRetriever, Scored
from m3search.evaluation.trec import write_run
from m3search.document import Document
from m3search.ingest import DocumentStream, encode_documents, passage_text
from m3search.types import EncodedBatch

logger = logging.getLogger(__name__)

REPORT_FORMAT = "m3search.bench_report"
REPORT_VERSION = 1

Progress = Callable[[Iterable, str, int | None], Iterable]


def _no_progress(items: Iterable, desc: str, total: int | None) -> Iterable:
    return items


def run_benchmark(config: BenchConfig, encoder=None, progress: Progress | None = None) -> dict:
    """Run `config` and return the report dict (see `m3search.evaluation.report` for the files)."""
    from m3search.encoder import load_encoder

    progress = progress or _no_progress
    tasks = load_tasks(config.task, config.data_dir, list(config.languages) if config.languages else None, config.split)
    encoder = load_encoder(config.model) if encoder is None else encoder
    fingerprint = encoder_fingerprint(encoder)
    cache = EncodingCache(config.cache_dir) if config.cache_dir else None
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "task": config.task,
        "data_dir": str(config.data_dir),
        "split": tasks[0].split,
        "model": {"name": config.model or "m3search-small", **fingerprint},
        "backend": config.backend,
        "index_components": config.components if config.backend == "engine" else None,
        "modes": list(config.modes),
        "fusion_weights": config.fusion,
        "mode_weights": {m: mode_weights(m, config.fusion) for m in config.modes if m != BM25},
        "k": config.k,
        "depth": config.depth,
        "passage_max_length": config.passage_max_length,
        "max_queries": config.max_queries,
        "environment": _environment(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "corpora": {},
        "languages": {},
    }
    base = Path(config.work_dir) if config.work_dir else None
    if base:
        base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="m3search-bench-", dir=base))
    try:
        for corpus_hash, group in _group_by_corpus(tasks).items():
            corpus_report, results = _run_corpus(config, group, encoder, fingerprint, cache, work, progress)
            report["corpora"][corpus_hash[:16]] = corpus_report
            report["languages"].update(results)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the temporary folder this run created
    report["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    report["average"] = _averages(report["languages"], config.modes)
    return report


def _group_by_corpus(tasks: Sequence[RetrievalTask]) -> dict[str, list[RetrievalTask]]:
    groups: dict[str, list[RetrievalTask]] = {}
    for t in tasks:
        groups.setdefault(t.corpus.content_hash, []).append(t)
    return groups


def _run_corpus(config, group, encoder, fingerprint, cache, work, progress) -> tuple[dict, dict]:
    corpus = group[0].corpus
    label = group[0].language if len(group) == 1 else f"{group[0].task} shared corpus"
    docs, batch, encode_info = _encode_corpus(config, corpus, encoder, fingerprint, cache, progress, label)
    docids = [d.id for d in docs]
    texts = None
    if any(t.answers for t in group):
        texts = {p.id: passage_text(p) for p in corpus}
    folder = Path(tempfile.mkdtemp(prefix="corpus-", dir=work))
    corpus_report: dict[str, Any] = {
        "files": [str(f) for f in corpus.files],
        "docs": len(docids),
        "languages": [t.language for t in group],
        "encode": encode_info,
    }
    searchable = [m for m in config.modes if m != BM25]
    retriever = None
    if searchable:
        start = time.perf_counter()
        if config.backend == "engine":
            components = dict(config.components or {"dense": {}, "sparse": {}, "multivec": {}})
            if any("text" in mode_signals(m) for m in searchable):
                components["text"] = {"language": _text_language(config, group)}
                corpus_report["text_language"] = components["text"]["language"]
            retriever = EngineRetriever.build(folder / "index", encoder.identity, config.model, docs, batch,
                                              depth=config.depth, components=components)
        else:
            retriever = ExactRetriever(docids, batch)
        corpus_report["index_seconds"] = time.perf_counter() - start
        corpus_report["index_bytes"] = retriever.nbytes()
    bm25 = None
    if BM25 in config.modes:
        start = time.perf_counter()
        text_of = {p.id: passage_text(p) for p in corpus}
        bm25 = BM25Index.build(folder / "bm25", docids, [text_of.pop(d) for d in docids])
        corpus_report["bm25_index_seconds"] = time.perf_counter() - start
        corpus_report["index_bytes"] = {**corpus_report.get("index_bytes", {}), BM25: bm25.nbytes()}
    results = {}
    try:
        for task in progress(group, f"{config.task}: languages", len(group)):
            results[task.language] = _run_language(config, task, encoder, retriever, bm25, texts)
            results[task.language]["corpus"] = task.corpus.content_hash[:16]
    finally:
        if retriever is not None:
            retriever.close()
    return corpus_report, results


def _encode_corpus(config, corpus, encoder, fingerprint, cache, progress, label) -> tuple[list[Document], EncodedBatch, dict]:
    """The corpus's documents that have text, in index order, and their encodings (through
    `m3search.ingest`, as every index is built: same text, same skips)."""
    options = {"kind": "passage", "max_length": config.passage_max_length, "order": "blake2b-docid"}
    key = cache_key(fingerprint, corpus.content_hash, options)
    stream = DocumentStream(corpus)
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            docids, batch, meta = hit
            by_id = {d.id: d for d in stream}
            logger.info("corpus encodings for %s from the cache (%s)", label, key)
            return [by_id[i] for i in docids], batch, {"cached": True, "cache_key": key, **meta.get("encode", {})}
    passages = sorted(stream, key=_order_key)
    docids = [p.id for p in passages]
    start = time.perf_counter()
    parts = []
    chunks = range(0, len(passages), config.batch_size)
    for lo in progress(chunks, f"encoding {label}", len(chunks)):
        parts.append(encode_documents(encoder, passages[lo : lo + config.batch_size], config.passage_max_length))
    batch = EncodedBatch.concat(parts) if parts else encoder.encode([], kind="passage")
    seconds = time.perf_counter() - start
    info = {"seconds": seconds, "passages_per_second": len(docids) / seconds if seconds else None,
            "tokens": int(batch.multivec_lengths.sum()), "skipped_empty": stream.skipped_empty, **options}
    if cache is not None:
        cache.put(key, docids, batch, {"encoder": fingerprint, "corpus_hash": corpus.content_hash,
                                       "corpus_files": [str(f) for f in corpus.files], "encode": info})
    return passages, batch, {"cached": False, "cache_key": key, **info}


def _order_key(passage) -> bytes:
    """Index documents in a fixed pseudo-random order: the *_small corpora list their relevant passages
    first, so any retriever that breaks score ties by position (zero-score BM25 or sparse candidates, equal
    dense scores) would otherwise be rewarded for it."""
    return hashlib.blake2b(passage.id.encode("utf-8"), digest_size=8).digest()


def _run_language(config, task, encoder, retriever, bm25, texts) -> dict:
    queries = task.judged_queries
    if config.max_queries:
        queries = dict(list(queries.items())[: config.max_queries])
    qids = list(queries)
    out: dict[str, Any] = {"summary": task.summary(), "queries_run": len(qids), "modes": {}}
    start = time.perf_counter()
    q_batch = encoder.encode([queries[q] for q in qids], kind="query")
    out["query_encode_seconds"] = time.perf_counter() - start
    metric_names = list(config.metrics or config.defaults.metrics)
    if task.answers and not config.metrics:
        metric_names = [*(config.defaults.answer_metrics), *(metric_names if task.qrels else [])]
    # The mode that weighs every signal ('all') is asked for its whole candidate list with all three exact
    # scores: its top k is its run, and the whole list is the pool the weight sweep re-weights.
    pool = text_pool = None
    q_texts = [queries[q] for q in qids]
    pool_mode = next((m for m in config.modes if m != BM25 and len(mode_signals(m)) == len(SIGNALS)), None)
    # the weight sweep re-weights the pool of the mode that weighs every signal: only when that mode is run
    sweep = (retriever is not None and pool_mode is not None and set(SIGNALS) <= set(retriever.nbytes())
             and bool(config.sweep_sparse))
    for mode in config.modes:
        start = time.perf_counter()
        if mode == BM25:
            ranked = [[Scored(d, s, {}) for d, s in row] for row in bm25.search_many([queries[q] for q in qids], config.k)]
        elif mode == pool_mode and sweep:
            pool = retriever.search(q_batch, mode_weights(mode, config.fusion), 2 * config.depth, all_scores=True)
            ranked = [row[: config.k] for row in pool]
        elif "text" in mode_signals(mode):
            ranked = retriever.search(q_batch, mode_weights(mode, config.fusion), config.k, query_texts=q_texts)
            if mode == "all+text" and config.text_sweep:
                text_pool = retriever.search(q_batch, mode_weights(mode, config.fusion), 2 * config.depth,
                                             all_scores=True, query_texts=q_texts)
        else:
            ranked = retriever.search(q_batch, mode_weights(mode, config.fusion), config.k)
        seconds = time.perf_counter() - start
        run = {qid: {h.docid: h.score for h in row} for qid, row in zip(qids, ranked)}
        if config.runs_dir:
            suffix = ".trec.gz" if config.runs_gzip else ".trec"
            write_run(Path(config.runs_dir) / task.language / f"{mode}{suffix}", run, tag=f"m3search-{mode}")
        out["modes"][mode] = {
            "metrics": _score_run(run, task, metric_names, texts),
            "search_seconds": seconds,
            "ms_per_query": 1000 * seconds / max(len(qids), 1),
        }
    if sweep:
        if pool is None:
            pool = retriever.search(q_batch, {s: 1.0 for s in SIGNALS}, 2 * config.depth, all_scores=True)
        out["sweep"] = _sweep(config, task, pool, qids, metric_names[0], texts)
    if text_pool is not None:
        out["text_sweep"] = _text_sweep(config, task, text_pool, qids, metric_names[0], texts)
    return out


def _text_language(config, group) -> str:
    """The text component's language for a corpus: config.text_language, or with "auto" the corpus
    language's stemmer (MKQA's corpus is English) where tantivy has one, else multilingual."""
    from m3search.indexes.text.analysis import STEMMERS

    if config.text_language != "auto":
        return config.text_language
    lang = "en" if config.task == "mkqa" else group[0].language.split("-")[0].lower()
    return lang if lang in STEMMERS else "multilingual"


def _text_sweep(config, task, pool, qids, metric, texts) -> dict:
    """The headline metric of 'all' (fusion weights) plus text at each weight of config.text_sweep,
    re-weighting the exact scores of one candidate pool (the dense, sparse, multivec and text candidates)."""
    base = mode_weights("all", config.fusion)
    grid = []
    for wt in config.text_sweep:
        w = {**base, "text": float(wt)}
        run = {}
        for qid, row in zip(qids, pool):
            fused = {h.docid: sum(v * h.scores.get(s, 0.0) for s, v in w.items()) for h in row}
            run[qid] = dict(sorted(fused.items(), key=lambda kv: kv[1], reverse=True)[: config.k])
        grid.append({**w, "value": _score_run(run, task, [metric], texts)[metric]})
    return {"metric": metric, "grid": grid}


def _score_run(run, task, metric_names, texts) -> dict[str, float]:
    values = {}
    qrel_metrics = [m for m in metric_names if not m.startswith("answer_recall@")]
    if qrel_metrics and task.qrels:
        values.update(M.evaluate(run, task.qrels, qrel_metrics))
    for m in metric_names:
        if m.startswith("answer_recall@") and task.answers:
            per_query = answer_recall_per_query(run, task.answers, texts.__getitem__, int(m.split("@")[1]))
            values[m] = sum(per_query.values()) / len(per_query) if per_query else 0.0
    return values


def _sweep(config, task, pool, qids, metric, texts) -> dict:
    """The headline metric over a grid of (sparse, multivec) weights with dense fixed at 1, re-weighting the
    exact component scores of one candidate pool per query (the planner's dense and sparse candidates)."""
    grid = []
    for ws in config.sweep_sparse:
        for wm in config.sweep_multivec:
            w = {"dense": 1.0, "sparse": float(ws), "multivec": float(wm)}
            run = {}
            for qid, row in zip(qids, pool):
                fused = {h.docid: sum(w[s] * h.scores[s] for s in SIGNALS) for h in row}
                run[qid] = dict(sorted(fused.items(), key=lambda kv: kv[1], reverse=True)[: config.k])
            grid.append({**w, "value": _score_run(run, task, [metric], texts)[metric]})
    return {"metric": metric, "grid": grid}


def _averages(languages: Mapping[str, dict], modes: Sequence[str]) -> dict:
    out = {}
    for mode in modes:
        per_metric: dict[str, list[float]] = {}
        for res in languages.values():
            for name, v in res["modes"].get(mode, {}).get("metrics", {}).items():
                per_metric.setdefault(name, []).append(v)
        out[mode] = {name: sum(v) / len(v) for name, v in per_metric.items()}
    return out


def _environment() -> dict:
    import numpy

    env = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
           "numpy": numpy.__version__}
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    from m3search import __version__

    env["m3search"] = __version__
    return env
