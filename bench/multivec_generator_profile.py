"""Where a multi-vector generator query spends its time, stage by stage, and what each setting recalls.

One segment of synthetic clustered token vectors (bench/synthetic.py), built with the given compression and
coarse_k; per query the stages of m3search.indexes.multivec.generator are timed separately (query x centroid
products, stage 1 postings scan, pool selection, stage 2 centroid interaction, stage 3 full-code LUT MaxSim),
then whole searches at the given settings are timed and their recall@10/@100 measured against exact MaxSim of
the float vectors and against exhaustive scoring of the same codes.

    flock /tmp/m3search-heavy.lock python -m bench.multivec_generator_profile --n 10000 --d 384 \
        --coarse-k 4096 --grid 8:1024:256,16:2048:512
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.index_bench_multivec_search import Reference, _batch, recall
from bench.synthetic import TokenCorpus
from m3search.indexes.faiss_support import faiss_threads
from m3search.indexes.multivec import MultivecComponent
from m3search.indexes.multivec import generator as gen


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--d", type=int, default=384)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--compression", default="rpq48")
    p.add_argument("--coarse-k", default="auto")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--grid", default="", help="NPROBE:POOL:CANDIDATES,... (0 = the default)")
    a = p.parse_args(argv)
    corpus = TokenCorpus(a.n, d=a.d, seed=0)
    q_vecs, q_len, _ = corpus.queries(a.queries)
    vecs, lens = corpus.docs(0, a.n)
    ref = Reference(q_vecs, q_len)
    ref.add(vecs, lens)
    ref.finish()
    coarse_k = a.coarse_k if a.coarse_k == "auto" else int(a.coarse_k)
    comp = MultivecComponent({"compression": a.compression, "coarse_k": coarse_k, "threads": 1, "min_train_tokens": 1000})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        meta = comp.build(tmp / "s", _batch(vecs, lens), tmp / "shared")
        build_s = time.perf_counter() - t0
        r = comp.open(tmp / "s", meta, tmp / "shared")
        del vecs
        n = r.n_docs
        qo = np.concatenate([[0], np.cumsum(q_len)])
        one = lambda qi: (q_vecs[qo[qi]:qo[qi + 1]], q_len[qi:qi + 1])  # noqa: E731
        lists_off = r.lists[0]
        print(f"N={n:,} docs, {r.n_tokens:,} tokens x {r.dim}, {a.compression}, K={len(lists_off) - 1}, "
              f"postings {lists_off[-1]:,} (mean list {lists_off[-1] / (len(lists_off) - 1):.0f} docs), "
              f"build {build_s:.0f} s, load average {os.getloadavg()[0]:.1f}; k={a.k}, 1 thread\n")
        with faiss_threads(1):
            r.search(*one(0), a.k)
            ex = []
            for qi in range(len(q_len)):
                s = r.score_pairs(one(qi)[0], [q_len[qi]], np.zeros(n, np.int64), np.arange(n))
                ex.append(np.argsort(-s, kind="stable")[:100])
            print(f"exhaustive (codes) vs exact: R@10 {recall(ex, ref.top, 10):.3f}, R@100 {recall(ex, ref.top, 100):.3f}\n")
            times: dict[str, list[float]] = {}

            def timed(name, f):
                t = time.perf_counter()
                out = f()
                times.setdefault(name, []).append(time.perf_counter() - t)
                return out
            kc = len(lists_off) - 1
            npb, cands = gen.default_nprobe(kc, n), gen.default_candidates(a.k, n)
            pool = gen.default_pool(cands, n)
            for qi in range(len(q_len)):
                q = one(qi)[0]
                sims = timed("query x centroids", lambda: np.dot(q, r.codec.arrays["coarse"].T))
                est = timed("stage 1 (postings)", lambda: gen.probe_scores(r.lists[0], r.lists[1], sims, npb, None, n))
                pooled = timed("pool top", lambda: np.sort(gen.top_ids(est, np.arange(n), pool)))
                ci = timed("stage 2 (centroid interaction)", lambda: gen.centroid_maxsim(r.doc_centroids(), pooled, sims))
                ids = np.sort(gen.top_ids(ci, pooled, cands))
                timed("stage 3 (LUT MaxSim)", lambda: r._score(q_vecs, q_len, np.full(len(ids), qi), ids, True))
                timed("whole search", lambda: r.search(q, q_len[qi:qi + 1], a.k))
            print(f"Defaults: nprobe {npb}, pool {pool}, candidates {cands}\n")
            print("| stage | p50 ms | mean ms |\n|---|---:|---:|")
            for name, v in times.items():
                print(f"| {name} | {1e3 * np.median(v):.2f} | {1e3 * np.mean(v):.2f} |")
            print("\n| nprobe | pool | candidates | p50 ms | R@10 | R@100 | R@10 vs codes | R@100 vs codes |\n"
                  "|---:|---:|---:|---:|---:|---:|---:|---:|")
            for g in [g for g in a.grid.split(",") if g] + ["0:0:0"]:
                npb, pool, cands = (int(v) for v in g.split(":"))
                lat, found = [], []
                for qi in range(len(q_len)):
                    t = time.perf_counter()
                    found.append(r.search(*one(qi), 100, nprobe=npb or None, pool=pool or None,
                                          candidates=cands or None)[1][0])
                    lat.append(time.perf_counter() - t)
                print(f"| {npb or 'default'} | {pool or 'default'} | {cands or 'default'} | {1e3 * np.median(lat):.1f} | "
                      f"{recall(found, ref.top, 10):.3f} | {recall(found, ref.top, 100):.3f} | "
                      f"{recall(found, ex, 10):.3f} | {recall(found, ex, 100):.3f} |")
        r.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
