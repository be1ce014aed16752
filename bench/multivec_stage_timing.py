"""Where a multivec / `all` query spends its time on a built index, by generator stage, as the index grows.

    flock /tmp/m3search-heavy.lock python bench/multivec_stage_timing.py INDEX --n N --dim D --mean-tokens T

Opens an index built by bench/query_latency.py (synthetic; --n/--dim/--seed/--mean-tokens must be the ones
it was built with, to regenerate its queries) and runs single queries (`search_encoded`, k=10, default
depths) in the given modes with the generator's steps wrapped in timers (bench only; the library is not
changed): the query x centroid products are not separated; stage 1 (postings scan, `probe_estimates`), the
pool selection (`top_ids` over every document's estimate), stage 2 (centroid interaction), stage 2.5
(partial codes), stage 3 and re-scoring (`full_scores`), the other `top_ids` calls, and the rest of the
query (dense and sparse candidates, fusion, fetch). Mean ms per query over the queries, after one warm-up
pass. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

STEPS = ("stage 1 (probe)", "pool select (over all docs)", "stage 2 (centroid)", "stage 2.5 (partial)",
         "stage 3 + re-score (full codes)", "other top_ids")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("index", type=Path)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mean-tokens", type=int, default=100)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--modes", default="multivec,all")
    ap.add_argument("--pool-select", default="top_positions,top_ids",
                    help="variants of the pool selection to time, alternating per mode: top_positions (now), top_ids "
                    "(before: top_ids over every document)")
    args = ap.parse_args()

    import m3search
    from m3search.indexes.multivec import generator as gen
    from m3search.indexes.multivec.reader import MultivecSegmentReader
    from query_latency import make_queries

    acc: dict[str, float] = defaultdict(float)

    def timed(name_of, fn):
        def wrapper(*a, **kw):
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                acc[name_of(a)] += time.perf_counter() - start
        return wrapper

    top_ids, top_positions, variant = gen.top_ids, gen.top_positions, ["top_positions"]

    def pool_select(scores, k):  # the variant being timed
        if variant[0] == "top_positions":
            return top_positions(scores, k)
        return top_ids(scores, np.arange(len(scores), dtype=np.int64), k) if k > 0 else np.zeros(0, np.int64)

    gen.top_positions = timed(lambda a: STEPS[1], pool_select)
    gen.top_ids = timed(lambda a: STEPS[5], gen.top_ids)
    gen.probe_scores = timed(lambda a: STEPS[0], gen.probe_scores)  # the readers call these through `gen.`
    gen.centroid_maxsim = timed(lambda a: STEPS[2], gen.centroid_maxsim)
    for attr, step in (("partial_scores", 3), ("full_scores", 4)):
        setattr(MultivecSegmentReader, attr, timed(lambda a, s=step: STEPS[s], getattr(MultivecSegmentReader, attr)))

    queries = make_queries(args.n, args.dim, args.seed, args.queries, args.mean_tokens)
    rows = {}
    with m3search.open_index(args.index) as index:
        info = index.info()
        for i in range(len(queries)):  # first reads of the index's pages (codes, lists) before anything is timed
            index.search_encoded(queries.select([i]), k=10, mode="all")
        for mode in args.modes.split(","):
            for v in args.pool_select.split(","):
                variant[0] = v
                for i in range(min(20, len(queries))):  # warm-up
                    index.search_encoded(queries.select([i]), k=10, mode=mode)
                acc.clear()
                per = []
                for i in range(len(queries)):
                    start = time.perf_counter()
                    index.search_encoded(queries.select([i]), k=10, mode=mode)
                    per.append(time.perf_counter() - start)
                total, m, col = sum(per), len(queries), f"{mode}, {v}"
                rows[col] = {s: acc[s] / m * 1000 for s in STEPS}
                rows[col]["rest"] = (total - sum(acc.values())) / m * 1000
                rows[col]["total mean"] = total / m * 1000
                rows[col]["p50"] = float(np.percentile(per, 50)) * 1000
    load = os.getloadavg()
    lines = [f"{info['n_docs']:,} passages, {info['n_segments']} segment(s) "
             f"{[s['n_docs'] for s in info['segments']]}, ~{args.mean_tokens} tokens/passage, {args.dim}-d; "
             f"{args.queries} single queries; pool selection by top_positions (now) or top_ids over every document "
             f"(before); mean ms per query; load average {load[0]:.2f}, {load[1]:.2f}", "",
             "| step | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    for s in (*STEPS, "rest", "total mean", "p50"):
        lines.append(f"| {s} | " + " | ".join(f"{rows[m][s]:.2f}" for m in rows) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
