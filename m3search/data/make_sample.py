"""Rebuild the bundled sample corpus from the project's offline data (a developer tool, not used at run time).

    python -m m3search.data.make_sample ../shared/data/eval

Picks, per language, a few dev topics of `miracl_like_small` with their relevant passages plus random
distractors, and English passages of `mkqa_like_small` whose queries exist in other languages (for
cross-lingual search). Pages used for the English passages are left out of the other languages, so a
German query about them can only be answered across languages. Deterministic (seeded).
"""
from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path

LANGS = ("de", "fr", "es", "it", "ru", "ja", "zh-CN", "ko")
TOPICS_PER_LANG = 10
PASSAGES_PER_LANG = 30
EN_TOPICS = 25
EN_PASSAGES = 60
CROSS_LINGUAL_QUERY_LANGS = ("de", "ja", "es", "ru", "zh-CN")
SEED = 3


def _read_tsv(path: Path) -> list[list[str]]:
    return [line.rstrip("\n").split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _read_qrels(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        qid, _, docid, rel = line.split()
        if int(rel) > 0:
            out.setdefault(qid, []).append(docid)
    return out


def _read_corpus(path: Path) -> dict[str, dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return {d["docid"]: d for d in map(json.loads, f)}


def _page(docid: str) -> str:
    return docid.split("#")[0]


def build(eval_dir: Path) -> tuple[list[dict], list[tuple[str, str]], list[tuple[str, str]]]:
    rng = random.Random(SEED)
    docs, queries, qrels = [], [], []

    mkqa = eval_dir / "mkqa_like_small"
    en_corpus = _read_corpus(mkqa / "corpus.dev.jsonl.gz")
    en_qrels = _read_qrels(mkqa / "qrels.dev.tsv")
    en_topics = dict(_read_tsv(mkqa / "queries.dev" / "en.tsv"))
    en_qids = sorted((q for q in en_qrels if q in en_topics and all(d in en_corpus for d in en_qrels[q])), key=int)
    en_qids = rng.sample(en_qids, EN_TOPICS)
    en_ids = {d for q in en_qids for d in en_qrels[q]}
    en_ids |= set(rng.sample(sorted(set(en_corpus) - en_ids), EN_PASSAGES - len(en_ids)))
    en_pages = {_page(d) for d in en_ids}
    for d in sorted(en_ids):
        docs.append({"docid": f"en/{d}", "title": en_corpus[d].get("title"), "text": en_corpus[d]["text"], "lang": "en"})
    for i, q in enumerate(en_qids):
        lang = CROSS_LINGUAL_QUERY_LANGS[i % len(CROSS_LINGUAL_QUERY_LANGS)]
        topics = dict(_read_tsv(mkqa / "queries.dev" / f"{lang}.tsv"))
        if q in topics:
            queries.append((f"{lang}->en/{q}", topics[q]))
            qrels.extend((f"{lang}->en/{q}", f"en/{d}") for d in en_qrels[q])

    for lang in LANGS:
        folder = eval_dir / "miracl_like_small" / lang
        corpus = _read_corpus(folder / "corpus.dev.jsonl.gz")
        corpus = {d: v for d, v in corpus.items() if _page(d) not in en_pages}
        rels = _read_qrels(folder / "qrels.dev.tsv")
        topics = [(q, t) for q, t in _read_tsv(folder / "topics.dev.tsv") if all(d in corpus for d in rels.get(q, ["?"]))]
        chosen = rng.sample(topics, TOPICS_PER_LANG)
        ids = {d for q, _ in chosen for d in rels[q]}
        ids |= set(rng.sample(sorted(set(corpus) - ids), max(PASSAGES_PER_LANG - len(ids), 0)))
        for d in sorted(ids):
            docs.append({"docid": f"{lang}/{d}", "title": corpus[d].get("title"), "text": corpus[d]["text"], "lang": lang})
        for q, text in chosen:
            queries.append((f"{lang}/{q}", text))
            qrels.extend((f"{lang}/{q}", f"{lang}/{d}") for d in rels[q])
    return docs, queries, qrels


def main(eval_dir: str) -> None:
    out = Path(__file__).resolve().parent
    docs, queries, qrels = build(Path(eval_dir))
    # mtime=0: the same input gives the same bytes
    with open(out / "sample.jsonl.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        for d in docs:
            f.write((json.dumps(d, ensure_ascii=False) + "\n").encode())
    (out / "sample_queries.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in queries), encoding="utf-8")
    (out / "sample_qrels.tsv").write_text("".join(f"{q} Q0 {d} 1\n" for q, d in qrels), encoding="utf-8")
    print(f"{len(docs)} passages, {len(queries)} queries, {len(qrels)} judgements -> {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/eval")
