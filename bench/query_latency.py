"""End-to-end query latency and throughput per search mode, with the time of each stage.

    flock /tmp/m3search-heavy.lock python bench/query_latency.py            # 100k passages, the defaults
    python bench/query_latency.py --n 5000 --queries 50 --no-encode         # a quick smoke run

The index holds BGE-M3-shaped precomputed representations (bench/synthetic.py: 1024-d dense vectors and
~100 token vectors of 1024-d per passage; bench/synthetic_sparse.py: lexical weights over the 250,002-id
XLM-R vocabulary), written through the index engine with the default component configs, plus a stored
text per passage. Queries are generated the same way (their dense, sparse and token parts target
different passages, which only makes the candidate union larger than a real query's).

Per mode it measures
- latency: one query at a time (`SearchIndex.search_encoded`, k=10, default depths), p50/p95 over the
  queries, with the planner's stages: candidates (dense ANN + sparse inverted index), re-score (exact
  scores of every candidate on each weighted component), fuse, fetch (documents of the hits);
- throughput: all queries in batches of --batch queries.
The encoder is measured apart, on the real default model (m3search-small, 384-d, on this CPU) with the
sample queries, one at a time and batched; end-to-end = encode + search, per query (p50/p95 of the sums).
A real BGE-M3 (XLM-R large) encodes a query roughly 5-10x slower on CPU than m3search-small.

Prints a markdown table and writes it with the JSON to bench/results/query_latency.{md,json}. The index is kept under
bench/out/ (git-ignored) and reused by later runs with the same --n and --seed.
"""
from __future__ import annotations

import argparse
import contextlib
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

MODES = ("dense", "sparse", "dense+sparse", "multivec", "all")
STAGES = ("candidates", "rescore", "fuse", "fetch")
VOCAB = 250_002
WORDS = ("the of and to in is for on with as by this that from are be or at an it data cell table column row "
         "sheet document text page format style field query index search value list file menu dialog").split()


def synthetic_identity(d: int) -> EncoderIdentity:
    return EncoderIdentity(name="synthetic-bge-m3", dense_dim=d, multivec_dim=d, vocab_size=VOCAB,
                           tokenizer_hash="synthetic")


