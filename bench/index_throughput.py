"""Indexing throughput of the CLI: passages/s and peak RSS of `m3search index FILE -o INDEX` on real passages.

    flock /tmp/m3search-heavy.lock python bench/index_throughput.py --baseline /tmp/base

The corpus is 2,000 German passages of shared/data/eval/miracl_like/de (every k-th by docid; median ~21
words, the short-passage case where the encoder's per-batch overheads show), indexed with the default
model (m3search-small) and default components, a fresh index per run. Each repeat runs this tree and, with
--baseline, another checkout of m3search (e.g. `git archive <commit> | tar -x -C /tmp/base`) in turn, so
their ratio comes from one machine state. Wall time includes the process start and the model load, as a
user sees it; peak RSS is the child's own ru_maxrss. Medians over the repeats.

Results go to bench/results/index_throughput.{md,json}.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "eval" / "miracl_like" / "de" / "corpus.jsonl.gz"


def write_corpus(path: Path, n: int) -> None:
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        docs = sorted((json.loads(line) for line in f), key=lambda d: d["docid"])
    picked = docs[:: max(len(docs) // n, 1)][:n]
    with open(path, "w", encoding="utf-8") as f:
        for d in picked:
            f.write(json.dumps({"docid": d["docid"], "title": d.get("title", ""), "text": d["text"]},
                               ensure_ascii=False) + "\n")


def run_once(tree: Path, corpus: Path, work: Path, extra_env: dict | None = None) -> tuple[float, float]:
    out = work / "index"
    shutil.rmtree(out, ignore_errors=True)  # our own scratch folder
    env = {**os.environ, "PYTHONPATH": str(tree), **(extra_env or {})}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "m3search", "index", str(corpus), "-o", str(out), "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=work)  # not the repository: `python -m` puts the cwd before PYTHONPATH
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"indexing with {tree} failed: {proc.stderr.read().decode(errors='replace')[-800:]}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", type=Path, default=None)
    ap.add_argument("--torch-row", action="store_true",
                    help="add this tree with M3SEARCH_ONNX=0 (the encoder all in torch, where ONNX Runtime is installed)")
    ap.add_argument("--layers", action="store_true",
                    help="this tree once per layer runtime of the CPU indexing path (M3SEARCH_LAYERS=onnxruntime, "
                         "then torch; encoder/layer_runtime.py) instead of one row with the default")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                    help="another checkout to run in turn, e.g. the tree before a change (repeatable)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "index_throughput")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="m3s-ixbench-"))
    corpus = work / "passages.jsonl"
    write_corpus(corpus, args.n)
    trees = {"this tree": (ROOT, None)}
    if args.layers:
        trees = {f"this tree, M3SEARCH_LAYERS={r}": (ROOT, {"M3SEARCH_LAYERS": r}) for r in ("onnxruntime", "torch")}
    if args.torch_row:
        trees["this tree, M3SEARCH_ONNX=0"] = (ROOT, {"M3SEARCH_ONNX": "0"})
    for spec in args.tree:
        name, _, path = spec.partition("=")
        trees[name] = (Path(path).resolve(), None)
    if args.baseline is not None:
        trees["baseline"] = (args.baseline.resolve(), None)
    load_start = os.getloadavg()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for r in range(args.repeats):
        for name, (tree, extra_env) in (list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]):
            samples[name].append(run_once(tree, corpus, work, extra_env))
            print(f"  {name}: {samples[name][-1][0]:.1f} s, {samples[name][-1][1]:.0f} MB", file=sys.stderr, flush=True)
    shutil.rmtree(work, ignore_errors=True)

    rows = {}
    for name, runs in samples.items():
        wall = statistics.median(w for w, _ in runs)
        rows[name] = {"wall_s": wall, "passages_per_s": args.n / wall, "rss_mb": statistics.median(r for _, r in runs),
                      "walls": [w for w, _ in runs]}
    load = os.getloadavg()
    lines = [f"# Indexing {args.n} real passages with `m3search index` (m3search-small, {args.repeats} repeats, medians)",
             "", f"{os.cpu_count()} CPUs, shared (1-min load average {load_start[0]:.2f} at the start, {load[0]:.2f} "
             "at the end).", "",
             "| tree | wall (s) | passages/s | peak RSS (MB) | per-run wall (s) | x baseline |", "|---|---|---|---|---|---|"]
    base = rows.get("baseline")
    for name, r in rows.items():
        ratio = f"{r['passages_per_s'] / base['passages_per_s']:.2f}" if base else "-"
        walls = " / ".join(f"{w:.1f}" for w in r["walls"])
        lines.append(f"| {name} | {r['wall_s']:.1f} | {r['passages_per_s']:.1f} | {r['rss_mb']:.0f} | {walls} | {ratio} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"n": args.n, "repeats": args.repeats, "loadavg_start": load_start, "loadavg": load,
                                                          "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
