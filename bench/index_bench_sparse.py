"""Learned-sparse index benchmark: m3search's sparse component beside term-at-a-time baselines and PISA.

All systems run in the same process run, on the same seeded BGE-M3-shaped data (bench/synthetic_sparse.py),
one thread each unless a row says otherwise:

- m3search sparse, exact (the default) and approximate settings (alpha: block-bound factor; beta: query
  token pruning), built from the CSR weights into a temporary segment folder;
- scipy term-at-a-time: CSC column gather of the query's tokens, sparse x dense product, argpartition;
- numba accumulator: a dense float32 accumulator over all documents, postings added term by term, a
  k-heap over the accumulator;
- PISA through pyterrier-pisa (8-bit impacts: weights x 255/max_weight truncated, as its toks indexer
  does; MaxScore and block-max WAND), run by this same file in its own virtualenv (--pisa-venv, created
  with `pip install pyterrier-pisa` if missing), because it is not a dependency of m3search.

Measured: build time, bytes per document (inverted and forward index apart), per-query latency p50/p95 (one call per query, single
thread, wall clock and the calling thread's CPU time, medians over repeats), QPS (all queries in one
call, one thread), recall@10 and @100 against the exact float32 top-k (brute force over the original
weights). Writes bench/results/sparse_bench.json, sparse_bench.md and sparse_recall_qps.png.

    flock /tmp/m3search-heavy.lock python bench/index_bench_sparse.py --docs 1000000
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATA_CACHE = HERE / "out" / "sparse_data"
# PISA's pretokenised queries keep only the integer part of each weight, and pyterrier-pisa repeats a term
# int(weight) times: scale each query so its largest weight is QUERY_MAX_WEIGHT (ranking is unchanged by a
# common factor; 1000 keeps 3 digits of the top term). A fixed x1e4 made ~23k-term queries and slowed PISA.
QUERY_MAX_WEIGHT = 1000.0


# ---------------------------------------------------------------------------------------------------
# PISA worker: runs inside the PISA virtualenv, imports only numpy and pyterrier_pisa.
# ---------------------------------------------------------------------------------------------------

def _pisa_worker(work: Path) -> None:
    import pyterrier_pisa
    from pyterrier_pisa import PisaIndex, _pisathon

    try:
        pyterrier_pisa.log_level(False)
    except AttributeError:  # older wheels lack it
        pass
    spec = json.loads((work / "spec.json").read_text())
    indptr = np.load(work / "indptr.npy")
    indices = np.load(work / "indices.npy")
    data = np.load(work / "data.npy")
    q_indptr = np.load(work / "q_indptr.npy")
    q_indices = np.load(work / "q_indices.npy")
    q_data = np.load(work / "q_data.npy")
    scale = spec["scale"]

    def docs():
        for d in range(len(indptr) - 1):
            lo, hi = indptr[d], indptr[d + 1]
            yield {"docno": str(d), "toks": dict(zip(map(str, indices[lo:hi].tolist()), data[lo:hi].tolist()))}

    index = PisaIndex(str(work / "pisa_index"), stemmer="none", threads=1)
    t0 = time.perf_counter()
    index.toks_indexer(scale=scale).index(docs())  # pyterrier-pisa's inversion: pure Python, timed apart
    invert_s = time.perf_counter() - t0

    def rescaled(i):
        w = q_data[q_indptr[i]:q_indptr[i + 1]].astype(np.float64)
        w = w * (QUERY_MAX_WEIGHT / w.max()) if len(w) and w.max() > 0 else w
        return dict(zip(map(str, q_indices[q_indptr[i]:q_indptr[i + 1]].tolist()), w.tolist()))

    queries = [rescaled(i) for i in range(len(q_indptr) - 1)]
    # the first retriever compresses the index and its block-max data: PISA's own build step
    t0 = time.perf_counter()
    first = index.quantized(num_results=10, query_algorithm="maxscore", threads=1)
    first.reset_retrieval_context()
    compress_s = time.perf_counter() - t0
    files = {f.name: f.stat().st_size for f in (work / "pisa_index").iterdir()}
    # like for like with our inverted part: the compressed postings + block-max data + term lexicon
    inverted = sum(v for k, v in files.items() if k.startswith("quantized.") or k == "fwd.termlex")
    out = {"build_s": compress_s, "invert_s": invert_s, "index_bytes": inverted, "files": files, "runs": {}}
    for algo in spec["algorithms"]:
        for k in spec["ks"]:
            retr = index.quantized(num_results=k, query_algorithm=algo, threads=1)
            retr.reset_retrieval_context()
            ctxt = retr._ctxt

            def run(qs):
                n = len(qs)
                qidx = np.empty(n * k, np.int32)
                docnos = np.empty(n * k, dtype=object)
                ranks = np.empty(n * k, np.int32)
                scores = np.empty(n * k, np.float32)
                size = _pisathon.retrieve(ctxt, algo, list(enumerate(qs)), k=k, threads=1, pretokenised=True,
                                          query_weighted=1, result_qidxs=qidx, result_docnos=docnos,
                                          result_ranks=ranks, result_scores=scores)
                return qidx[:size], docnos[:size], ranks[:size]

            ids = np.full((len(queries), k), -1, np.int64)
            batch_times = []
            for _ in range(spec["repeats"]):
                t = time.perf_counter()
                qidx, docnos, ranks = run(queries)
                batch_times.append(time.perf_counter() - t)
            ids[qidx, ranks] = np.asarray(docnos, dtype=np.int64)
            lat, cpu = _per_query_times(lambda i: run([queries[i]]), len(queries), spec["repeats"]) \
                if k == spec["ks"][0] else (None, None)
            np.save(work / f"pisa_{algo}_{k}.npy", ids)
            out["runs"][f"{algo}@{k}"] = {"batch_s": float(np.median(batch_times)), "lat": lat, "cpu": cpu}
    (work / "pisa_result.json").write_text(json.dumps(out))


def _per_query_times(fn, n: int, repeats: int) -> tuple[list[float], list[float]]:
    """Median over repeats of each query's wall and thread-CPU seconds."""
    wall = np.zeros((repeats, n))
    cpu = np.zeros((repeats, n))
    for r in range(repeats):
        for i in range(n):
            t, c = time.perf_counter(), time.thread_time()
            fn(i)
            cpu[r, i] = time.thread_time() - c
            wall[r, i] = time.perf_counter() - t
    return np.median(wall, axis=0).tolist(), np.median(cpu, axis=0).tolist()