def build_index(path: Path, n: int, d: int, seed: int, chunk: int, commit_every: int | None = None,
                components: tuple[str, ...] = ("dense", "sparse", "multivec"), merge_policy=None,
                mean_tokens: int = 100) -> float | None:
    """Write n synthetic passages through the engine (skipped when a finished index is there).

    commit_every=None: a bulk load (committed every `RESUME_EVERY` passages so an interrupted build resumes,
    merges off), then optimize() (one segment). commit_every=N: the CLI's path, a commit every N passages
    with the default merge policy after each commit (background merges) and no final optimize.
    An interrupted build (e.g. `timeout` of a locked slice) resumes from its last commit when run again.
    merge_policy: the CLI path's policy (None: the default). mean_tokens: token vectors per passage (mean).
    Returns the build's seconds (background merges included: closing the index waits for them), None when
    the index was there already or the build resumed (its seconds are then per slice, on stderr)."""
    from synthetic import DenseCorpus, TokenCorpus
    from synthetic_sparse import make_corpus, make_vocabulary

    from m3search.indexes.index import Index

    options = ({"merge_policy": merge_policy} if merge_policy else {}) if commit_every else {"auto_merge": False}
    configs = {kind: {} for kind in components}
    done, exists = 0, (path / "manifest.json").is_file()
    if exists:
        with Index.open(path) as index, index.snapshot() as snap:
            done = snap.n_docs
        if done == n and (commit_every or index_segments(path) == 1):
            return None
        if done > n or done % (commit_every or RESUME_EVERY):
            raise SystemExit(f"{path} holds an unfinished or different index: delete it and run again")
        print(f"  resuming {path.name} at {done} passages", file=sys.stderr, flush=True)
    dense, tokens = DenseCorpus(n, d=d, seed=seed), TokenCorpus(n, d=d, seed=seed, mean_len=mean_tokens)
    sparse = make_corpus(n, make_vocabulary(VOCAB, seed=seed), seed=seed)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    step = commit_every or RESUME_EVERY
    opened = (Index.open(path, writable=True, **options) if exists else
              Index.create(path, synthetic_identity(d), model=None, components=configs, **options))
    with opened as index:
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            texts = [{"text": " ".join(rng.choice(WORDS, size=60))} for _ in range(lo, hi)]  # same rng stream
            if hi <= done:
                continue
            vecs, lengths = tokens.docs(lo, hi) if "multivec" in components else (np.zeros((0, d), np.float32),
                                                                                    np.zeros(hi - lo, np.int64))
            batch = EncodedBatch(dense.docs(lo, hi), sparse[lo:hi], vecs, lengths)
            ids = [f"p{i}" for i in range(lo, hi)]
            for a in range(0, hi - lo, step):
                b = min(hi - lo, a + step)
                if lo + a < done:
                    continue
                index.add(ids[a:b], batch.select(range(a, b)), texts[a:b])
                if (lo + b) % step == 0 or lo + b == n:
                    index.commit()
            print(f"  added {hi}/{n} passages ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        index.commit()
        if not commit_every:
            index.optimize()  # one segment, as after a bulk load
    seconds = time.perf_counter() - started
    print(f"  built in {seconds:.0f} s", file=sys.stderr)
    return None if done else seconds


RESUME_EVERY = 10_000  # the bulk load's commits (resume points); a multiple of --chunk


def index_segments(path: Path) -> int:
    from m3search.indexes.index import Index

    with Index.open(path) as index:
        return int(index.info()["n_segments"])


def make_queries(n: int, d: int, seed: int, m: int, mean_tokens: int = 100) -> EncodedBatch:
    from synthetic import DenseCorpus, TokenCorpus
    from synthetic_sparse import make_corpus
    from synthetic_sparse import make_queries as sparse_queries
    from synthetic_sparse import make_vocabulary

    vocab = make_vocabulary(VOCAB, seed=seed)
    xq, _ = DenseCorpus(n, d=d, seed=seed).queries(m)
    tq, tl, _ = TokenCorpus(n, d=d, seed=seed, mean_len=mean_tokens).queries(m)
    sq = sparse_queries(make_corpus(n, vocab, seed=seed), m, vocab)
    return EncodedBatch(xq, sq, tq, tl)


@contextlib.contextmanager
def per_segment_search():
    """The search as it was before one-pass multi-segment search: every segment of the multi-vector and
    sparse components searched (and multi-vector pairs scored) on its own, with its own full budget."""
    from m3search.indexes import segments
    from m3search.indexes.multivec import multiseg

    saved = multiseg.shared_codec_groups, segments.IndexSparseReader.search
    multiseg.shared_codec_groups = lambda readers: ([], list(range(len(readers))))
    segments.IndexSparseReader.search = lambda self, q, k, deleted=None, **params: segments._search(
        self.segset, self.kind, q, q.shape[0], k, deleted, params)
    try:
        yield
    finally:
        multiseg.shared_codec_groups, segments.IndexSparseReader.search = saved


@contextlib.contextmanager
def old_dense_search(threshold: int = 100_000):
    """The dense search as it was before the per-segment structure followed n x d (flat_threshold 100,000
    for every dimension): HNSW segments below `threshold` documents are searched flat over their fp16
    store (what they were built as before), through the reader's own flat path."""
    from m3search.indexes import segments
    from m3search.indexes.dense.config import Structure
    from m3search.indexes.dense.reader import DenseSegmentReader

    search, index_search = DenseSegmentReader.search, segments.IndexDenseReader.search

    def flat_search(self, *args, **kwargs):
        if self.structure.kind != "hnsw" or self.n_docs >= threshold:
            return search(self, *args, **kwargs)
        saved = self.structure, self._ivf
        self.structure, self._ivf = Structure("flat"), None
        try:
            return search(self, *args, **kwargs)
        finally:
            self.structure, self._ivf = saved

    DenseSegmentReader.search = flat_search
    # and segment by segment, as before the one-pass dense search (dense/multiseg.py)
    segments.IndexDenseReader.search = lambda self, xq, k, deleted=None, **params: segments._search(
        self.segset, self.kind, np.ascontiguousarray(xq, dtype=np.float32), len(xq), k, deleted, params)
    try:
        yield
    finally:
        DenseSegmentReader.search, segments.IndexDenseReader.search = search, index_search


def percentiles(xs) -> dict:
    a = np.asarray(xs, dtype=np.float64) * 1000
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)), "mean_ms": float(a.mean())}


