"""Distributed layer benchmark: Ray Data encoding with 1/2/4 actors vs the local encoder, and query
latency / QPS of a 4-shard index (in-process and on Ray Serve) vs the same documents unsharded.

    flock /tmp/m3search-heavy.lock python bench/distributed_bench.py            # a few minutes on 2 cores

Encoding: the sample corpus's passages (repeated with new ids up to --encode-docs), m3search-small, parts of
--part-size; every configuration writes a fresh ENCODED folder; medians over --repeats. Ray runs on one
local node with `--ray-cpus` logical CPUs (actors get 1 each; Ray sets OMP threads to 1 per actor), so
on a 2-core machine 4 actors share 2 cores: the numbers show the overhead and the scaling ceiling of this
machine, not what a cluster of GPU nodes does.
Queries: hashing encoder (so encoding costs ~nothing and the numbers are search + fan-out), --query-docs
documents; one query per call (latency p50/p95, sequential QPS) and batches of 32 (QPS), 'all' mode,
weighted fusion, k=10. Results: bench/results/distributed.{json,md,png}.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import plot_axes, save_results  # noqa: E402


def corpus(n: int) -> list[dict]:
    from m3search.data import SAMPLE_CORPUS, CorpusReader

    base = [{"id": d.id, "text": d.text, "title": d.title} for d in CorpusReader([str(SAMPLE_CORPUS)])]
    return [{**d, "id": f"{d['id']}~{i // len(base)}"} for i, d in enumerate(base[i % len(base)] for i in range(n))]


def bench_encoding(args, work: Path) -> list[dict]:
    import ray

    from m3search.distributed.encode_job import encode_corpus_ray
    from m3search.encoding import encode_corpus

    docs = corpus(args.encode_docs)
    rows = []

    def run(label, fn):
        times = []
        for r in range(args.repeats):
            out = work / f"enc-{label}-{r}"
            t = time.perf_counter()
            res = fn(out)
            times.append(time.perf_counter() - t)
            assert res.documents == len(docs), res
            shutil.rmtree(out)
        sec = float(np.median(times))
        rows.append({"method": label, "docs": len(docs), "seconds": sec, "docs_per_s": len(docs) / sec})
        print(f"  {label:<12} {sec:7.2f} s  {len(docs) / sec:7.1f} docs/s", flush=True)

    run("local", lambda out: encode_corpus(docs, out, args.model, part_size=args.part_size, max_length=args.max_length))
    ray.init(address="local", num_cpus=args.ray_cpus, object_store_memory=300 * 1024 * 1024, include_dashboard=False,
             logging_level="ERROR", log_to_driver=False)
    try:
        for w in (1, 2, 4):
            run(f"ray:{w}", lambda out, w=w: encode_corpus_ray(docs, out, args.model, workers=w,
                                                              part_size=args.part_size, max_length=args.max_length))
    finally:
        ray.shutdown()
    base = rows[0]["docs_per_s"]
    for r in rows:
        r["vs_local"] = r["docs_per_s"] / base
    return rows


def bench_queries(args, work: Path) -> list[dict]:
    import ray

    import m3search
    from m3search.distributed.serve import deploy

    model = "hashing:dim=256,multivec_dim=128,vocab_size=30000"
    docs = corpus(args.query_docs)
    plain = m3search.build_index(work / "plain", docs, model=model, batch_size=1024)
    sharded = m3search.build_index(work / "sharded4", docs, model=model, batch_size=1024, shards=4)
    queries = [d["title"] + " " + d["text"][:40] for d in docs[: args.queries]]
    rows = []
    ray.init(address="local", num_cpus=args.ray_cpus, object_store_memory=300 * 1024 * 1024, include_dashboard=False,
             logging_level="ERROR", log_to_driver=False)
    served = deploy(work / "sharded4")
    try:
        for label, index in (("unsharded", plain), ("4 shards, in-process", sharded), ("4 shards, Ray Serve", served)):
            _many(index, queries[:8], k=10)  # warm up
            lat = []
            for q in queries:
                t = time.perf_counter()
                _many(index, [q], k=10)
                lat.append(time.perf_counter() - t)
            batch_t = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                for i in range(0, len(queries), 32):
                    _many(index, queries[i : i + 32], k=10)
                batch_t.append(time.perf_counter() - t)
            lat_ms = np.array(lat) * 1000
            rows.append({"index": label, "docs": len(docs), "queries": len(queries),
                         "p50_ms": float(np.percentile(lat_ms, 50)), "p95_ms": float(np.percentile(lat_ms, 95)),
                         "qps_single": len(queries) / float(np.sum(lat)),
                         "qps_batch32": len(queries) / float(np.median(batch_t))})
            print(f"  {label:<22} p50 {rows[-1]['p50_ms']:6.1f} ms  p95 {rows[-1]['p95_ms']:6.1f} ms  "
                  f"QPS {rows[-1]['qps_single']:6.1f} / batched {rows[-1]['qps_batch32']:7.1f}", flush=True)
        # the served answers are the unsharded ones: scores to 1e-5 (the corpus repeats each passage under
        # new ids, so exact ties abound and the last-bit rounding of a batch can order tied copies either way)
        a, b = _many(plain, queries[:20], k=10), _many(served, queries[:20], k=10)
        for x, y in zip(a, b):
            assert np.allclose([h.score for h in x], [h.score for h in y], atol=1e-5)
    finally:
        served.close()
        ray.shutdown()
        plain.close()
        sharded.close()
    return rows


def _many(index, queries, **opts):
    """search_many where the index has it (SearchIndex gains it in the API consolidation), else search(list)."""
    fn = getattr(index, "search_many", None)
    return fn(queries, **opts) if fn is not None else index.search(list(queries), **opts)


def markdown(res: dict) -> str:
    lines = ["# Distributed layer: Ray Data encoding and a 4-shard index on Ray Serve", "",
             f"Machine: {res['machine']}. {res['note']}", ""]
    if res["encode"]:
        lines += [f"## Encoding ({res['encode'][0]['docs']} passages, {res['model']}, parts of {res['part_size']}, "
             f"max_length {res['max_length']}, median of {res['repeats']})", "",
                  "| method | seconds | docs/s | vs local |", "|---|---:|---:|---:|"]
        lines += [f"| {r['method']} | {r['seconds']:.2f} | {r['docs_per_s']:.1f} | {r['vs_local']:.2f}x |" for r in res["encode"]]
    q = res["query"]
    lines += ["", f"## Queries ({q[0]['docs']} documents, {q[0]['queries']} queries, hashing encoder, mode all, k=10)", "",
              "| index | p50 ms | p95 ms | QPS (1 query/call) | QPS (32 queries/call) |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['index']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['qps_single']:.1f} | {r['qps_batch32']:.1f} |"
              for r in q]
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    if not res["encode"]:
        return
    with plot_axes(path) as ax:
        ax.bar([r["method"] for r in res["encode"]], [r["docs_per_s"] for r in res["encode"]])
        ax.set_ylabel("passages / s")
        ax.set_title("Encoding throughput: local vs Ray actors (2 CPU cores)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="m3search-small")
    p.add_argument("--encode-docs", type=int, default=180)
    p.add_argument("--part-size", type=int, default=30)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--query-docs", type=int, default=2000)
    p.add_argument("--queries", type=int, default=96)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--ray-cpus", type=int, default=4)
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--skip-encode", action="store_true")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="m3s-dist-bench-"))
    try:
        print("encoding:", flush=True)
        enc = [] if args.skip_encode else bench_encoding(args, work)
        print("queries:", flush=True)
        q = bench_queries(args, work)
    finally:
        shutil.rmtree(work)  # the temporary folder this run made
    res = {"machine": f"{os.cpu_count()} CPU cores, no GPU, {platform.platform()}", "model": args.model,
           "part_size": args.part_size, "max_length": args.max_length, "repeats": args.repeats,
           "note": ("Ray runs on one local node with 4 logical CPUs over 2 physical cores, so extra actors share "
                    "the same cores: the table shows Ray's overhead and this machine's ceiling, not cluster scaling."),
           "encode": enc, "query": q}
    print(save_results(res, args.out, "distributed", markdown, plot))


if __name__ == "__main__":
    main()
