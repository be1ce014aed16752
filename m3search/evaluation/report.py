"""Render a benchmark report: markdown tables shaped like the paper's (modes as rows, languages as
columns, the average last), the JSON behind them, and plots (`plots.py`).

Files written into `out_dir`: report.md, report.json, plots/<task>_<metric>.png, plots/<task>_sweep.png,
plots/<task>_cost.png. TREC runs are written by the runner into runs/<lang>/<mode>.trec.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from m3search.evaluation.modes import BM25, label, mode_signals

logger = logging.getLogger(__name__)

TITLES = {"miracl": "MIRACL", "mkqa": "MKQA", "mldr": "MLDR", "beir": "BEIR"}
METRIC_TITLES = {"ndcg": "nDCG", "recall": "Recall", "mrr": "MRR", "answer_recall": "Answer Recall"}


def metric_title(name: str) -> str:
    base, _, k = name.partition("@")
    return f"{METRIC_TITLES.get(base, base)}@{k}" if k else METRIC_TITLES.get(base, base)


def _atomic_write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def write_report(report: Mapping[str, Any], out_dir: str | Path, plots: bool = True) -> list[Path]:
    """Write report.md, report.json and (if `plots`) the PNGs; return the paths written."""
    out_dir = Path(out_dir)
    written = []
    json_path = out_dir / "report.json"
    _atomic_write(json_path, json.dumps(report, indent=1, ensure_ascii=False, sort_keys=False))
    written.append(json_path)
    plot_paths = []
    if plots:
        from m3search.evaluation.plots import write_plots

        plot_paths = write_plots(report, out_dir / "plots")
    md_path = out_dir / "report.md"
    _atomic_write(md_path, to_markdown(report, [p.relative_to(out_dir) for p in plot_paths]))
    return [json_path, md_path, *plot_paths]


# -- markdown -------------------------------------------------------------------------------------


def metric_names(report: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    for res in report["languages"].values():
        for mres in res["modes"].values():
            names += [n for n in mres["metrics"] if n not in names]
    return names


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def metric_table(report: Mapping[str, Any], metric: str) -> str:
    """One paper-style table: a row per mode, a column per language, the average last; best in bold."""
    langs = list(report["languages"])
    modes = list(report["modes"])
    cols = [*langs, "Avg"]
    values: dict[str, dict[str, float | None]] = {}
    for mode in modes:
        row = {lang: report["languages"][lang]["modes"].get(mode, {}).get("metrics", {}).get(metric) for lang in langs}
        present = [v for v in row.values() if v is not None]
        row["Avg"] = sum(present) / len(present) if present else None
        values[mode] = row
    best = {c: max((values[m][c] for m in modes if values[m][c] is not None), default=None) for c in cols}
    lines = ["| Mode | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for mode in modes:
        cells = []
        for c in cols:
            v = values[mode][c]
            cell = _fmt(v)
            cells.append(f"**{cell}**" if v is not None and best[c] is not None and round(v, 3) == round(best[c], 3) else cell)
        lines.append(f"| {label(mode)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mode_components(mode: str) -> list[str]:
    """The index components a mode reads: its signals, plus dense and sparse as candidate sources when it
    re-ranks with multi-vector scores (the token-vector store has no index to search)."""
    if mode == BM25:
        return [BM25]
    signals = list(mode_signals(mode))
    if "multivec" in signals:
        signals = sorted(set(signals) | {"dense", "sparse"}, key=["dense", "sparse", "multivec", "text"].index)
    return signals


def cost_table(report: Mapping[str, Any]) -> str:
    langs = report["languages"]
    total_bytes: dict[str, int] = {}
    for corpus in report["corpora"].values():
        for comp, b in corpus.get("index_bytes", {}).items():
            total_bytes[comp] = total_bytes.get(comp, 0) + b
    lines = ["| Mode | Components | Index size (MB, all corpora) | Search ms/query (mean over languages) |",
             "|---|---|---:|---:|"]
    for mode in report["modes"]:
        comps = _mode_components(mode)
        size = sum(total_bytes.get(c, 0) for c in comps) / 1e6
        ms = [r["modes"][mode]["ms_per_query"] for r in langs.values() if mode in r["modes"]]
        lines.append(f"| {label(mode)} | {'+'.join(comps)} | {size:.1f} | {sum(ms) / len(ms):.2f} |")
    n_queries = sum(r["queries_run"] for r in langs.values())
    encode_s = sum(r.get("query_encode_seconds", 0.0) for r in langs.values())
    if n_queries:
        lines.append(f"\nQuery encoding, one pass for all three signals and shared by every mode: "
                     f"{1000 * encode_s / n_queries:.1f} ms per query (batched). Search times exclude it.")
    return "\n".join(lines)


def corpus_table(report: Mapping[str, Any]) -> str:
    lines = ["| Corpus | Languages | Docs | Encoded tokens | Encode s | Passages/s | Index build s | BM25 build s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for c in report["corpora"].values():
        enc = c["encode"]
        first = Path(c["files"][0])
        langs = ", ".join(c["languages"]) if len(c["languages"]) <= 4 else f"{len(c['languages'])} languages"
        seconds = f"{enc['seconds']:.1f}" + (" (cached)" if enc.get("cached") else "") if "seconds" in enc else "–"
        rate = f"{enc['passages_per_second']:.1f}" if enc.get("passages_per_second") else "–"
        lines.append(
            f"| {first.parent.name}/{first.name} | {langs} | {c['docs']} | {enc.get('tokens', '–')} | {seconds} | "
            f"{rate} | {c.get('index_seconds', 0):.1f} | {c.get('bm25_index_seconds', 0):.1f} |"
        )
    return "\n".join(lines)


def sweep_average(report: Mapping[str, Any]) -> tuple[str, list[dict]] | None:
    """The sweep grid averaged over languages: (metric, [{dense, sparse, multivec, value}])."""
    sweeps = [r["sweep"] for r in report["languages"].values() if "sweep" in r]
    if not sweeps:
        return None
    grid = []
    for i, point in enumerate(sweeps[0]["grid"]):
        vals = [s["grid"][i]["value"] for s in sweeps]
        grid.append({**{k: point[k] for k in ("dense", "sparse", "multivec")}, "value": sum(vals) / len(vals)})
    return sweeps[0]["metric"], grid


def sweep_table(report: Mapping[str, Any]) -> str:
    found = sweep_average(report)
    if not found:
        return ""
    metric, grid = found
    sparse = sorted({p["sparse"] for p in grid})
    multi = sorted({p["multivec"] for p in grid})
    value = {(p["sparse"], p["multivec"]): p["value"] for p in grid}
    best = max(value.values())
    lines = ["| sparse weight ↓ / multivec weight → | " + " | ".join(f"{m:g}" for m in multi) + " |",
             "|---|" + "---:|" * len(multi)]
    for s in sparse:
        cells = [(f"**{_fmt(value[(s, m)])}**" if value[(s, m)] == best else _fmt(value[(s, m)])) for m in multi]
        lines.append(f"| {s:g} | " + " | ".join(cells) + " |")
    return (f"{metric_title(metric)}, mean over languages, dense weight 1. Each cell re-weights the exact "
            "component scores of the same candidates (the union of the dense and sparse indexes' top lists, "
            "as the All mode gathers them), so cells differ only by the fusion weights.\n\n" + "\n".join(lines))


def text_sweep_table(report: Mapping[str, Any]) -> str:
    """The headline metric per language of All plus text at each swept weight (runner._text_sweep)."""
    langs = [l for l, r in report["languages"].items() if "text_sweep" in r]
    if not langs:
        return ""
    first = report["languages"][langs[0]]["text_sweep"]
    weights = [p["text"] for p in first["grid"]]
    lines = ["| text weight | " + " | ".join(langs) + " | Avg |", "|---|" + "---:|" * (len(langs) + 1)]
    for i, wt in enumerate(weights):
        vals = [report["languages"][l]["text_sweep"]["grid"][i]["value"] for l in langs]
        lines.append(f"| {wt:g} | " + " | ".join(_fmt(v) for v in vals) + f" | {_fmt(sum(vals) / len(vals))} |")
    return (f"{metric_title(first['metric'])}; the other weights are All's. Each row re-weights the exact scores "
            "of one candidate pool (dense, sparse, multi-vector and text candidates), so rows differ only by the "
            "text weight; weight 0 is All over that larger pool.\n\n" + "\n".join(lines))


def queries_table(report: Mapping[str, Any]) -> str:
    langs = list(report["languages"])
    lines = ["| | " + " | ".join(langs) + " |", "|---|" + "---:|" * len(langs)]
    lines.append("| queries | " + " | ".join(str(report["languages"][l]["queries_run"]) for l in langs) + " |")
    return "\n".join(lines)


def headline_metric(report: Mapping[str, Any]) -> str:
    return metric_names(report)[0]


def pattern_notes(report: Mapping[str, Any]) -> list[str]:
    """The M3 paper's pattern, checked on this report's headline metric: fused modes at or above the best
    single mode, dense far above BM25 across languages, sparse strong on long documents."""
    metric = headline_metric(report)
    avg = {m: v[metric] for m, v in report["average"].items() if metric in v}
    langs = report["languages"]

    def per_lang(mode: str) -> dict[str, float]:
        return {l: r["modes"][mode]["metrics"][metric] for l, r in langs.items() if mode in r["modes"]}

    notes = []
    singles = [m for m in ("dense", "sparse", "multivec") if m in avg]
    fused = [m for m in avg if m != BM25 and m not in singles]
    if singles and fused:
        best = max(singles, key=avg.get)
        for m in fused:
            wins = sum(per_lang(m)[l] >= max(per_lang(s)[l] for s in singles) - 1e-9 for l in langs)
            verdict = "holds" if avg[m] >= avg[best] - 1e-9 else "breaks"
            notes.append(
                f"{label(m)} {_fmt(avg[m])} vs best single mode ({label(best)}) {_fmt(avg[best])}: "
                f"{100 * (avg[m] - avg[best]):+.1f} on average, at or above it in {wins}/{len(langs)} languages "
                f"-> the pattern {verdict}."
            )
    if BM25 in avg:
        for m in singles:
            notes.append(f"{label(m)} vs BM25: {_fmt(avg[m])} vs {_fmt(avg[BM25])} ({100 * (avg[m] - avg[BM25]):+.1f}).")
    if "sparse" in avg and "dense" in avg:  # the paper: sparse is strongest relative to dense on long documents
        notes.append(f"Sparse vs Dense: {_fmt(avg['sparse'])} vs {_fmt(avg['dense'])} "
                     f"({100 * (avg['sparse'] - avg['dense']):+.1f}).")
    return notes


def to_markdown(report: Mapping[str, Any], plot_paths: Sequence[Path] = ()) -> str:
    task = report["task"]
    model = report["model"]
    metrics = metric_names(report)
    fusion = report["fusion_weights"]
    parts = [
        f"# {TITLES.get(task, task)} benchmark: {Path(report['data_dir']).name}, split {report['split']}, "
        f"model {model['name']}",
        "",
        f"Scores ×100. Modes as rows, languages as columns, average last (as in the M3-Embedding paper's tables); "
        f"the best per column in bold. Backend: {report['backend']} (k={report['k']}, candidate depth "
        f"{report['depth']} per source); passage max length {report['passage_max_length'] or 'encoder default'}; "
        f"fusion weights dense {fusion['dense']:g}, sparse {fusion['sparse']:g}, multivec {fusion['multivec']:g}"
        + (f"; first {report['max_queries']} queries per language only (dry run)" if report.get("max_queries") else "")
        + ".",
        "",
        f"Model identity: `{json.dumps(model.get('identity', {}), sort_keys=True)}`"
        + (f", weights sha256 `{model['weights'][:16]}`" if model.get("weights") else ""),
        "",
    ]
    for metric in metrics:
        parts += [f"## {metric_title(metric)}", "", metric_table(report, metric), ""]
    notes = pattern_notes(report)
    if notes:
        parts += [f"## The paper's pattern ({metric_title(headline_metric(report))}, average)", ""]
        parts += [f"- {n}" for n in notes] + [""]
    sweep = sweep_table(report)
    if sweep:
        parts += ["## Weight sweep (dev)", "", sweep, ""]
    text_sweep = text_sweep_table(report)
    if text_sweep:
        parts += ["## Text (BM25) weight beside All (dev)", "", text_sweep, ""]
    parts += ["## Cost", "", cost_table(report), "", corpus_table(report), "", "## Queries per language", "",
              queries_table(report), ""]
    env = report.get("environment", {})
    parts += [f"Run {report.get('started', '')} – {report.get('finished', '')} on {env.get('platform', '')}, "
              f"{env.get('cpus', '?')} CPUs, torch {env.get('torch', '?')} ({env.get('torch_threads', '?')} threads), "
              f"m3search {env.get('m3search', '?')}.", ""]
    if plot_paths:
        parts += ["## Plots", ""] + [f"![{p.stem}]({p.as_posix()})" for p in plot_paths] + [""]
    return "\n".join(parts)