def measure_mode(index, queries: EncodedBatch, mode: str, k: int, batch: int) -> dict:
    per_query, stages = [], {s: [] for s in STAGES}
    for lo in range(0, len(queries), batch):  # warm caches: every document the timed queries fetch, its pages
        index.search_encoded(queries.select(range(lo, min(len(queries), lo + batch))), k=k, mode=mode)
    for i in range(len(queries)):
        timings: dict = {}
        one = queries.select([i])
        start = time.perf_counter()
        index.search_encoded(one, k=k, mode=mode, timings=timings)
        per_query.append(time.perf_counter() - start)
        for s in STAGES:
            stages[s].append(timings.get(s, 0.0))
    start = time.perf_counter()
    for lo in range(0, len(queries), batch):
        index.search_encoded(queries.select(range(lo, min(len(queries), lo + batch))), k=k, mode=mode)
    elapsed = time.perf_counter() - start
    return {
        "search": percentiles(per_query),
        "stages_mean_ms": {s: float(np.mean(v) * 1000) for s, v in stages.items()},
        "search_times_s": per_query,
        "batch_qps": len(queries) / elapsed,
    }


def pooled(before: dict | None, new: dict) -> dict:
    """Rounds of measure_mode as one: every round's single-query times pooled (p50/p95 over all of them),
    stage means averaged, throughput the median round's; `round_p50_ms` keeps each round's p50."""
    if before is None:
        return {**new, "round_p50_ms": [new["search"]["p50_ms"]], "round_qps": [new["batch_qps"]]}
    n = len(before["round_p50_ms"])
    times = before["search_times_s"] + new["search_times_s"]
    qps = before["round_qps"] + [new["batch_qps"]]
    return {
        "search": percentiles(times),
        "stages_mean_ms": {s: (before["stages_mean_ms"][s] * n + new["stages_mean_ms"][s]) / (n + 1)
                           for s in new["stages_mean_ms"]},
        "search_times_s": times,
        "batch_qps": float(np.median(qps)),
        "round_p50_ms": before["round_p50_ms"] + [new["search"]["p50_ms"]],
        "round_qps": qps,
    }


