"""`m3search bench`: run a benchmark (MIRACL, MKQA, MLDR, BEIR formats) over every mode plus BM25 and write
the report (markdown tables as in the M3 paper, JSON, TREC runs, plots)."""
from __future__ import annotations

import os
from pathlib import Path

import click

from m3search.cli.common import apply_quiet, max_length_option, model_option, quiet_option, show_progress, status
from m3search.errors import M3SearchError

DATA_ENV = "M3SEARCH_BENCH_DATA"
CACHE_ENV = "M3SEARCH_BENCH_CACHE"


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "m3search" / "bench-encodings"


def _tqdm_progress(enabled: bool):
    def progress(items, desc, total):
        if not enabled:
            return items
        from tqdm import tqdm

        return tqdm(items, desc=desc, total=total, dynamic_ncols=True, leave=False)

    return progress


def _split_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _floats(value: str, name: str) -> list[float]:
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers", param_hint=name) from None


@click.command("bench")
@click.argument("task", type=click.Choice(["miracl", "mkqa", "mldr", "beir"]))
@click.option("--data-dir", "-d", envvar=DATA_ENV, required=True, type=click.Path(exists=True, file_okay=False),
              help=f"The benchmark's local folder (formats above). [env: {DATA_ENV}]")
@model_option
@click.option("--langs", "-l", default=None, metavar="LIST",
              help="Comma-separated languages (MKQA: query languages; BEIR: dataset folders). Default: all found.")
@click.option("--split", default=None, help="Split to evaluate (default: dev; BEIR: test).")
@click.option("--modes", default="dense,sparse,multivec,dense+sparse,all", show_default=True, metavar="LIST",
              help="Modes to run: dense, sparse, multivec, their '+' combinations, all.")
@click.option("--no-bm25", is_flag=True, help="Leave out the BM25 baseline (tantivy).")
@click.option("--weights", "-w", default=None, metavar="SPEC",
              help="Fusion weights of the fused modes, e.g. 'dense=1,sparse=0.3,multivec=1' (the paper's, default); "
              "a weight left out keeps its default.")
@click.option("--metrics", default=None, metavar="LIST",
              help="e.g. 'ndcg@10,recall@100,mrr@10,answer_recall@20'. Default: the task's (first = headline).")
@click.option("-k", "k", type=click.IntRange(min=1), default=100, show_default=True, help="Hits kept per query.")
@click.option("--depth", type=click.IntRange(min=1), default=100, show_default=True,
              help="Candidates per source (dense, sparse) that the planner re-scores.")
@max_length_option
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Passages per encoder call (the encoder batches by tokens inside).")
@click.option("--index-config", type=click.Choice(["exact", "default"]), default="exact", show_default=True,
              help="exact: flat dense, fp16 token vectors (what the paper's numbers assume); default: the index's "
              "default compression.")
@click.option("--backend", type=click.Choice(["engine", "exact"]), default="engine", show_default=True,
              help="engine: the on-disk index and planner; exact: brute-force reference scoring in memory.")
@click.option("--cache-dir", envvar=CACHE_ENV, default=None, type=click.Path(file_okay=False),
              help=f"Corpus encoding cache (default ~/.cache/m3search/bench-encodings). [env: {CACHE_ENV}]")