# ---------------------------------------------------------------------------------------------------
# Main process
# ---------------------------------------------------------------------------------------------------

def _load_data(n_docs: int, n_queries: int, seed: int):
    import scipy.sparse as sp

    sys.path.insert(0, str(HERE))
    import synthetic_sparse as syn

    DATA_CACHE.mkdir(parents=True, exist_ok=True)
    f = DATA_CACHE / f"corpus_{n_docs}_s{seed}.npz"
    fq = DATA_CACHE / f"queries_{n_docs}_{n_queries}_s{seed}.npz"
    if f.exists() and fq.exists():
        return sp.load_npz(f).tocsr(), sp.load_npz(fq).tocsr()
    vocab = syn.make_vocabulary(seed=seed)
    x = syn.make_corpus(n_docs, vocab, seed=seed)
    q = syn.make_queries(x, n_queries, vocab, seed=seed + 1)
    sp.save_npz(f, x, compressed=False)
    sp.save_npz(fq, q, compressed=False)
    return x, q


def _numba_kernels():
    from numba import njit

    @njit(cache=True)
    def taat(x_indptr, x_indices, x_data, q_idx, q_w, n_docs, k, acc, out_s, out_i):
        """Dense accumulator over all documents, then the k best (score desc, id asc)."""
        acc[:] = 0
        for j in range(len(q_idx)):
            t = q_idx[j]
            w = q_w[j]
            for p in range(x_indptr[t], x_indptr[t + 1]):
                acc[x_indices[p]] += w * x_data[p]
        # k-th largest via a small insertion buffer
        size = 0
        for d in range(n_docs):
            s = acc[d]
            if s <= 0 or (size == k and s <= out_s[k - 1]):
                continue
            pos = size if size < k else k - 1
            while pos > 0 and out_s[pos - 1] < s:
                if pos < k:
                    out_s[pos] = out_s[pos - 1]
                    out_i[pos] = out_i[pos - 1]
                pos -= 1
            out_s[pos] = s
            out_i[pos] = d
            if size < k:
                size += 1
        return size

    return taat


