"""1024-d token compression candidates at ~128 bytes/token: top-10 agreement with fp16 MaxSim, on a small sample.

The metric of bench/index_bench_multivec.py on a sample that runs in minutes: synthetic clustered 1024-d
token vectors (bench/synthetic.py, a corpus of --n documents); the codecs train on tokens of the second
half and encode the first half (~100 tokens per document); queries target documents of the first half;
per query the --candidates documents of the first half closest by mean vector are ranked by MaxSim of the
decoded tokens (what lookup-table scoring computes, exactly, for every PQ / additive family here) and by
exact fp16 MaxSim; reported: bytes/token, top-10 agreement, mean |score error|, training and encoding time
(one process, --threads FAISS threads).

Candidates (names): pq<M>[x<bits>] (FAISS PQ, 8 or 4-bit sub-codes), opq<M>, rpq<M>@<K> (m3search's
residual PQ against K coarse centroids, +2 B), prq<splits>x<stages> / plsq<splits>x<stages> (FAISS product
residual / product local-search additive quantizers, 8-bit codebooks; inner products decompose into one
table per codebook, so LUT MaxSim applies), rpca<M>@<K> (residual, PCA-rotated, PQ over its first 8M
dimensions, plus a norm byte: see RPCACodec). Suffix `+n`: reconstructions rescaled to unit norm (free for
plain PQ/OPQ, where the norm follows from the sub-codes; else it needs a stored norm byte, counted); `+a`
(residual codes): rescaled by the norm without the centroid x residual cross term (table lookups, free).

    flock /tmp/m3search-heavy.lock timeout 900 python -m bench.multivec_codec_sweep pq128+n opq128+n rpq128@4096
"""
from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import faiss
import numpy as np

from bench.index_bench_multivec_search import Reference
from bench.synthetic import TokenCorpus

RESULTS = Path(__file__).resolve().parent / "results"


def _unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class FaissCodec:
    """A FAISS quantizer behind (train, encode, decode)."""

    def __init__(self, name: str, d: int):
        self.name = name
        m = re.match(r"^(pq|opq|prq|plsq)(\d+)(?:x(\d+))?$", name)
        kind, a, b = m.group(1), int(m.group(2)), int(m.group(3) or 0)
        self.rotation = None
        if kind in ("pq", "opq"):
            bits = b or 8
            self.q = faiss.ProductQuantizer(d, a, bits)
            self.q.cp.niter = 12
            self.q.cp.max_points_per_centroid = 256
            self.bytes = (a * bits + 7) // 8
            if kind == "opq":
                self.rotation = faiss.OPQMatrix(d, a)
                self.rotation.niter = 8
        elif kind == "prq":
            self.q = faiss.ProductResidualQuantizer(d, a, b, 8)
            self.bytes = a * b
        else:
            self.q = faiss.ProductLocalSearchQuantizer(d, a, b, 8)
            self.bytes = a * b

    def train(self, x):
        if self.rotation is not None:
            self.rotation.pq = faiss.ProductQuantizer(x.shape[1], self.q.M, self.q.nbits)
            self.rotation.train(x)
            x = self.rotation.apply_py(x)
        self.q.train(x)

    def encode(self, x):
        if self.rotation is not None:
            x = self.rotation.apply_py(x)
        return self.q.compute_codes(np.ascontiguousarray(x))

    def decode(self, codes):
        y = self.q.decode(codes)
        return self.rotation.reverse_transform(y) if self.rotation is not None else y


class M3Codec:
    """m3search's own codecs (rpq<M>@K, ropq<M>@K)."""

    def __init__(self, name: str, d: int):
        from m3search.indexes.multivec.codecs import Codec, code_size
        self.base, k = name.split("@")
        self.k = int(k)
        self.cls, self.bytes = Codec, code_size(self.base, d)

    def train(self, x):
        self.codec = self.cls.train(self.base, x, coarse_k=self.k)
        COARSE.setdefault(self.k, self.codec.arrays["coarse"])

    def encode(self, x):
        return self.codec.encode(x)

    def decode(self, codes):
        return self.codec.decode(codes)


