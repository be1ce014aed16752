"""What background merges change for a writer that commits periodically (the CLI's path).

    flock /tmp/m3search-heavy.lock python bench/commit_latency.py --n 20000 --dim 128 --commit-every 1000

Writes the synthetic corpus of bench/query_latency.py (precomputed representations, default components)
twice, alternating per round: merges inside `commit()` (background_merge=False, as before) and merges in
the background of the commit (the default). The encoder is stood in for by --encode-ms-per-doc of matrix
products per passage on the calling thread (it competes for the cores as the encoder would; the real
m3search-small encodes ~5 passages/s here, i.e. 200 ms per passage, so the default is mild). Reports per variant: how long each `commit()` call blocks the
caller (p50 / p95 / max), the wall time of the whole build including the final close (which waits for
merges), the segments a reader sees right after each commit (mean / max) and at the end. Medians over
--rounds rounds. Writes bench/results/commit_latency.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from query_latency import VOCAB, WORDS, synthetic_identity  # noqa: E402


def corpus(n: int, d: int, seed: int, chunk: int):
    from synthetic import DenseCorpus, TokenCorpus
    from synthetic_sparse import make_corpus, make_vocabulary

    from m3search.types import EncodedBatch

    dense, tokens = DenseCorpus(n, d=d, seed=seed), TokenCorpus(n, d=d, seed=seed)
    sparse = make_corpus(n, make_vocabulary(VOCAB, seed=seed), seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        vecs, lengths = tokens.docs(lo, hi)
        out.append(([f"p{i}" for i in range(lo, hi)], EncodedBatch(dense.docs(lo, hi), sparse[lo:hi], vecs, lengths),
                    [{"text": " ".join(rng.choice(WORDS, size=60))} for _ in range(lo, hi)]))
    return out


def encode_work(seconds: float) -> None:
    """CPU work standing in for the encoder: float32 matrix products until `seconds` have passed."""
    a = np.ones((256, 256), np.float32)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = (a @ a) * np.float32(1e-3)


def build(path: Path, parts, d: int, background: bool, encode_s: float) -> dict:
    from m3search.indexes.index import Index

    shutil.rmtree(path, ignore_errors=True)
    commits, seen = [], []
    start = time.perf_counter()
    index = Index.create(path, synthetic_identity(d), model=None, background_merge=background)
    for ids, batch, docs in parts:
        encode_work(encode_s * len(ids))
        index.add(ids, batch, docs)
        t = time.perf_counter()
        index.commit()
        commits.append(time.perf_counter() - t)
        seen.append(len(index._committed_state().segments))
    t = time.perf_counter()
    index.close()
    close_s = time.perf_counter() - t
    wall = time.perf_counter() - start
    with Index.open(path) as again:
        final = len(again._committed_state().segments)
    shutil.rmtree(path, ignore_errors=True)
    a = np.asarray(commits) * 1000
    return {"commit_p50_ms": float(np.percentile(a, 50)), "commit_p95_ms": float(np.percentile(a, 95)),
            "commit_max_ms": float(a.max()), "wall_s": wall, "close_s": close_s,
            "segments_mean": float(np.mean(seen)), "segments_max": int(max(seen)), "segments_final": final}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--commit-every", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--encode-ms-per-doc", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", type=Path, default=ROOT / "bench" / "out")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "commit_latency.md")
    args = p.parse_args(argv)
    parts = corpus(args.n, args.dim, args.seed, args.commit_every)
    runs = {"merges in commit()": [], "background merges": []}
    for r in range(args.rounds):
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]
        for name in order:
            res = build(args.work_dir / "commit-latency.m3s", parts, args.dim, background=name == "background merges",
                        encode_s=args.encode_ms_per_doc / 1000)
            runs[name].append(res)
            print(f"  round {r} {name}: {res}", file=sys.stderr, flush=True)
    keys = ("commit_p50_ms", "commit_p95_ms", "commit_max_ms", "wall_s", "close_s", "segments_mean",
            "segments_max", "segments_final")
    lines = [f"{args.n:,} synthetic passages x {args.dim}-d, default components, a commit every "
             f"{args.commit_every:,}, encoder stood in for by {args.encode_ms_per_doc:g} ms of CPU work per passage; medians of {args.rounds} rounds, "
             f"variants alternating; {os.cpu_count()} CPU cores, load average at the end "
             f"{os.getloadavg()[0]:.1f}", "",
             "| variant | commit() p50 / p95 / max (ms) | build wall (s) | close (s) | segments after each commit "
             "(mean / max) | segments at the end |", "|---|---|---|---|---|---|"]
    for name, rs in runs.items():
        m = {k: float(np.median([r[k] for r in rs])) for k in keys}
        lines.append(f"| {name} | {m['commit_p50_ms']:.0f} / {m['commit_p95_ms']:.0f} / {m['commit_max_ms']:.0f} | "
                     f"{m['wall_s']:.1f} | {m['close_s']:.1f} | {m['segments_mean']:.1f} / {m['segments_max']:.0f} | "
                     f"{m['segments_final']:.0f} |")
    md = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
