"""The #11 multi-vector search benchmark at a size whose build does not fit one 15-minute lock window.

Resumable, in phases kept in --dir (run the same command again until it prints the results):
1. build: chunks of --chunk synthetic documents (bench/synthetic.py, ~--mean-len tokens each) become one
   segment each with the engine's multivec defaults (the codec is trained on the first chunk, as in an
   index); per chunk the exact fp32 MaxSim of every query against its documents (the reference) and the
   documents' mean vectors (plain re-ranking's first stage) are saved. A run stops starting chunks after
   --budget-s seconds. Build time counts the component's build calls and the merge only.
2. merge: the chunk segments into one (codes copied, centroid lists rebuilt), as an optimize would.
3. search: one query at a time on --threads threads, search only (no query encoding): the generator at its
   defaults and a grid of settings, plain re-ranking of the mean-vector top-N from codes, and (on the first
   --exhaustive-queries queries) every document scored from its codes. Recall@10/@100 against the exact
   MaxSim top-100. Writes bench/results/<stem>.{md,json,png} (tables and plot of
   index_bench_multivec_search.py), and --export (queries + exact top-100) for bench/fastplaid_peer.py.

    flock /tmp/m3search-heavy.lock timeout 900 python -m bench.multivec_big --dir /tmp/big --n 100000 --budget-s 780
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from bench.harness import save_results
from bench.index_bench_multivec_search import RESULTS, Reference, _batch, _norm, markdown, plot, recall, time_queries
from m3search.indexes.faiss_support import faiss_threads
from m3search.indexes.multivec import MultivecComponent


def _corpus(a):
    from bench.synthetic import TokenCorpus
    return TokenCorpus(a.n, d=a.d, seed=a.seed, mean_len=a.mean_len)


def _config(a) -> dict:
    return {"compression": a.compression, "threads": a.build_threads}


def build_phase(a, folder: Path, state: dict) -> bool:
    """Build chunks until done or out of budget; True when every chunk is built."""
    corpus = _corpus(a)
    q_vecs, q_len, _ = corpus.queries(a.queries)
    comp = MultivecComponent(_config(a))
    n_chunks = -(-a.n // a.chunk)
    start = time.perf_counter()
    while state["chunks"] < n_chunks and time.perf_counter() - start < a.budget_s:
        i = state["chunks"]
        vecs, lens = corpus.docs(i * a.chunk, min(a.n, (i + 1) * a.chunk))
        t = time.perf_counter()
        meta = comp.build(folder / f"c{i}", _batch(vecs, lens), folder / "shared")
        state["build_s"] += time.perf_counter() - t
        ref = Reference(q_vecs, q_len)
        ref.add(vecs, lens)
        np.save(folder / f"ref{i}.npy", ref.scores[0])
        np.save(folder / f"means{i}.npy", ref.means[0].astype(np.float32))
        (folder / f"c{i}.json").write_text(json.dumps(meta, default=str))
        state["chunks"] = i + 1
        state["tokens"] += int(lens.sum())
        (folder / "state.json").write_text(json.dumps(state))
        print(f"chunk {i + 1}/{n_chunks}: {state['tokens']:,} tokens, build {state['build_s']:.0f} s, "
              f"elapsed {time.perf_counter() - start:.0f} s", flush=True)
    return state["chunks"] == n_chunks


def merge_phase(a, folder: Path, state: dict) -> None:
    comp = MultivecComponent(_config(a))
    shared = folder / "shared"
    readers = [comp.open(folder / f"c{i}", json.loads((folder / f"c{i}.json").read_text()), shared)
               for i in range(state["chunks"])]
    t = time.perf_counter()
    meta = comp.merge(folder / "merged", readers, [np.arange(r.n_docs) for r in readers], shared)
    state["merge_s"] = time.perf_counter() - t
    state["build_s"] += state["merge_s"]
    (folder / "merged.json").write_text(json.dumps(meta, default=str))
    for r in readers:
        r.close()
    state["merged"] = True
    (folder / "state.json").write_text(json.dumps(state))
    print(f"merged {state['chunks']} segments in {state['merge_s']:.0f} s", flush=True)


def add_index_args(p: argparse.ArgumentParser, threads: int) -> None:
    """The arguments that say which synthetic index (in --dir) is built and how it is searched: shared by the
    benchmarks that search one (multivec_means.py), so the same flags mean the same index."""
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--n", type=int, default=100000)
    p.add_argument("--d", type=int, default=384)
    p.add_argument("--mean-len", type=int, default=100)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--chunk", type=int, default=5000)
    p.add_argument("--compression", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--build-threads", type=int, default=2)
    p.add_argument("--threads", type=int, default=threads,
                   help="search threads (0: the library's default, one thread per kernel that idle helper threads may share)")
    p.add_argument("--budget-s", type=float, default=780, help="start no build chunk after this many seconds")


def ready_state(a) -> dict | None:
    """The index in a.dir built (resumably, within --budget-s per call) and merged: its state once this call
    may search it (--search), else None after saying what to run next."""
    a.dir.mkdir(parents=True, exist_ok=True)
    state_path = a.dir / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {
        "chunks": 0, "tokens": 0, "build_s": 0.0, "merged": False, "args": {k: str(v) for k, v in vars(a).items()}}
    if not build_phase(a, a.dir, state):
        print("build not finished: run again", flush=True)
        return None
    if not state["merged"]:
        merge_phase(a, a.dir, state)
    if not a.search:
        print("built and merged: run again with --search", flush=True)
        return None
    return state


def grid_arg(text: str) -> list[tuple]:
    return [tuple(int(v) for v in g.split(":")) for g in text.split(",") if g]


def search_phase(a, folder: Path, state: dict) -> dict:
    corpus = _corpus(a)
    q_vecs, q_len, _ = corpus.queries(a.queries)
    m = len(q_len)
    scores = np.concatenate([np.load(folder / f"ref{i}.npy") for i in range(state["chunks"])], axis=1)
    means = np.concatenate([np.load(folder / f"means{i}.npy") for i in range(state["chunks"])])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :100]
    del scores
    if a.export:
        np.savez(a.export, q_vecs=q_vecs, q_lengths=q_len, ref_top=top)
    # the search's own thread setting: --threads 0 leaves it unset (the library's default); the build's
    # thread count must not carry over (session 6's 1024-d figure of 30.2 ms ran on an OpenMP team of 2)
    comp = MultivecComponent({**_config(a), "threads": a.threads or None})
    reader = comp.open(folder / "merged", json.loads((folder / "merged.json").read_text()), folder / "shared")
    n, t = reader.n_docs, reader.n_tokens
    q_off = np.concatenate([[0], np.cumsum(q_len)])
    one = lambda qi: (q_vecs[q_off[qi]:q_off[qi + 1]], q_len[qi:qi + 1])  # noqa: E731
    lists_bytes = sum(reader.header["files"][f]["bytes"] for f in reader.header["files"] if f.startswith("lists"))
    base = {"bytes_per_token": reader.nbytes() / t, "codes_bytes_per_token": reader.codec.code_size,
            "lists_bytes_per_token": lists_bytes / t, "build_s": state["build_s"]}
    rows = []

    def row(method, found, tm, idx=None, **extra):
        ref = top if idx is None else top[idx]
        rows.append({"method": method, **extra, **base, **tm, "recall@10": recall(found, ref, 10),
                     "recall@100": recall(found, ref, 100)})
        print(json.dumps({k: v for k, v in rows[-1].items() if not isinstance(v, dict)}), flush=True)

    with faiss_threads(a.threads or None):
        reader.search(*one(0), 100)  # compile the kernels and page the lists in, outside the timings
        found, tm = time_queries(lambda qi: reader.search(*one(qi), 100)[1][0], m)
        row("generator defaults", found, tm, **reader.generator_settings(100))
        for g in grid_arg(a.grid):
            nprobe, cands, *pool = g
            pool = pool[0] if pool else None
            found, tm = time_queries(lambda qi: reader.search(*one(qi), 100, nprobe=nprobe or None,
                                                              candidates=cands or None, pool=pool)[1][0], m)
            row(f"generator nprobe={nprobe or 'default'} candidates={cands or 'default'}"
                + (f" pool={pool}" if pool else ""), found, tm)
        q_means = _norm(np.add.reduceat(q_vecs, q_off[:-1], axis=0))
        for depth in [int(x) for x in a.rerank.split(",") if x]:
            def rerank(qi, depth=depth):
                first = means @ q_means[qi]
                cand = np.sort(np.argpartition(-first, depth - 1)[:depth])
                q, _ = one(qi)
                s = reader.score_pairs(q, [len(q)], np.zeros(len(cand), np.int64), cand)
                return cand[np.argsort(-s, kind="stable")[:100]]
            found, tm = time_queries(rerank, m)
            row(f"rerank mean-vec top-{depth}", found, tm)
        if a.exhaustive_queries:
            me = min(m, a.exhaustive_queries)

            def exhaustive(qi):
                q, _ = one(qi)
                s = reader.score_pairs(q, [len(q)], np.zeros(n, np.int64), np.arange(n))
                return np.argsort(-s, kind="stable")[:100]
            found, tm = time_queries(exhaustive, me)
            row(f"exhaustive (codes, first {me} queries)", found, tm, idx=slice(0, me))
    info = {"n_docs": n, "n_tokens": t, "dim": reader.dim, "queries": m, "compression": reader.codec.name,
            "fidelity": reader.fidelity(), "generator_k100": reader.generator_settings(100),
            "build_chunks": state["chunks"], "merge_s": state.get("merge_s")}
    reader.close()
    return {"data": f"synthetic clustered {a.d}-d, ~{a.mean_len} tokens/doc", "threads": a.threads, "info": info,
            "rows": rows, "load": " / ".join(f"{x:.1f}" for x in os.getloadavg())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_index_args(p, threads=1)
    p.add_argument("--grid", default="", help="NPROBE:CANDIDATES[:POOL],... (0 = the default)")
    p.add_argument("--rerank", default="100,1000")
    p.add_argument("--exhaustive-queries", type=int, default=0)
    p.add_argument("--export", default=None, help="queries + exact top-100 (.npz) for bench/fastplaid_peer.py")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--tag", default="")
    p.add_argument("--search", action="store_true", help="run the search phase in this call (after the merge)")
    a = p.parse_args(argv)
    state = ready_state(a)
    if state is None:
        return 0
    res = search_phase(a, a.dir, state)
    stem = f"multivec_big_n{a.n}_d{a.d}{a.tag}"
    print(save_results(res, a.out, stem, markdown, plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