@click.option("--no-cache", is_flag=True, help="Encode corpora afresh and don't store them.")
@click.option("--out", "-o", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Report folder (default: ./m3search-bench/TASK).")
@click.option("--sweep-sparse", default="0,0.1,0.3,0.5,1", show_default=True, metavar="LIST",
              help="Sparse weights of the weight sweep (dense weight 1).")
@click.option("--sweep-multivec", default="0,0.5,1", show_default=True, metavar="LIST",
              help="Multi-vector weights of the weight sweep.")
@click.option("--max-queries", type=click.IntRange(min=1), default=None,
              help="Only the first N queries per language (a quick dry run).")
@click.option("--no-runs", is_flag=True, help="Don't write TREC run files.")
@click.option("--no-plots", is_flag=True, help="Don't draw plots (no matplotlib needed).")
@click.option("--work-dir", default=None, type=click.Path(file_okay=False),
              help="Where the temporary indexes are built (default: the system's temporary folder).")
@quiet_option
def bench(task, data_dir, model, langs, split, modes, no_bm25, weights, metrics, k, depth, max_length, batch_size,
          index_config, backend, cache_dir, no_cache, out_dir, sweep_sparse, sweep_multivec, max_queries, no_runs,
          no_plots, work_dir, quiet):
    """Benchmark TASK over every mode plus BM25, per language, and write a report.

    \b
    Data layouts read from --data-dir (gzip or plain):
      miracl  <lang>/{topics.dev.tsv, qrels.dev.tsv, corpus.jsonl}, or the official
              miracl-v1.0-<lang>/{topics,qrels}/ with miracl-corpus-v1.0-<lang>/docs-*.jsonl.gz
      mkqa    queries.dev/<lang>.tsv + qrels.dev.tsv, or <lang>.jsonl {id, question, answers},
              or mkqa.jsonl (Apple's); English corpus.jsonl {_id, title, text}
      mldr    <lang>/{queries.dev.jsonl or dev.jsonl, corpus.jsonl, qrels.dev.tsv (optional)}
      beir    <dataset>/{corpus.jsonl, queries.jsonl, qrels/test.tsv}

    \b
    Writes into --out: report.md (a table per metric: modes x languages, average last), report.json,
    runs/<lang>/<mode>.trec, plots/*.png. Corpus encodings are cached by model and corpus content, so a
    re-run only encodes queries.

    \b
    Examples:
      m3search bench miracl -d data/miracl --langs de,ja --out results/miracl
      m3search bench mkqa -d data/mkqa --modes dense,all --weights dense=1,sparse=0.3,multivec=1
      m3search bench mldr -d data/mldr --model /models/bge-m3 --max-length 8192
    """
    from m3search.evaluation.config import INDEX_CONFIGS, BenchConfig
    from m3search.evaluation.modes import BM25, parse_fusion_weights, parse_modes
    from m3search.evaluation.report import write_report
    from m3search.evaluation.runner import run_benchmark

    apply_quiet(quiet)
    if no_cache and cache_dir:
        raise click.UsageError("give --cache-dir or --no-cache, not both")
    try:
        mode_list = parse_modes(modes)
        if BM25 not in mode_list and not no_bm25:
            mode_list.append(BM25)
        if no_bm25 and BM25 in mode_list:
            raise click.UsageError("--modes lists bm25 but --no-bm25 leaves it out: choose one")
        if not no_plots:
            from m3search.evaluation.plots import check_plotting

            check_plotting()  # fail now, not after the run
        out = Path(out_dir) if out_dir else Path("m3search-bench") / task
        config = BenchConfig(
            task=task,
            data_dir=Path(data_dir),
            model=model,
            languages=_split_list(langs),
            split=split,
            modes=mode_list,
            fusion_weights=parse_fusion_weights(weights) if weights else None,
            metrics=_split_list(metrics),
            k=k,
            depth=depth,
            max_length=max_length,
            batch_size=batch_size,
            cache_dir=None if no_cache else Path(cache_dir) if cache_dir else _default_cache(),
            backend=backend,
            components=INDEX_CONFIGS[index_config],
            sweep_sparse=_floats(sweep_sparse, "--sweep-sparse"),
            sweep_multivec=_floats(sweep_multivec, "--sweep-multivec"),
            max_queries=max_queries,
            work_dir=Path(work_dir) if work_dir else None,
            runs_dir=None if no_runs else out / "runs",
        )
        report = run_benchmark(config, progress=_tqdm_progress(show_progress(quiet)))
        written = write_report(report, out, plots=not no_plots)
    except M3SearchError as e:
        raise click.ClickException(str(e)) from None
    if not quiet:
        from m3search.evaluation.report import headline_metric, metric_table, metric_title

        metric = headline_metric(report)
        click.echo(f"{metric_title(metric)}\n\n{metric_table(report, metric)}")
    status(f"report: {written[1]} ({len(report['languages'])} languages, {len(report['modes'])} modes)", quiet)