class ExactTruth:
    """Exact float top-k over the original weights (float64 accumulation), for recall."""

    def __init__(self, xc, taat):
        self.xc = xc
        self.taat = taat

    def topk(self, q, k: int) -> np.ndarray:
        n = self.xc.shape[0]
        acc = np.zeros(n, np.float64)
        out = np.full((q.shape[0], k), -1, np.int64)
        s = np.empty(k, np.float64)
        data = self.xc.data.astype(np.float64)
        for i in range(q.shape[0]):
            lo, hi = q.indptr[i], q.indptr[i + 1]
            self.taat(self.xc.indptr, self.xc.indices, data, q.indices[lo:hi].astype(np.int64),
                      q.data[lo:hi].astype(np.float64), n, k, acc, s, out[i])
        return out


def _recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = [len(set(f[:k][f[:k] >= 0].tolist()) & set(t[:k][t[:k] >= 0].tolist())) / max(1, (t[:k] >= 0).sum())
            for f, t in zip(found, truth)]
    return float(np.mean(hits))


def _summarise(name, build_s, nbytes, n_docs, batch_s_k10, n_q, lat, cpu, rec10, rec100, notes=""):
    row = {
        "system": name,
        "build_s": None if build_s is None else round(build_s, 2),
        "bytes_per_doc": None if nbytes is None else round(nbytes / n_docs, 1),
        "qps": round(n_q / batch_s_k10, 1),
        "mean_ms": round(1e3 * batch_s_k10 / n_q, 3),
        "recall@10": round(rec10, 4),
        "recall@100": None if rec100 is None else round(rec100, 4),
        "notes": notes,
    }
    if lat is not None:
        row.update({
            "p50_ms": round(1e3 * float(np.percentile(lat, 50)), 3),
            "p95_ms": round(1e3 * float(np.percentile(lat, 95)), 3),
            "cpu_p50_ms": round(1e3 * float(np.percentile(cpu, 50)), 3),
            "cpu_p95_ms": round(1e3 * float(np.percentile(cpu, 95)), 3),
        })
    return row


