"""Where the per-segment cost of a CLI-built index goes, component by component.

    flock /tmp/m3search-heavy.lock python bench/segment_profile.py --n 100000 --dim 384 --commit-every 1000

Opens the two indexes of bench/query_latency.py (the same --n/--dim/--seed; built there, or here if absent):
one optimized segment, and one built the CLI's way (a commit every --commit-every passages, default merge
policy, no optimize). For each query it times, on both indexes and alternating between them (so load
shifts on a shared machine hit both alike), the index-level calls the planner makes:

- dense / sparse / multivec `search` at the candidate depth (100),
- `score_pairs` of each component over the union of those candidates (the planner's re-scoring),
- `docs` of the top 10 (the document store),
- multivec `search` and `score_pairs` the old way, one segment after the other with the generator's whole
  budget per segment (`per-segment` rows), beside the one-pass path (multivec/multiseg.py),
- for the CLI-built index, the sum of the per-segment reader calls of dense and sparse search: the
  difference to the index-level time is the Python work around them (masks, id mapping, top-k merge).

Prints a markdown table (p50 / p95 ms, CLI-built / optimized at p50) and writes it to
bench/results/segment_profile.md (and .json).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from query_latency import build_index, make_queries  # noqa: E402

DEPTH = 100


@contextmanager
def per_segment_multivec():
    """The multi-vector path as it was: every segment searched and scored on its own."""
    from m3search.indexes.multivec import multiseg

    saved = multiseg.shared_codec_groups
    multiseg.shared_codec_groups = lambda readers: ([], list(range(len(readers))))
    try:
        yield
    finally:
        multiseg.shared_codec_groups = saved


def one_query(q, i):
    return q.select([i])


def time_ops(snap, q, out: dict, segment_sums: bool) -> None:
    """Append one timing per op for query q (a one-query EncodedBatch) to out[op]."""
    def timed(name, fn):
        start = time.perf_counter()
        res = fn()
        out.setdefault(name, []).append(time.perf_counter() - start)
        return res

    _, Id = timed("dense search", lambda: snap.dense.search(q.dense, DEPTH))
    _, Is = timed("sparse search", lambda: snap.sparse.search(q.sparse, DEPTH))
    _, Im = timed("multivec search (one pass)", lambda: snap.multivec.search(q.multivec, q.multivec_lengths, DEPTH))
    with per_segment_multivec():
        timed("multivec search (per segment)", lambda: snap.multivec.search(q.multivec, q.multivec_lengths, DEPTH))
    ids = np.unique(np.concatenate([Id.ravel(), Is.ravel(), Im.ravel()]))
    ids = ids[ids >= 0]
    qi = np.zeros(len(ids), np.int64)
    timed("dense score_pairs", lambda: snap.dense.score_pairs(q.dense, qi, ids))
    timed("sparse score_pairs", lambda: snap.sparse.score_pairs(q.sparse, qi, ids))
    timed("multivec score_pairs (one pass)",
          lambda: snap.multivec.score_pairs(q.multivec, q.multivec_lengths, qi, ids))
    with per_segment_multivec():
        timed("multivec score_pairs (per segment)",
              lambda: snap.multivec.score_pairs(q.multivec, q.multivec_lengths, qi, ids))
    timed("docs (10)", lambda: snap.docs(ids[:10]))
    out.setdefault("candidates", []).append(len(ids))
    if segment_sums:
        segset = snap.dense.segset
        for kind, query in (("dense", q.dense), ("sparse", q.sparse)):
            total = 0.0
            for view, (mask, n_live) in zip(segset.views, segset.segment_masks(None)):
                start = time.perf_counter()
                view.readers[kind].search(query, min(DEPTH, n_live), deleted=mask)
                total += time.perf_counter() - start
            out.setdefault(f"{kind} search: sum of segment calls", []).append(total)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=2000)
    p.add_argument("--commit-every", type=int, default=1000)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--work-dir", type=Path, default=ROOT / "bench" / "out")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "segment_profile.json")
    args = p.parse_args(argv)

    from m3search.indexes.index import Index

    opt_path = args.work_dir / f"latency-n{args.n}-d{args.dim}-s{args.seed}.m3s"
    cli_path = args.work_dir / f"latency-n{args.n}-d{args.dim}-s{args.seed}-commit{args.commit_every}.m3s"
    build_index(opt_path, args.n, args.dim, args.seed, args.chunk)
    build_index(cli_path, args.n, args.dim, args.seed, args.chunk, commit_every=args.commit_every)
    queries = make_queries(args.n, args.dim, args.seed, args.queries)
    times = {"optimized": {}, "cli": {}}
    with Index.open(opt_path) as opt, Index.open(cli_path) as cli, opt.snapshot() as so, cli.snapshot() as sc:
        segments = {"optimized": len(so.segments), "cli": len(sc.segments)}
        sizes = {"cli": [s.n for s in sc.segments]}
        for warm in range(2):
            time_ops(so, one_query(queries, warm), {}, False)
            time_ops(sc, one_query(queries, warm), {}, True)
        for i in range(len(queries)):
            q = one_query(queries, i)
            first, second = (("optimized", so), ("cli", sc)) if i % 2 == 0 else (("cli", sc), ("optimized", so))
            for name, snap in (first, second):
                time_ops(snap, q, times[name], name == "cli")
    report = {"n": args.n, "dim": args.dim, "commit_every": args.commit_every, "queries": args.queries,
              "segments": segments, "cli_segment_sizes": sizes["cli"], "load_avg": os.getloadavg(),
              "ops": {}}
    for op in times["cli"]:
        if op == "candidates":
            continue
        row = {}
        for name in ("optimized", "cli"):
            if op in times[name]:
                a = np.asarray(times[name][op]) * 1000
                row[name] = {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95))}
        report["ops"][op] = row
    report["candidates_mean"] = {k: float(np.mean(v["candidates"])) for k, v in times.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    md = markdown(report)
    args.out.with_suffix(".md").write_text(md + "\n")
    print(md)
    return report


def markdown(r: dict) -> str:
    lines = [f"{r['n']:,} passages x {r['dim']}-d (synthetic, bench/query_latency.py's corpus); optimized: "
             f"{r['segments']['optimized']} segment; CLI-built (a commit every {r['commit_every']:,}): "
             f"{r['segments']['cli']} segments {r['cli_segment_sizes']}; {r['queries']} queries one at a time, "
             f"depth {DEPTH}; candidates re-scored per query (mean): {r['candidates_mean']['optimized']:.0f} / "
             f"{r['candidates_mean']['cli']:.0f}; load average at the end {r['load_avg'][0]:.1f}", "",
             "| call | optimized p50 / p95 (ms) | CLI-built p50 / p95 (ms) | CLI / optimized (p50) |", "|---|---|---|---|"]
    for op, row in r["ops"].items():
        c = row["cli"]
        o = row.get("optimized")
        lines.append(f"| {op} | " + (f"{o['p50_ms']:.2f} / {o['p95_ms']:.2f}" if o else "-")
                     + f" | {c['p50_ms']:.2f} / {c['p95_ms']:.2f} | "
                     + (f"{c['p50_ms'] / o['p50_ms']:.2f}x" if o else "-") + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
