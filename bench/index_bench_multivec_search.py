"""Multi-vector search benchmark: the token-vector candidate generator against exhaustive MaxSim, in one run.

Data: BGE-M3-shaped synthetic token vectors (bench/synthetic.py, --n documents of ~100 tokens, 1024-d), or
real encodings (--real: a cached corpus encoding of bench/run_eval.py plus its queries encoded now).
Documents are generated/loaded in chunks; each chunk becomes a segment (the codec is trained on the first,
as in an index) and the segments are merged into one (codes copied, centroid lists rebuilt). Exact fp16
MaxSim of every query against every document is computed while each chunk is in memory: the reference.

Reported per method: bytes per token on disk (codes + lists), build time, single-query latency p50/p95 and
QPS (one query at a time, --threads threads), recall@10/@100 against exact MaxSim:
- `exhaustive (codes)`: every document scored from its codes (what any re-ranking store can do, at most);
- `rerank mean-vec top-N`: plain re-ranking, the N documents closest by mean-pooled vector (a stand-in for
  the dense index's candidates), scored from codes;
- `generator nprobe/candidates`: the centroid-list generator (m3search.indexes.multivec.generator).

    flock /tmp/m3search-heavy.lock python -m bench.index_bench_multivec_search --n 20000
    flock /tmp/m3search-heavy.lock python -m bench.index_bench_multivec_search --real mkqa --encodings DIR
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bench.harness import plot_axes, save_results
from m3search.indexes.blas_threads import one_blas_thread
from m3search.indexes.faiss_support import faiss_threads
from m3search.indexes.multivec import MultivecComponent
from m3search.types import EncodedBatch

RESULTS = Path(__file__).resolve().parent / "results"
GRID = [(4, 64), (8, 128), (16, 256), (32, 256), (32, 512), (64, 1024)]
log = logging.getLogger("bench")


def _batch(vecs: np.ndarray, lengths: np.ndarray) -> EncodedBatch:
    n = len(lengths)
    return EncodedBatch(dense=np.zeros((n, 1), np.float32), sparse=sp.csr_matrix((n, 1), dtype=np.float32),
                        multivec=vecs, multivec_lengths=lengths)


def _norm(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class Reference:
    """Exact MaxSim of every query against every document, accumulated chunk by chunk; mean vectors."""

    def __init__(self, q_vecs, q_lengths):
        self.q, self.q_off = q_vecs, np.concatenate([[0], np.cumsum(q_lengths)])
        self.scores, self.means = [], []

    def add(self, vecs, lengths):
        off = np.concatenate([[0], np.cumsum(lengths)])
        starts = off[:-1]
        self.means.append(_norm(np.add.reduceat(vecs, starts, axis=0)))
        out = np.zeros((len(self.q_off) - 1, len(lengths)), np.float32)
        for lo in range(0, len(lengths), 250):
            hi = min(len(lengths), lo + 250)
            sim = self.q @ vecs[off[lo]:off[hi]].T  # (Tq, tokens of these docs)
            best = np.maximum.reduceat(sim, starts[lo:hi] - off[lo], axis=1)
            per_q = np.add.reduceat(best, self.q_off[:-1], axis=0) / np.diff(self.q_off)[:, None]
            out[:, lo:hi] = per_q
        self.scores.append(out)

    def finish(self):
        self.scores = np.concatenate(self.scores, axis=1)
        self.means = np.concatenate(self.means)
        self.top = np.argsort(-self.scores, axis=1, kind="stable")[:, :100]


def recall(found: np.ndarray, top: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, top)]))


def build(chunks, compression, config, folder: Path):
    comp = MultivecComponent({"compression": compression, **config})
    shared = folder / "shared"
    start = time.perf_counter()
    readers = []
    for i, (vecs, lengths) in enumerate(chunks):
        meta = comp.build(folder / f"c{i}", _batch(vecs, lengths), shared)
        readers.append(comp.open(folder / f"c{i}", meta, shared))
        yield "chunk", vecs, lengths
    if len(readers) > 1:
        meta = comp.merge(folder / "merged", readers, [np.arange(r.n_docs) for r in readers], shared)
        reader = comp.open(folder / "merged", meta, shared)
    else:
        reader = readers[0]
    yield "done", reader, time.perf_counter() - start


def time_queries(fn, m, repeats=1):
    """Wall-clock latency, and the process's CPU time per query (all its threads): on cores shared with
    other jobs the wall clock mostly measures waiting for a core; CPU time is the work itself."""
    lat, cpu, out = [], [], []
    for qi in range(m):
        t, c = time.perf_counter(), time.process_time()
        with one_blas_thread():  # every method's small products on one BLAS thread, as the reader's
            out.append(fn(qi))
        lat.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    lat = np.asarray(lat)
    return out, {"p50_ms": 1e3 * float(np.median(lat)), "p95_ms": 1e3 * float(np.quantile(lat, 0.95)),
                 "qps": float(m / lat.sum()), "cpu_p50_ms": 1e3 * float(np.median(cpu)),
                 "cpu_p95_ms": 1e3 * float(np.quantile(cpu, 0.95))}


def run(chunks, q_vecs, q_lengths, compression, config, threads, tmp, grid, rerank_depths, export=None,
        token_ivf=False):
    ref = Reference(q_vecs, q_lengths)
    token_ivf_data = []
    with tempfile.TemporaryDirectory(dir=tmp) as folder:
        reader, build_s = None, 0.0
        for item in build(chunks, compression, config, Path(folder)):
            if item[0] == "chunk":
                ref.add(item[1], item[2])
                if token_ivf:
                    token_ivf_data.append(np.asarray(item[1], np.float32))
            else:
                reader, build_s = item[1], item[2]
        ref.finish()
        if export:  # the same queries and reference for a peer measured in its own environment (FastPLAID)
            np.savez(export, q_vecs=q_vecs, q_lengths=q_lengths, ref_top=ref.top)
        n, t = reader.n_docs, reader.n_tokens
        q_off = np.concatenate([[0], np.cumsum(q_lengths)])
        m = len(q_lengths)
        one = lambda qi: (q_vecs[q_off[qi]:q_off[qi + 1]], q_lengths[qi:qi + 1])  # noqa: E731
        rows = []
        lists_bytes = sum(reader.header["files"][f]["bytes"] for f in reader.header["files"] if f.startswith("lists"))
        base = {"bytes_per_token": reader.nbytes() / t, "codes_bytes_per_token": reader.codec.code_size,
                "lists_bytes_per_token": lists_bytes / t, "build_s": build_s}
        with faiss_threads(threads or None):
            reader.search(*one(0), 100, nprobe=4, candidates=128)  # compile the kernels outside the timings

            def exhaustive(qi):
                q, _ = one(qi)
                ids = np.arange(n)
                s = reader.score_pairs(q, [len(q)], np.zeros(n, np.int64), ids)
                return np.argsort(-s, kind="stable")[:100]
            found, tm = time_queries(exhaustive, m)
            rows.append({"method": "exhaustive (codes)", **base, **tm,
                         "recall@10": recall(found, ref.top, 10), "recall@100": recall(found, ref.top, 100)})
            q_means = _norm(np.add.reduceat(q_vecs, q_off[:-1], axis=0))
            for depth in rerank_depths:
                def rerank(qi, depth=depth):
                    first = ref.means @ q_means[qi]
                    cand = np.sort(np.argpartition(-first, depth - 1)[:depth])
                    q, _ = one(qi)
                    s = reader.score_pairs(q, [len(q)], np.zeros(len(cand), np.int64), cand)
                    return cand[np.argsort(-s, kind="stable")[:100]]
                found, tm = time_queries(rerank, m)
                rows.append({"method": f"rerank mean-vec top-{depth}", **base, **tm,
                             "recall@10": recall(found, ref.top, 10), "recall@100": recall(found, ref.top, 100)})
            if token_ivf:  # the alternative: token-level FAISS IVF (ColBERTv1-style), candidates = docs of the
                # nearest tokens of each query token, then the same full-code MaxSim
                import faiss
                xt = np.concatenate([c for c in token_ivf_data])
                doc_of = np.repeat(np.arange(n), np.diff(reader.offsets))
                start = time.perf_counter()
                nlist = int(4 * np.sqrt(len(xt)))
                ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(xt.shape[1]), xt.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
                ivf.train(xt[np.random.default_rng(0).choice(len(xt), min(len(xt), 64 * nlist), replace=False)])
                ivf.add(xt)
                ivf_build = time.perf_counter() - start
                for nprobe, k_tok in ((8, 64), (16, 128), (32, 256)):
                    ivf.nprobe = nprobe
                    def tok(qi, k_tok=k_tok):
                        q, _ = one(qi)
                        _, I = ivf.search(q, k_tok)
                        cand = np.unique(doc_of[I[I >= 0]])
                        s = reader.score_pairs(q, [len(q)], np.zeros(len(cand), np.int64), cand)
                        return cand[np.argsort(-s, kind="stable")[:100]]
                    found, tm = time_queries(tok, m)
                    rows.append({"method": f"token IVF-Flat nlist={nlist} nprobe={nprobe} k/token={k_tok}", **base,
                                 "bytes_per_token": base["bytes_per_token"] + 4 * xt.shape[1] + 8,
                                 "build_s": build_s + ivf_build, **tm,
                                 "recall@10": recall(found, ref.top, 10), "recall@100": recall(found, ref.top, 100)})
            for nprobe, cands, *pool in grid:
                pool = pool[0] if pool else None
                found, tm = time_queries(lambda qi: reader.search(*one(qi), 100, nprobe=nprobe, candidates=cands,
                                                                  pool=pool)[1][0], m)
                rows.append({"method": f"generator nprobe={nprobe} candidates={cands}" + (f" pool={pool}" if pool else ""),
                             "nprobe": nprobe, "candidates": cands, "pool": pool, **base, **tm,
                             "recall@10": recall(found, ref.top, 10), "recall@100": recall(found, ref.top, 100)})
            found, tm = time_queries(lambda qi: reader.search(*one(qi), 100)[1][0], m)
            rows.append({"method": "generator defaults", **reader.generator_settings(100), **base, **tm,
                         "recall@10": recall(found, ref.top, 10), "recall@100": recall(found, ref.top, 100)})
        info = {"n_docs": n, "n_tokens": t, "dim": reader.dim, "queries": m, "compression": compression,
                "fidelity": reader.fidelity(), "generator_k100": reader.generator_settings(100)}
        reader.close()
    return info, rows


def synthetic(n, d, n_queries, chunk, seed):
    from bench.synthetic import TokenCorpus
    corpus = TokenCorpus(n, d=d, seed=seed)
    q_vecs, q_lengths, _ = corpus.queries(n_queries)
    return ((vecs, lens) for _, vecs, lens in corpus.chunks(chunk)), q_vecs, q_lengths


def real(task, encodings: Path, n_queries, chunk, langs):
    """Cached corpus encodings of run_eval's cache (the largest entry of the task) and its queries."""
    from m3search.encoder import load_encoder
    from m3search.evaluation.datasets import load_tasks
    data = {"miracl": "miracl_like_small", "mkqa": "mkqa_like_small", "mldr": "mldr_like"}[task]
    tasks = [t for t in load_tasks(task, Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "eval" / data)
             if t.language in langs]
    import json

    def of_task(p: Path) -> bool:  # the cache holds every task's corpora: keep this task's
        return any(f"/{data}/" in f for f in json.loads((p / "entry.json").read_text()).get("corpus_files", []))

    entries = sorted((p for p in encodings.iterdir() if (p / "entry.json").is_file() and of_task(p)),
                     key=lambda p: -sum(f.stat().st_size for f in p.rglob("*") if f.is_file()))
    if not entries:
        raise SystemExit(f"{encodings}: no cached {task} corpus encoding; run bench/run_eval.py --cache-dir on {task} first")
    batch = EncodedBatch.load(entries[0] / "batch", mmap=True)
    encoder = load_encoder(None)
    texts = []
    for t in tasks:
        qs = t.queries
        texts += [qs[q] for q in list(t.judged_queries)[: max(1, n_queries // len(tasks))]]
    qb = encoder.encode(texts, kind="query")
    off = np.concatenate([[0], np.cumsum(batch.multivec_lengths)])

    def chunks():
        for lo in range(0, len(batch), chunk):
            hi = min(len(batch), lo + chunk)
            yield np.asarray(batch.multivec[off[lo]:off[hi]], np.float32), np.asarray(batch.multivec_lengths[lo:hi])
    return chunks(), np.asarray(qb.multivec, np.float32), np.asarray(qb.multivec_lengths)


def markdown(res: dict) -> str:
    i = res["info"]
    gen_cfg = i.get("generator_k100", {})
    lines = [f"Multi-vector search, {res['data']}: N={i['n_docs']:,} docs, {i['n_tokens']:,} tokens x {i['dim']}, "
             f"{i['queries']} queries, compression {i['compression']}, {res['threads']} thread(s), "
             "2 shared CPU cores, no GPU" + (f", load average {res['load']}" if res.get("load") else ""), "",
             f"Generator defaults at k=100: {gen_cfg}", "",
             "| method | B/token (codes + lists) | build s | p50 ms | p95 ms | QPS | CPU p50 ms | CPU p95 ms | R@10 | R@100 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['method']} | {r['bytes_per_token']:.1f} ({r['codes_bytes_per_token']} + "
                     f"{r['lists_bytes_per_token']:.1f}) | {r['build_s']:.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
                     f"{r['qps']:.1f} | {_ms(r.get('cpu_p50_ms'))} | {_ms(r.get('cpu_p95_ms'))} | {r['recall@10']:.3f} | "
                     f"{r['recall@100']:.3f} |")
    lines += ["", "Recall is against exact fp16 MaxSim over every document; latency is one query at a time, "
              "search only (no query encoding). CPU ms: the process's CPU time per query (all threads), the "
              "work itself, which the wall clock on shared cores hides behind waiting."]
    return "\n".join(lines)


def _ms(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def plot(res: dict, path: Path) -> None:
    with plot_axes(path) as ax:
        for kind, marker in (("generator", "o"), ("rerank", "s"), ("exhaustive", "^"), ("token IVF", "x"),
                             ("FastPLAID", "d")):
            rows = sorted((r for r in res["rows"] if r["method"].startswith(kind)), key=lambda r: r["qps"])
            ax.plot([r["qps"] for r in rows], [r["recall@10"] for r in rows], marker=marker, label=kind)
        ax.set_xscale("log")
        ax.set_xlabel("queries per second (1 query at a time)")
        ax.set_ylabel("recall@10 vs exact MaxSim")
        ax.set_title(f"multi-vector search: {res['data']}")
        ax.legend()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--d", type=int, default=1024)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--chunk", type=int, default=2000, help="documents per chunk segment")
    p.add_argument("--compression", default="rpq64")
    p.add_argument("--coarse-k", type=int, default=None)
    p.add_argument("--threads", type=int, default=1,
                   help="search threads (0: the library's default, one thread per kernel that idle helper threads may share)")
    p.add_argument("--real", default=None, help="task whose cached encodings to use (mkqa, miracl, mldr)")
    p.add_argument("--encodings", type=Path, default=None, help="folder of run_eval's encoding cache")
    p.add_argument("--langs", default="de,fr,ja,ru,zh-CN")
    p.add_argument("--rerank", default="100,1000")
    p.add_argument("--tmp", default=None)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--tag", default="")
    p.add_argument("--token-ivf", action="store_true", help="also the token-level FAISS IVF-Flat alternative "
                   "(keeps every float token in memory: real data / small runs only)")
    p.add_argument("--grid", default=None, help="generator settings NPROBE:CANDIDATES[:POOL],... (default: a fixed grid)")
    p.add_argument("--export", default=None, help="save queries + exact top-100 here (.npz) for bench/fastplaid_peer.py")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--merge-peer", nargs=2, metavar=("RESULT_JSON", "PEER_JSON"), default=None,
                   help="add a peer's rows (bench/fastplaid_peer.py output) to a saved result and rewrite it")
    a = p.parse_args(argv)
    if a.merge_peer:
        import json
        res = json.loads(Path(a.merge_peer[0]).read_text())
        peer = json.loads(Path(a.merge_peer[1]).read_text())
        res["rows"] = [r for r in res["rows"] if not r["method"].startswith("FastPLAID")] + [
            {"codes_bytes_per_token": "-", "lists_bytes_per_token": 0.0, **r} for r in peer["rows"]]
        res["peer"] = {"torch": peer.get("torch"), "threads": peer.get("threads")}
        print(save_results(res, Path(a.merge_peer[0]).parent, Path(a.merge_peer[0]).stem, markdown, plot))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = {**({"threads": a.threads} if a.threads else {}), "min_train_tokens": 1000}
    if a.coarse_k:
        config["coarse_k"] = a.coarse_k
    if a.real:
        chunks, q, ql = real(a.real, a.encodings, a.queries, a.chunk, a.langs.split(","))
        data, stem = f"{a.real} real m3search-small encodings", f"multivec_search_{a.real}"
    else:
        chunks, q, ql = synthetic(a.n, a.d, a.queries, a.chunk, a.seed)
        data, stem = f"synthetic clustered {a.d}-d", f"multivec_search_n{a.n}"
    grid = [tuple(int(v) for v in g.split(":")) for g in a.grid.split(",")] if a.grid else GRID
    info, rows = run(chunks, q, ql, a.compression, config, a.threads, a.tmp, grid,
                     [int(x) for x in a.rerank.split(",")], a.export, a.token_ivf)
    import os
    res = {"data": data, "threads": a.threads, "info": info, "rows": rows,
           "load": " / ".join(f"{x:.1f}" for x in os.getloadavg())}
    print(save_results(res, a.out, stem + a.tag, markdown, plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
