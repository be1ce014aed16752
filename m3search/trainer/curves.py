"""Loss curves from a run's log.jsonl, one panel per group of loss terms (matplotlib, imported lazily)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from m3search.errors import InputError, missing_dependency

PANELS = (
    ("objective", ("total", "unified", "distill")),
    ("InfoNCE terms (L)", ("dense", "lexical", "multivec", "inter")),
    ("self-distillation terms (L')", ("distill_dense", "distill_lexical", "distill_multivec")),
    ("sparse head: active share, mean weight", ("sparse_active", "sparse_mean_weight")),
    ("learning rate", ("lr",)),
)
LINEAR_PANELS = {"learning rate", "sparse head: active share, mean weight"}


def read_log(run: str | Path) -> list[dict]:
    path = Path(run)
    if path.is_dir():
        path = path / "log.jsonl"
    if not path.is_file():
        raise InputError(f"{path} does not exist: give a run folder written by `m3search train fit` or its log.jsonl")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not records:
        raise InputError(f"{path} holds no logged steps yet")
    return records


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise missing_dependency("matplotlib", "plotting loss curves") from None
    return plt


def plot_runs(runs: Mapping[str, str | Path], out: str | Path, title: str | None = None) -> Path:
    """One figure overlaying several runs (e.g. with and without self-distillation), a panel per term group."""
    plt = _pyplot()
    logs = {name: read_log(run) for name, run in runs.items()}
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.6 * len(PANELS), 3.8))
    styles = ["-", "--", ":", "-."]
    for ax, (panel, keys) in zip(axes, PANELS):
        for r, (name, records) in enumerate(logs.items()):
            for k in keys:
                points = [(rec["step"], rec[k]) for rec in records if k in rec]
                if points:
                    steps, values = zip(*points)
                    label = k if len(logs) == 1 else f"{k} ({name})"
                    ax.plot(steps, values, styles[r % len(styles)], label=label, linewidth=1.2)
        ax.set_title(panel)
        ax.set_xlabel("step")
        if panel not in LINEAR_PANELS:
            ax.set_yscale("log")
        if ax.lines:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_run(run: str | Path, out: str | Path | None = None) -> Path:
    run = Path(run)
    folder = run if run.is_dir() else run.parent
    return plot_runs({folder.name: run}, out or folder / "loss_curves.png")
