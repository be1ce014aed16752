"""Cost of the multi-vector generator's mean-vector stage (indexes/multivec/means.py) as the index grows:
one query's `mean_scores` over n documents' int8 mean vectors (n x d bytes read per query), the default
path (the row chunks shared with an idle helper thread), medians of 9 after one warm-up call.

    flock /tmp/m3search-heavy.lock python bench/mean_scan_cost.py

Synthetic codes (random int8): the scan reads every row whatever the data, so its cost depends on n x d only.
Results go to bench/results/mean_scan_cost.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from m3search.indexes.multivec.means import mean_scores

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000x384,300000x384,1000000x384,100000x1024,1000000x1024")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mean_scan_cost")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for spec in args.sizes.split(","):
        n, d = (int(v) for v in spec.split("x"))
        codes = rng.integers(-127, 128, size=(n, d), dtype=np.int8)
        scales = np.abs(rng.standard_normal((n, 2))).astype(np.float32)
        q = rng.standard_normal(d).astype(np.float32)
        mean_scores(codes, scales, q, None)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            mean_scores(codes, scales, q, None)
            times.append(time.perf_counter() - t)
        p50 = statistics.median(times)
        rows.append({"n": n, "dim": d, "mb_read": n * d / 1e6, "p50_ms": 1000 * p50, "min_ms": 1000 * min(times),
                     "gb_per_s": n * d / p50 / 1e9})
        print(f"{n} x {d}: p50 {rows[-1]['p50_ms']:.1f} ms", flush=True)
        del codes
    lines = [f"# Mean-vector stage: one query's scan (`means.mean_scores`), medians of {args.repeats}", "",
             f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), load average "
             f"{os.getloadavg()[0]:.2f} at the end. Synthetic int8 rows; cost depends on n x d only.", "",
             "| documents | dim | MB read | p50 ms | min ms | GB/s |", "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['n']:,} | {r['dim']} | {r['mb_read']:.0f} | {r['p50_ms']:.1f} | {r['min_ms']:.1f} | {r['gb_per_s']:.1f} |"
              for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
