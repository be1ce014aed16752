"""Cold start of the CLI: wall time and peak RSS of one `m3search query INDEX "text"` process.

    flock /tmp/m3search-heavy.lock python bench/cold_start.py                      # sample index, 5 repeats
    flock /tmp/m3search-heavy.lock python bench/cold_start.py --baseline /tmp/base  # + an older checkout

Each repeat starts fresh processes, in turn: `python -c "import torch"` (the floor every torch program
pays), `m3search query` from this tree, and with --baseline the same command from another checkout of
m3search (e.g. `git archive <commit> | tar -x -C /tmp/base`), so the ratios come from one run on one
machine state. Peak RSS is the child's own ru_maxrss (os.wait4). The model is the index's (m3search-small
for the sample index, converted into the m3search cache on first use: the bench runs one unmeasured
query first so that conversion and numba's first compilation are not timed). Reported: the median of
the repeats, and min/max.

Results go to bench/results/cold_start.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUERY = "How do I split cells?"


def run_once(argv: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one child process."""
    start = time.perf_counter()
    # cwd: a neutral folder, since `python -m` puts the working directory before PYTHONPATH on sys.path
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tempfile.gettempdir())
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed ({proc.returncode}): {err.strip()[-500:]}")
    return wall, usage.ru_maxrss / 1024


def env_for(tree: Path | None) -> dict:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, default=None, help="a built index (default: build the sample index)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--query", default=QUERY, help="the query text")
    ap.add_argument("--baseline", type=Path, default=None, help="another m3search checkout to measure beside this one")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cold_start")
    args = ap.parse_args()

    py = sys.executable
    index = args.index
    if index is None:
        index = Path(tempfile.mkdtemp(prefix="m3s-cold-")) / "sample-index"
        subprocess.run([py, "-m", "m3search", "index", "--sample", "-o", str(index), "--quiet"], env=env_for(ROOT),
                       check=True)
    commands = {"python -c 'import torch'": ([py, "-c", "import torch"], env_for(None)),
                "m3search query (this tree)": ([py, "-m", "m3search", "query", str(index), args.query, "-k", "10"],
                                               env_for(ROOT))}
    if args.baseline is not None:
        commands["m3search query (baseline)"] = (
            [py, "-m", "m3search", "query", str(index), args.query, "-k", "10"], env_for(args.baseline.resolve()))
    load_start = os.getloadavg()
    for name, (argv, env) in commands.items():  # warm-up: model conversion, numba caches, page cache
        run_once(argv, env)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, (argv, env) in commands.items():  # interleaved, so load changes hit every command alike
            samples[name].append(run_once(argv, env))

    torch_wall = statistics.median(w for w, _ in samples["python -c 'import torch'"])
    rows = []
    for name, runs in samples.items():
        walls, rss = [w for w, _ in runs], [r for _, r in runs]
        rows.append({"command": name, "wall_s_median": statistics.median(walls), "wall_s_min": min(walls),
                     "wall_s_max": max(walls), "rss_mb_median": statistics.median(rss), "rss_mb_max": max(rss),
                     "x_import_torch": statistics.median(walls) / torch_wall})
    load = os.getloadavg()
    lines = [
        f"# Cold start: one `m3search query` process ({args.repeats} repeats, medians)",
        "",
        f"Index: {index}. Query: {args.query!r}. Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load_start[0]:.1f} at the start, {load[0]:.1f} at the end (shared machine: timings are noisy; commands interleaved).",
        "",
        "| command | wall p50 (s) | min | max | x import torch | peak RSS p50 (MB) | max |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['command']} | {r['wall_s_median']:.2f} | {r['wall_s_min']:.2f} | {r['wall_s_max']:.2f} | "
                     f"{r['x_import_torch']:.2f} | {r['rss_mb_median']:.0f} | {r['rss_mb_max']:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"index": str(index), "repeats": args.repeats,
                                                          "loadavg": load, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
