"""Run the offline evaluation suite and write bench/results/<task>/ plus bench/results/eval_summary.md.

The tasks are the CPU-sized dev sets of the shared offline data: miracl_like_small (every language),
mkqa_like_small (every query language, one English corpus) and mldr_like (the languages with at least
--min-queries dev queries). It runs the same code as `m3search bench` (m3search.evaluation.runner).

    flock /tmp/m3search-heavy.lock python bench/run_eval.py                                  # everything
    python bench/run_eval.py --tasks miracl --langs de,ja --max-queries 20 --out bench/out/dry  # a dry run
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm

from m3search.evaluation.datasets import load_tasks
from m3search.evaluation.modes import DEFAULT_MODES, BM25, label
from m3search.evaluation.report import headline_metric, metric_title, pattern_notes, write_report
from m3search.evaluation.runner import INDEX_CONFIGS, BenchConfig, run_benchmark

ROOT = Path(__file__).resolve().parent.parent
DATA = {"miracl": "miracl_like_small", "mkqa": "mkqa_like_small", "mldr": "mldr_like"}


def progress(items, desc, total):
    return tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True, disable=not sys.stderr.isatty())


def mldr_languages(data_dir: Path, min_queries: int) -> list[str]:
    return [t.language for t in load_tasks("mldr", data_dir) if len(t.judged_queries) >= min_queries]


def summary(reports: dict[str, dict]) -> str:
    lines = ["# Offline evaluation summary", "",
             "Average over languages of each task's headline metric (×100); details in each task's report.md.", ""]
    for task, report in reports.items():
        metric = headline_metric(report)
        langs = list(report["languages"])
        lines += [f"## {task}: {Path(report['data_dir']).name}, {metric_title(metric)}, {len(langs)} languages "
                  f"({', '.join(langs)})", "", "| Mode | Avg |", "|---|---:|"]
        lines += [f"| {label(m)} | {100 * report['average'][m][metric]:.1f} |" for m in report["modes"]]
        lines += [""] + [f"- {n}" for n in pattern_notes(report)] + [""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="encoder (default m3search-small)")
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data" / "eval")
    ap.add_argument("--tasks", default="miracl,mkqa,mldr")
    ap.add_argument("--langs", default=None, help="comma-separated languages for every task (default: all)")
    ap.add_argument("--min-queries", type=int, default=15, help="MLDR: languages with at least this many dev queries")
    ap.add_argument("--max-queries", type=int, default=None, help="first N queries per language (dry runs)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / "bench" / "out" / "encodings")
    ap.add_argument("--backend", choices=["engine", "exact"], default="engine")
    ap.add_argument("--index-config", choices=sorted(INDEX_CONFIGS), default="exact")
    ap.add_argument("--batch-size", type=int, default=256, help="passages per encoder call")
    ap.add_argument("--no-runs", action="store_true", help="don't write TREC runs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    reports = {}
    for task in args.tasks.split(","):
        data_dir = args.data_root / DATA[task]
        langs = args.langs.split(",") if args.langs else None
        if task == "mldr" and langs is None:
            langs = mldr_languages(data_dir, args.min_queries)
        out = args.out / task
        config = BenchConfig(task=task, data_dir=data_dir, model=args.model, languages=langs,
                             modes=[*DEFAULT_MODES, BM25], cache_dir=args.cache_dir, backend=args.backend,
                             components=INDEX_CONFIGS[args.index_config], max_queries=args.max_queries,
                             batch_size=args.batch_size, runs_dir=None if args.no_runs else out / "runs",
                             runs_gzip=True)
        start = time.perf_counter()
        reports[task] = run_benchmark(config, progress=progress)
        write_report(reports[task], out)
        logging.info("%s done in %.0f s -> %s", task, time.perf_counter() - start, out / "report.md")
    (args.out / "eval_summary.md").write_text(summary(reports), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
