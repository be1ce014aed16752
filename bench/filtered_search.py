"""Filtered search: latency and recall@k at 0.1% / 1% / 10% / 50% selectivity against unfiltered, and
against post-filtering (search unfiltered, then drop what fails the filter) measured in the same run.

    flock /tmp/m3search-heavy.lock python bench/filtered_search.py            # 100k passages
    python bench/filtered_search.py --n 5000 --queries 30                     # a quick smoke run

The index holds precomputed synthetic representations shaped like m3search-small's (384-d dense,
lexical weights over the 250,002-id XLM-R vocabulary; bench/synthetic*.py) with the default dense and
sparse configs (at 100k passages FAISS IVF + 4-bit PQ fast-scan, refined against the fp16 store), and
metadata `{"bucket": 0..999, "lang": ...}` with buckets assigned at random, so `bucket < s * 1000` selects a
random s of the corpus. Recall@k is against the exact top-k of the matching documents (brute force
over all documents' fp16 dense vectors and stored lexical weights, fused as the mode weighs them).

Writes bench/results/filtered_search.{md,json,png}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from m3search.types import EncodedBatch, EncoderIdentity  # noqa: E402

VOCAB = 250_002
MODES = {"dense": {"dense": 1.0}, "sparse": {"sparse": 1.0}, "dense+sparse": {"dense": 1.0, "sparse": 0.3}}
SELECTIVITIES = (None, 0.5, 0.1, 0.01, 0.001)
LANGS = ("en", "de", "fr", "ja", "zh", "es", "ru", "ar")


def corpus(n: int, d: int, seed: int):
    from synthetic import DenseCorpus
    from synthetic_sparse import make_corpus, make_vocabulary

    vocab = make_vocabulary(VOCAB, seed=seed)
    return DenseCorpus(n, d=d, seed=seed), make_corpus(n, vocab, seed=seed), vocab


def buckets(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 99).permutation(n) % 1000


def build(path: Path, n: int, d: int, seed: int, chunk: int = 5000) -> None:
    from m3search.indexes.index import Index

    if (path / "manifest.json").is_file():
        return
    dense, sparse, _ = corpus(n, d, seed)
    bucket = buckets(n, seed)
    ident = EncoderIdentity(name="synthetic-m3-small", dense_dim=d, multivec_dim=d, vocab_size=VOCAB,
                            tokenizer_hash="synthetic")
    started = time.perf_counter()
    with Index.create(path, ident, model=None, components={"dense": {}, "sparse": {}}) as index:
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            batch = EncodedBatch(dense.docs(lo, hi), sparse[lo:hi], np.zeros((0, d), np.float32),
                                 np.zeros(hi - lo, np.int64))
            docs = [{"text": f"passage {i}", "metadata": {"bucket": int(bucket[i]), "lang": LANGS[i % len(LANGS)]}}
                    for i in range(lo, hi)]
            index.add([f"p{i}" for i in range(lo, hi)], batch, docs)
        index.commit()
        index.optimize()
    print(f"  built {n} passages in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def exact_scores(n: int, d: int, seed: int, queries: EncodedBatch) -> dict[str, np.ndarray]:
    dense, sparse, _ = corpus(n, d, seed)
    xb = dense.docs(0, n).astype(np.float16).astype(np.float32)  # what the index stores
    return {"dense": queries.dense @ xb.T, "sparse": np.asarray((queries.sparse @ sparse.T).toarray(), np.float32)}


def top_k(scores: np.ndarray, mask: np.ndarray | None, k: int) -> list[set[int]]:
    s = scores if mask is None else np.where(mask[None, :], scores, -np.inf)
    part = np.argpartition(-s, k, axis=1)[:, :k]
    return [set(int(j) for j in row if np.isfinite(s[i, j])) for i, row in enumerate(part)]


def run(index, queries: EncodedBatch, mode: str, flt, k: int, ids_of, post_filter: np.ndarray | None) -> dict:
    """One query at a time: latencies, and the hits' passage numbers. With post_filter (a mask), search
    unfiltered with depth 100 / k 100 and keep the first k hits that pass."""
    times, found, n_hits, filter_s = [], [], [], []
    for i in range(len(queries)):
        one = queries.select([i])
        timings: dict = {}
        start = time.perf_counter()
        if post_filter is None:
            hits = index.search_encoded(one, k=k, mode=mode, filter=flt, timings=timings, with_text=False)[0]
        else:
            hits = index.search_encoded(one, k=100, mode=mode, timings=timings, with_text=False)[0]
            hits = [h for h in hits if post_filter[ids_of(h.docid)]][:k]
        times.append(time.perf_counter() - start)
        filter_s.append(timings.get("filter", 0.0))
        found.append({ids_of(h.docid) for h in hits})
        n_hits.append(len(hits))
    t = np.asarray(times) * 1000
    return {"p50_ms": float(np.percentile(t, 50)), "p95_ms": float(np.percentile(t, 95)),
            "filter_ms": float(np.mean(filter_s) * 1000), "found": found, "mean_hits": float(np.mean(n_hits))}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", type=Path, default=ROOT / "bench" / "out")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "filtered_search.json")
    args = p.parse_args(argv)

    import m3search
    from synthetic_sparse import make_queries as sparse_queries

    path = args.work_dir / f"filtered-n{args.n}-d{args.dim}-s{args.seed}.m3s"
    build(path, args.n, args.dim, args.seed)
    dense, sparse, vocab = corpus(args.n, args.dim, args.seed)
    xq, _ = dense.queries(args.queries)
    queries = EncodedBatch(xq, sparse_queries(sparse, args.queries, vocab), np.zeros((0, args.dim), np.float32),
                           np.zeros(args.queries, np.int64))
    exact = exact_scores(args.n, args.dim, args.seed, queries)
    bucket = buckets(args.n, args.seed)
    ids_of = lambda docid: int(docid[1:])  # noqa: E731

    rows = []
    with m3search.open_index(path) as index:
        info = index.info()
        index.search_encoded(queries.select([0]), k=args.k, mode="dense")  # warm up
        for mode, weights in MODES.items():
            fused = sum(w * exact[c] for c, w in weights.items())
            for s in SELECTIVITIES:
                mask = None if s is None else bucket < max(1, round(s * 1000))
                flt = None if s is None else {"bucket": {"$lt": max(1, round(s * 1000))}}
                truth = top_k(fused, mask, args.k)
                if mode == "sparse":  # documents with no shared token are not sparse results
                    pos = fused > 0
                    truth = [{j for j in t if pos[i, j]} for i, t in enumerate(truth)]
                print(f"  {mode} selectivity {s}", file=sys.stderr, flush=True)
                res = run(index, queries, mode, flt, args.k, ids_of, None)
                row = {"mode": mode, "selectivity": s, "filtered": _summary(res, truth)}
                if mask is not None:
                    row["post_filter"] = _summary(run(index, queries, mode, None, args.k, ids_of, mask), truth)
                rows.append(row)
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "index": {"n_docs": info["n_docs"], "dim": args.dim, "n_segments": info["n_segments"],
                  "dense": info["components"]["dense"]["fidelity"]},
        "k": args.k, "n_queries": args.queries, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    args.out.with_suffix(".md").write_text(markdown(report) + "\n")
    plot(report, args.out.with_suffix(".png"))
    print(markdown(report))
    return report


def _summary(res: dict, truth: list[set[int]]) -> dict:
    recalls = [len(f & t) / len(t) for f, t in zip(res["found"], truth) if t]
    return {"p50_ms": res["p50_ms"], "p95_ms": res["p95_ms"], "filter_ms": res["filter_ms"],
            "recall": float(np.mean(recalls)) if recalls else None, "mean_hits": res["mean_hits"]}


def markdown(report: dict) -> str:
    idx = report["index"]
    lines = [f"{idx['n_docs']:,} passages, {idx['dim']}-d dense (structure {idx['dense'].get('structure')}) + "
             f"sparse, {idx['n_segments']} segment(s); {report['n_queries']} queries one at a time, "
             f"k={report['k']}, default depths (100); {report['machine']['cpus']} CPU cores. Recall@{report['k']} "
             "against the exact top-k of the matching documents. Post-filter: unfiltered search for 100 hits, "
             "then the filter.", "",
             "| mode | selectivity | filtered p50 / p95 (ms) | of which filter (ms) | filtered recall | hits | "
             "post-filter p50 (ms) | post-filter recall | post-filter hits |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        f, pf = r["filtered"], r.get("post_filter")
        s = "none" if r["selectivity"] is None else f"{r['selectivity']:.1%}"
        lines.append(
            f"| {r['mode']} | {s} | {f['p50_ms']:.1f} / {f['p95_ms']:.1f} | {f['filter_ms']:.2f} | "
            f"{f['recall']:.3f} | {f['mean_hits']:.1f} | "
            + (f"{pf['p50_ms']:.1f} | {pf['recall']:.3f} | {pf['mean_hits']:.1f} |" if pf else "- | - | - |"))
    return "\n".join(lines)


def plot(report: dict, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in MODES:
        rows = [r for r in report["rows"] if r["mode"] == mode and r["selectivity"] is not None]
        xs = [r["selectivity"] * 100 for r in rows]
        a.plot(xs, [r["filtered"]["p50_ms"] for r in rows], "o-", label=f"{mode} filtered")
        a.plot(xs, [r["post_filter"]["p50_ms"] for r in rows], "x--", label=f"{mode} post-filter")
        b.plot(xs, [r["filtered"]["recall"] for r in rows], "o-", label=f"{mode} filtered")
        b.plot(xs, [r["post_filter"]["recall"] for r in rows], "x--", label=f"{mode} post-filter")
    for ax, title in ((a, "p50 latency (ms)"), (b, f"recall@{report['k']}")):
        ax.set_xscale("log")
        ax.set_xlabel("selectivity (%)")
        ax.set_title(title)
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
