"""Whole-word sparse scoring, measured (issue #14): lexical terms as words instead of sentencepiece pieces.

Today's lexical weights are one weight per piece position, max per piece id (FlagEmbedding's BGE-M3). The
head puts 30-40% of its mass on non-word-initial fragments, punctuation and single characters
(bench/results/heads_s4/sparse_head_shares.md), so a fragment such as "s" matches across unrelated words.
Here a term is a word instead: a word-initial piece ("▁...") and the continuation pieces after it; its
weight an aggregate of its pieces' weights (max, sum, mean, first); its identity the exact piece-id
sequence. Punctuation pieces and pieces of scripts written without spaces (CJK, kana, Hangul, Thai, ...) are
terms of their own (never joined), and window starts, special tokens and pieces after punctuation start a
new term.

Steps (each under the heavy-job lock):

    python bench/sparse_whole_words.py encode --task mldr --langs ca,nb,id,it   # -> /work/cache/words/
    python bench/sparse_whole_words.py score  --task mldr --langs ca,nb,id,it   # -> bench/out/words/*.json
    python bench/sparse_whole_words.py report                                    # -> bench/results/sparse_whole_words.md

`encode` runs run_eval's own code (`runner._encode_corpus` with the task's BenchConfig, no cache, and the
queries in one `encoder.encode(..., kind="query")` call as `runner._run_language`) with the default model,
and keeps, per piece (window) of each text, the token ids and the lexical weight at every position (the
encoder's per-position output, before the max per token id). It checks that the max per token id of what
it kept equals the batch the encoder returned, and the cached dev encodings of run_eval when present.
`score` scores every query against every document of the language's corpus (exhaustive) for each variant,
ranks as `ExactRetriever` does (sparse-only: zero scores are not retrieved), and evaluates with the
benchmark's metrics (trec_eval's conventions), with the benchmark's BM25 (`BM25Index`) beside.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
DATA = {"miracl": "miracl_like_small", "mkqa": "mkqa_like_small", "mldr": "mldr_like"}
CACHE = Path("/work/cache/words")
OUT = ROOT / "bench" / "out" / "words"
RUN_EVAL_CACHE = Path("/work/cache/encodings")
log = logging.getLogger("sparse_whole_words")


# -- encoding --------------------------------------------------------------------------------------

class Capture:
    """Wraps the ONNX Runtime passage path of the default encoder (`ort_passages.OrtPassageEncoder`, the
    path run_eval's passages and query batches take) to keep each piece's ids and per-position weights."""

    def __init__(self, ort):
        self.ort, self.base, self.records = ort, 0, []
        self._encode, self._run = ort.encode, ort._run
        ort.encode, ort._run = self.encode, self.run

    def encode(self, texts, *args, **kwargs):
        out = self._encode(texts, *args, **kwargs)
        self.base += len(texts)
        return out

    def run(self, pieces):
        dense, weights, vectors = self._run(pieces)
        for p, (ids, w) in zip(pieces, weights):
            self.records.append((self.base + p.text, p.window, np.asarray(ids, np.int32), np.asarray(w, np.float32)))
        return dense, weights, vectors

    def take(self, n_texts: int) -> dict:
        """The kept pieces, text by text and window by window, as flat arrays."""
        recs = sorted(self.records, key=lambda r: (r[0], r[1]))
        self.records, self.base = [], 0
        lengths = np.array([len(r[2]) for r in recs], dtype=np.int64)
        ptr = np.zeros(len(recs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=ptr[1:])
        return {"ids": np.concatenate([r[2] for r in recs]), "w": np.concatenate([r[3] for r in recs]),
                "piece_ptr": ptr, "piece_text": np.array([r[0] for r in recs], dtype=np.int64),
                "n_texts": np.array(n_texts)}


def _pieces_matrix(data: dict, vocab: int, unused: np.ndarray) -> sp.csr_matrix:
    from m3search.encoder.postprocess import max_per_token

    ptr = data["piece_ptr"]
    weights = [(data["ids"][a:b].astype(np.int64), data["w"][a:b]) for a, b in zip(ptr[:-1], ptr[1:])]
    return max_per_token(int(data["n_texts"]), data["piece_text"], weights, vocab, unused)


def _same(a: sp.csr_matrix, b: sp.csr_matrix) -> float:
    """Largest absolute difference between two CSR matrices (inf when their patterns differ)."""
    a, b = a.tocsr(), b.tocsr()
    a.sort_indices(), b.sort_indices()
    if a.shape != b.shape or not (np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)):
        return float("inf")
    return float(np.abs(a.data - b.data).max(initial=0.0))


def encode(args) -> None:
    from m3search.encoder import load_encoder
    from m3search.evaluation import runner
    from m3search.evaluation.cache import EncodingCache
    from m3search.evaluation.config import BenchConfig
    from m3search.evaluation.datasets import load_tasks

    encoder = load_encoder(None)
    ort = encoder._ort_path()
    if ort is None:
        raise SystemExit("the default encoder's ONNX Runtime passage path is unavailable here")
    cap = Capture(ort)
    fingerprint = runner.encoder_fingerprint(encoder)
    unused = np.asarray(ort.lite.unused, dtype=np.int64)
    data_dir = args.data_root / DATA[args.task]
    for lang in args.langs.split(","):
        folder = CACHE / args.task / lang
        if (folder / "queries.npz").is_file() and not args.force:
            log.info("%s/%s: cached", args.task, lang)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        (task,) = load_tasks(args.task, data_dir, [lang])
        config = BenchConfig(task=args.task, data_dir=data_dir, languages=[lang], batch_size=256, cache_dir=None)
        start = time.perf_counter()
        corpus_file = CACHE / args.task / f"corpus-{task.corpus.content_hash[:16]}.npz"
        if corpus_file.is_file():  # mkqa: one corpus for every language
            log.info("%s/%s: corpus from %s", args.task, lang, corpus_file)
        else:
            docs, batch, _ = runner._encode_corpus(config, task.corpus, encoder, fingerprint, None,
                                                   runner._no_progress, lang)
            data = cap.take(len(docs))
            mine = _pieces_matrix(data, encoder.vocab_size, unused)
            diff = _same(mine, batch.sparse)
            checks = {"kept_vs_encoder": diff}
            key = runner.cache_key(fingerprint, task.corpus.content_hash,
                                   {"kind": "passage", "max_length": config.passage_max_length, "order": "blake2b-docid"})
            hit = EncodingCache(RUN_EVAL_CACHE).get(key)
            if hit is not None:
                checks["vs_run_eval_cache"] = _same(mine, hit[1].sparse) if hit[0] == [d.id for d in docs] else "docids differ"
            log.info("%s/%s: %d docs in %.0f s, checks %s", args.task, lang, len(docs), time.perf_counter() - start, checks)
            tmp = corpus_file.with_suffix(".tmp.npz")
            np.savez(tmp, docids=np.array([d.id for d in docs]), checks=np.array(json.dumps(checks)),
                     seconds=np.array(time.perf_counter() - start), **data)
            os.replace(tmp, corpus_file)
        qids = list(task.judged_queries)
        texts = [task.judged_queries[q] for q in qids]
        q_batch = encoder.encode(texts, kind="query")
        data = cap.take(len(qids))
        diff = _same(_pieces_matrix(data, encoder.vocab_size, unused), q_batch.sparse)
        if diff > 1e-6:
            raise SystemExit(f"{args.task}/{lang}: kept query weights differ from the encoder's by {diff}")
        tmp = folder / "queries.tmp.npz"
        np.savez(tmp, qids=np.array(qids), corpus=np.array(corpus_file.name), **data)
        os.replace(tmp, folder / "queries.npz")
        log.info("%s/%s: %d queries; total %.0f s", args.task, lang, len(qids), time.perf_counter() - start)


# -- terms -----------------------------------------------------------------------------------------

def vocab_classes(token_strings, vocab_size: int) -> dict[str, np.ndarray]:
    """bool over the vocabulary: word-initial ('▁' + something that is not only punctuation), punctuation,
    unspaced script (any character of CJK, kana, Hangul, Thai, ...)."""
    from m3search.encoder.pieces import piece_kind, vocabulary_pieces, WORD_START
    from m3search.evaluation._unicode import UNSPACED_CLASS

    pieces = vocabulary_pieces(token_strings, vocab_size)
    unspaced = re.compile(f"[{UNSPACED_CLASS}]")
    kinds = [piece_kind(p) for p in pieces]
    return {
        "punct": np.array([k == "punctuation" for k in kinds]),
        "start": np.array([p.startswith(WORD_START) for p in pieces]),
        "unspaced": np.array([bool(unspaced.search(p)) for p in pieces]),
        "single": np.array([k == "single" for k in kinds]),
    }


def units(data: dict, cls: dict[str, np.ndarray], unused: np.ndarray, mode: str = "words"):
    """Split every piece (window) into terms. Returns (position's unit number, unit start positions) over
    the positions that are not special tokens, plus those positions."""
    ids = data["ids"].astype(np.int64)
    n = len(ids)
    special = np.isin(ids, unused)
    first = np.zeros(n, dtype=bool)
    first[data["piece_ptr"][:-1]] = True
    alone = cls["punct"][ids] | cls["unspaced"][ids]
    prev_alone = np.r_[True, alone[:-1]]
    prev_special = np.r_[True, special[:-1]]
    if mode == "pieces":
        begins = np.ones(n, dtype=bool)
    else:
        begins = cls["start"][ids] | alone | prev_alone | first | prev_special
    keep = ~special
    pos = np.flatnonzero(keep)
    begins = begins[pos]
    begins[0:1] = True
    unit = np.cumsum(begins) - 1
    return pos, unit, np.flatnonzero(begins)


def term_matrix(data: dict, cls, unused, mode: str, agg: str, drop: tuple[str, ...] = (), table: dict | None = None):
    """CSR (texts x terms) of max-over-occurrences term weights; `table` maps a term's 64-bit hash to its
    column (shared by documents and queries, grown as needed)."""
    pos, unit, starts = units(data, cls, unused, mode)
    ids = data["ids"].astype(np.int64)[pos]
    w = data["w"][pos].astype(np.float64)
    nu = len(starts)
    lengths = np.diff(np.r_[starts, len(pos)])
    # exact-sequence hash (64-bit FNV-style fold over the piece ids)
    h = np.full(nu, np.uint64(1469598103934665603))
    prime = np.uint64(1099511628211)
    with np.errstate(over="ignore"):
        for k in range(int(lengths.max(initial=0))):
            live = lengths > k
            h[live] = (h[live] ^ np.uint64(0x9E3779B97F4A7C15) ^ ids[starts[live] + k].astype(np.uint64)) * prime
    if agg == "max":
        uw = np.maximum.reduceat(w, starts) if nu else w[:0]
    elif agg == "sum":
        uw = np.add.reduceat(w, starts) if nu else w[:0]
    elif agg == "mean":
        uw = (np.add.reduceat(w, starts) / lengths) if nu else w[:0]
    elif agg == "first":
        uw = w[starts]
    elif agg == "sqrtsum":  # sum / sqrt(pieces): between mean and sum
        uw = (np.add.reduceat(w, starts) / np.sqrt(lengths)) if nu else w[:0]
    else:
        raise ValueError(agg)
    # text of each unit: the piece its first position belongs to
    piece_of = np.searchsorted(data["piece_ptr"], pos[starts], side="right") - 1
    text = data["piece_text"][piece_of]
    first_id = ids[starts]
    drop_mask = np.zeros(nu, dtype=bool)
    if "punct" in drop:
        drop_mask |= (lengths == 1) & cls["punct"][first_id]
    if "onepiece" in drop:
        drop_mask |= lengths == 1
    if "single" in drop:
        drop_mask |= (lengths == 1) & cls["single"][first_id]
    ok = (uw > 0) & ~drop_mask
    text, h, uw = text[ok], h[ok], uw[ok]
    # column per distinct hash
    if table is None:
        table = {}
    uniq, inv = np.unique(h, return_inverse=True)
    cols_u = np.empty(len(uniq), dtype=np.int64)
    for i, v in enumerate(uniq.tolist()):
        c = table.get(v)
        if c is None:
            c = table[v] = len(table)
        cols_u[i] = c
    cols = cols_u[inv]
    n_texts = int(data["n_texts"])
    # max over occurrences (as the max per token id today)
    order = np.lexsort((cols, text))
    t2, c2, w2 = text[order], cols[order], uw[order]
    if len(w2):
        s = np.flatnonzero(np.r_[True, (t2[1:] != t2[:-1]) | (c2[1:] != c2[:-1])])
        w2 = np.maximum.reduceat(w2, s)
        t2, c2 = t2[s], c2[s]
    return (t2, c2, w2, n_texts), table


def to_csr(parts, ncols: int) -> sp.csr_matrix:
    t, c, w, n = parts
    return sp.csr_matrix((w.astype(np.float32), (t, c)), shape=(n, ncols))


# Variants: name -> (mode, aggregation within a word, term kinds dropped)
VARIANTS = {
    "pieces": ("pieces", "max", ()),
    "words-max": ("words", "max", ()),
    "words-sum": ("words", "sum", ()),
    "words-mean": ("words", "mean", ()),
    "words-first": ("words", "first", ()),
    "words-sqrtsum": ("words", "sqrtsum", ()),
    "words-sum-nopunct": ("words", "sum", ("punct",)),
    "words-max-nopunct": ("words", "max", ("punct",)),
    "pieces-nopunct": ("pieces", "max", ("punct",)),
    # words of 2+ pieces only (single-piece words are already pieces): added to pieces below
    "multiwords-sum": ("words", "sum", ("onepiece",)),
    "multiwords-max": ("words", "max", ("onepiece",)),
    "multiwords-sqrtsum": ("words", "sqrtsum", ("onepiece",)),
}
# sums of two variants' scores (pieces and words side by side)
HYBRIDS = {"pieces+words-max": ("pieces", "words-max"), "pieces+words-sum": ("pieces", "words-sum"),
           "pieces+words-sqrtsum": ("pieces", "words-sqrtsum"),
           "pieces+multiwords-sum": ("pieces", "multiwords-sum"), "pieces+multiwords-max": ("pieces", "multiwords-max"),
           "pieces+multiwords-sqrtsum": ("pieces", "multiwords-sqrtsum"),
           "pieces+0.5*words-sum": ("pieces", "words-sum", 0.5), "pieces+2*words-sum": ("pieces", "words-sum", 2.0)}


def score(args) -> None:
    from m3search.encoder import load_encoder
    from m3search.evaluation import metrics as M
    from m3search.evaluation.bm25 import BM25Index
    from m3search.evaluation.datasets import load_tasks
    from m3search.evaluation.retrievers import _top_k
    from m3search.ingest import passage_text

    encoder = load_encoder(None)
    cls_file = CACHE / "vocab_classes.npz"
    if cls_file.is_file():
        cls = dict(np.load(cls_file))
    else:
        cls = vocab_classes(encoder.token_strings, encoder.vocab_size)
        np.savez(cls_file, **cls)
    unused = np.asarray(encoder._lite_path().unused, dtype=np.int64)
    data_dir = args.data_root / DATA[args.task]
    metric_names = ["recall@100", "ndcg@10"] if args.task == "mkqa" else ["ndcg@10", "recall@100"]
    OUT.mkdir(parents=True, exist_ok=True)
    for lang in args.langs.split(","):
        if not (CACHE / args.task / lang / "queries.npz").is_file():
            log.warning("%s/%s: not encoded yet; skipped", args.task, lang)
            continue
        if (OUT / f"{args.task}-{lang}.json").is_file() and not args.force:
            log.info("%s/%s: scored already", args.task, lang)
            continue
        (task,) = load_tasks(args.task, data_dir, [lang])
        qz = dict(np.load(CACHE / args.task / lang / "queries.npz"))
        dz = dict(np.load(CACHE / args.task / str(qz["corpus"])))
        docids, qids = [str(d) for d in dz["docids"]], [str(q) for q in qz["qids"]]
        res = {"task": args.task, "lang": lang, "docs": len(docids), "queries": len(qids),
               "checks": json.loads(str(dz["checks"])), "variants": {}}
        scores = {}
        for name, (mode, agg, drop) in VARIANTS.items():
            table: dict = {}
            dparts, table = term_matrix(dz, cls, unused, mode, agg, drop, table)
            qparts, table = term_matrix(qz, cls, unused, mode, agg, drop, table)
            D, Q = to_csr(dparts, len(table)), to_csr(qparts, len(table))
            scores[name] = (Q @ D.T).toarray()
            res["variants"][name] = {"doc_terms": int(D.nnz), "query_terms": int(Q.nnz), "vocab": len(table)}
        for name, (a, b, *lam) in HYBRIDS.items():
            scores[name] = scores[a] + (lam[0] if lam else 1.0) * scores[b]
            res["variants"][name] = {}
        for name, s in scores.items():
            run = {}
            for i, q in enumerate(qids):
                top = _top_k(s[i], 100)
                top = top[s[i, top] > 0]
                run[q] = {docids[j]: float(s[i, j]) for j in top}
            res["variants"][name]["metrics"] = M.evaluate(run, task.qrels, metric_names)
        with tempfile.TemporaryDirectory(prefix="words-bm25-") as tmp:
            text_of = {p.id: passage_text(p) for p in task.corpus}
            bm25 = BM25Index.build(Path(tmp) / "bm25", docids, [text_of[d] for d in docids])
            rows = bm25.search_many([task.judged_queries[q] for q in qids], 100)
            run = {q: {d: s for d, s in row} for q, row in zip(qids, rows)}
            res["bm25"] = M.evaluate(run, task.qrels, metric_names)
        (OUT / f"{args.task}-{lang}.json").write_text(json.dumps(res, indent=1))
        head = metric_names[0]
        log.info("%s/%s: bm25 %.1f | %s", args.task, lang, 100 * res["bm25"][head],
                 " ".join(f"{k} {100 * v['metrics'][head]:.1f}" for k, v in res["variants"].items()))


# -- report ----------------------------------------------------------------------------------------

def report(args) -> None:
    results = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]
    cached = {}
    for t in DATA:
        f = ROOT / "bench" / "results" / t / "report.json"
        if f.is_file():
            cached[t] = json.loads(f.read_text())
    lines = ["# Whole-word sparse scoring (issue #14)", "",
             f"`bench/sparse_whole_words.py`; {platform.processor() or platform.machine()}, 2 shared CPU cores, no GPU. "
             "Exhaustive scoring (every document of the language's corpus), m3search-small with the shipped heads, "
             "encoded by run_eval's own code (mldr: 8192 tokens in the encoder's 512-token windows). ×100.", ""]
    for t in DATA:
        rs = [r for r in results if r["task"] == t]
        if not rs:
            continue
        head = "recall@100" if t == "mkqa" else "ndcg@10"
        names = list(rs[0]["variants"])
        langs = [r["lang"] for r in rs]
        lines += [f"## {t} ({DATA[t]}), {head}", "",
                  "| variant | " + " | ".join(langs) + " | avg |", "|---|" + "---:|" * (len(langs) + 1)]

        def row(label, vals):
            return f"| {label} | " + " | ".join(f"{100 * v:.1f}" for v in vals) + f" | {100 * np.mean(vals):.1f} |"

        rep = cached.get(t)
        if rep:
            vals = [rep["languages"].get(l, {}).get("modes", {}).get("sparse", {}).get("metrics", {}).get(head) for l in langs]
            if all(v is not None for v in vals):
                lines.append(row("sparse in bench/results (run_eval)", vals))
        for n in names:
            lines.append(row(n, [r["variants"][n]["metrics"][head] for r in rs]))
        lines.append(row("BM25 (same run)", [r["bm25"][head] for r in rs]))
        lines.append("")
        lines += ["Checks (max |difference| of the kept per-position weights' max per token id against the encoder's "
                  "batch and run_eval's cached encodings):", ""]
        lines += [f"- {r['lang']}: {r['checks']}" for r in rs] + [""]
    (ROOT / "bench" / "results" / "sparse_whole_words_tables.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["encode", "score", "report"])
    ap.add_argument("--task", choices=list(DATA), default="mldr")
    ap.add_argument("--langs", default="ca,nb,id,it")
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data" / "eval")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    {"encode": encode, "score": score, "report": report}[args.step](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
