"""Plots of a benchmark report (matplotlib, imported lazily): the headline metric per language and mode,
the weight sweep, and quality against query cost. Drawn on private Figure objects, never through pyplot,
so no global matplotlib state changes."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from m3search.errors import missing_dependency
from m3search.evaluation.modes import label
from m3search.evaluation.report import TITLES, metric_names, metric_title, sweep_average


def check_plotting() -> None:
    """Raise MissingDependencyError (with the install command) if matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise missing_dependency("matplotlib", "the benchmark plots (or pass --no-plots)", "'m3search[bench]'") from None


def _figure(width: float, height: float):
    check_plotting()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)  # a private canvas: no pyplot, no global backend change
    return fig


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def write_plots(report: Mapping[str, Any], folder: Path) -> list[Path]:
    task = report["task"]
    langs = list(report["languages"])
    modes = list(report["modes"])
    out = []
    metric = metric_names(report)[0]
    cols = [*langs, "Avg"]
    fig = _figure(max(6.0, 0.55 * len(cols) + 2), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / max(len(modes), 1)
    for i, mode in enumerate(modes):
        vals = [report["languages"][l]["modes"].get(mode, {}).get("metrics", {}).get(metric, 0.0) for l in langs]
        vals.append(report["average"].get(mode, {}).get(metric, 0.0))
        ax.bar([j + i * width for j in range(len(cols))], vals, width, label=label(mode))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cols))], cols, rotation=60, fontsize=8)
    ax.set_ylabel(metric_title(metric))
    ax.set_title(f"{TITLES.get(task, task)}: {metric_title(metric)} per language")
    ax.legend(fontsize=7, ncol=min(len(modes), 6))
    out.append(_save(fig, folder / f"{task}_{metric.replace('@', '_at_')}.png"))

    found = sweep_average(report)
    if found:
        smetric, grid = found
        fig = _figure(5.0, 3.5)
        ax = fig.add_subplot()
        for wm in sorted({p["multivec"] for p in grid}):
            pts = sorted((p["sparse"], p["value"]) for p in grid if p["multivec"] == wm)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"multivec {wm:g}")
        ax.set_xlabel("sparse weight (dense weight 1)")
        ax.set_ylabel(f"{metric_title(smetric)} (mean over languages)")
        ax.set_title(f"{TITLES.get(task, task)}: weight sweep on dev")
        ax.legend(fontsize=8)
        out.append(_save(fig, folder / f"{task}_sweep.png"))

    fig = _figure(5.0, 3.5)
    ax = fig.add_subplot()
    for mode in modes:
        ms = [r["modes"][mode]["ms_per_query"] for r in report["languages"].values() if mode in r["modes"]]
        ax.scatter(sum(ms) / len(ms), report["average"].get(mode, {}).get(metric, 0.0))
        ax.annotate(label(mode), (sum(ms) / len(ms), report["average"].get(mode, {}).get(metric, 0.0)), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("search time, ms per query (log)")
    ax.set_ylabel(f"{metric_title(metric)} (mean)")
    ax.set_title(f"{TITLES.get(task, task)}: quality vs query cost")
    out.append(_save(fig, folder / f"{task}_cost.png"))
    return out
