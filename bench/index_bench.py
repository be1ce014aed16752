"""Index benchmarks in one report: each component's own benchmark plus the engine's.

- Components: runs `run(args)` of bench/index_bench_dense.py, index_bench_sparse.py and
  index_bench_multivec.py (each with its own options, passed through `--dense-args "..."` etc.) and
  gathers their rows into one table and one recall/QPS figure.
- Engine: what the index engine adds on top of the components, on BGE-M3-shaped synthetic data
  (bench/synthetic.py, bench/synthetic_sparse.py) with the real components at their default settings:
  ingest throughput and commit latency (with the tiered merge policy), the cost of searching many
  segments against one (the same searches before and after `optimize()`), snapshot open times (cold,
  and warm after a commit, when unchanged segments are reused), deletes and upserts, document fetches.

Writes bench/results/index_bench_<tag>.json, .md and .png.

    flock /tmp/m3search-heavy.lock python bench/index_bench.py --only engine --docs 20000
    flock /tmp/m3search-heavy.lock python bench/index_bench.py --sparse-args "--docs 200000 --systems ours scipy"
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from m3search.types import EncodedBatch, EncoderIdentity  # noqa: E402

RESULTS = HERE / "results"
COMPONENTS = ("dense", "sparse", "multivec")
VOCAB = 250_002


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the components' own benchmarks --------------------------------------------------------------------


def run_component(kind: str, argv: list[str]) -> dict | None:
    """Run bench/index_bench_<kind>.py's `run(args)` with its own parser's defaults overridden by argv."""
    try:
        module = importlib.import_module(f"index_bench_{kind}")
    except ModuleNotFoundError as e:
        if e.name == f"index_bench_{kind}":
            log(f"{kind}: bench/index_bench_{kind}.py does not exist yet, skipped")
            return None
        raise
    # the component benches build run()'s args either with a parser factory or with parse_args(argv)
    make_parser = next(
        (getattr(module, n) for n in ("_parser", "parser", "build_parser", "make_parser") if hasattr(module, n)), None
    )
    if make_parser is not None:
        args = make_parser().parse_args(argv)
    elif hasattr(module, "parse_args"):
        args = module.parse_args(argv)
    else:
        raise SystemExit(f"bench/index_bench_{kind}.py has no parser function to build run()'s args from")
    log(f"{kind}: running bench/index_bench_{kind}.py {' '.join(argv)}")
    return module.run(args)


# -- the engine ------------------------------------------------------------------------------------------


def _percentiles(seconds: list[float]) -> dict:
    a = np.asarray(seconds, dtype=np.float64) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p95_ms": round(float(np.percentile(a, 95)), 3),
            "max_ms": round(float(a.max()), 3)}


class SyntheticData:
    """The three representations of n documents and m queries, generated chunk by chunk."""

    def __init__(self, n: int, dense_dim: int, multivec_dim: int, mean_tokens: int, seed: int):
        from synthetic import DenseCorpus, TokenCorpus
        from synthetic_sparse import make_corpus, make_queries, make_vocabulary

        self.identity = EncoderIdentity("synthetic-bge-m3", dense_dim, multivec_dim, VOCAB, "synthetic")
        self.dense = DenseCorpus(n, d=dense_dim, seed=seed)
        self.tokens = TokenCorpus(n, d=multivec_dim, seed=seed, mean_len=mean_tokens)
        vocab = make_vocabulary(VOCAB, seed=seed)
        self.sparse = make_corpus(n, vocab, seed=seed)
        self._sparse_queries = lambda m: make_queries(self.sparse, m, vocab)

    def batch(self, lo: int, hi: int) -> EncodedBatch:
        vecs, lengths = self.tokens.docs(lo, hi)
        return EncodedBatch(self.dense.docs(lo, hi), self.sparse[lo:hi], vecs, lengths)

    def queries(self, m: int) -> EncodedBatch:
        xq, _ = self.dense.queries(m)
        tq, tl, _ = self.tokens.queries(m)
        return EncodedBatch(xq, self._sparse_queries(m), tq, tl)


class _Timed:
    """Stands in for a segment reader and adds the time spent in its search/score_pairs to `spent[0]`."""

    def __init__(self, reader, spent: list[float]):
        self._reader, self._spent = reader, spent

    def __getattr__(self, name):
        attr = getattr(self._reader, name)
        if name not in ("search", "score_pairs"):
            return attr

        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return attr(*a, **kw)
            finally:
                self._spent[0] += time.perf_counter() - t

        return timed


def _search_costs(snap, q: EncodedBatch, k: int, candidates: int) -> dict:
    """Per-query latency of each reader, one query per call (the planner's pattern for one user query), and
    the engine's own share of it: the call's time minus the time spent inside the component calls it made."""
    off = q.offsets
    _, cand = snap.dense.search(q.dense, candidates)
    cand = [c[c >= 0] for c in cand]
    calls = {
        "dense": ("dense search", lambda i: snap.dense.search(q.dense[i : i + 1], k)),
        "sparse": ("sparse search", lambda i: snap.sparse.search(q.sparse[i], k)),
        "multivec": (f"multivec score_pairs ({candidates} candidates)", lambda i: snap.multivec.score_pairs(
            q.multivec[off[i] : off[i + 1]], q.multivec_lengths[i : i + 1], np.zeros(len(cand[i]), np.int64), cand[i])),
    }
    out = {}
    for kind, (name, call) in calls.items():
        views = getattr(snap, kind).segset.views
        originals = [v.readers[kind] for v in views]
        spent = [0.0]
        for v, r in zip(views, originals):  # the readers dict is the bench's to borrow for a moment
            v.readers[kind] = _Timed(r, spent)
        try:
            call(0)
            total, engine = [], []
            for i in range(len(q)):
                spent[0] = 0.0
                t = time.perf_counter()
                call(i)
                total.append(time.perf_counter() - t)
                engine.append(total[-1] - spent[0])
        finally:
            for v, r in zip(views, originals):
                v.readers[kind] = r
        out[name] = {**_percentiles(total), "engine_us": round(float(np.median(engine)) * 1e6, 1)}
    return out


def run_engine(args) -> dict:
    from m3search.indexes.index import Index

    data = SyntheticData(args.docs, args.dense_dim, args.multivec_dim, args.mean_tokens, args.seed)
    q = data.queries(args.queries)
    rows: list[dict] = []
    workdir = Path(tempfile.mkdtemp(prefix="m3s-engine-bench-", dir=args.workdir))
    path = workdir / "ix"

    # 1. ingest: adds of `batch` documents, a commit every `commit_every`, tiered merges as they come
    commit_times, add_times = [], []
    started = time.perf_counter()
    components = json.loads(args.components) if args.components else None
    with Index.create(path, data.identity, model=None, components=components, auto_merge=not args.no_merge) as index:
        for lo in range(0, args.docs, args.batch):
            hi = min(args.docs, lo + args.batch)
            batch = data.batch(lo, hi)
            t = time.perf_counter()
            index.add([f"d{i}" for i in range(lo, hi)], batch, [{"text": f"document {i}"} for i in range(lo, hi)])
            add_times.append(time.perf_counter() - t)
            if hi % args.commit_every == 0 or hi == args.docs:
                t = time.perf_counter()
                index.commit()
                commit_times.append(time.perf_counter() - t)
                log(f"engine: {hi}/{args.docs} documents committed ({time.perf_counter() - started:.0f} s)")
        ingest_s = time.perf_counter() - started
        info = index.info()
    rows.append({"measure": "ingest", "docs_per_s": round(args.docs / ingest_s, 1), "total_s": round(ingest_s, 2),
                 "add_p50_ms": _percentiles(add_times)["p50_ms"],
                 **{f"commit_{k}": v for k, v in _percentiles(commit_times).items()},
                 "segments_after": info["n_segments"], "bytes_per_doc": round(info["total_bytes"] / args.docs, 1),
                 "notes": f"{len(commit_times)} commits of {args.commit_every}; "
                          f"merges: {'off' if args.no_merge else 'tiered'}"})
    log(f"engine: {rows[-1]}")

    # 2. many segments against one: identical searches before and after optimize()
    with Index.open(path, writable=True, auto_merge=False) as index:
        with index.snapshot() as snap:
            n_segments = len(snap.segments)
            before = _search_costs(snap, q, args.k, args.candidates)
        t = time.perf_counter()
        index.optimize()
        optimize_s = time.perf_counter() - t
        with index.snapshot() as snap:
            after = _search_costs(snap, q, args.k, args.candidates)
    for name in before:
        rows.append({"measure": name, f"{n_segments}_segments_p50_ms": before[name]["p50_ms"],
                     "1_segment_p50_ms": after[name]["p50_ms"],
                     "overhead": round(before[name]["p50_ms"] / max(after[name]["p50_ms"], 1e-9), 2),
                     f"engine_us_{n_segments}_segments": before[name]["engine_us"],
                     "engine_us_1_segment": after[name]["engine_us"],
                     "notes": f"p95 {before[name]['p95_ms']} vs {after[name]['p95_ms']} ms"
                              + ("; segments written before the codec was trained hold fp16 and are decoded, "
                                 "the merged one uses the codec's lookup tables" if "multivec" in name else "")})
    rows.append({"measure": "optimize", "total_s": round(optimize_s, 2), "notes": f"{n_segments} segments -> 1"})

    # 3. snapshots, deletes, upserts, document fetches
    t = time.perf_counter()
    with Index.open(path) as reader, reader.snapshot() as snap:
        cold = time.perf_counter() - t
        ids = snap.internal_ids([f"d{i}" for i in range(0, args.docs, max(1, args.docs // 1000))])
        fetch = []
        for lo in range(0, len(ids), 10):
            t = time.perf_counter()
            snap.docs(ids[lo : lo + 10])
            fetch.append(time.perf_counter() - t)
    rows.append({"measure": "open + snapshot (cold)", "total_s": round(cold, 4)})
    rows.append({"measure": "fetch 10 documents", **_percentiles(fetch)})
    n_change = max(1, args.docs // 100)
    with Index.open(path, writable=True, auto_merge=False) as index:
        index.snapshot().close()
        victims = [f"d{i}" for i in range(0, args.docs, args.docs // n_change)][:n_change]
        t = time.perf_counter()
        index.delete(victims)
        index.commit()
        delete_s = time.perf_counter() - t
        t = time.perf_counter()
        with index.snapshot():
            warm = time.perf_counter() - t
        t = time.perf_counter()
        lo = args.docs - n_change
        index.upsert([f"d{i}" for i in range(lo, args.docs)], data.batch(lo, args.docs))
        index.commit()
        upsert_s = time.perf_counter() - t
    rows.append({"measure": f"delete {n_change} + commit", "total_s": round(delete_s, 3)})
    rows.append({"measure": "snapshot after a commit (warm)", "total_s": round(warm, 4),
                 "notes": "unchanged segments are reused, only the deletion masks are re-read"})
    rows.append({"measure": f"upsert {n_change} + commit", "total_s": round(upsert_s, 3)})
    if not args.keep:
        import shutil

        shutil.rmtree(workdir)
    return {"setup": {"docs": args.docs, "queries": args.queries, "dense_dim": args.dense_dim,
                      "multivec_dim": args.multivec_dim, "mean_tokens": args.mean_tokens, "k": args.k,
                      "batch": args.batch, "commit_every": args.commit_every, "segments_before_optimize": n_segments,
                      "components": args.components or "all three, default configs"},
            "rows": rows}


# -- the report ---------------------------------------------------------------------------------------------


PREFERRED = ("system", "measure", "setting", "build_s", "bytes_per_doc", "qps", "p50_ms", "p95_ms", "recall@10",
             "recall@100")


def markdown_table(rows: list[dict], first: str) -> str:
    present = {c for r in rows for c in r}
    cols = [first] + [c for c in PREFERRED if c in present and c != first]
    cols += sorted(present - set(cols) - {"notes"}) + (["notes"] if "notes" in present else [])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in COMPONENTS if report.get(k)] + (["engine"] if report.get("engine") else [])
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, name in zip(axes[0], panels):
        rows = report[name]["rows"]
        if name == "engine":
            costs = [r for r in rows if "overhead" in r]
            labels = [r["measure"].replace(" (", "\n(") for r in costs]
            many = [r for r in costs[0] if r.endswith("_segments_p50_ms")][0] if costs else None
            x = np.arange(len(costs))
            ax.bar(x - 0.2, [r[many] for r in costs], 0.4, label=many.replace("_p50_ms", "").replace("_", " "))
            ax.bar(x + 0.2, [r["1_segment_p50_ms"] for r in costs], 0.4, label="1 segment")
            ax.set_xticks(x, labels, fontsize=7)
            ax.set_ylabel("p50 latency per query (ms)")
            ax.set_title("engine: many segments vs one")
            ax.legend(fontsize=8)
            continue
        for r in rows:
            point = _quality_speed(r)
            if point is None:
                continue
            label = " ".join(str(r[c]) for c in ("system", "setting") if r.get(c))
            ax.scatter(*point, marker="s" if label and not label.startswith("m3search") and "system" in r else "o")
            ax.annotate(label, point, fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.set_xlabel("recall@10 (token store: top-10 agreement with exact MaxSim)")
        ax.set_ylabel("QPS (or 1000 / best p50 ms)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _quality_speed(row: dict) -> tuple[float, float] | None:
    """(recall@10 or top-10 agreement, QPS or 1000 / best p50 latency) of a component bench row."""
    quality = row.get("recall@10", row.get("top10_agreement"))
    if quality is None:
        return None
    if row.get("qps"):
        return float(quality), float(row["qps"])
    p50 = [v for k, v in row.items() if k.endswith("p50_ms") and isinstance(v, (int, float)) and v > 0]
    return (float(quality), 1000.0 / min(p50)) if p50 else None


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", default=[*COMPONENTS, "engine"], choices=[*COMPONENTS, "engine"])
    for kind in COMPONENTS:
        p.add_argument(f"--{kind}-args", default="", help=f"options for bench/index_bench_{kind}.py, quoted")
    p.add_argument("--docs", type=int, default=10_000, help="engine: documents")
    p.add_argument("--queries", type=int, default=200, help="engine: queries")
    p.add_argument("--dense-dim", type=int, default=1024)
    p.add_argument("--multivec-dim", type=int, default=1024)
    p.add_argument("--mean-tokens", type=int, default=32, help="engine: mean token vectors per document")
    p.add_argument("--components", default=None,
                   help="engine: component configs as JSON (default: all three, default configs)")
    p.add_argument("--batch", type=int, default=500, help="engine: documents per add")
    p.add_argument("--commit-every", type=int, default=1000, help="engine: documents per commit")
    p.add_argument("--no-merge", action="store_true", help="engine: ingest without the merge policy")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--candidates", type=int, default=100, help="engine: candidates re-scored by MaxSim per query")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None)
    p.add_argument("--keep", action="store_true", help="engine: keep the index it built")
    p.add_argument("--tag", default=None)
    args = p.parse_args(argv)

    report: dict = {"setup": {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
                              "python": platform.python_version()}}
    for kind in COMPONENTS:
        if kind in args.only:
            report[kind] = run_component(kind, shlex.split(getattr(args, f"{kind}_args")))
    if "engine" in args.only:
        report["engine"] = run_engine(args)
    report["setup"]["load_average_at_end"] = os.getloadavg()

    sections = []
    for name in [*COMPONENTS, "engine"]:
        result = report.get(name)
        if result and result.get("rows"):
            setup = result.get("setup") or {k: v for k, v in result.items() if k != "rows"}  # benches differ here
            setup = ", ".join(f"{k}={_cell(v)}" for k, v in setup.items() if not isinstance(v, (dict, list)))
            table = markdown_table(result["rows"], "measure" if name == "engine" else "system")
            sections.append(f"## {name}\n\n{setup}\n\n{table}")
    md = "\n\n".join(sections) + "\n"
    tag = args.tag or f"{args.docs}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"index_bench_{tag}.json").write_text(json.dumps(report, indent=1, default=str))
    (RESULTS / f"index_bench_{tag}.md").write_text(md)
    plot(report, RESULTS / f"index_bench_{tag}.png")
    print(md)
    return report


if __name__ == "__main__":
    main()
