"""Helpers shared by the component benchmarks (index_bench_*.py): options, timing, plots, result files."""
from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np


def merged_options(args, defaults: dict) -> dict:
    """`defaults` overridden by what `args` gives (a Namespace or a dict, from the command line or from
    index_bench.py); None means not given."""
    given = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    return {**defaults, **{k.replace("-", "_"): v for k, v in given.items() if v is not None}}


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """(median seconds over `repeats` calls of fn, the last call's result)."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


@contextmanager
def plot_axes(path: Path) -> Iterator:
    """Matplotlib axes to draw on; gridded and saved to `path` (PNG) when the block ends."""
    import matplotlib

    matplotlib.use("Agg")  # no display on the benchmark machines
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    yield ax
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def save_results(res: dict, out: str | Path, stem: str, markdown: Callable[[dict], str],
                 plot: Callable[[dict, Path], None]) -> str:
    """Write `res` to out/stem.json, its table to stem.md and its plot to stem.png; return the table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    table = markdown(res)
    (out / f"{stem}.md").write_text(table + "\n")
    plot(res, out / f"{stem}.png")
    return table
