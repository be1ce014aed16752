"""Ablation of the default model's trained heads, in the shape of the BGE-M3 paper's table 5.

m3search-small's backbone is frozen in heads-only training, so every head variant sees the same hidden
states: they are cached once per eval text (fp16, memory-mapped) and each variant is applied to them.
Retrieval is exact brute force (m3search.scoring) over the *_small dev sets; metrics through
m3search.evaluation.metrics (pytrec_eval-compatible).

    python bench/train_ablation.py cache --cache-dir CACHE          # heavy: one backbone pass per text
    python bench/train_ablation.py evaluate --cache-dir CACHE \\
        --variant untrained=- --variant "L only=RUN_A/heads.safetensors" \\
        --variant "L_final=RUN_B/heads.safetensors" --out bench/results/train_ablation

Run the cache step under `flock /tmp/m3search-heavy.lock` on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from m3search import scoring  # noqa: E402
from m3search.evaluation.datasets import load_task  # noqa: E402
from m3search.evaluation.metrics import evaluate  # noqa: E402
from m3search.ingest import passage_text  # noqa: E402

EVAL = ROOT.parent / "shared" / "data" / "eval"
MIRACL_LANGS = ["de", "fr", "es", "el", "ru", "ja", "zh-CN", "ko"]
MAX_LENGTH = 512
TOP_K = 100
log = logging.getLogger("train_ablation")


def load_model():
    """m3search-small with its untrained (deterministic) heads, whatever heads the package ships: the
    baseline every variant starts from."""
    from m3search.trainer.pipeline import load_for_training

    return load_for_training("m3search-small", device="cpu", reset_heads=True)


def tasks(mkqa_langs: list[str] | None, miracl_langs: list[str] | None = None):
    from m3search.evaluation.datasets import task_languages

    for lang in MIRACL_LANGS if miracl_langs is None else miracl_langs:
        yield load_task("miracl", EVAL / "miracl_like_small", lang)
    for lang in task_languages("mkqa", EVAL / "mkqa_like_small") if mkqa_langs is None else mkqa_langs:
        yield load_task("mkqa", EVAL / "mkqa_like_small", lang)


def corpus_key(task) -> str:
    return "mkqa-corpus" if task.task == "mkqa" else f"miracl-{task.language}-corpus"


def cache_all(cache_dir: Path, mkqa_langs: list[str] | None, miracl_langs: list[str] | None) -> None:
    import torch
    from m3search.trainer.pipeline import resolve_model_path
    from m3search.trainer.state_cache import cache_identity, onnx_backbone, open_or_build

    torch.manual_seed(0)
    loaded = load_model()
    model, tok, spec = loaded.model, loaded.tokenizer, loaded.spec
    fast = onnx_backbone(resolve_model_path("m3search-small"))  # the same states, faster on CPU (None: torch)
    for task in tasks(mkqa_langs, miracl_langs):
        for kind, key, texts in (
            ("passage", corpus_key(task), [passage_text(p) for p in task.corpus]),
            ("query", f"{task.task}-{task.language}-queries", list(task.judged_queries.values())),
        ):
            t0 = time.perf_counter()
            ident = cache_identity(model, tok, spec.name, kind, spec.prefix(kind), MAX_LENGTH)
            cache = open_or_build(cache_dir / key, texts, model, tok, ident, backbone=fast)
            log.info("%s: %d texts, %d tokens, %.0f s", key, len(cache), cache.meta["n_tokens"],
                     time.perf_counter() - t0)


def variant_model(base, heads: str):
    import copy

    model = copy.deepcopy(base)
    if heads != "-":
        from m3search.trainer.heads_file import load_heads

        load_heads(model, heads)
    return model


def run_of(scores: np.ndarray, qids: list[str], docids: list[str], k: int = TOP_K) -> dict:
    run = {}
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    for i, qid in enumerate(qids):
        run[qid] = {docids[j]: float(scores[i, j]) for j in top[i]}
    return run


def evaluate_all(cache_dir: Path, variants: list[tuple[str, str]], out: Path, mkqa_langs: list[str] | None,
                 miracl_langs: list[str] | None = None) -> dict:
    from m3search.trainer.state_cache import StateCache, encode_from_cache

    loaded = load_model()
    base, tok = loaded.model, loaded.tokenizer
    vocab = int(base.backbone.config.vocab_size)
    models = {name: variant_model(base, heads) for name, heads in variants}
    results: dict = {name: {} for name, _ in variants}
    corpus_reps: dict = {}  # (variant, corpus) -> EncodedBatch; the MKQA corpus serves every query language
    for task in tasks(mkqa_langs, miracl_langs):
        if not any(key[1] == corpus_key(task) for key in corpus_reps):
            corpus_reps.clear()
        queries = task.judged_queries
        qids = list(queries)
        q_cache = StateCache(cache_dir / f"{task.task}-{task.language}-queries")
        d_cache = StateCache(cache_dir / corpus_key(task))
        passages = list(task.corpus)
        docids = [p.docid for p in passages]
        d_rows = d_cache.rows([passage_text(p) for p in passages])
        metric = "recall@100" if task.task == "mkqa" else "ndcg@10"
        for name, model in models.items():
            key = (name, corpus_key(task))
            if key not in corpus_reps:
                corpus_reps[key] = encode_from_cache(d_cache, model, tok.unused_ids, vocab, d_rows)
            docs = corpus_reps[key]
            q = encode_from_cache(q_cache, model, tok.unused_ids, vocab, q_cache.rows(list(queries.values())))
            scores = scoring.all_scores(q, docs)
            scores["dense+sparse+multivec"] = scores["dense"] + 0.3 * scores["sparse"] + scores["multivec"]
            for rep, s in scores.items():
                value = evaluate(run_of(s, qids, docids), task.qrels, [metric])[metric]
                results[name].setdefault(task.task, {}).setdefault(rep, {})[task.language] = value
            log.info("%s %s/%s: %s", name, task.task, task.language,
                     {r: round(v[task.language], 4) for r, v in results[name][task.task].items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"settings": {"miracl_languages": miracl_langs or MIRACL_LANGS, "max_length": MAX_LENGTH, "top_k": TOP_K,
                            "variants": dict(variants)},
               "results": results}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    out.with_suffix(".md").write_text(markdown_table(results))
    return summary


def markdown_table(results: dict) -> str:
    reps = ["dense", "sparse", "multivec", "dense+sparse+multivec"]
    lines = ["| variant | " + " | ".join(f"MIRACL-like nDCG@10 {r}" for r in reps) + " | "
             + " | ".join(f"MKQA-like R@100 {r}" for r in reps) + " |",
             "|" + "---|" * (1 + 2 * len(reps))]
    for name, per_task in results.items():
        cells = []
        for task in ("miracl", "mkqa"):
            for r in reps:
                vals = per_task.get(task, {}).get(r, {})
                cells.append(f"{100 * np.mean(list(vals.values())):.1f}" if vals else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _langs(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [] if text == "none" else text.split(",")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache")
    c.add_argument("--cache-dir", type=Path, required=True)
    c.add_argument("--mkqa-langs", default=None, help="comma-separated (default: all; 'none' for none)")
    c.add_argument("--miracl-langs", default=None, help=f"comma-separated (default: {','.join(MIRACL_LANGS)})")
    e = sub.add_parser("evaluate")
    e.add_argument("--cache-dir", type=Path, required=True)
    e.add_argument("--variant", action="append", required=True, help="NAME=HEADS_FILE, '-' for untrained heads")
    e.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_ablation")
    e.add_argument("--mkqa-langs", default=None)
    e.add_argument("--miracl-langs", default=None)
    args = ap.parse_args()
    langs = _langs(args.mkqa_langs)
    if args.cmd == "cache":
        cache_all(args.cache_dir, langs, _langs(args.miracl_langs))
    else:
        variants = [tuple(v.split("=", 1)) for v in args.variant]
        evaluate_all(args.cache_dir, variants, args.out, langs, _langs(args.miracl_langs))


if __name__ == "__main__":
    main()