COARSE: dict[int, np.ndarray] = {}  # coarse centroids by K, shared by the residual candidates of one run


class RPCACodec:
    """rpca<M>@K: residual against K coarse centroids (2 B), residual rotated by its PCA and PQ-coded over its
    first 8 M dimensions (M bytes; the lowest-variance rest dropped), plus one byte of quantized inverse norm
    (log-uniform) so reconstructions are unit norm: 2 + M + 1 bytes (rpca125: 128 B at 1024-d)."""

    def __init__(self, name: str, d: int):
        m, k = re.match(r"^rpca(\d+)@(\d+)$", name).groups()
        self.m, self.k, self.d = int(m), int(k), d
        self.bytes = self.m + 3

    def _assign(self, x):
        index = faiss.IndexFlatL2(self.d)
        index.add(self.coarse)
        return index.search(np.ascontiguousarray(x), 1)[1][:, 0]

    def train(self, x):
        if self.k not in COARSE:
            km = faiss.Kmeans(self.d, self.k, niter=10, seed=1234, min_points_per_centroid=1,
                              max_points_per_centroid=256)
            km.train(x)
            COARSE[self.k] = km.centroids
        self.coarse = COARSE[self.k]
        r = x - self.coarse[self._assign(x)]
        w, v = np.linalg.eigh(np.cov(r.T).astype(np.float64))
        self.rot = np.ascontiguousarray(v[:, ::-1].T, dtype=np.float32)  # rows: components, most variance first
        self.keep = 8 * self.m
        self.pq = faiss.ProductQuantizer(self.keep, self.m, 8)
        self.pq.cp.niter, self.pq.cp.max_points_per_centroid = 12, 256
        self.pq.train(np.ascontiguousarray((r @ self.rot.T)[:, : self.keep]))
        y = self._recon(*self._codes(x))
        inv = -np.log(np.linalg.norm(y, axis=1))
        self.lo, self.hi = float(np.quantile(inv, 0.0005)), float(np.quantile(inv, 0.9995))

    def _codes(self, x):
        ids = self._assign(x)
        rr = ((x - self.coarse[ids]) @ self.rot.T)[:, : self.keep]
        return ids, self.pq.compute_codes(np.ascontiguousarray(rr))

    def _recon(self, ids, pqc):
        rr = np.zeros((len(ids), self.d), np.float32)
        rr[:, : self.keep] = self.pq.decode(pqc)
        return self.coarse[ids] + rr @ self.rot

    def encode(self, x):
        ids, pqc = self._codes(x)
        inv = -np.log(np.linalg.norm(self._recon(ids, pqc), axis=1))
        level = np.clip(np.rint((inv - self.lo) / max(self.hi - self.lo, 1e-9) * 255), 0, 255).astype(np.uint8)
        return ids, pqc, level

    def decode(self, codes):
        ids, pqc, level = codes
        scale = np.exp(self.lo + level.astype(np.float32) / 255 * (self.hi - self.lo))
        return self._recon(ids, pqc) * scale[:, None]


