"""Multi-vector (token store) benchmark: every compression setting against exact MaxSim, in one run.

BGE-M3-shaped synthetic token vectors (bench/synthetic.py: 1024-d, ~100 tokens per document). 100k documents
are 10M token vectors, 40 GB as float32, so nothing holds them all: documents are generated in chunks, each
chunk is encoded into one segment per setting (the codec is trained on the first chunk and reused, as in an
index) and the chunk segments are merged (code concatenation). Exact MaxSim is computed while the chunk is
in memory, only for each query's re-ranking candidates: the 1000 documents whose mean token vector is closest
to the query's (a cheap first stage), kept as a running top-1000 over the chunks.

Reported per setting: bytes per token, build time (training + encoding + merge), score_pairs latency for
one query's 1000 candidates (lookup tables and decompress + matmul; 1 thread, median and p95), top-10
agreement with exact MaxSim re-ranking of the same candidates, and the codec's reconstruction fidelity.

    flock /tmp/m3search-heavy.lock python -m bench.index_bench_multivec --n 100000
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bench.harness import merged_options, plot_axes, save_results
from bench.synthetic import BLOCK, TokenCorpus
from m3search.indexes.multivec import MultivecComponent
from m3search.indexes.multivec.maxsim import maxsim_decoded
from m3search.types import EncodedBatch

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = ["fp16", "sq8", "sq4", "pq256", "pq128", "pq64", "rpq128", "rpq256"]
DEFAULTS = {"n": 100_000, "d": 1024, "queries": 100, "candidates": 1000, "settings": SETTINGS, "seed": 0,
            "chunk_blocks": 4, "threads": 2, "out": str(RESULTS), "tmp": None, "train_tokens": 200_000}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=DEFAULTS["n"], help="documents")
    p.add_argument("--d", type=int, default=DEFAULTS["d"])
    p.add_argument("--queries", type=int, default=DEFAULTS["queries"])
    p.add_argument("--candidates", type=int, default=DEFAULTS["candidates"], help="re-ranking depth per query")
    p.add_argument("--settings", nargs="+", default=DEFAULTS["settings"], help="compression settings")
    p.add_argument("--threads", type=int, default=DEFAULTS["threads"], help="threads for training/encoding")
    p.add_argument("--train-tokens", type=int, default=DEFAULTS["train_tokens"])
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--out", default=DEFAULTS["out"])
    p.add_argument("--tmp", default=None, help="folder for the segments (default: a temporary folder)")
    p.add_argument("--tag", default="", help="suffix of the result files")
    return p.parse_args(argv)


def _batch(vecs: np.ndarray, lengths: np.ndarray) -> EncodedBatch:
    n = len(lengths)
    return EncodedBatch(dense=np.zeros((n, 1), np.float32), sparse=sp.csr_matrix((n, 1), dtype=np.float32),
                        multivec=vecs, multivec_lengths=lengths)


class RunningCandidates:
    """Per query, the best `k` documents by first-stage score seen so far, with their exact MaxSim."""

    def __init__(self, q_vecs: np.ndarray, q_off: np.ndarray, q_means: np.ndarray, k: int):
        self.q_vecs, self.q_off, self.q_means, self.k = q_vecs, q_off, q_means, k
        m = len(q_means)
        self.ids = [np.zeros(0, np.int64) for _ in range(m)]
        self.first = [np.zeros(0, np.float32) for _ in range(m)]
        self.exact = [np.zeros(0, np.float32) for _ in range(m)]

    def update(self, lo: int, vecs: np.ndarray, lengths: np.ndarray, means: np.ndarray) -> None:
        off = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=off[1:])
        scores = self.q_means @ means.T
        identity = lambda codes: codes  # noqa: E731 - the chunk holds float vectors already
        for i in range(len(self.q_means)):
            ids = np.concatenate([self.ids[i], lo + np.arange(len(lengths))])
            first = np.concatenate([self.first[i], scores[i]])
            keep = np.argsort(-first, kind="stable")[: self.k]
            new = keep[keep >= len(self.ids[i])] - len(self.ids[i])
            q = self.q_vecs[self.q_off[i] : self.q_off[i + 1]]
            exact_new = maxsim_decoded(q, vecs, off, new, identity)
            exact = np.concatenate([self.exact[i], np.zeros(len(lengths), np.float32)])
            exact[len(self.ids[i]) + new] = exact_new
            self.ids[i], self.first[i], self.exact[i] = ids[keep], first[keep], exact[keep]


def run(args=None) -> dict:
    o = merged_options(args, DEFAULTS)
    log = logging.getLogger("bench.multivec")
    corpus = TokenCorpus(o["n"], o["d"], seed=o["seed"])
    q_vecs, q_len, _ = corpus.queries(o["queries"], seed=o["seed"] + 1)
    q_off = np.zeros(len(q_len) + 1, np.int64)
    np.cumsum(q_len, out=q_off[1:])
    q_means = corpus.doc_means(q_vecs, q_len)
    cands = RunningCandidates(q_vecs, q_off, q_means, o["candidates"])
    settings = list(o["settings"])
    res = {"n": o["n"], "d": o["d"], "n_tokens": int(corpus.lengths.sum()), "queries": o["queries"],
           "candidates": o["candidates"], "threads": {"build": o["threads"], "score": 1}, "rows": []}
    with tempfile.TemporaryDirectory(dir=o["tmp"]) as tmp:
        tmp = Path(tmp)
        comps = {s: MultivecComponent({"compression": s, "threads": o["threads"], "train_tokens": o["train_tokens"]})
                 for s in settings}
        build_s = dict.fromkeys(settings, 0.0)
        segments = {s: [] for s in settings}
        gen_s, chunk = 0.0, o["chunk_blocks"] * BLOCK
        for ci, lo in enumerate(range(0, o["n"], chunk)):
            t0 = time.perf_counter()
            vecs, lengths = corpus.docs(lo, min(o["n"], lo + chunk))
            gen_s += time.perf_counter() - t0
            cands.update(lo, vecs, lengths, corpus.doc_means(vecs, lengths))
            batch = _batch(vecs, lengths)
            for s in settings:
                t0 = time.perf_counter()
                path = tmp / s / f"c{ci}"
                meta = comps[s].build(path, batch, tmp / s / "shared")
                segments[s].append(comps[s].open(path, meta, tmp / s / "shared"))
                build_s[s] += time.perf_counter() - t0
            log.info("chunk %d (docs %d..): generated and encoded; build so far %s", ci, lo,
                     {s: round(v) for s, v in build_s.items()})
            del vecs, batch
        res["generate_s"] = gen_s
        for s in settings:
            t0 = time.perf_counter()
            keep = [np.arange(r.n_docs) for r in segments[s]]
            meta = comps[s].merge(tmp / s / "merged", segments[s], keep, tmp / s / "shared")
            reader = comps[s].open(tmp / s / "merged", meta, tmp / s / "shared")
            build_s[s] += time.perf_counter() - t0
            res["rows"].append(_evaluate(s, reader, cands, q_vecs, q_len, build_s[s]))
            log.info("%s", res["rows"][-1])
            if reader.rescale:  # the same codes read without unit-norm rescaling: what rescaling buys
                plain = MultivecComponent({**comps[s].config, "rescale": False})
                plain = plain.open(tmp / s / "merged", meta, tmp / s / "shared")
                res["rows"].append(_evaluate(f"{s} (no rescale)", plain, cands, q_vecs, q_len, build_s[s]))
                log.info("%s", res["rows"][-1])
                plain.close()
            reader.close()
            for r in segments[s]:
                r.close()
    return res


def _evaluate(setting: str, reader, cands: RunningCandidates, q_vecs, q_len, build_s: float) -> dict:
    agree, err, times = [], [], {"lut": [], "decode": []}
    scorers = ["lut", "decode"] if reader.codec.supports_lut else ["decode"]
    for i, ids in enumerate(cands.ids):
        qv = q_vecs[cands.q_off[i] : cands.q_off[i + 1]]
        one = np.zeros(len(ids), np.int64)
        got = None
        for scorer in scorers:
            t0 = time.perf_counter()
            got = reader.score_pairs(qv, q_len[i : i + 1], one, ids, scorer=scorer, threads=1)
            times[scorer].append(time.perf_counter() - t0)
        exact = cands.exact[i]
        top_exact = set(ids[np.argsort(-exact, kind="stable")[:10]])
        top_got = set(ids[np.argsort(-got, kind="stable")[:10]])
        agree.append(len(top_exact & top_got) / 10)
        err.append(np.abs(got - exact).mean())
    f = reader.fidelity()
    row = {"setting": setting, "bytes_per_token": f["bytes_per_token"],
           "disk_bytes_per_token": f["disk_bytes_per_token"], "fp16_ratio": f["bytes_per_token"] / (2 * reader.dim),
           "build_s": build_s, "top10_agreement": float(np.mean(agree)), "mean_abs_score_error": float(np.mean(err)),
           "mean_cosine": f.get("mean_cosine"), "ip_error_std": f.get("ip_error_std")}
    for scorer in scorers:
        ms = np.array(times[scorer][1:] or times[scorer]) * 1e3  # the first call may compile (numba)
        row[f"{scorer}_p50_ms"], row[f"{scorer}_p95_ms"] = float(np.median(ms)), float(np.percentile(ms, 95))
    return row


def markdown(res: dict) -> str:
    lines = [f"Multi-vector, N={res['n']:,} docs, {res['n_tokens']:,} tokens x {res['d']}, {res['queries']} queries "
             f"x {res['candidates']} candidates\n",
             f"| setting | B/token | x fp16 | build s | score {res['candidates']} cands p50 ms (LUT) | (decode) | "
             "p95 ms (best) | "
             "top-10 agreement | mean abs score err | recon. cosine |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lut = f"{r['lut_p50_ms']:.1f}" if "lut_p50_ms" in r else "-"
        p95 = min(r.get("lut_p95_ms", np.inf), r["decode_p95_ms"])
        cos = f"{r['mean_cosine']:.4f}" if r["mean_cosine"] is not None else "-"
        lines.append(f"| {r['setting']} | {r['bytes_per_token']} | {r['fp16_ratio']:.3f} | {r['build_s']:.0f} | "
                     f"{lut} | "
                     f"{r['decode_p50_ms']:.1f} | {p95:.1f} | {r['top10_agreement']:.3f} | "
                     f"{r['mean_abs_score_error']:.4f} | {cos} |")
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    with plot_axes(path) as ax:
        for r in res["rows"]:
            ms = min(r.get("lut_p50_ms", np.inf), r["decode_p50_ms"])
            ax.plot(r["top10_agreement"], 1000.0 / ms, "o")
            ax.annotate(f"{r['setting']} ({r['bytes_per_token']} B)", (r["top10_agreement"], 1000.0 / ms), fontsize=8)
        ax.axvline(0.95, color="grey", ls="--", lw=0.8)
        ax.set_xlabel("top-10 agreement with exact MaxSim")
        ax.set_ylabel("queries/s re-scoring 1000 candidates (1 thread)")
        ax.set_title(f"token store, N={res['n']:,} docs x ~100 tokens, d={res['d']}")


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    res = run(args)
    print(save_results(res, args.out, f"multivec_n{res['n']}{args.tag}", markdown, plot))


if __name__ == "__main__":
    main()
