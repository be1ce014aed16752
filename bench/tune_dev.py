"""`m3search tune` on the offline dev sets: held-out gains of fitted fusion weights per task and language.

For each (task, language): index the corpus with the model (kept in bench/out/tune/<task>/<lang>, reused by
bench/sparse_head_analysis.py), then `SearchIndex.tune` on the judged dev queries with k-fold
cross-validation (save=False: the report only). Writes bench/results/tune.json and tune.md.

    flock /tmp/m3search-heavy.lock python bench/tune_dev.py --tasks miracl:de,ja,ko --tasks mldr:ca,nb
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import torch

import m3search
from m3search.encoder import load_encoder
from m3search.evaluation.config import TASK_DEFAULTS
from m3search.evaluation.datasets import load_task

ROOT = Path(__file__).resolve().parent.parent
DATA = {"miracl": "miracl_like_small", "mkqa": "mkqa_like_small", "mldr": "mldr_like"}
from m3search.planner.tuning import GRIDS  # noqa: E402


def index_for(task, lang, data_root: Path, encoder, work: Path, max_length):
    t = load_task(task, data_root / DATA[task], lang)
    path = work / task / lang
    start = time.perf_counter()
    if (path / "manifest.json").is_file():
        index = m3search.open_index(path, encoder)
        built = False
    else:
        index = m3search.build_index(path, t.corpus.passages(), model=encoder, max_length=max_length,
                                     progress=sys.stderr.isatty())
        built = True
    return t, index, {"index_seconds": round(time.perf_counter() - start, 1), "built": built, "n_docs": len(index)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", action="append", required=True, help="task:lang,lang (repeatable)")
    ap.add_argument("--model", default="m3search-small")
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data" / "eval")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "tune")
    ap.add_argument("--metric", default="ndcg@10")
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--fusion", default="weighted")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--grid", choices=sorted(GRIDS), default="fine",
                    help="weight values tried per component: fine = the default grid, coarse = 0, 0.3, 1")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tune")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    encoder = load_encoder(args.model, device="cpu")
    out_json = args.out.with_suffix(".json")
    # runs add to the results of earlier runs (one language at a time fits a shared machine better)
    asked = {(spec.partition(":")[0], lang, args.fusion, args.grid)
             for spec in args.tasks for lang in spec.partition(":")[2].split(",")}
    results = [r for r in (json.loads(out_json.read_text())["results"] if out_json.is_file() else [])
               if (r["task"], r["lang"], r["fusion"], r.get("grid", "fine")) not in asked]
    for spec in args.tasks:
        task, _, langs = spec.partition(":")
        for lang in langs.split(","):
            max_length = TASK_DEFAULTS[task].max_length
            t, index, meta = index_for(task, lang, args.data_root, encoder, args.work, max_length)
            logging.info("%s/%s: %s", task, lang, meta)
            start = time.perf_counter()
            report = index.tune(t.judged_queries, t.qrels, metric=args.metric, folds=args.folds, fusion=args.fusion,
                                depth=args.depth, save=False, weight_grid=GRIDS[args.grid])
            index.close()
            row = {"task": task, "data": DATA[task], "lang": lang, "grid": args.grid, **meta,
                   "tune_seconds": round(time.perf_counter() - start, 1), **report.to_dict()}
            results.append(row)
            logging.info("%s/%s:\n%s", task, lang, report.table())
            # written after every language, so an interrupted run keeps what it measured
            out_json.write_text(json.dumps({"environment": environment(args), "results": results}, indent=1))
    write_md(results, args, args.out.with_suffix(".md"))
    return 0


def environment(args) -> dict:
    return {"machine": f"{os.cpu_count()} CPU cores (shared with other jobs), no GPU", "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "model": args.model, "metric": args.metric, "folds": args.folds,
            "fusion": args.fusion, "depth": args.depth}


def write_md(results, args, path: Path) -> None:
    m = args.metric
    lines = [
        f"# `m3search tune` on the offline dev sets ({args.model}, {m}, {args.folds}-fold cross-validation)", "",
        "Grids: fine = each weight in 0, 0.1, 0.2, 0.3, 0.5, 0.7, 1; coarse = 0, 0.3, 1 (the default of "
        "`m3search tune` since these runs); rrf also fits k in 5, 10, 20, 40, 60, 100. The number after the grid is how many distinct "
        "settings were tried.", "",
        "Per language: the untuned modes on all judged dev queries (nothing fitted), then the held-out numbers: each "
        "query measured with weights fitted on the other fold(s) only, against the untuned default "
        "(`all`: dense 1, sparse 0.3, multivec 1) on the same queries and candidates (top "
        f"{args.depth} from the dense and sparse indexes, scored exactly). 'stored' = the weights fitted on all "
        "queries (what `m3search tune` would store); its in-sample number is optimistic and not a result. ×100.", "",
        f"Machine: {os.cpu_count()} CPU cores shared with other jobs, no GPU.", "",
        "| task | lang | fusion, grid | queries | docs | dense | sparse | multivec | all (untuned) | held-out untuned | held-out tuned | gain | stored weights (all queries) | fold weights |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        mo = r["modes"]
        lines.append(
            f"| {r['data']} | {r['lang']} | {r['fusion']}, {r.get('grid', 'fine')} ({r['grid_points']}) | {r['n_queries']} | {r['n_docs']} | {100 * mo.get('dense', 0):.1f} | "
            f"{100 * mo.get('sparse', 0):.1f} | {100 * mo.get('multivec', 0):.1f} | {100 * mo.get('all', 0):.1f} | "
            f"{100 * r['held_out_baseline']:.1f} | {100 * r['held_out']:.1f} | {100 * r['held_out_gain']:+.1f} | "
            f"{r['chosen']} | {'; '.join(f['weights'] for f in r['folds'])} |")
    by_task = {}
    for r in results:
        by_task.setdefault((r["data"], r["fusion"], r.get("grid", "fine")), []).append(r)
    lines += ["", "| task | fusion, grid | languages | held-out untuned | held-out tuned | gain | languages with gain > 0 |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for (data, fusion, grid_name), rows in by_task.items():
        n = len(rows)
        b = sum(r["held_out_baseline"] for r in rows) / n
        t = sum(r["held_out"] for r in rows) / n
        lines.append(f"| {data} | {fusion}, {grid_name} | {n} | {100 * b:.1f} | {100 * t:.1f} | {100 * (t - b):+.1f} | "
                     f"{sum(r['held_out_gain'] > 0 for r in rows)}/{n} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