def measure_encode(n_queries: int, batch: int) -> dict:
    """The real default encoder on the sample queries: per query, and batched."""
    from m3search.data import SAMPLE_QUERIES, read_queries
    from m3search.encoder import load_encoder

    texts = [q.text for q in read_queries(SAMPLE_QUERIES)][:n_queries]
    start = time.perf_counter()
    encoder = load_encoder()
    load_s = time.perf_counter() - start
    encoder.encode(texts[:2], kind="query")  # warm up
    single = []
    for t in texts:
        start = time.perf_counter()
        encoder.encode([t], kind="query")
        single.append(time.perf_counter() - start)
    start = time.perf_counter()
    for lo in range(0, len(texts), batch):
        encoder.encode(texts[lo : lo + batch], kind="query")
    qps = len(texts) / (time.perf_counter() - start)
    return {"model": "m3search-small", "load_s": load_s, "single": percentiles(single), "times_s": single,
            "batch_qps": qps, "n_queries": len(texts)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="passages in the index")
    p.add_argument("--dim", type=int, default=1024, help="dense and token vector dimension (BGE-M3: 1024)")
    p.add_argument("--queries", type=int, default=200, help="queries to time")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batch", type=int, default=32, help="queries per batch for throughput")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=2000, help="passages generated and added per step")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--no-encode", action="store_true", help="skip timing the real encoder")
    p.add_argument("--cli-commit-every", type=int, default=None, metavar="N",
                   help="also time an index built the CLI's way: a commit every N passages, merges by the default "
                   "policy, no final optimize (reported beside the optimized one)")
    p.add_argument("--per-segment-baseline", action="store_true",
                   help="with --cli-commit-every: also time the CLI-built index with the per-segment search of "
                   "before (multi-vector and sparse segments searched one by one), in the same rounds")
    p.add_argument("--old-dense-baseline", action="store_true",
                   help="with --cli-commit-every: also time the CLI-built index with its dense segments below 100k "
                   "searched flat (the structure they had before flat_threshold followed the dimension) and one by "
                   "one (before the one-pass dense search), in the same rounds (reported in the 'before' columns)")
    p.add_argument("--tiers-only-baseline", action="store_true",
                   help="with --cli-commit-every: also build the CLI's way with the merge policy of before (tiers "
                   "only, no cap on segments searched on their own) and time it in the 'before' columns")
    p.add_argument("--rounds", type=int, default=1,
                   help="time every mode this many times per index, alternating the indexes; p50/p95 are over "
                   "all rounds' queries, and the CLI-built table lists each round's ratio (one round's p50 of "
                   "200 queries moves by ~10%% between runs on shared cores)")
    p.add_argument("--mean-tokens", type=int, default=100,
                   help="mean token vectors per passage (bench/synthetic.py TokenCorpus.mean_len; MIRACL-like "
                   "passages have a median of ~25 words, ~40 tokens)")
    p.add_argument("--cli-only", action="store_true",
                   help="with --cli-commit-every: build and time only the CLI-built index (no optimized one; "
                   "its figures go in the main table)")
    p.add_argument("--build-only", action="store_true",
                   help="build (or resume building) the indexes and stop, without timing: a long build run in "
                   "slices, e.g. under `timeout`, resumes from its last commit")
    p.add_argument("--components", default="dense,sparse,multivec",
                   help="components of the synthetic indexes (e.g. dense,sparse: a cheaper build for those modes)")
    p.add_argument("--work-dir", type=Path, default=ROOT / "bench" / "out")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "query_latency.json")
    args = p.parse_args(argv)

    import m3search

    components = tuple(args.components.split(","))
    tag = "" if set(components) == {"dense", "sparse", "multivec"} else "-" + "+".join(components)
    if args.mean_tokens != 100 and "multivec" in components:
        tag += f"-t{args.mean_tokens}"
    if args.cli_only and not args.cli_commit_every:
        p.error("--cli-only needs --cli-commit-every")
    path = args.work_dir / f"latency-n{args.n}-d{args.dim}-s{args.seed}{tag}.m3s"
    if not args.cli_only:
        build_index(path, args.n, args.dim, args.seed, args.chunk, components=components,
                    mean_tokens=args.mean_tokens)

    cli_path = None
    if args.cli_commit_every:
        cli_path = args.work_dir / f"latency-n{args.n}-d{args.dim}-s{args.seed}{tag}-commit{args.cli_commit_every}.m3s"
        build_s = {"cli": build_index(cli_path, args.n, args.dim, args.seed, args.chunk,
                                      commit_every=args.cli_commit_every, components=components,
                                      mean_tokens=args.mean_tokens)}
        if args.tiers_only_baseline:
            from m3search.indexes.merge_policy import TieredMergePolicy

            base_path = cli_path.with_name(cli_path.stem + "-tiers.m3s")
            build_s["tiers_only"] = build_index(base_path, args.n, args.dim, args.seed, args.chunk,
                                                commit_every=args.cli_commit_every, components=components,
                                                merge_policy=TieredMergePolicy(max_searched_alone=10**9),
                                                mean_tokens=args.mean_tokens)
    if args.build_only:
        return {}
    queries = make_queries(args.n, args.dim, args.seed, args.queries, args.mean_tokens)
    encode = None if args.no_encode else measure_encode(min(args.queries, 95), args.batch)
    if args.cli_only:  # the CLI-built index alone, timed as the main one
        path, cli_path = cli_path, None

    results, cli_results, base_results, cli_info, base_info = {}, {}, {}, None, None
    base_path = base_path if cli_path and args.tiers_only_baseline else None
    with m3search.open_index(path) as index, (m3search.open_index(cli_path) if cli_path else _null()) as cli, \
            (m3search.open_index(base_path) if base_path else _null()) as base:
        info = index.info()
        cli_info = cli.info() if cli is not None else None
        base_info = base.info() if base is not None else None
        for mode in args.modes.split(","):
            print(f"  timing {mode}", file=sys.stderr, flush=True)
            # the two indexes alternate per mode (and round), so machine load shifts hit both alike
            for _ in range(args.rounds):
                results[mode] = pooled(results.get(mode), measure_mode(index, queries, mode, args.k, args.batch))
                if cli is None:
                    continue
                cli_results[mode] = pooled(cli_results.get(mode),
                                           measure_mode(cli, queries, mode, args.k, args.batch))
                if args.per_segment_baseline or args.old_dense_baseline:
                    with (per_segment_search() if args.per_segment_baseline else contextlib.nullcontext()), \
                            (old_dense_search() if args.old_dense_baseline else contextlib.nullcontext()):
                        base_results[mode] = pooled(base_results.get(mode),
                                                    measure_mode(cli, queries, mode, args.k, args.batch))
                if base is not None:
                    base_results[mode] = pooled(base_results.get(mode),
                                                measure_mode(base, queries, mode, args.k, args.batch))
            if encode is not None:
                enc = np.asarray(encode["times_s"])
                search = np.asarray(results[mode]["search_times_s"])
                total = search + np.resize(enc, len(search))  # pair each search with one measured encode
                results[mode]["end_to_end"] = percentiles(total)

    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_avg_end": os.getloadavg(),
        "index": {"n_docs": info["n_docs"], "dim": args.dim, "n_segments": info["n_segments"],
                  "segments": [seg["n_docs"] for seg in info["segments"]], "mean_tokens": args.mean_tokens,
                  "built": (f"CLI's way: a commit every {args.cli_commit_every} passages, default merge policy, "
                            "no optimize" if args.cli_only else "bulk load, optimized"),
                  "bytes": {kind: c["bytes"] for kind, c in info["components"].items()},
                  "total_bytes": info["total_bytes"],
                  "configs": {kind: c["config"] for kind, c in info["components"].items()}},
        "k": args.k, "n_queries": args.queries, "batch": args.batch, "rounds": args.rounds,
        "encode": {key: v for key, v in (encode or {}).items() if key != "times_s"} or None,
        "modes": {m: {key: v for key, v in r.items() if key != "search_times_s"} for m, r in results.items()},
    }
    if cli_info is not None:
        report["cli_built"] = {
            "commit_every": args.cli_commit_every, "n_segments": cli_info["n_segments"],
            "total_bytes": cli_info["total_bytes"],
            "bytes": {kind: c["bytes"] for kind, c in cli_info["components"].items()},
            "modes": {m: {key: v for key, v in r.items() if key != "search_times_s"} for m, r in cli_results.items()},
            "per_segment_modes": {m: {key: v for key, v in r.items() if key != "search_times_s"}
                                  for m, r in base_results.items()},
            "segments": [seg["n_docs"] for seg in cli_info["segments"]],
            "dense_structures": (cli_info["components"].get("dense") or {}).get("fidelity", {}).get("structure"),
            "build_s": build_s,
            "baseline_segments": [seg["n_docs"] for seg in base_info["segments"]] if base_info else None,
            "baseline_dense_structures": ((base_info["components"].get("dense") or {}).get("fidelity", {})
                                          .get("structure") if base_info else None),
            "baseline": ("per-segment search" if args.per_segment_baseline else "")
            + (" + " if args.per_segment_baseline and args.old_dense_baseline else "")
            + ("dense segments < 100k flat, searched one by one" if args.old_dense_baseline else "")
            + ("merge policy of before: tiers only" if args.tiers_only_baseline else ""),
            "load_avg": os.getloadavg(),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    args.out.with_suffix(".md").write_text(markdown(report) + "\n")
    print(markdown(report))
    return report


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def markdown(report: dict) -> str:
    enc, idx = report["encode"], report["index"]
    mv = idx["configs"].get("multivec")
    head = (f"{idx['n_docs']:,} passages, {idx['dim']}-d "
            + (f"dense and token vectors (multivec {mv['compression']})" if mv else
               f"dense vectors, components {', '.join(idx['configs'])}")
            + (f", ~{idx['mean_tokens']} token vectors per passage" if mv and idx.get("mean_tokens") else "")
            + (f", built the {idx['built']}" if str(idx.get("built", "")).startswith("CLI") else "")
            + f", {idx['n_segments']} segment(s)" + (f" {idx['segments']}" if idx.get("segments") else "") + ", "
            f"{idx['total_bytes'] / 2**30:.2f} GiB on disk; {report['n_queries']} queries"
            + (f" x {report['rounds']} rounds" if report.get("rounds", 1) > 1 else "") + f", k={report['k']}, "
            f"default depths; {report['machine']['cpus']} CPU cores")
    lines = [head, "",
             "| mode | search p50 / p95 (ms) | candidates | re-score | fuse + fetch | end-to-end p50 / p95 (ms) "
             f"| search throughput (q/s, batches of {report['batch']}) |",
             "|---|---|---|---|---|---|---|"]
    for mode, r in report["modes"].items():
        st = r["stages_mean_ms"]
        e2e = r.get("end_to_end")
        lines.append(
            f"| {mode} | {r['search']['p50_ms']:.1f} / {r['search']['p95_ms']:.1f} | {st['candidates']:.1f} | "
            f"{st['rescore']:.1f} | {st['fuse'] + st['fetch']:.1f} | "
            + (f"{e2e['p50_ms']:.1f} / {e2e['p95_ms']:.1f}" if e2e else "-")
            + f" | {r['batch_qps']:.0f} |"
        )
    lines += ["", "Stage columns are mean ms per single query. Search excludes encoding; end-to-end adds the "
              "encoder's time for one query."]
    if report.get("load_avg_end"):
        lines += [f"Load average (1, 5, 15 min) at the end: {', '.join(f'{x:.2f}' for x in report['load_avg_end'])}."]
    cli = report.get("cli_built")
    rounds = report.get("rounds", 1)
    if cli:
        base = cli.get("per_segment_modes") or {}
        lines += ["", f"Built the CLI's way (a commit every {cli['commit_every']:,} passages, default merge policy, "
                  f"no optimize): {cli['n_segments']} segment(s) {cli.get('segments', '')}, dense structures "
                  f"{cli.get('dense_structures', '?')}, {cli['total_bytes'] / 2**30:.2f} GiB"
                  + (f", built in {cli['build_s']['cli']:.0f} s" if (cli.get("build_s") or {}).get("cli") else "")
                  + (f" (before, tiers only: segments {cli['baseline_segments']}, dense structures "
                     f"{cli['baseline_dense_structures']}"
                     + (f", built in {cli['build_s']['tiers_only']:.0f} s" if cli["build_s"].get("tiers_only") else "")
                     + ")" if cli.get("baseline_segments") else "")
                  + "; the same "
                  "queries, timed alternately with the optimized index"
                  + (f"; load average at the end {cli['load_avg'][0]:.1f}" if cli.get("load_avg") else "") + ".", "",
                  "| mode | optimized p50 / p95 (ms) | CLI-built p50 / p95 (ms) | CLI-built / optimized (p50 / p95) |"
                  + (" each round's p50 ratio |" if rounds > 1 else "")
                  + (f" CLI-built, before ({cli.get('baseline') or 'per-segment search'}) p50 / p95 (ms) | before / optimized (p50) |" if base else ""),
                  "|---|---|---|---|" + ("---|" if rounds > 1 else "") + ("---|---|" if base else "")]
        for mode, r in cli["modes"].items():
            o = report["modes"][mode]["search"]
            c = r["search"]
            line = (f"| {mode} | {o['p50_ms']:.1f} / {o['p95_ms']:.1f} | {c['p50_ms']:.1f} / {c['p95_ms']:.1f} | "
                    f"{c['p50_ms'] / o['p50_ms']:.2f}x / {c['p95_ms'] / o['p95_ms']:.2f}x |")
            if rounds > 1:
                per_round = [b / a for a, b in zip(report["modes"][mode]["round_p50_ms"], r["round_p50_ms"])]
                line += " " + ", ".join(f"{x:.2f}x" for x in per_round) + " |"
            if mode in base:
                b = base[mode]["search"]
                line += f" {b['p50_ms']:.1f} / {b['p95_ms']:.1f} | {b['p50_ms'] / o['p50_ms']:.2f}x |"
            lines.append(line)
    if enc:
        lines += [f"Encode ({enc['model']} on this CPU, one query): p50 {enc['single']['p50_ms']:.1f} ms, p95 "
                  f"{enc['single']['p95_ms']:.1f} ms; batched: {enc['batch_qps']:.0f} queries/s."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