def _bench_ours(x, q, truth10, truth100, args, rows, log):
    from bench.harness import timed
    from m3search.indexes.sparse import SparseComponent
    from m3search.types import EncodedBatch

    n = x.shape[0]
    batch = EncodedBatch(dense=np.zeros((n, 1), np.float32), sparse=x, multivec=np.zeros((0, 1), np.float32),
                         multivec_lengths=np.zeros(n, np.int64))
    q_rows = [q[i] for i in range(q.shape[0])]
    with tempfile.TemporaryDirectory(dir=args.workdir) as d:
        comp = SparseComponent({"block_docs": args.block_docs, "max_weight": args.max_weight})
        for version in getattr(args, "old_formats", []):
            # an older segment format (2: byte-aligned varint postings) beside the current one, same run
            x_c = x.tocsr()
            t = time.perf_counter()
            meta = comp._write(Path(d) / f"seg_v{version}", x_c.indptr.astype(np.int64), x_c.indices.astype(np.int32),
                               x_c.data.astype(comp.config["forward_dtype"]), x_c.shape, Path(d) / "shared",
                               version=version)
            build_s = time.perf_counter() - t
            reader = comp.open(Path(d) / f"seg_v{version}", meta, Path(d) / "shared")
            stats = reader.stats()
            log(f"ours v{version}: built in {build_s:.1f}s, {stats}")
            reader.search(q[:20], 10)
            batch_s, (_, i10) = timed(lambda: reader.search(q, 10), args.repeats)
            _, i100 = reader.search(q, 100)
            lat, cpu = _per_query_times(lambda i: reader.search(q_rows[i], 10), q.shape[0], args.repeats)
            notes = (f"segment format v{version}; inverted {stats['inverted_bytes'] / n:.0f} B/doc + forward "
                     f"{stats['forward_bytes'] / n:.0f} B/doc")
            rows.append(_summarise(f"m3search exact (format v{version})", build_s, stats["total_bytes"], n, batch_s,
                                   q.shape[0], lat, cpu, _recall(i10, truth10, 10), _recall(i100, truth100, 100),
                                   notes))
            rows[-1]["inverted_bytes_per_doc"] = round(stats["inverted_bytes"] / n, 1)
            rows[-1]["forward_bytes_per_doc"] = round(stats["forward_bytes"] / n, 1)
            log(rows[-1])
            reader.close()
        for frac in getattr(args, "dense_fractions", []):
            # the current format with another dense_fraction (fewer dense block-max rows: smaller, slower?)
            c2 = SparseComponent({"block_docs": args.block_docs, "max_weight": args.max_weight, "dense_fraction": frac})
            t = time.perf_counter()
            meta = c2.build(Path(d) / f"seg_df{frac}", batch, Path(d) / "shared")
            build_s = time.perf_counter() - t
            reader = c2.open(Path(d) / f"seg_df{frac}", meta, Path(d) / "shared")
            stats = reader.stats()
            reader.search(q[:20], 10)
            batch_s, (_, i10) = timed(lambda: reader.search(q, 10), args.repeats)
            _, i100 = reader.search(q, 100)
            lat, cpu = _per_query_times(lambda i: reader.search(q_rows[i], 10), q.shape[0], args.repeats)
            rows.append(_summarise(f"m3search exact, dense_fraction={frac}", build_s, stats["total_bytes"], n, batch_s,
                                   q.shape[0], lat, cpu, _recall(i10, truth10, 10), _recall(i100, truth100, 100),
                                   f"segment format v{stats['version']}, {stats['n_dense_terms']} dense rows"))
            rows[-1]["inverted_bytes_per_doc"] = round(stats["inverted_bytes"] / n, 1)
            rows[-1]["forward_bytes_per_doc"] = round(stats["forward_bytes"] / n, 1)
            log(rows[-1])
            reader.close()
        t = time.perf_counter()
        meta = comp.build(Path(d) / "seg", batch, Path(d) / "shared")
        build_s = time.perf_counter() - t
        reader = comp.open(Path(d) / "seg", meta, Path(d) / "shared")
        stats = reader.stats()
        log(f"ours: built in {build_s:.1f}s, {stats}")
        settings = [("m3search exact", {})] + [
            (f"m3search alpha={a}" + (f" beta={b}" if b < 1 else ""), {"exact": False, "alpha": a, "beta": b})
            for a, b in args.approx]
        for name, params in settings:
            reader.search(q[:20], 10, **params)  # compile / warm
            batch_s, (_, i10) = timed(lambda: reader.search(q, 10, **params), args.repeats)
            _, i100 = reader.search(q, 100, **params)
            lat, cpu = _per_query_times(lambda i: reader.search(q_rows[i], 10, **params), q.shape[0], args.repeats)
            notes = (f"segment format v{stats['version']}; inverted {stats['inverted_bytes'] / n:.0f} B/doc + forward "
                     f"{stats['forward_bytes'] / n:.0f} B/doc")
            rows.append(_summarise(name, build_s, stats["total_bytes"], n, batch_s, q.shape[0],
                                   lat, cpu, _recall(i10, truth10, 10), _recall(i100, truth100, 100), notes))
            rows[-1]["inverted_bytes_per_doc"] = round(stats["inverted_bytes"] / n, 1)
            rows[-1]["forward_bytes_per_doc"] = round(stats["forward_bytes"] / n, 1)
            log(rows[-1])
        if args.threads > 1:
            params = {"threads": args.threads}
            reader.search(q[:20], 10, **params)
            batch_s, (_, i10) = timed(lambda: reader.search(q, 10, **params), args.repeats)
            rows.append(_summarise(f"m3search exact, {args.threads} threads (batch)", None, None, n,
                                   batch_s, q.shape[0], None, None, _recall(i10, truth10, 10), None,
                                   "throughput only; other rows are 1 thread"))
            log(rows[-1])
        reader.close()
        return stats, build_s


