"""Whole-word sparse terms through the engine (issue #14): pieces vs pieces+words on mldr_like, sparse and all.

bench/sparse_whole_words.py measured the schemes offline (exhaustive q·d over captured weights). This one
goes the way a user does: `m3search.build_index(..., sparse_terms=SCHEME)` over the language's corpus with the
default model (m3search-small, shipped heads; passages cut at 8192 tokens as run_eval's mldr, in the
encoder's 512-token windows), then `search_many(queries, mode=..., k=100)` on the index (queries encoded
with the index's recorded scheme by the API), nDCG@10 by pytrec_eval over the dev qrels, and the index's
sizes from `info()`. Modes: sparse, and all with the built-in weights (dense 1, sparse 0.3, multivec 1).

    flock /tmp/m3search-heavy.lock python bench/sparse_words_engine.py run --langs ca,nb,id   # -> bench/out/sparse_words_engine/
    python bench/sparse_words_engine.py report                                              # -> bench/results/sparse_words_engine.md
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# ../shared beside a checkout; a worktree elsewhere uses --data-dir
DATA = ROOT.parent / "shared" / "data" / "eval" / "mldr_like"
OUT = ROOT / "bench" / "out" / "sparse_words_engine"
RESULTS = ROOT / "bench" / "results" / "sparse_words_engine.md"
SCHEMES = ("pieces", "pieces+words")
MODES = ("sparse", "all")
MAX_LENGTH = 8192  # run_eval's mldr passage length
log = logging.getLogger("sparse_words_engine")


def ndcg_at_10(qrels: dict, run: dict) -> tuple[float, dict]:
    """Mean nDCG@10 over the judged queries (pytrec_eval; a query without hits scores 0) and per query."""
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})
    per_query = {q: m["ndcg_cut_10"] for q, m in evaluator.evaluate(run).items()}
    total = sum(per_query.get(q, 0.0) for q in qrels)
    return total / len(qrels), per_query


def run_language(lang: str, data_dir: Path, max_docs: int | None) -> dict:
    import m3search
    from m3search.evaluation.datasets import load_tasks

    (task,) = load_tasks("mldr", data_dir, [lang])
    docs = list(task.corpus)
    if max_docs is not None:
        docs = docs[:max_docs]
    kept = {d.id for d in docs}
    qrels = {q: {d: int(r) for d, r in rel.items()} for q, rel in task.qrels.items()
             if q in task.judged_queries and any(d in kept for d in rel)}
    qids = sorted(qrels)
    texts = [task.judged_queries[q] for q in qids]
    out = {"lang": lang, "docs": len(docs), "queries": len(qids), "schemes": {}}
    with tempfile.TemporaryDirectory(prefix=f"sparse-words-{lang}-") as tmp:
        for scheme in SCHEMES:
            start = time.perf_counter()
            with m3search.build_index(Path(tmp) / scheme, docs, sparse_terms=scheme, max_length=MAX_LENGTH) as index:
                built = time.perf_counter() - start
                info = index.info()
                row = {"index_seconds": built, "sparse_bytes": info["components"]["sparse"]["bytes"],
                       "total_bytes": info["total_bytes"], "sparse_terms": info["encoder"]["sparse_terms"],
                       "sparse_width": info["encoder"]["sparse_width"], "modes": {}}
                for mode in MODES:
                    start = time.perf_counter()
                    hits = index.search_many(texts, k=100, mode=mode, with_text=False)
                    seconds = time.perf_counter() - start
                    run = {q: {h.docid: float(h.score) for h in row_hits} for q, row_hits in zip(qids, hits)}
                    mean, _ = ndcg_at_10(qrels, run)
                    row["modes"][mode] = {"ndcg@10": mean, "search_seconds": seconds}
                    log.info("%s %s %s: nDCG@10 %.1f", lang, scheme, mode, 100 * mean)
            out["schemes"][scheme] = row
    return out


def run(args) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for lang in args.langs.split(","):
        target = OUT / f"{lang}.json"
        if target.is_file() and not args.force:
            log.info("%s: done already (%s)", lang, target)
            continue
        start = time.perf_counter()
        result = run_language(lang, args.data_dir, args.max_docs)
        result["seconds"] = time.perf_counter() - start
        result["max_docs"] = args.max_docs
        target.write_text(json.dumps(result, indent=1))
        log.info("%s: %d docs, %d queries in %.0f s", lang, result["docs"], result["queries"], result["seconds"])


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f}"


def report(args) -> None:
    results = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]
    if not results:
        raise SystemExit(f"no results in {OUT}: run `bench/sparse_words_engine.py run` first")
    langs = [r["lang"] for r in results]
    lines = ["# Whole-word sparse terms through the engine (issue #14)", "",
             "`bench/sparse_words_engine.py`: `build_index(..., sparse_terms=SCHEME)` with the default model "
             "(m3search-small, shipped heads), passages cut at 8192 tokens in 512-token windows, queries through "
             "`search_many(k=100)` on the index (encoded with the index's recorded scheme), nDCG@10 by pytrec_eval "
             f"over mldr_like dev. {platform.processor() or platform.machine()}, 2 shared CPU cores, no GPU. ×100.", ""]
    for mode in MODES:
        lines += [f"## nDCG@10, mode {mode}", "", "| scheme | " + " | ".join(langs) + " | avg |",
                  "|---|" + "---:|" * (len(langs) + 1)]
        for scheme in SCHEMES:
            vals = [100 * r["schemes"][scheme]["modes"][mode]["ndcg@10"] for r in results]
            lines.append(f"| {scheme} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | {sum(vals) / len(vals):.1f} |")
        lines.append("")
    lines += ["## Index size and time", "",
              "| lang | docs | queries | scheme | sparse MiB | index MiB | indexing s | sparse search s | all search s |",
              "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in results:
        for scheme in SCHEMES:
            s = r["schemes"][scheme]
            lines.append(f"| {r['lang']} | {r['docs']} | {r['queries']} | {scheme} | {_mib(s['sparse_bytes'])} | "
                         f"{_mib(s['total_bytes'])} | {s['index_seconds']:.0f} | {s['modes']['sparse']['search_seconds']:.1f} | "
                         f"{s['modes']['all']['search_seconds']:.1f} |")
    lines.append("")
    notes = args.notes.read_text() if args.notes else ""
    RESULTS.write_text("\n".join(lines) + ("\n" + notes if notes else ""))
    print("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["run", "report"])
    ap.add_argument("--langs", default="ca,nb,id")
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--max-docs", type=int, default=None, help="index only the first N documents of each corpus")
    ap.add_argument("--notes", type=Path, default=None, help="report: a markdown file appended to the results")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    {"run": run, "report": report}[args.step](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
