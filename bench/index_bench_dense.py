"""Dense component benchmark: DenseComponent's IVF-PQ fast-scan + fp16 re-ranking and its HNSW over fp16
(IndexHNSWSQ, M --hnsw-m, a grid of efSearch) beside FAISS IndexFlatIP.

BGE-M3-shaped synthetic vectors (bench/synthetic.py, 1024-d, clustered). In one run: build time, bytes per
document, batched QPS (2 FAISS threads: throughput), single-query p50/p95 latency (1 thread), recall@10/100
against exact search, over a grid of nprobe x refine. Run from the repository root:

    flock /tmp/m3search-heavy.lock python -m bench.index_bench_dense --n 1000000
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import scipy.sparse as sp

from bench.harness import merged_options, plot_axes, save_results, timed
from bench.synthetic import DenseCorpus
from m3search.indexes.dense import DenseComponent
from m3search.indexes.faiss_support import faiss_threads
from m3search.types import EncodedBatch

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULTS = {"n": 1_000_000, "d": 1024, "queries": 1000, "latency_queries": 200, "nprobe": [8, 16, 32, 64],
            "refine": [0, 100, 200, 400], "repeats": 3, "seed": 0, "out": str(RESULTS), "chunk": 65536,
            "tmp": None, "config": "{}", "hnsw_ef": [32, 64, 128, 256], "hnsw_m": 32}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=DEFAULTS["n"], help="documents")
    p.add_argument("--d", type=int, default=DEFAULTS["d"])
    p.add_argument("--queries", type=int, default=DEFAULTS["queries"], help="queries for QPS and recall")
    p.add_argument("--latency-queries", type=int, default=DEFAULTS["latency_queries"])
    p.add_argument("--nprobe", type=int, nargs="+", default=DEFAULTS["nprobe"])
    p.add_argument("--refine", type=int, nargs="+", default=DEFAULTS["refine"])
    p.add_argument("--repeats", type=int, default=DEFAULTS["repeats"], help="timed repeats (median reported)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--out", default=DEFAULTS["out"], help="folder for JSON and plots")
    p.add_argument("--tmp", default=None, help="folder for the index (default: a temporary folder)")
    p.add_argument("--config", default="{}", help='DenseComponent config as JSON, e.g. \'{"index": "ivfpqfs"}\'')
    p.add_argument("--hnsw-ef", type=int, nargs="*", default=DEFAULTS["hnsw_ef"], help="efSearch grid (none: skip HNSW)")
    p.add_argument("--hnsw-m", type=int, default=DEFAULTS["hnsw_m"])
    return p.parse_args(argv)


def recall(I: np.ndarray, gt: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(I, gt)]))


def latencies(search_one, xq: np.ndarray) -> dict:
    ts = []
    for q in xq:
        t = time.perf_counter()
        search_one(q[None])
        ts.append(time.perf_counter() - t)
    ts = np.array(ts) * 1e3
    return {"p50_ms": float(np.percentile(ts, 50)), "p95_ms": float(np.percentile(ts, 95))}


def run(args=None) -> dict:
    o = merged_options(args, DEFAULTS)
    log = logging.getLogger("bench.dense")
    corpus = DenseCorpus(o["n"], o["d"], seed=o["seed"])
    t0 = time.perf_counter()
    xb = np.concatenate([chunk for _, chunk in corpus.chunks(o["chunk"])])
    gen_s = time.perf_counter() - t0
    xq, _ = corpus.queries(o["queries"], seed=o["seed"] + 1)
    xl = xq[: o["latency_queries"]]
    log.info("generated %s in %.0fs", xb.shape, gen_s)
    rows, res = [], {"n": o["n"], "d": o["d"], "queries": len(xq), "generate_s": gen_s,
                     "threads": {"batched": 2, "latency": 1}}

    # -- ours -----------------------------------------------------------------------------------
    with tempfile.TemporaryDirectory(dir=o["tmp"]) as tmp:
        comp = DenseComponent({"threads": 2, "index": "ivfpqfs", **json.loads(o["config"])})
        batch = EncodedBatch(dense=xb, sparse=sp.csr_matrix((len(xb), 1), dtype=np.float32),
                             multivec=np.zeros((0, 1), np.float32), multivec_lengths=np.zeros(len(xb), np.int64))
        t0 = time.perf_counter()
        meta = comp.build(Path(tmp) / "seg", batch, Path(tmp) / "shared")
        build_s = time.perf_counter() - t0
        reader = comp.open(Path(tmp) / "seg", meta, Path(tmp) / "shared")
        desc = reader.describe()
        res["ours"] = {"build_s": build_s, **desc}
        log.info("built %s in %.0fs", desc["factory"], build_s)
        hnsw = None
        if o["hnsw_ef"]:
            hcomp = DenseComponent({"threads": 2, "index": "hnsw", "hnsw_m": o["hnsw_m"]})
            t0 = time.perf_counter()
            hmeta = hcomp.build(Path(tmp) / "hnsw", batch, Path(tmp) / "shared")
            hnsw_build = time.perf_counter() - t0
            hnsw = hcomp.open(Path(tmp) / "hnsw", hmeta, Path(tmp) / "shared")
            res["hnsw"] = {"build_s": hnsw_build, **hnsw.describe()}
            log.info("built HNSW in %.0fs", hnsw_build)

        # -- FAISS flat baseline (exact, fp32), also the ground truth -------------------------------
        flat = faiss.IndexFlatIP(o["d"])
        t0 = time.perf_counter()
        flat.add(xb)
        flat_build = time.perf_counter() - t0
        del batch, xb
        with faiss_threads(2):
            flat_s, (_, gt) = timed(lambda: flat.search(xq, 100), 1)
        with faiss_threads(1):
            lat = latencies(lambda q: flat.search(q, 10), xl[: max(20, len(xl) // 5)])
        rows.append({"system": "faiss IndexFlatIP", "setting": "exact fp32", "build_s": flat_build,
                     "bytes_per_doc": 4 * o["d"], "qps": len(xq) / flat_s, **lat, "recall@10": 1.0,
                     "recall@100": 1.0})
        flat.reset()  # frees the fp32 copy before our searches

        for nprobe in o["nprobe"]:
            for refine in o["refine"]:
                def batched(k=10, nprobe=nprobe, refine=refine):
                    return reader.search(xq, k, nprobe=nprobe, refine=refine, threads=2)

                secs, (_, I10) = timed(batched, o["repeats"])
                _, I100 = reader.search(xq, 100, nprobe=nprobe, refine=refine, threads=2)
                lat = latencies(lambda q: reader.search(q, 10, nprobe=nprobe, refine=refine, threads=1), xl)
                setting = f"{desc['factory']} nprobe={nprobe} refine={refine}"
                rows.append({"system": "m3search dense", "setting": setting,
                             "nprobe": nprobe, "refine": refine, "build_s": build_s,
                             "bytes_per_doc": desc["bytes_per_doc"], "qps": len(xq) / secs, **lat,
                             "recall@10": recall(I10, gt, 10), "recall@100": recall(I100, gt, 100)})
                log.info("%s", rows[-1])
        reader.close()
        for ef in o["hnsw_ef"] if hnsw is not None else ():
            def hbatched(k=10, ef=ef):
                return hnsw.search(xq, k, ef_search=ef, threads=2)

            secs, (_, I10) = timed(hbatched, o["repeats"])
            _, I100 = hnsw.search(xq, 100, ef_search=ef, threads=2)
            lat = latencies(lambda q: hnsw.search(q, 10, ef_search=ef, threads=1), xl)
            secs1, _ = timed(lambda: hnsw.search(xq, 10, ef_search=ef, threads=1), 1)
            rows.append({"system": "m3search dense", "setting": f"HNSW{o['hnsw_m']}_SQfp16 efSearch={ef}",
                         "ef_search": ef, "build_s": res["hnsw"]["build_s"], "bytes_per_doc": res["hnsw"]["bytes_per_doc"],
                         "qps": len(xq) / secs, "qps_1thread": len(xq) / secs1, **lat,
                         "recall@10": recall(I10, gt, 10), "recall@100": recall(I100, gt, 100)})
            log.info("%s", rows[-1])
        if hnsw is not None:
            hnsw.close()
    flat_qps = rows[0]["qps"]
    for r in rows:
        r["qps_vs_flat"] = r["qps"] / flat_qps
    res["rows"] = rows
    return res


def markdown(res: dict) -> str:
    head = ("| system | setting | build s | bytes/doc | QPS (2 thr) | x flat | p50 ms (1 thr) | p95 ms | "
            "recall@10 | recall@100 |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [f"Dense, N={res['n']:,} x {res['d']}, {res['queries']} queries\n", head]
    for r in res["rows"]:
        lines.append(f"| {r['system']} | {r['setting']} | {r['build_s']:.0f} | {r['bytes_per_doc']:.0f} | "
                     f"{r['qps']:.0f} | {r['qps_vs_flat']:.1f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
                     f"{r['recall@10']:.3f} | {r['recall@100']:.3f} |")
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    with plot_axes(path) as ax:
        ours = [r for r in res["rows"] if r["system"] == "m3search dense" and "refine" in r]
        hn = sorted((r["qps"], r["recall@10"]) for r in res["rows"] if "ef_search" in r)
        if hn:
            ax.plot([p[1] for p in hn], [p[0] for p in hn], "s--", label="HNSW over fp16 (efSearch varies)")
        for refine in sorted({r["refine"] for r in ours}):
            pts = sorted((r["qps"], r["recall@10"]) for r in ours if r["refine"] == refine)
            ax.plot([p[1] for p in pts], [p[0] for p in pts], "o-", label=f"IVF-PQfs refine={refine} (nprobe varies)")
        base = res["rows"][0]
        ax.plot([base["recall@10"]], [base["qps"]], "k*", markersize=12, label="FAISS IndexFlatIP")
        ax.set_xlabel("recall@10 vs exact")
        ax.set_ylabel("QPS (batched, 2 threads)")
        ax.set_yscale("log")
        ax.set_title(f"dense, N={res['n']:,} x {res['d']}")
        ax.legend(fontsize=8)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    res = run(args)
    print(save_results(res, args.out, f"dense_n{res['n']}", markdown, plot))


if __name__ == "__main__":
    main()
