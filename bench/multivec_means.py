"""The #11 mean-vector candidate stage: recall and latency of generator-only, means-only and both.

Builds (or resumes) the synthetic index of bench/multivec_big.py in --dir (chunk segments, merged into one
format-4 segment carrying every document's int8 mean vector), then searches one query at a time, search only
(no query encoding), k=100:
- generator only: the centroid-list generator at its defaults (mean_candidates=0);
- means only, top-N: the stored mean vectors' top N (q_sum . unit mean) re-scored from their full codes, as
  stage 3 does;
- both, N: the generator's candidates and the means' top N, re-scored together (reader.search's
  mean_candidates=N);
- the mean-vector scan alone (no re-scoring), for its cost.
Recall@10/@100 against the exact fp32 MaxSim top-100 over every document; p50/p95 are medians over
--repeats passes over the queries (methods interleaved per pass). Writes bench/results/<stem>.{md,json,png}.

    flock /tmp/m3search-heavy.lock timeout 900 python -m bench.multivec_means --dir /tmp/mvmeans --budget-s 780
    (again until built and merged, then with --search)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from bench.harness import save_results
from bench.index_bench_multivec_search import RESULTS, recall, time_queries
from bench.multivec_big import _config, _corpus, add_index_args, ready_state
from bench.harness import plot_axes
from m3search.indexes.multivec import MultivecComponent
from m3search.indexes.multivec import generator as gen
from m3search.indexes.multivec.reader import search_threads

K = 100


def _exact_top(folder: Path, chunks: int) -> np.ndarray:
    scores = np.concatenate([np.load(folder / f"ref{i}.npy") for i in range(chunks)], axis=1)
    return np.argsort(-scores, axis=1, kind="stable")[:, :K]


def methods(reader, depths: list[int]) -> dict:
    """name -> (query tokens -> top-K local ids)."""
    use_lut = reader._use_lut(None)

    def means_only(q, n):
        with search_threads(reader.config.get("threads")):
            cand = np.sort(gen.top_positions(reader.mean_estimates(q, None), n))
            tables = reader.codec.lut_tables(q) if use_lut else None
            return gen.top_ids(reader.full_scores(q, cand, tables), cand, K)

    def scan(q, n):
        with search_threads(reader.config.get("threads")):
            est = reader.mean_estimates(q, None)
            return gen.top_ids(est[gen.top_positions(est, n)], gen.top_positions(est, n), K)

    out = {"generator only": lambda q: reader.search(q, [len(q)], K, mean_candidates=0)[1][0]}
    for n in depths:
        out[f"means only, top-{n}"] = lambda q, n=n: means_only(q, n)
        out[f"both, mean_candidates={n}"] = lambda q, n=n: reader.search(q, [len(q)], K, mean_candidates=n)[1][0]
    out["mean-vector scan alone (no re-score), top-100"] = lambda q: scan(q, K)
    return out


def search_phase(a, folder: Path, state: dict) -> dict:
    corpus = _corpus(a)
    q_vecs, q_len, _ = corpus.queries(a.queries)
    m = len(q_len)
    top = _exact_top(folder, state["chunks"])
    comp = MultivecComponent({**_config(a), "threads": a.threads or None})
    reader = comp.open(folder / "merged", json.loads((folder / "merged.json").read_text()), folder / "shared")
    assert reader.means is not None, "the merged segment has no mean vectors: rebuild --dir with format 4"
    q_off = np.concatenate([[0], np.cumsum(q_len)])
    one = lambda qi: q_vecs[q_off[qi]:q_off[qi + 1]]  # noqa: E731
    fns = methods(reader, [int(x) for x in a.depths.split(",")])
    for fn in fns.values():  # compile the kernels, page the codes, lists and means in
        fn(one(0))
    passes: dict[str, list] = {name: [] for name in fns}
    found: dict[str, list] = {}
    for _ in range(a.repeats):
        for name, fn in fns.items():
            found[name], tm = time_queries(lambda qi, fn=fn: fn(one(qi)), m)
            passes[name].append(tm)
            print(name, json.dumps(tm), flush=True)
    rows = []
    for name in fns:
        tms = passes[name]
        rows.append({"method": name, "recall@10": recall(found[name], top, 10), "recall@100": recall(found[name], top, 100),
                     **{key: float(np.median([t[key] for t in tms])) for key in tms[0]},
                     "p50_ms_passes": [round(t["p50_ms"], 2) for t in tms]})
        print(json.dumps(rows[-1]), flush=True)
    info = {"n_docs": reader.n_docs, "n_tokens": reader.n_tokens, "dim": reader.dim, "queries": m,
            "compression": reader.codec.name, "generator_k100": reader.generator_settings(K),
            "means_bytes_per_doc": reader.dim + 8, "build_s": state["build_s"], "repeats": a.repeats}
    reader.close()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"data": f"synthetic clustered {a.d}-d, ~{a.mean_len} tokens/doc", "threads": a.threads, "info": info,
            "rows": rows, "load": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
            "when": f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, commit {commit or 'unknown'}"}


def markdown(res: dict) -> str:
    i = res["info"]
    lines = [f"#11 mean-vector candidate stage, {res.get('when', '')}, heavy lock held", "",
             f"Mean-vector candidate stage, {res['data']}: N={i['n_docs']:,} docs, {i['n_tokens']:,} tokens x "
             f"{i['dim']}, {i['queries']} queries, k={K}, compression {i['compression']}, "
             f"{res['threads'] or 'library default'} thread(s), 2 shared CPU cores, load average {res['load']}", "",
             f"Generator defaults at k={K}: {i['generator_k100']}; mean vectors: {i['means_bytes_per_doc']} B/doc "
             f"(int8 + scale + norm)", "",
             "| method | R@10 | R@100 | p50 ms | p95 ms | CPU p50 ms | p50 ms per pass |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['method']} | {r['recall@10']:.3f} | {r['recall@100']:.3f} | {r['p50_ms']:.1f} | "
                     f"{r['p95_ms']:.1f} | {r['cpu_p50_ms']:.1f} | {', '.join(map(str, r['p50_ms_passes']))} |")
    lines += ["", f"Recall is against exact fp32 MaxSim over every document; latency is one query at a time, search "
              f"only (no query encoding), the median over {i['repeats']} passes (methods interleaved per pass). "
              "CPU ms: the process's CPU time per query (all threads)."]
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    with plot_axes(path) as ax:
        for kind, marker in (("generator", "o"), ("means only", "s"), ("both", "^")):
            rows = sorted((r for r in res["rows"] if r["method"].startswith(kind)), key=lambda r: r["p50_ms"])
            ax.plot([r["p50_ms"] for r in rows], [r["recall@10"] for r in rows], marker=marker, label=kind)
        ax.set_xlabel("p50 ms (1 query at a time)")
        ax.set_ylabel("recall@10 vs exact MaxSim")
        ax.set_title(f"mean-vector candidates: {res['data']}")
        ax.legend()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_index_args(p, threads=0)
    p.add_argument("--depths", default="50,100,200", help="mean_candidates values")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--stem", default="multivec_means")
    p.add_argument("--search", action="store_true", help="run the search phase in this call (after the merge)")
    a = p.parse_args(argv)
    state = ready_state(a)
    if state is None:
        return 0
    print(save_results(search_phase(a, a.dir, state), a.out, a.stem, markdown, plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
