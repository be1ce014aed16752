"""Run the offline evaluation suite and write bench/results/<task>/ plus bench/results/eval_summary.md.

Reports (report.md, report.json, plots/) go to bench/results/<task>/, TREC runs to bench/out/runs/<task>/.
The tasks are the CPU-sized dev sets of the shared offline data: miracl_like_small (the languages it shares
with MIRACL; --langs all for all 32), mkqa_like_small (every non-English query language with at least
--min-queries dev queries, against one English corpus, as the paper's cross-lingual MKQA table) and
mldr_like (the languages with at least --min-queries dev queries). It runs the same code as `m3search bench` (m3search.evaluation.runner).

    flock /tmp/m3search-heavy.lock python bench/run_eval.py                                  # everything
    python bench/run_eval.py --tasks miracl --langs de,ja --max-queries 20 --out bench/out/dry  # a dry run
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm

from m3search.evaluation.datasets import load_tasks
from m3search.evaluation.modes import DEFAULT_MODES, BM25, label
from m3search.evaluation.report import headline_metric, metric_title, pattern_notes, write_report
from m3search.evaluation.config import INDEX_CONFIGS, BenchConfig
from m3search.evaluation.runner import run_benchmark

ROOT = Path(__file__).resolve().parent.parent
DATA = {"miracl": "miracl_like_small", "mkqa": "mkqa_like_small", "mldr": "mldr_like"}
# MIRACL's own languages that miracl_like also has (it has no ar, bn, fa, sw, te, th, yo; hi has 2 dev queries)
MIRACL_LANGS = ["de", "es", "fi", "fr", "id", "ja", "ko", "ru", "zh-CN"]


def progress(items, desc, total):
    return tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True, disable=not sys.stderr.isatty())


def languages_with_queries(task: str, data_dir: Path, min_queries: int, exclude: tuple[str, ...] = ()) -> list[str]:
    return [t.language for t in load_tasks(task, data_dir)
            if len(t.judged_queries) >= min_queries and t.language not in exclude]


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
    ap.add_argument("--langs", default=None, help="comma-separated languages for every task, or 'all' (default: "
                    "MIRACL's languages for miracl, those with --min-queries for mkqa (not en) and mldr)")
    ap.add_argument("--min-queries", type=int, default=15, help="MKQA, MLDR: languages with at least this many dev queries")
    ap.add_argument("--max-queries", type=int, default=None, help="first N queries per language (dry runs)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / "bench" / "out" / "encodings")
    ap.add_argument("--backend", choices=["engine", "exact"], default="engine")
    ap.add_argument("--index-config", choices=sorted(INDEX_CONFIGS), default="exact")
    ap.add_argument("--batch-size", type=int, default=256, help="passages per encoder call")
    ap.add_argument("--max-length", type=int, default=None,
                    help="passage tokens encoded (default: the task's, 8192 for mldr; longer texts are cut)")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "bench" / "out" / "runs",
                    help="TREC runs go to RUNS_DIR/<task>/<lang>/<mode>.trec.gz (tens of MB: kept out of git)")
    ap.add_argument("--no-runs", action="store_true", help="don't write TREC runs")
    ap.add_argument("--modes", default=None, help="comma-separated modes (default: every mode plus BM25)")
    ap.add_argument("--depth", type=int, default=100, help="candidates per query from each index")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    reports = {}
    for task in args.tasks.split(","):
        data_dir = args.data_root / DATA[task]
        langs = args.langs.split(",") if args.langs and args.langs != "all" else None
        if task == "miracl" and args.langs is None:
            langs = MIRACL_LANGS
        if task == "mkqa" and args.langs is None:  # cross-lingual only, as the paper's MKQA table
            langs = languages_with_queries(task, data_dir, args.min_queries, exclude=("en",))
        if task == "mldr" and args.langs is None:
            langs = languages_with_queries(task, data_dir, args.min_queries)
        out = args.out / task
        config = BenchConfig(task=task, data_dir=data_dir, model=args.model, languages=langs,
                             modes=args.modes.split(",") if args.modes else [*DEFAULT_MODES, BM25],
                             cache_dir=args.cache_dir, backend=args.backend,
                             components=INDEX_CONFIGS[args.index_config], max_queries=args.max_queries,
                             batch_size=args.batch_size, max_length=args.max_length, depth=args.depth,
                             runs_dir=None if args.no_runs else args.runs_dir / task, runs_gzip=True)
        start = time.perf_counter()
        reports[task] = run_benchmark(config, progress=progress)
        write_report(reports[task], out)
        logging.info("%s done in %.0f s -> %s", task, time.perf_counter() - start, out / "report.md")
    # the summary covers every task with a report in --out, so tasks can be run one invocation at a time
    for task in DATA:
        path = args.out / task / "report.json"
        if task not in reports and path.is_file():
            reports[task] = json.loads(path.read_text(encoding="utf-8"))
    ordered = {task: reports[task] for task in DATA if task in reports}
    (args.out / "eval_summary.md").write_text(summary(ordered), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
