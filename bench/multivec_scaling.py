"""How the candidate generator's recall and latency change with the index size, and where recall is lost.

Builds (once; kept in --dir for later runs) one merged segment of synthetic clustered token vectors
(bench/synthetic.py, chunks of --chunk documents, the codec trained on the first chunk as in an index), the
exact fp16 MaxSim top-100 of every query and the exhaustive top-100 over the stored codes. Then, per
generator setting (nprobe:pool:candidates, 0 = the library default), one query at a time:
- recall@10/@100 against exact MaxSim and against exhaustive scoring of the same codes (the generator's own
  loss, which is what a setting controls);
- where the codes' exhaustive top-10 is lost: the share still present after stage 1 (in the pool), after
  stage 2 (centroid interaction) and after stage 2.5 (partial codes: the candidates);
- wall-clock p50/p95 and process CPU p50 of `reader.search` (1 thread, as the reader's default).

    flock /tmp/m3search-heavy.lock timeout 900 python -m bench.multivec_scaling --n 20000 --dir /tmp/mvs20k \
        --grid 0:0:0,8:2048:512
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from bench.index_bench_multivec_search import Reference, build, recall
from m3search.indexes.blas_threads import one_blas_thread
from m3search.indexes.faiss_support import faiss_threads
from m3search.indexes.multivec import MultivecComponent
from m3search.indexes.multivec import generator as gen


def load_or_build(a) -> tuple:
    folder = Path(a.dir)
    config = {"compression": a.compression, "threads": 1, "min_train_tokens": 1000}
    comp = MultivecComponent(config)
    info_path = folder / "scaling.json"
    if not info_path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        from bench.synthetic import TokenCorpus
        corpus = TokenCorpus(a.n, d=a.d, seed=a.seed, mean_len=a.mean_len)
        q_vecs, q_len, _ = corpus.queries(a.queries)
        chunks = ((vecs, lens) for _, vecs, lens in corpus.chunks(a.chunk))
        ref = Reference(q_vecs, q_len)
        for item in build(chunks, a.compression, {"threads": 1, "min_train_tokens": 1000}, folder):
            if item[0] == "chunk":
                ref.add(item[1], item[2])
            else:
                reader, build_s = item[1], item[2]
        ref.finish()
        n = reader.n_docs
        qo = np.concatenate([[0], np.cumsum(q_len)])
        with faiss_threads(2):  # the reference only (not timed)
            ex = []
            for qi in range(len(q_len)):
                q = q_vecs[qo[qi]:qo[qi + 1]]
                s = reader.score_pairs(q, [len(q)], np.zeros(n, np.int64), np.arange(n))
                ex.append(np.argsort(-s, kind="stable")[:100])
        np.savez(folder / "scaling.npz", q_vecs=q_vecs, q_len=q_len, ref_top=ref.top, ex_top=np.asarray(ex))
        meta = reader.header
        info_path.write_text(json.dumps({"meta": meta, "build_s": build_s, "n": a.n, "d": a.d,
                                         "compression": a.compression}, default=str))
        reader.close()
    info = json.loads(info_path.read_text())
    data = np.load(folder / "scaling.npz")
    reader = comp.open(folder / "merged", info["meta"], folder / "shared")
    return reader, info, data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--d", type=int, default=384)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--chunk", type=int, default=2048)
    p.add_argument("--mean-len", type=int, default=100, help="mean tokens per document")
    p.add_argument("--compression", default="rpq48")
    p.add_argument("--dir", required=True, help="folder of the built index (built there if absent)")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--grid", default="0:0:0", help="NPROBE:POOL:CANDIDATES,... (0 = the default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="append the markdown table to this file")
    a = p.parse_args(argv)
    reader, info, data = load_or_build(a)
    q_vecs, q_len, ref_top, ex_top = data["q_vecs"], data["q_len"], data["ref_top"], data["ex_top"]
    n, m = reader.n_docs, len(q_len)
    qo = np.concatenate([[0], np.cumsum(q_len)])
    one = lambda qi: (q_vecs[qo[qi]:qo[qi + 1]], q_len[qi:qi + 1])  # noqa: E731
    kc = len(reader.lists[0]) - 1
    head = (f"N={n:,} docs, {reader.n_tokens:,} tokens x {reader.dim}, {info['compression']}, K={kc}, "
            f"postings {int(reader.lists[0][-1]):,}, build {info['build_s']:.0f} s, {m} queries, k={a.k}, 1 thread, "
            f"load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    lines = [head, "", f"exhaustive (codes) vs exact: R@10 {recall(ex_top, ref_top, 10):.3f}, "
             f"R@100 {recall(ex_top, ref_top, 100):.3f}", "",
             "| nprobe | pool | candidates | p50 ms | p95 ms | CPU p50 ms | R@10 | R@100 | R@10 vs codes | "
             "R@100 vs codes | codes' top-10 in pool | after stage 2 | in candidates |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    with faiss_threads(1):
        reader.search(*one(0), a.k)
        for g in [g for g in a.grid.split(",") if g]:
            npb, pool, cands = (int(v) for v in g.split(":"))
            c_eff = min(n, max(a.k, cands or gen.default_candidates(a.k, n)))
            npb_eff = npb or gen.default_nprobe(kc, n)
            pool_eff = min(n, max(c_eff, pool or gen.default_pool(c_eff, n)))
            lat, cpu, found, in_pool, in_ref, in_cand = [], [], [], [], [], []
            for qi in range(m):
                t, c = time.perf_counter(), time.process_time()
                found.append(reader.search(*one(qi), a.k, nprobe=npb or None, pool=pool or None,
                                           candidates=cands or None)[1][0])
                lat.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
                # the stages again, untimed, to see where the codes' top-10 is lost
                q = one(qi)[0]
                with one_blas_thread():
                    sims = np.dot(q, reader.codec.arrays["coarse"].T)
                est = gen.probe_scores(reader.lists[0], reader.lists[1], sims, npb_eff, None, n)
                pooled = np.sort(gen.top_ids(est, np.arange(n), pool_eff))
                ci = gen.centroid_maxsim(reader.doc_centroids(), pooled, sims)
                refined = np.sort(gen.top_ids(ci, pooled, gen.default_refine(c_eff, len(pooled))))
                kept = refined
                if len(refined) > c_eff:
                    ps = reader.partial_scores(refined, gen.partial_tables(reader.codec, q, sims))
                    kept = gen.top_ids(ps, refined, c_eff)
                top10 = set(ex_top[qi][:10].tolist())
                in_pool.append(len(top10 & set(pooled.tolist())) / 10)
                in_ref.append(len(top10 & set(refined.tolist())) / 10)
                in_cand.append(len(top10 & set(kept.tolist())) / 10)
            row = (f"| {npb_eff}{'' if npb else ' (default)'} | {pool_eff}{'' if pool else ' (default)'} | "
                   f"{c_eff}{'' if cands else ' (default)'} | {1e3 * np.median(lat):.1f} | "
                   f"{1e3 * np.quantile(lat, 0.95):.1f} | {1e3 * np.median(cpu):.1f} | "
                   f"{recall(found, ref_top, 10):.3f} | {recall(found, ref_top, 100):.3f} | "
                   f"{recall(found, ex_top, 10):.3f} | {recall(found, ex_top, 100):.3f} | "
                   f"{np.mean(in_pool):.3f} | {np.mean(in_ref):.3f} | {np.mean(in_cand):.3f} |")
            lines.append(row)
            print(row, flush=True)
    if a.out:
        with open(a.out, "a") as f:
            f.write("\n".join(lines) + "\n\n")
    reader.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
