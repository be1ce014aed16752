"""Offline check for #11: how much of the codes' ranking loss on long documents is the token norms?

Scores every document of one mldr_like language by exact MaxSim over the token vectors reconstructed by each
codec (as decoded without a norm, and rescaled to the token's norm, which the norm byte stores), against
fp32 MaxSim and the qrels: nDCG@10, for two codec training seeds (the spread between seeds is large at
41-50 queries). Reads a dev-set encoding cache entry written by bench/run_eval.py --cache-dir.

    python bench/multivec_norm_check.py zh /work/cache/encodings/v1/<key> rpq48 rpq96 ropq48
"""
import json, sys, time
import numpy as np
from m3search.indexes.multivec.codecs import Codec
from m3search.indexes.multivec.config import coarse_k_for
from m3search.evaluation.metrics import evaluate
from m3search.evaluation.datasets._files import read_qrels
import m3search.encoder as E
lang, key = sys.argv[1], sys.argv[2]
B = f"{key}/batch/"
mv = np.load(B+"multivec.npy").astype(np.float32); L = np.load(B+"multivec_lengths.npy")
off = np.zeros(len(L)+1, np.int64); np.cumsum(L, out=off[1:])
docids = json.load(open(f"{key}/entry.json"))["docids"]
D = f"/work/shared/data/eval/mldr_like/{lang}/"
qrels = read_qrels(D+"qrels.dev.tsv")
qs = [json.loads(l) for l in open(D+"queries.dev.jsonl")]
qids = [q["query_id"] for q in qs if q["query_id"] in qrels]; text = {q["query_id"]: q["query"] for q in qs}
qb = E.load_encoder("m3search-small").encode([text[q] for q in qids], kind="query")
qoff = np.zeros(len(qids)+1, np.int64); np.cumsum(qb.multivec_lengths, out=qoff[1:])
def nd(R):
    runs = {}
    for i, q in enumerate(qids):
        qv = qb.multivec[qoff[i]:qoff[i+1]]
        sc = np.maximum.reduceat(qv @ R.T, off[:-1], axis=1).sum(0)
        runs[q] = {docids[j]: float(sc[j]) for j in np.argsort(-sc)[:100]}
    return round(100*evaluate(runs, {q: qrels[q] for q in qids}, ["ndcg@10"])["ndcg@10"], 2)
print(lang, "docs", len(L), "tokens", len(mv), "fp32", nd(mv), flush=True)
rng = np.random.default_rng(1234)
sample = mv[rng.choice(len(mv), min(len(mv), 200000), replace=False)]
for name in sys.argv[3:]:
    for seed in (1234, 7):
        t = time.time()
        c = Codec.train(name, sample, coarse_k=coarse_k_for("auto", len(mv), 200000), seed=seed)
        X = c.decode(c.encode(mv))
        raw = nd(X); X /= np.linalg.norm(X, axis=1, keepdims=True)
        print(lang, name, "seed", seed, "raw", raw, "rescaled", nd(X), f"{time.time()-t:.0f}s", flush=True)