def _bench_scipy(xc, q, truth10, truth100, args, rows, log):
    from bench.harness import timed

    n = xc.shape[0]

    def one(i, k):
        lo, hi = q.indptr[i], q.indptr[i + 1]
        if lo == hi:
            return np.full(k, -1)
        s = xc[:, q.indices[lo:hi]] @ q.data[lo:hi]
        top = np.argpartition(-s, min(k, n - 1))[:k]
        top = top[np.lexsort((top, -s[top]))]
        return np.where(s[top] > 0, top, -1)

    def run(k):
        return np.stack([one(i, k) for i in range(q.shape[0])])

    batch_s, i10 = timed(lambda: run(10), args.repeats)
    i100 = run(100)
    lat, cpu = _per_query_times(lambda i: one(i, 10), q.shape[0], args.repeats)
    rows.append(_summarise("scipy term-at-a-time", None, None, n, batch_s, q.shape[0], lat, cpu,
                           _recall(i10, truth10, 10), _recall(i100, truth100, 100), "float32 weights, no index"))
    log(rows[-1])


def _bench_numba_taat(xc, q, truth10, truth100, taat, args, rows, log):
    from bench.harness import timed

    n = xc.shape[0]
    acc = np.zeros(n, np.float32)

    def one(i, k, out_s, out_i):
        lo, hi = q.indptr[i], q.indptr[i + 1]
        taat(xc.indptr, xc.indices, xc.data, q.indices[lo:hi].astype(np.int64), q.data[lo:hi], n, k, acc, out_s,
             out_i)

    def run(k):
        out = np.full((q.shape[0], k), -1, np.int64)
        s = np.empty(k, np.float32)
        for i in range(q.shape[0]):
            one(i, k, s, out[i])
        return out

    run(10)
    batch_s, i10 = timed(lambda: run(10), args.repeats)
    i100 = run(100)
    s1 = np.empty(10, np.float32)
    o1 = np.full(10, -1, np.int64)
    lat, cpu = _per_query_times(lambda i: one(i, 10, s1, o1), q.shape[0], args.repeats)
    rows.append(_summarise("numba accumulator", None, None, n, batch_s, q.shape[0], lat, cpu,
                           _recall(i10, truth10, 10), _recall(i100, truth100, 100), "float32 weights, CSC in RAM"))
    log(rows[-1])


def _ensure_pisa_venv(venv: Path, log) -> Path | None:
    py = venv / "bin" / "python"
    check = [str(py), "-c", "import pyterrier_pisa"]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return py
    log(f"creating {venv} with pyterrier-pisa (pip install pyterrier-pisa)")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "pyterrier-pisa"], check=True)
    except (subprocess.CalledProcessError, OSError) as e:
        log(f"PISA unavailable: {e}")
        return None
    return py if subprocess.run(check, capture_output=True).returncode == 0 else None


