"""FastPLAID (the `fast-plaid` package, in its own environment: it pins its own torch) on the same data and
queries as bench/index_bench_multivec_search.py, for the recall-vs-QPS comparison.

    /work/venvs/fastplaid/bin/python bench/fastplaid_peer.py --docs ENCODING_BATCH_DIR --export q.npz --out X.json

Documents: an EncodedBatch folder's multivec.npy / multivec_lengths.npy (read with numpy only, so this
script needs nothing from m3search), or --synthetic N,D,MEAN_LEN,SEED: the documents of bench/synthetic.py
(numpy only) that bench/multivec_big.py indexes, regenerated here.
--kmeans-k sets FastPLAID's number of centroids (its default, 2^floor(log2(16 sqrt(T))), is 32768 at 10M
tokens; the build assigns every token to every centroid, T x K x d); the build time is reported split into
k-means and the rest (assignment, residual codes, lists). Queries and the exact-MaxSim top-100: the .npz written by
index_bench_multivec_search.py --export. Reports per setting: bytes per token on disk, build time,
single-query p50/p95 latency, QPS, recall@10/@100 against exact MaxSim.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from fast_plaid import search
from fast_plaid.search import fast_plaid as fpm


def recall(found, top, k):
    return float(np.mean([len(set(f[:k]) & set(t[:k].tolist())) / k for f, t in zip(found, top)]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=Path, default=None)
    p.add_argument("--synthetic", default=None, help="N,D,MEAN_LEN,SEED of bench/synthetic.py's TokenCorpus")
    p.add_argument("--kmeans-k", type=int, default=None, help="centroids (default: FastPLAID's own rule)")
    p.add_argument("--settings", default="8:256,8:1024,16:4096,32:4096", help="N_IVF_PROBE:N_FULL_SCORES,...")
    p.add_argument("--export", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--nbits", default="2,4")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.synthetic:
        import sys
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from synthetic import TokenCorpus
        n, d, mean_len, seed = (int(v) for v in a.synthetic.split(","))
        x, lengths = TokenCorpus(n, d=d, seed=seed, mean_len=mean_len).docs(0, n)
    else:
        x = np.load(a.docs / "multivec.npy", mmap_mode="r")
        lengths = np.load(a.docs / "multivec_lengths.npy")
    off = np.concatenate([[0], np.cumsum(lengths)])
    docs = [torch.from_numpy(np.array(x[off[i]:off[i + 1]], np.float32)) for i in range(len(lengths))]
    del x
    kmeans_s = []
    orig_kmeans = fpm.compute_kmeans

    def timed_kmeans(*args, **kw):  # FastPLAID's create calls this module-level function: time it, set K
        if a.kmeans_k:
            kw["num_partitions"] = a.kmeans_k
        t = time.perf_counter()
        out = orig_kmeans(*args, **kw)
        kmeans_s.append((time.perf_counter() - t, int(out.shape[0])))
        return out
    fpm.compute_kmeans = timed_kmeans
    ex = np.load(a.export)
    q_off = np.concatenate([[0], np.cumsum(ex["q_lengths"])])
    queries = [torch.from_numpy(ex["q_vecs"][q_off[i]:q_off[i + 1]]) for i in range(len(ex["q_lengths"]))]
    rows = []
    for nbits in [int(b) for b in a.nbits.split(",")]:
        folder = Path(tempfile.mkdtemp(prefix="fastplaid-"))
        try:
            start = time.perf_counter()
            index = search.FastPlaid(index=str(folder / "ix"), device="cpu")
            index.create(documents_embeddings=docs, nbits=nbits)
            build_s = time.perf_counter() - start
            size = sum(f.stat().st_size for f in (folder / "ix").rglob("*") if f.is_file())
            print(json.dumps({"nbits": nbits, "build_s": build_s, "kmeans_s": kmeans_s[-1][0], "centroids": kmeans_s[-1][1],
                              "bytes_per_token": size / int(off[-1])}), flush=True)
            for n_probe, n_full in [tuple(int(v) for v in s.split(":")) for s in a.settings.split(",")]:
                index.search(queries_embeddings=[queries[0]], top_k=100, n_ivf_probe=n_probe, n_full_scores=n_full,
                             show_progress=False)
                lat, found = [], []
                for q in queries:
                    t = time.perf_counter()
                    res = index.search(queries_embeddings=[q], top_k=100, n_ivf_probe=n_probe,
                                       n_full_scores=n_full, show_progress=False)
                    lat.append(time.perf_counter() - t)
                    found.append([d for d, _ in res[0]])
                lat = np.asarray(lat)
                rows.append({"method": f"FastPLAID nbits={nbits} n_ivf_probe={n_probe} n_full_scores={n_full}",
                             "bytes_per_token": size / int(off[-1]), "build_s": build_s,
                             "kmeans_s": kmeans_s[-1][0], "centroids": kmeans_s[-1][1],
                             "p50_ms": 1e3 * float(np.median(lat)), "p95_ms": 1e3 * float(np.quantile(lat, 0.95)),
                             "qps": float(len(lat) / lat.sum()), "recall@10": recall(found, ex["ref_top"], 10),
                             "recall@100": recall(found, ex["ref_top"], 100)})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            shutil.rmtree(folder)  # ours: the temporary folder made above
    a.out.write_text(json.dumps({"rows": rows, "torch": torch.__version__, "threads": a.threads}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
