"""Does a codec's ranking loss on real encodings come from token norms? Offline check for #11.

Scores every document of one miracl_like_small language by exact MaxSim over token vectors reconstructed by
each codec (as decoded, and rescaled to unit norm), against fp16 MaxSim and the qrels: nDCG@10 and top-10
agreement. Reads a dev-set encoding cache entry written by bench/run_eval.py --cache-dir.

    python bench/multivec_rescale_check.py de /work/cache/encodings/v1/<key> rpq48 pq48 rpq96
"""
import json
import sys
from pathlib import Path

import numpy as np
from m3search.indexes.multivec.codecs import Codec
from m3search.evaluation.metrics import evaluate
from m3search.evaluation.datasets._files import read_qrels
import m3search.encoder as E
lang, key = sys.argv[1], sys.argv[2]
B = f"{key}/batch/"
mv = np.load(B+"multivec.npy").astype(np.float32); L = np.load(B+"multivec_lengths.npy")
off = np.zeros(len(L)+1, np.int64); np.cumsum(L, out=off[1:])
entry = json.load(open(f"{key}/entry.json")); docids = entry["docids"]
D = str(Path(__file__).resolve().parents[2] / "shared/data/eval/miracl_like_small" / lang) + "/"
qrels = read_qrels(D+"qrels.dev.tsv")
topics = dict(l.rstrip("\n").split("\t",1) for l in open(D+"topics.dev.tsv"))
qids = [q for q in topics if q in qrels]
enc = E.load_encoder("m3search-small")
qb = enc.encode([topics[q] for q in qids], kind="query")
qoff = np.zeros(len(qids)+1, np.int64); np.cumsum(qb.multivec_lengths, out=qoff[1:])
doc_of = np.repeat(np.arange(len(L)), L)
def maxsim(X):
    runs = {}
    for i, q in enumerate(qids):
        s = qb.multivec[qoff[i]:qoff[i+1]] @ X.T  # (lq, T)
        m = np.maximum.reduceat(s, off[:-1], axis=1)  # (lq, n)
        sc = m.sum(0)
        top = np.argsort(-sc)[:100]
        runs[q] = {docids[j]: float(sc[j]) for j in top}
    return runs
def ndcg(runs): return 100*evaluate(runs, {q: qrels[q] for q in qids}, ["ndcg@10"])["ndcg@10"]
ex = maxsim(mv); print("fp16", round(ndcg(ex),2))
rng = np.random.default_rng(0)
sample = mv[rng.choice(len(mv), min(len(mv), 200000), replace=False)]
def agree(r):
    return np.mean([len(set(sorted(r[q], key=r[q].get, reverse=True)[:10]) & set(sorted(ex[q], key=ex[q].get, reverse=True)[:10]))/10 for q in qids])
for name in sys.argv[3:]:
    c = Codec.train(name, sample, coarse_k=4096 if name.startswith("r") else 1024)
    X = c.decode(c.encode(mv))
    r = maxsim(X); print(name, "raw", round(ndcg(r),2), "agree", round(agree(r),3))
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    r = maxsim(Xn); print(name, "rescaled", round(ndcg(r),2), "agree", round(agree(r),3))
    if name.startswith("r"):
        from m3search.indexes.multivec.codecs import coarse_ids
        codes = c.encode(mv); cid = coarse_ids(codes); C = c.arrays["coarse"][cid]
        R = X - C
        approx = np.sqrt((C*C).sum(1) + (R*R).sum(1))
        r = maxsim(X / approx[:, None]); print(name, "approx-rescaled", round(ndcg(r),2), "agree", round(agree(r),3))