def _bench_pisa(x, q, max_weight, truth10, truth100, args, rows, log):
    py = _ensure_pisa_venv(Path(args.pisa_venv), log)
    if py is None:
        rows.append({"system": "PISA", "notes": "unavailable: pyterrier-pisa could not be installed or imported"})
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as d:
        work = Path(d)
        for name, arr in {"indptr": x.indptr, "indices": x.indices, "data": x.data, "q_indptr": q.indptr,
                          "q_indices": q.indices, "q_data": q.data}.items():
            np.save(work / f"{name}.npy", arr)
        spec = {"scale": 255.0 / max_weight, "algorithms": args.pisa_algorithms, "ks": [10, 100],
                "repeats": args.repeats}
        (work / "spec.json").write_text(json.dumps(spec))
        log("PISA: building and querying in its own virtualenv")
        proc = subprocess.run([str(py), __file__, "--pisa-worker", str(work)], capture_output=True, text=True)
        if proc.returncode != 0:
            log(proc.stderr[-3000:])
            rows.append({"system": "PISA", "notes": f"worker failed: {proc.stderr.strip().splitlines()[-1:]}"})
            return
        res = json.loads((work / "pisa_result.json").read_text())
        for algo in args.pisa_algorithms:
            r10 = res["runs"][f"{algo}@10"]
            i10 = np.load(work / f"pisa_{algo}_10.npy")
            i100 = np.load(work / f"pisa_{algo}_100.npy")
            rows.append(_summarise(f"PISA {algo} (pyterrier-pisa)", res["build_s"], res["index_bytes"], x.shape[0],
                                   r10["batch_s"], q.shape[0], r10["lat"], r10["cpu"], _recall(i10, truth10, 10),
                                   _recall(i100, truth100, 100),
                                   "8-bit impacts (w*255/max_weight truncated), block_simdbp; static index; "
                                   f"build = PISA's compression only (pyterrier-pisa's Python inversion took "
                                   f"{res.get('invert_s', 0):.0f} s more); bytes = inverted index only; queries "
                                   f"rescaled to max weight {QUERY_MAX_WEIGHT:.0f}"))
            rows[-1]["inverted_bytes_per_doc"] = rows[-1]["bytes_per_doc"]
            log(rows[-1])