class MeanPQCodec:
    """mpq<M>: each document's mean token vector stored once as int8 (d bytes + a 4-byte scale per document,
    counted per token at the corpus's mean length); each token's residual from its document's decoded mean
    is rotated by the residuals' PCA and PQ-coded over its first 8 M dimensions (M bytes, any M). Tokens of
    one document share a context direction the mean removes, so the PQ spends its bits on what differs
    between tokens."""

    def __init__(self, name: str, d: int):
        self.m, self.d = int(re.match(r"^mpq(\d+)$", name).group(1)), d
        self.keep = min(d, 8 * self.m)
        self.pq = faiss.ProductQuantizer(self.keep, self.m, 8)
        self.pq.cp.niter, self.pq.cp.max_points_per_centroid = 12, 256
        self.bytes = self.m  # the mean's share is added by the caller from the document lengths

    @staticmethod
    def _means(x, lengths):
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        means = np.add.reduceat(x, starts, axis=0) / np.asarray(lengths, np.float32)[:, None]
        scale = np.abs(means).max(axis=1, keepdims=True) / 127
        q = np.rint(means / np.maximum(scale, 1e-12)).astype(np.int8)
        return np.repeat(q.astype(np.float32) * scale, lengths, axis=0)

    def train(self, x, lengths):
        r = x - self._means(x, lengths)
        w, v = np.linalg.eigh(np.cov(r.T).astype(np.float64))
        self.rot = np.ascontiguousarray(v[:, ::-1].T, dtype=np.float32)  # rows: components, most variance first
        self.pq.train(np.ascontiguousarray((r @ self.rot.T)[:, : self.keep]))

    def encode(self, x, lengths):
        self.mean_rows = self._means(x, lengths)
        return self.pq.compute_codes(np.ascontiguousarray(((x - self.mean_rows) @ self.rot.T)[:, : self.keep]))

    def decode(self, codes):
        rr = np.zeros((len(codes), self.d), np.float32)
        rr[:, : self.keep] = self.pq.decode(codes)
        return rr @ self.rot + self.mean_rows


def make(name: str, d: int):
    if name.startswith("mpq"):
        return MeanPQCodec(name, d)
    if name.startswith("rpca"):
        return RPCACodec(name, d)
    return M3Codec(name, d) if "@" in name else FaissCodec(name, d)


