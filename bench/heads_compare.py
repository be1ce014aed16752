"""Two sets of heads compared on the dev sets, per language and mode, with issue #14's goals.

Reads BEFORE/<task>/report.json and AFTER/<task>/report.json (bench/run_eval.py outputs of the same backend;
several --before/--after folders per side are merged, later ones winning per language) and writes one markdown
file: per task, a table with one row per language and, per mode, the metric before -> after; averages over the
languages both sides have; then the goals (mldr_like: sparse >= BM25 and the best fused mode >= BM25 + 3;
miracl_like_small: the best fused mode >= every single mode; mkqa_like_small: no mode loses more than 1 point).
BM25 (and `text`, where run) do not depend on the heads: taken from whichever side has them.

    python bench/heads_compare.py --before /work/fid/exact_all --after bench/out/heads_new --out bench/results/heads_s4.md
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from m3search.evaluation.modes import label
from m3search.evaluation.report import headline_metric, metric_title

TASKS = ("miracl", "mkqa", "mldr")
SINGLE = ("dense", "sparse", "multivec", "text")
FUSED = ("dense+sparse", "all", "all+text")
HEADS_FREE = ("bm25", "text")


def load(folders: list[Path], task: str) -> dict | None:
    reports = [json.loads((f / task / "report.json").read_text()) for f in folders if (f / task / "report.json").is_file()]
    if not reports:
        return None
    merged = dict(reports[0])
    merged["languages"] = {l: r for rep in reports for l, r in rep["languages"].items()}
    return merged


def value(report: dict | None, lang: str, mode: str, metric: str) -> float | None:
    if report is None:
        return None
    m = report["languages"].get(lang, {}).get("modes", {}).get(mode)
    return None if m is None else 100 * m["metrics"][metric]


def compare(before: dict, after: dict) -> tuple[list[str], dict]:
    metric = headline_metric(after)
    langs = [l for l in after["languages"] if l in before["languages"]]
    modes = [m for m in after["modes"] if m not in HEADS_FREE and m in before["modes"]]
    free = [m for m in HEADS_FREE if m in after["modes"] or m in before["modes"]]
    avg = {}
    for side, rep in (("before", before), ("after", after)):
        for m in modes:
            avg[(side, m)] = float(np.mean([value(rep, l, m, metric) for l in langs]))
    for m in free:
        vals = [value(after, l, m, metric) if value(after, l, m, metric) is not None else value(before, l, m, metric)
                for l in langs]
        if all(v is not None for v in vals):
            avg[("free", m)] = float(np.mean(vals))
    lines = [f"## {after['task']}: {Path(after['data_dir']).name}, {metric_title(metric)}, {len(langs)} languages, "
             f"before -> after", "",
             "| lang | " + " | ".join(label(m) for m in [*modes, *free]) + " |",
             "|---|" + "---:|" * (len(modes) + len(free))]
    for l in langs:
        cells = [f"{value(before, l, m, metric):.1f} -> {value(after, l, m, metric):.1f}" for m in modes]
        for m in free:
            v = value(after, l, m, metric)
            v = value(before, l, m, metric) if v is None else v
            cells.append("-" if v is None else f"{v:.1f}")
        lines.append(f"| {l} | " + " | ".join(cells) + " |")
    cells = [f"**{avg[('before', m)]:.1f} -> {avg[('after', m)]:.1f}** ({avg[('after', m)] - avg[('before', m)]:+.1f})"
             for m in modes] + [f"**{avg[('free', m)]:.1f}**" if ("free", m) in avg else "-" for m in free]
    lines.append("| **avg** | " + " | ".join(cells) + " |")
    return lines, {"metric": metric, "langs": langs, "modes": modes, "avg": avg}


def goals(task: str, info: dict) -> list[str]:
    avg, modes = info["avg"], info["modes"]
    out = []
    bm25 = avg.get(("free", "bm25"))
    for side in ("before", "after"):
        a = {m: avg[(side, m)] for m in modes}
        if ("free", "text") in avg:
            a["text"] = avg[("free", "text")]
        fused = {m: v for m, v in a.items() if m in FUSED}
        single = {m: v for m, v in a.items() if m in SINGLE}
        best_f = max(fused, key=fused.get) if fused else None
        best_s = max(single, key=single.get) if single else None
        if task == "mldr" and bm25 is not None:
            out.append(f"- {side}: sparse {a['sparse']:.1f} vs BM25 {bm25:.1f} -> "
                       f"{'MET' if a['sparse'] >= bm25 else 'NOT MET'}; best fused {label(best_f)} {fused[best_f]:.1f} vs "
                       f"BM25 + 3 = {bm25 + 3:.1f} -> {'MET' if fused[best_f] >= bm25 + 3 else 'NOT MET'}")
        if task == "miracl" and best_f and best_s:
            out.append(f"- {side}: best fused {label(best_f)} {fused[best_f]:.1f} vs best single {label(best_s)} "
                       f"{single[best_s]:.1f} -> {'MET' if fused[best_f] >= single[best_s] else 'NOT MET'}")
    if task == "mkqa":
        worst = min(modes, key=lambda m: avg[("after", m)] - avg[("before", m)])
        d = avg[("after", worst)] - avg[("before", worst)]
        out.append(f"- worst change: {label(worst)} {d:+.1f} -> {'MET' if d >= -1.0 else 'NOT MET'} (no mode may lose > 1)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, action="append", required=True)
    ap.add_argument("--after", type=Path, action="append", required=True)
    ap.add_argument("--title", default="Heads before vs after retraining (issue #14)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    lines = [f"# {args.title}", ""]
    for task in TASKS:
        before, after = load(args.before, task), load(args.after, task)
        if before is None or after is None:
            continue
        table, info = compare(before, after)
        lines += table + ["", "Goals:"] + goals(task, info) + [""]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