def _markdown(rows: list[dict]) -> str:
    cols = ["system", "build_s", "bytes_per_doc", "inverted_bytes_per_doc", "forward_bytes_per_doc", "p50_ms", "p95_ms", "cpu_p50_ms", "cpu_p95_ms", "mean_ms", "qps",
            "recall@10", "recall@100", "notes"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in cols) + " |")
    ours = next((r for r in rows if r.get("system") == "m3search exact"), None)
    pisa = [r for r in rows if str(r.get("system", "")).startswith("PISA") and r.get("p50_ms")]
    if ours and ours.get("p50_ms") and pisa:
        lines += ["", "Like for like (m3search exact / PISA; below 1 favours m3search): p50 with p50, mean with mean, "
                  "inverted bytes with inverted bytes."]
        for r in pisa:
            lines.append(f"- {r['system']}: p50 {ours['p50_ms'] / r['p50_ms']:.2f}x, mean "
                         f"{ours['mean_ms'] / r['mean_ms']:.2f}x, inverted B/doc "
                         f"{ours['inverted_bytes_per_doc'] / r['inverted_bytes_per_doc']:.2f}x")
    for old in (r for r in rows if str(r.get("system", "")).startswith("m3search exact (format v")):
        if ours and ours.get("p50_ms") and old.get("p50_ms"):
            lines.append(f"- current format / {old['system']}: p50 {ours['p50_ms'] / old['p50_ms']:.2f}x, mean "
                         f"{ours['mean_ms'] / old['mean_ms']:.2f}x, cpu p50 {ours['cpu_p50_ms'] / old['cpu_p50_ms']:.2f}x, "
                         f"inverted B/doc {ours['inverted_bytes_per_doc'] / old['inverted_bytes_per_doc']:.2f}x, "
                         f"forward B/doc {ours['forward_bytes_per_doc'] / old['forward_bytes_per_doc']:.2f}x")
    return "\n".join(lines)


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        if r.get("qps") is None or "threads" in r["system"]:
            continue
        marker = "o" if r["system"].startswith("m3search") else "s"
        ax.scatter(r["recall@10"], r["qps"], marker=marker)
        ax.annotate(r["system"], (r["recall@10"], r["qps"]), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_xlabel("recall@10 vs exact float top-10")
    ax.set_ylabel("queries per second (1 thread)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("learned-sparse top-10, BGE-M3-shaped synthetic data")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args) -> dict:
    """Run the benchmark; `args` has the attributes of this file's command-line options."""

    log = (lambda m: print(m, file=sys.stderr, flush=True)) if not getattr(args, "quiet", False) else (lambda m: None)
    t0 = time.perf_counter()
    x, q = _load_data(args.docs, args.queries, args.seed)
    log(f"data: {x.shape[0]} docs, {x.nnz} weights, {q.shape[0]} queries ({time.perf_counter() - t0:.0f}s)")
    xc = x.tocsc()
    xc.sort_indices()
    taat = _numba_kernels()
    truth = ExactTruth(xc, taat)
    truth100 = truth.topk(q, 100)
    truth10 = truth100[:, :10]
    max_weight = float(x.data.max()) * 1.25 if args.max_weight == "auto" else float(args.max_weight)
    rows: list[dict] = []
    if "ours" in args.systems:
        _bench_ours(x, q, truth10, truth100, args, rows, log)
    if "scipy" in args.systems:
        _bench_scipy(xc, q, truth10, truth100, args, rows, log)
    if "numba" in args.systems:
        _bench_numba_taat(xc, q, truth10, truth100, taat, args, rows, log)
    if "pisa" in args.systems:
        del xc
        _bench_pisa(x, q, max_weight, truth10, truth100, args, rows, log)
    result = {
        "setup": {
            "docs": x.shape[0], "postings": int(x.nnz), "queries": q.shape[0], "vocab": x.shape[1],
            "query_terms_mean": float(np.diff(q.indptr).mean()), "seed": args.seed, "repeats": args.repeats,
            "threads": 1, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
        },
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = args.tag or f"{x.shape[0]}"
    (RESULTS / f"sparse_bench_{tag}.json").write_text(json.dumps(result, indent=1))
    md = _markdown(rows)
    (RESULTS / f"sparse_bench_{tag}.md").write_text(md + "\n")
    _plot(rows, RESULTS / f"sparse_recall_qps_{tag}.png")
    print(md)
    return result


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--block-docs", type=int, default=64)
    p.add_argument("--max-weight", default="auto")
    p.add_argument("--approx", type=lambda s: tuple(float(v) for v in s.split(",")), nargs="*",
                   default=[(0.9, 1.0), (0.8, 1.0), (0.8, 0.95)], help="alpha,beta pairs of approximate runs")
    p.add_argument("--threads", type=int, default=2, help="extra batch-throughput row with this many threads")
    p.add_argument("--systems", nargs="*", default=["ours", "scipy", "numba", "pisa"])
    p.add_argument("--old-formats", type=int, nargs="*", default=[2],
                   help="also build and time these older sparse segment versions (exact search), same run")
    p.add_argument("--dense-fractions", type=float, nargs="*", default=[],
                   help="extra exact rows of the current format built with these dense_fraction values")
    p.add_argument("--pisa-venv", default="/work/venvs/pisa")
    p.add_argument("--pisa-algorithms", nargs="*", default=["maxscore", "block_max_wand"])
    p.add_argument("--workdir", default=None, help="folder for temporary indexes (default: the system's)")
    p.add_argument("--tag", default=None, help="suffix of the result files (default: the number of documents)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--pisa-worker", default=None, help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = _parser().parse_args()
    if args.pisa_worker:
        _pisa_worker(Path(args.pisa_worker))
        return
    sys.path.insert(0, str(HERE.parent))
    run(args)


if __name__ == "__main__":
    main()
