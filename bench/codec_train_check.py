"""Codec training: time and quality of the multi-vector codec as `m3search index` trains it, under several
training settings, on a cached real encoding (one miracl_like_small language).

For each setting: train the index's default codec (rpq96 + norm byte at 384-d) the way MultivecComponent does (a sample
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
SETTINGS = {  # name -> Codec.train keyword arguments; "assign_k": codecs._HNSW_ASSIGN_K for that row
    "s4 (HNSW assignment from 2,048 centroids, PQ on 65,536 residuals)": {"assign_k": 2048},
    "exact (flat) assignment below 4,096 centroids": {"assign_k": 4096},
    "flat assignment, PQ on 32,768 residuals": {"assign_k": 4096, "max_pq_points": 32_768},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("lang")
    ap.add_argument("entry", type=Path)
    ap.add_argument("--n-tokens", type=int, default=None, help="use the first N tokens' documents only")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[DEFAULTS["seed"]], help="codec seeds (rows are means)")
    ap.add_argument("--only", type=int, nargs="*", default=None, help="indices of SETTINGS to run")
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
             f"Codec as the component trains it (norm byte: {DEFAULTS['rescale']}); seeds {args.seeds}, rows are means "
             "(per-seed nDCG in the last column). Encode s: every token of the corpus.", "",
             "| training | train s | encode s | nDCG@10 | top-10 agreement with fp32 | mean cosine (held out) | nDCG per seed |",
             "|---|---:|---:|---:|---:|---:|---|"]
    from m3search.indexes.multivec import codecs as codecs_module

    default_assign_k = codecs_module._HNSW_ASSIGN_K
    for i, (label, kwargs) in enumerate(SETTINGS.items()):
        if args.only is not None and i not in args.only:
            continue
        kwargs = dict(kwargs)
        codecs_module._HNSW_ASSIGN_K = kwargs.pop("assign_k", default_assign_k)
        rows = []
        for seed in args.seeds:
            t0 = time.perf_counter()
            codec = Codec.train(name, sample, coarse_k=k, seed=seed, store_norm=DEFAULTS["rescale"], **kwargs)
            t1 = time.perf_counter()
            codes = codec.encode(mv)
            t2 = time.perf_counter()
            r = maxsim(codec.decode(codes))
            rows.append((t1 - t0, t2 - t1, ndcg(r), agree(r), codec.fidelity["mean_cosine"]))
        m = np.mean(rows, axis=0)
        lines.append(f"| {label} | {m[0]:.1f} | {m[1]:.1f} | {m[2]:.2f} | {m[3]:.3f} | {m[4]:.4f} | "
                     + " / ".join(f"{row[2]:.2f}" for row in rows) + " |")
        print(lines[-1], flush=True)
    codecs_module._HNSW_ASSIGN_K = default_assign_k
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