def markdown(res: dict) -> str:
    r0 = res["rows"][0]
    lines = [f"1024-d token codecs at ~128 B/token: synthetic clustered tokens (bench/synthetic.py), "
             f"{r0['n_eval_tokens']:,} tokens encoded (half of the documents), trained on the other half "
             f"({r0['train_tokens']:,} tokens; prq: 50,000), {r0['queries']} queries x 1000 candidates each, "
             f"{r0['threads']} FAISS threads, 2 shared CPU cores, load {r0['load']}", "",
             "| codec | B/token | top-10 agreement vs fp16 MaxSim | mean abs score error | recon. cosine | train s | "
             "encode us/token |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(res["rows"], key=lambda r: -r["top10_agreement"]):
        lines.append(f"| {r['codec']} | {r['bytes_per_token']} | {r['top10_agreement']:.3f} | "
                     f"{r['mean_abs_score_error']:.4f} | {r['recon_cosine']:.3f} | {r['train_s']:.0f} | "
                     f"{r['encode_us_per_token']:.1f} |")
    lines += ["", "+n: reconstructions rescaled to unit norm (free for pq/opq: the norm is a sum of sub-code "
              "lookups; for residual codes it needs a stored byte, counted). +a: residual codes rescaled by "
              "the norm without the centroid x residual cross term (lookups only, no byte). rpca: residual, "
              "PCA-rotated, PQ over its first 8M dimensions + a norm byte. prq<S>x<K>: FAISS "
              "ProductResidualQuantizer, S splits x K 8-bit codebooks. Goal (#11): >= 0.95 at <= 128 B."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("codecs", nargs="+")
    p.add_argument("--n", type=int, default=4096, help="documents; the first half is encoded, the second trains")
    p.add_argument("--d", type=int, default=1024)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--candidates", type=int, default=1000)
    p.add_argument("--train-tokens", type=int, default=200_000)
    p.add_argument("--aq-train-tokens", type=int, default=50_000, help="training tokens of prq/plsq (slow)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=str(RESULTS / "multivec_codec_sweep_d1024.json"), help="results, appended")
    p.add_argument("--report", default=None, help="only write the markdown table of --json to this file")
    a = p.parse_args(argv)
    if a.report:
        Path(a.report).write_text(markdown(json.loads(Path(a.json).read_text())))
        return 0
    faiss.omp_set_num_threads(a.threads)
    half = a.n // 2
    corpus = TokenCorpus(a.n, d=a.d, seed=0)
    qv, ql, targets = corpus.queries(3 * a.queries)
    qo = np.concatenate([[0], np.cumsum(ql)])
    keep = np.nonzero(targets < half)[0][: a.queries]
    q_vecs = np.concatenate([qv[qo[i]:qo[i + 1]] for i in keep])
    q_len = ql[keep]
    x, lengths = corpus.docs(0, half)
    xt, lt = corpus.docs(half, a.n)
    # whole documents for the training sample (mpq needs each token's document mean)
    keep_docs = np.cumsum(lt) <= a.train_tokens
    xt, lt = xt[: int(lt[keep_docs].sum())], lt[keep_docs]
    q_means = corpus.doc_means(q_vecs, q_len)
    cands = np.argsort(-(q_means @ corpus.doc_means(x, lengths).T), axis=1)[:, : a.candidates]

    def scores(vecs):
        ref = Reference(q_vecs, q_len)
        ref.add(vecs, lengths)
        return ref.scores[0]
    exact = scores(x)
    ex_top = [set(c[np.argsort(-exact[i, c], kind="stable")[:10]].tolist()) for i, c in enumerate(cands)]
    out = Path(a.json)
    done = json.loads(out.read_text()) if out.is_file() else {"rows": []}
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"N={half} docs encoded ({len(x):,} tokens x {a.d}), trained on {len(xt):,} tokens, "
          f"{len(q_len)} queries x {a.candidates} candidates, {a.threads} threads, load {load}", flush=True)
    trained = {}  # base name -> (codec, codes, train_s, enc_s): variants of one codec share its training
    for name in a.codecs:
        rescale, approx = name.endswith("+n"), name.endswith("+a")
        base = name[:-2] if rescale or approx else name
        if base not in trained:
            codec = make(base, a.d)
            t0 = time.perf_counter()
            if base.startswith("mpq"):
                codec.train(xt, lt)
            else:
                codec.train(xt[: a.aq_train_tokens] if base.startswith(("prq", "plsq")) else xt)
            train_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            codes = codec.encode(x, lengths) if base.startswith("mpq") else codec.encode(x)
            trained = {base: (codec, codes, train_s, time.perf_counter() - t0)}
        codec, codes, train_s, enc_s = trained[base]
        y = codec.decode(codes).astype(np.float32)
        if rescale:
            y = _unit(y)
        if approx:  # residual codes: the norm without the centroid x residual cross term (table lookups only)
            arr = codec.codec.arrays
            sub = (arr["pq_centroids"] ** 2).sum(axis=2)  # (M, 256)
            ids = codes[:, 0].astype(np.int64) | (codes[:, 1].astype(np.int64) << 8)
            sq = (arr["coarse"] ** 2).sum(axis=1)[ids] + sub[np.arange(sub.shape[0]), codes[:, 2:]].sum(axis=1)
            y = y / np.sqrt(np.maximum(sq, 1e-12))[:, None]
        got = scores(y)
        agree = [len(ex_top[i] & set(c[np.argsort(-got[i, c], kind="stable")[:10]].tolist())) / 10
                 for i, c in enumerate(cands)]
        err = float(np.mean([np.abs(got[i, c] - exact[i, c]).mean() for i, c in enumerate(cands)]))
        cos = float(np.mean(np.sum(_unit(y) * x, axis=1)))
        free_norm = base.startswith(("pq", "opq", "rpca"))  # rpca's norm byte is in its own count
        nbytes = codec.bytes + (1 if rescale and not free_norm else 0)
        if base.startswith("mpq"):  # the int8 mean and its scale, shared by the document's tokens
            nbytes = round(nbytes + (a.d + 4) * len(lengths) / len(x), 1)
        row = {"codec": name, "bytes_per_token": nbytes, "top10_agreement": float(np.mean(agree)),
               "mean_abs_score_error": err, "recon_cosine": cos, "train_s": train_s,
               "encode_s": enc_s, "encode_us_per_token": 1e6 * enc_s / len(x), "n_eval_tokens": len(x),
               "train_tokens": len(xt), "threads": a.threads, "load": load, "queries": len(q_len)}
        print(json.dumps(row), flush=True)
        done["rows"] = [r for r in done["rows"] if r["codec"] != name] + [row]
        out.write_text(json.dumps(done, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
