"""Flat vs HNSW (and IVF-PQ fast-scan) per dense segment, by segment size and dimension: where does a
segment stop being cheaper to scan exactly than to search through a graph?

For each dimension and segment size, one DenseComponent segment per structure is built from the same
BGE-M3-shaped synthetic vectors (bench/synthetic.py; a prefix of one corpus per dimension), and searched
through DenseSegmentReader.search, as the engine does:
- single-query latency on one thread (p50 / p95), at depth 100 (the planner's default candidate depth for
  a source) and at k=10;
- the cost per query inside a batch of 32 on one thread;
- recall@10 and recall@100 against exact search over the stored fp16 values.
The flat segment IS exact search over the fp16 store, so its recall is 1 by construction (checked).

    flock /tmp/m3search-heavy.lock timeout 900 python bench/dense_structure_crossover.py

Writes bench/results/dense_structure_crossover.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from synthetic import DenseCorpus  # noqa: E402

from m3search.indexes.dense import DenseComponent  # noqa: E402
from m3search.types import EncodedBatch  # noqa: E402


def recall(I: np.ndarray, gt: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(I, gt)]))


def exact(xb16: np.ndarray, xq: np.ndarray, k: int) -> np.ndarray:
    S = xq @ xb16.astype(np.float32).T
    part = np.argpartition(-S, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(S, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


def single_latency(reader, xq: np.ndarray, k: int) -> dict:
    reader.search(xq[:1], k, threads=1)  # warm (flat: builds its searcher)
    ts = []
    for q in xq:
        t = time.perf_counter()
        reader.search(q[None], k, threads=1)
        ts.append(time.perf_counter() - t)
    a = np.asarray(ts) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95))}


def batch_cost(reader, xq: np.ndarray, k: int, batch: int = 32, repeats: int = 3) -> float:
    """ms per query, batches of `batch` on one thread, median of repeats."""
    xb = xq[:batch]
    best = []
    for _ in range(repeats):
        t = time.perf_counter()
        reader.search(xb, k, threads=1)
        best.append(time.perf_counter() - t)
    return float(np.median(best) * 1e3 / len(xb))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dims", type=int, nargs="+", default=[384, 1024])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 2500, 5000, 10000, 20000, 40000, 80000])
    p.add_argument("--structures", nargs="+", default=["flat", "hnsw"])
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dense_structure_crossover.json")
    args = p.parse_args(argv)

    rows = []
    load_before = os.getloadavg()
    for d in args.dims:
        corpus = DenseCorpus(max(args.sizes), d=d, seed=args.seed)
        xb = np.concatenate([c for _, c in corpus.chunks(65536)])
        xq, _ = corpus.queries(args.queries, seed=args.seed + 1)
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        for n in args.sizes:
            part = xb[:n]
            gt10, gt100 = exact(part.astype(np.float16), xq, 10), exact(part.astype(np.float16), xq, 100)
            batch = EncodedBatch(dense=part, sparse=sp.csr_matrix((n, 1), dtype=np.float32),
                                 multivec=np.zeros((0, 1), np.float32), multivec_lengths=np.zeros(n, np.int64))
            with tempfile.TemporaryDirectory() as tmp:
                for kind in args.structures:
                    comp = DenseComponent({"index": kind, "threads": 2})
                    t = time.perf_counter()
                    meta = comp.build(Path(tmp) / kind, batch, Path(tmp) / "shared")
                    build_s = time.perf_counter() - t
                    reader = comp.open(Path(tmp) / kind, meta, Path(tmp) / "shared")
                    _, I10 = reader.search(xq, 10, threads=1)
                    _, I100 = reader.search(xq, 100, threads=1)
                    row = {"d": d, "n": n, "structure": reader.describe()["factory"], "kind": kind,
                           "build_s": build_s, "bytes_per_doc": reader.describe()["bytes_per_doc"],
                           "depth100": single_latency(reader, xq, 100), "k10": single_latency(reader, xq, 10),
                           "batch32_ms_per_query": batch_cost(reader, xq, 100),
                           "recall@10": recall(I10, gt10, 10), "recall@100": recall(I100, gt100, 100)}
                    reader.close()
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    report = {"rows": rows, "queries": args.queries, "threads": 1, "cpus": os.cpu_count(),
              "load_avg_before": load_before, "load_avg_after": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    args.out.with_suffix(".md").write_text(markdown(report) + "\n")
    print(markdown(report))
    return report


def markdown(report: dict) -> str:
    lb, la = report["load_avg_before"], report["load_avg_after"]
    lines = [f"Dense segment structures by size, {report['queries']} queries, one thread, DenseSegmentReader.search "
             f"(HNSW efSearch = max(256, depth)); {report['cpus']} CPU cores, load average {lb[0]:.2f} before, "
             f"{la[0]:.2f} after.", "",
             "| d | docs | structure | single query, depth 100: p50 / p95 ms | k=10: p50 ms | batch of 32, ms/query "
             "| R@10 | R@100 | build s (2 threads) | bytes/doc |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['d']} | {r['n']:,} | {r['structure']} | {r['depth100']['p50_ms']:.3f} / "
                     f"{r['depth100']['p95_ms']:.3f} | {r['k10']['p50_ms']:.3f} | {r['batch32_ms_per_query']:.3f} | "
                     f"{r['recall@10']:.4f} | {r['recall@100']:.4f} | {r['build_s']:.1f} | {r['bytes_per_doc']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
