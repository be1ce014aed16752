"""Codec training: time and quality of the multi-vector codec as `m3search index` trains it, under several
training settings, on a cached real encoding (one miracl_like_small language).

For each setting: train the index's default codec (rpq48 at 384-d) the way MultivecComponent does (a sample
of at most `train_tokens` tokens, coarse_k from coarse_k_for), time it, encode + decode every token, and
score every document by exact MaxSim over the reconstructions: nDCG@10 against the qrels and top-10
agreement with fp32 MaxSim. Settings are Codec.train keyword arguments (the old defaults are given
explicitly, so old and new are compared in one run).

    flock /tmp/m3search-heavy.lock python bench/codec_train_check.py de /work/cache/encodings/v1/<key>
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from m3search.evaluation.datasets._files import read_qrels
from m3search.evaluation.metrics import evaluate
from m3search.indexes.multivec.codecs import Codec
from m3search.indexes.multivec.config import DEFAULTS, coarse_k_for, resolve_compression

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {  # name -> Codec.train keyword arguments
    "old (k-means 10 it., residuals of every fit token)": {"coarse_niter": 10, "max_pq_points": None},
    "new (k-means 4 it., PQ on 65,536 residuals)": {},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("lang")
    ap.add_argument("entry", type=Path)
    ap.add_argument("--n-tokens", type=int, default=None, help="use the first N tokens' documents only")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    batch = args.entry / "batch"
    mv = np.load(batch / "multivec.npy").astype(np.float32)
    lengths = np.load(batch / "multivec_lengths.npy")
    docids = json.loads((args.entry / "entry.json").read_text())["docids"]
    if args.n_tokens:
        n_docs = int(np.searchsorted(np.cumsum(lengths), args.n_tokens)) + 1
        lengths, docids = lengths[:n_docs], docids[:n_docs]
        mv = mv[: int(lengths.sum())]
    off = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=off[1:])
    data = ROOT.parent / "shared" / "data" / "eval" / "miracl_like_small" / args.lang
    qrels = read_qrels(str(data / "qrels.dev.tsv"))
    topics = dict(line.rstrip("\n").split("\t", 1) for line in open(data / "topics.dev.tsv", encoding="utf-8"))
    qids = [q for q in topics if q in qrels]
    from m3search.encoder import load_encoder

    qb = load_encoder("m3search-small").encode([topics[q] for q in qids], kind="query")
    qoff = np.zeros(len(qids) + 1, np.int64)
    np.cumsum(qb.multivec_lengths, out=qoff[1:])

    def maxsim(x: np.ndarray) -> dict:
        runs = {}
        for i, q in enumerate(qids):
            s = qb.multivec[qoff[i] : qoff[i + 1]] @ x.T
            sc = np.maximum.reduceat(s, off[:-1], axis=1).sum(0)
            top = np.argsort(-sc)[:100]
            runs[q] = {docids[j]: float(sc[j]) for j in top}
        return runs

    def ndcg(runs: dict) -> float:
        return 100 * evaluate(runs, {q: qrels[q] for q in qids}, ["ndcg@10"])["ndcg@10"]

    exact = maxsim(mv)
    top_exact = {q: set(sorted(exact[q], key=exact[q].get, reverse=True)[:10]) for q in qids}

    def agree(r: dict) -> float:
        return float(np.mean([len(set(sorted(r[q], key=r[q].get, reverse=True)[:10]) & top_exact[q]) / 10 for q in qids]))

    name = resolve_compression("auto", mv.shape[1])
    t_tokens = len(mv)
    rng = np.random.default_rng(DEFAULTS["seed"])  # as MultivecComponent._build samples
    take = np.sort(rng.choice(t_tokens, size=min(t_tokens, DEFAULTS["train_tokens"]), replace=False))
    sample = mv[take]
    k = coarse_k_for(DEFAULTS["coarse_k"], t_tokens, len(sample))
    lines = [f"# Multi-vector codec training on real encodings: miracl_like_small {args.lang}, {len(lengths)} passages, "
             f"{t_tokens} tokens ({name}, {k} coarse centroids)", "",
             f"fp32 MaxSim over every document: nDCG@10 **{ndcg(exact):.2f}** ({len(qids)} queries).", "",
             "| training | train s | nDCG@10 | top-10 agreement with fp32 | mean cosine (held out) |", "|---|---:|---:|---:|---:|"]
    for label, kwargs in SETTINGS.items():
        t0 = time.perf_counter()
        codec = Codec.train(name, sample, coarse_k=k, seed=DEFAULTS["seed"], **kwargs)
        dt = time.perf_counter() - t0
        x = codec.decode(codec.encode(mv))
        r = maxsim(x)
        lines.append(f"| {label} | {dt:.1f} | {ndcg(r):.2f} | {agree(r):.3f} | {codec.fidelity['mean_cosine']:.4f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
