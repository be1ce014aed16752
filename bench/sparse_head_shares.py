"""Where the sparse (lexical) head puts its weight on real text, for one set of heads at a time, so heads can be
compared before/after retraining (issue #14): the share of lexical weight mass (sum of weights) on pieces that
are punctuation, single characters or non-word-initial fragments (kinds as in `m3search/encoder/pieces.py`),
over a seeded random sample of each dev corpus's documents (encoded as the benchmarks index them: title + text,
the task's max length; taken from the encoding cache of bench/run_eval.py when it has them, else encoded and
cached) and over the judged dev queries.

Unlike bench/sparse_head_analysis.py it needs no prebuilt index. Each run records the heads' digest under a
label; `--compare A,B` writes the table of two labels.

    flock /tmp/m3search-heavy.lock python bench/sparse_head_shares.py --label before --tasks miracl:de,fr \\
        --tasks mkqa --tasks mldr:ca,de --cache-dir /work/cache/encodings
    python bench/sparse_head_shares.py --compare before,after
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from m3search.encoder import load_encoder  # noqa: E402
from m3search.encoder.pieces import kind_masks, vocabulary_pieces  # noqa: E402
from m3search.evaluation.cache import EncodingCache, encoder_fingerprint  # noqa: E402
from m3search.evaluation.config import BenchConfig  # noqa: E402
from m3search.evaluation.datasets import load_task, task_languages  # noqa: E402
from m3search.evaluation.runner import _encode_corpus, _no_progress  # noqa: E402

DATA = {"miracl": "miracl_like_small", "mkqa": "mkqa_like_small", "mldr": "mldr_like"}
SHOWN = ("punctuation", "single", "fragment")
OUT = ROOT / "bench" / "results" / "sparse_head_shares"


def shares(matrix, masks) -> dict[str, float]:
    total = float(matrix.data.sum())
    col = np.bincount(matrix.indices, weights=matrix.data, minlength=len(masks["word"]))
    out = {k: float(col[masks[k]].sum()) / total if total else 0.0 for k in ("punctuation", "single", "fragment", "word")}
    out["pieces_per_text"] = matrix.nnz / max(1, matrix.shape[0])
    return out


def measure(args) -> None:
    encoder = load_encoder(args.model)
    fingerprint = encoder_fingerprint(encoder)
    masks = kind_masks(vocabulary_pieces(encoder.token_strings, encoder.identity.vocab_size))
    cache = EncodingCache(args.cache_dir) if args.cache_dir else None
    rows = []
    for spec in args.tasks:
        task_name, _, langs = spec.partition(":")
        data_dir = args.data_root / DATA[task_name]
        langs = langs.split(",") if langs else task_languages(task_name, data_dir)
        tasks = [load_task(task_name, data_dir, lang) for lang in langs]
        by_corpus: dict[str, list] = {}
        for t in tasks:
            by_corpus.setdefault(t.corpus.content_hash, []).append(t)
        for group in by_corpus.values():
            config = BenchConfig(task=task_name, data_dir=data_dir, model=args.model, cache_dir=args.cache_dir)
            label = f"{task_name}/{group[0].language}" if len(group) == 1 else f"{task_name} ({len(group)} languages)"
            _, batch, info = _encode_corpus(config, group[0].corpus, encoder, fingerprint, cache, _no_progress, label)
            docs = batch.sparse.tocsr()
            sample = sorted(random.Random(0).sample(range(docs.shape[0]), min(args.sample, docs.shape[0])))
            queries = [q for t in group for q in t.judged_queries.values()]
            q = encoder.encode(queries, kind="query").sparse.tocsr()
            row = {"task": task_name, "data": DATA[task_name], "corpus": label,
                   "languages": [t.language for t in group], "n_docs": docs.shape[0], "n_sample": len(sample),
                   "n_queries": len(queries), "doc": shares(docs[sample], masks), "query": shares(q, masks),
                   "encodings_cached": bool(info.get("cached"))}
            rows.append(row)
            logging.info("%s: doc %s query %s", label, row["doc"], row["query"])
    path = args.out.with_suffix(".json")
    saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    saved[args.label] = {"heads": encoder.identity.heads_hash, "sample": args.sample, "rows": rows}
    path.write_text(json.dumps(saved, indent=1, ensure_ascii=False), encoding="utf-8")


def compare(args) -> None:
    a, b = args.compare.split(",")
    saved = json.loads(args.out.with_suffix(".json").read_text(encoding="utf-8"))
    before = {r["corpus"]: r for r in saved[a]["rows"]}
    lines = [f"# The sparse head on real text: {a} vs {b}", "",
             f"Heads: {a} = `{saved[a]['heads'][:12]}`, {b} = `{saved[b]['heads'][:12]}`. Share of the lexical "
             f"weight mass (sum of weights) on pieces of each kind (`m3search/encoder/pieces.py`); documents: a "
             f"seeded sample of {saved[b]['sample']} per corpus (all when smaller), encoded as indexed; queries: "
             "the judged dev queries. 'junk' = punctuation + single characters + non-word-initial fragments. In "
             "CJK text most pieces are fragments by construction (no '▁'), so those rows say little.", "",
             f"| corpus | side | punctuation {a} | {b} | single char {a} | {b} | fragment {a} | {b} | junk {a} | {b} |",
             "|---|---|" + "---:|" * 8]
    for r in saved[b]["rows"]:
        o = before.get(r["corpus"])
        if o is None:
            continue
        for side in ("doc", "query"):
            cells = []
            for k in (*SHOWN, "junk"):
                va = sum(o[side][x] for x in SHOWN) if k == "junk" else o[side][k]
                vb = sum(r[side][x] for x in SHOWN) if k == "junk" else r[side][k]
                cells += [f"{100 * va:.1f}%", f"{100 * vb:.1f}%"]
            lines.append(f"| {r['corpus']} | {side} | " + " | ".join(cells) + " |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", action="append", default=[], help="task[:lang,lang] (repeatable; no langs: all)")
    ap.add_argument("--label", help="name of these heads' run in the JSON (e.g. before / after)")
    ap.add_argument("--compare", help="A,B: write the table of two labelled runs")
    ap.add_argument("--model", default=None)
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data" / "eval")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / "bench" / "out" / "encodings")
    ap.add_argument("--sample", type=int, default=500, help="documents per corpus")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.compare:
        compare(args)
    elif args.label and args.tasks:
        measure(args)
    else:
        ap.error("give --label and --tasks to measure, or --compare A,B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
