"""What the sparse (lexical) head of a model weighs on real text, and what ignoring some pieces does.

For each (task, language) index built by bench/tune_dev.py (bench/out/tune/<task>/<lang>; the corpus encoded
by the model, so no re-encoding here), over a random sample of documents and over the judged dev queries:
the share of lexical weight mass on pieces that are punctuation, single characters, non-word-initial
fragments (XLM-R sentencepiece pieces without '▁'), and "stop-like" pieces (the 50 word-initial pieces of
2+ characters found in the most documents of the corpus: a language-independent stand-in for a stop-word
list), and the top pieces
by weight mass. Then sparse-only retrieval (exact scores over the whole corpus, nDCG@10 / Recall@100) with
those kinds of pieces dropped from the query: a sparse score is a sum over the tokens the query and the
document share, so dropping a token from the query is the same as dropping it from both.

    flock /tmp/m3search-heavy.lock python bench/sparse_head_analysis.py --tasks miracl:de --tasks mldr:ca
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
from pathlib import Path

import numpy as np

import m3search
from m3search.encoder import load_encoder
from m3search.encoder.pieces import KINDS, drop_columns, kind_masks, vocabulary_pieces
from m3search.evaluation.datasets import load_task
from m3search.evaluation.metrics import evaluate

ROOT = Path(__file__).resolve().parent.parent
DATA = {"miracl": "miracl_like_small", "mkqa": "mkqa_like_small", "mldr": "mldr_like"}
SHARES = ("punctuation", "single", "fragment", "stop-like", "special")
FUSED_VARIANTS = ("none", "punctuation", "punctuation,single")
VARIANTS = {
    "none": (),
    "-punct": ("punctuation",),
    "-punct-single": ("punctuation", "single"),
    "-stop-like": ("stop-like",),
    "-punct-stop-like": ("punctuation", "stop-like"),
    "-fragment": ("fragment",),
}


def shares(matrix, masks) -> dict[str, float]:
    total = float(matrix.data.sum())
    col_mass = np.asarray(matrix.sum(axis=0)).ravel()
    return {k: float(col_mass[masks[k]].sum()) / total if total else 0.0 for k in SHARES}


def top_pieces(matrix, pieces, masks, n=15) -> list[tuple[str, str, float]]:
    col_mass = np.asarray(matrix.sum(axis=0)).ravel()
    total = col_mass.sum()
    order = np.argsort(-col_mass)[:n]
    kind = lambda i: next((k for k in ("stop-like", *KINDS) if masks[k][i]), "word")  # noqa: E731
    return [(pieces[i], kind(i), float(col_mass[i] / total)) for i in order]


def retrieval(q, d, docids, qids, qrels, drop) -> dict[str, float]:
    qf = drop_columns(q, drop) if drop is not None else q
    scores = (qf @ d.T).toarray()
    run = {}
    for i, qid in enumerate(qids):
        top = np.argsort(-scores[i], kind="stable")[:100]
        run[qid] = {docids[j]: float(scores[i, j]) for j in top if scores[i, j] > 0}
    return evaluate(run, {q_: qrels[q_] for q_ in qids}, ["ndcg@10", "recall@100"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", action="append", required=True, help="task:lang,lang (repeatable)")
    ap.add_argument("--model", default="m3search-small")
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data" / "eval")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "tune")
    ap.add_argument("--sample", type=int, default=500, help="documents per corpus for the weight shares")
    ap.add_argument("--stop-n", type=int, default=50, help="the N word pieces in most documents are 'stop-like'")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sparse_head_analysis")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    encoder = load_encoder(args.model, device="cpu")
    pieces = vocabulary_pieces(encoder.token_strings, encoder.identity.vocab_size)
    base_masks = kind_masks(pieces)
    rows = []
    for spec in args.tasks:
        task, _, langs = spec.partition(":")
        for lang in langs.split(","):
            t = load_task(task, args.data_root / DATA[task], lang)
            path = args.work / task / lang
            if not (path / "manifest.json").is_file():
                logging.warning("no index at %s: run bench/tune_dev.py first; skipping", path)
                continue
            with m3search.open_index(path, encoder) as index:
                snap = index.planner.snapshot
                docids = [p.id for p in t.corpus.passages()]
                ids = snap.internal_ids(docids)
                docids = [d for d, i in zip(docids, ids) if i >= 0]
                d = snap.sparse.doc_weights(ids[ids >= 0]).tocsr()
                qids = list(t.judged_queries)
                q = encoder.encode([t.judged_queries[x] for x in qids], kind="query").sparse.tocsr()
                batch = encoder.encode([t.judged_queries[x] for x in qids], kind="query")
                sparse_mode = index.search_encoded(batch, k=100, mode="sparse", with_text=False)
                fused = {}  # the default fused mode through the engine, with the query-side filter of the API
                for name in FUSED_VARIANTS:
                    b = index._drop_query_pieces(batch, name) if name != "none" else batch
                    hits = index.search_encoded(b, k=100, mode="all", with_text=False)
                    fused[name] = evaluate({x: {h.docid: h.score for h in hs} for x, hs in zip(qids, hits)},
                                           {x: t.qrels[x] for x in qids}, ["ndcg@10", "recall@100"])
            df = np.bincount(d.indices, minlength=len(pieces)) / max(1, d.shape[0])
            stop = np.zeros(len(pieces), dtype=bool)
            word_df = np.where(base_masks["word"], df, -1.0)
            stop[np.argsort(-word_df, kind="stable")[: args.stop_n]] = True
            masks = {**base_masks, "stop-like": stop & (word_df > 0)}
            rng = random.Random(0)
            sample = sorted(rng.sample(range(d.shape[0]), min(args.sample, d.shape[0])))
            ds = d[sample]
            engine_run = {qid: {h.docid: h.score for h in hits} for qid, hits in zip(qids, sparse_mode)}
            row = {
                "task": task, "data": DATA[task], "lang": lang, "n_docs": d.shape[0], "n_sample": len(sample),
                "n_queries": len(qids), "doc_shares": shares(ds, masks), "query_shares": shares(q, masks),
                "doc_pieces_per_text": ds.nnz / max(1, ds.shape[0]),
                "top_doc_pieces": top_pieces(ds, pieces, masks), "top_query_pieces": top_pieces(q, pieces, masks),
                "stop_like_pieces": [pieces[i] for i in np.argsort(-word_df, kind="stable")[:15]],
                "engine_sparse": evaluate(engine_run, {x: t.qrels[x] for x in qids}, ["ndcg@10", "recall@100"]),
                "retrieval": {}, "fused_all": fused,
            }
            for name, kinds in VARIANTS.items():
                drop = None
                if kinds:
                    drop = np.zeros(len(pieces), dtype=bool)
                    for k in kinds:
                        drop |= masks[k]
                row["retrieval"][name] = retrieval(q, d, docids, qids, t.qrels, drop)
            rows.append(row)
            logging.info("%s/%s: %s", task, lang, json.dumps({k: row[k] for k in ("doc_shares", "query_shares", "retrieval")}))
            args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    write_md(rows, args)
    return 0


def write_md(rows, args) -> None:
    lines = [
        f"# The sparse head of {args.model} on real text", "",
        f"Machine: {os.cpu_count()} CPU cores shared with other jobs, no GPU. Documents: a random sample of "
        f"{args.sample} per corpus (all when smaller), encoded as indexed (title + text); queries: the judged dev "
        "queries. Shares of the lexical weight mass (sum of weights) by kind of sentencepiece piece; kinds as in "
        "`m3search/encoder/pieces.py` (a piece can be stop-like and a fragment never is; CJK text is mostly "
        f"'fragments' by construction). Stop-like: the {args.stop_n} word-initial pieces (2+ characters) in the most "
        "documents of the corpus (a stand-in for a stop-word list; CJK corpora have few word-initial pieces).",
        "", "## Where the weight goes", "",
        "| corpus | lang | side | pieces/text | punctuation | single char | fragment | stop-like |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        for side in ("doc", "query"):
            s = r[f"{side}_shares"]
            ppt = f"{r['doc_pieces_per_text']:.0f}" if side == "doc" else ""
            lines.append(f"| {r['data']} | {r['lang']} | {side} | {ppt} | {100 * s['punctuation']:.1f}% | "
                         f"{100 * s['single']:.1f}% | {100 * s['fragment']:.1f}% | {100 * s['stop-like']:.1f}% |")
    lines += ["", "## Top pieces by weight mass (documents)", ""]
    for r in rows:
        top = ", ".join(f"`{p}` {100 * w:.1f}% ({k})" for p, k, w in r["top_doc_pieces"][:12])
        lines.append(f"- {r['data']}/{r['lang']}: {top}")
    lines += ["", "## Stop-like pieces (the word-initial pieces in the most documents)", ""]
    for r in rows:
        lines.append(f"- {r['data']}/{r['lang']}: " + " ".join(f"`{p}`" for p in r["stop_like_pieces"]))
    lines += ["", "## Top pieces by weight mass (queries)", ""]
    for r in rows:
        top = ", ".join(f"`{p}` {100 * w:.1f}% ({k})" for p, k, w in r["top_query_pieces"][:12])
        lines.append(f"- {r['data']}/{r['lang']}: {top}")
    lines += ["", "## Sparse-only retrieval with pieces dropped from the query (nDCG@10 / Recall@100, ×100)", "",
              "Exact sparse scores over the whole corpus; `none` is the model as is (the engine's sparse mode, "
              "depth 100, is shown beside it as a check).", "",
              "| corpus | lang | queries | engine sparse | " + " | ".join(VARIANTS) + " |",
              "|---|---|---:|---:|" + "---:|" * len(VARIANTS)]
    for r in rows:
        cells = [f"{100 * r['retrieval'][v]['ndcg@10']:.1f} / {100 * r['retrieval'][v]['recall@100']:.1f}" for v in VARIANTS]
        e = r["engine_sparse"]
        lines.append(f"| {r['data']} | {r['lang']} | {r['n_queries']} | {100 * e['ndcg@10']:.1f} / "
                     f"{100 * e['recall@100']:.1f} | " + " | ".join(cells) + " |")
    if rows:
        lines += ["", "| average nDCG@10 | " + " | ".join(VARIANTS) + " |", "|---|" + "---:|" * len(VARIANTS)]
        by = {}
        for r in rows:
            by.setdefault(r["data"], []).append(r)
        for data, rs in by.items():
            lines.append(f"| {data} ({len(rs)}) | " + " | ".join(
                f"{100 * sum(x['retrieval'][v]['ndcg@10'] for x in rs) / len(rs):.1f}" for v in VARIANTS) + " |")
    lines += ["", "## The default fused mode (`all`, engine, depth 100) with `drop_pieces` (nDCG@10 / Recall@100, ×100)", "",
              "| corpus | lang | " + " | ".join(f"drop_pieces={v}" for v in FUSED_VARIANTS) + " |",
              "|---|---|" + "---:|" * len(FUSED_VARIANTS)]
    for r in rows:
        lines.append(f"| {r['data']} | {r['lang']} | " + " | ".join(
            f"{100 * r['fused_all'][v]['ndcg@10']:.1f} / {100 * r['fused_all'][v]['recall@100']:.1f}" for v in FUSED_VARIANTS) + " |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
