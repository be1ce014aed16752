"""MLDR: long documents `{docid, text}`, queries `{query_id, query, positive_passages, negative_passages}`.

Per language, in `<root>/<lang>/` or `<root>/mldr-v1.0-<lang>/`: queries in `queries.<split>.jsonl` (offline
layout) or `<split>.jsonl` (the release), the corpus in `corpus.jsonl[.gz]`, qrels in `qrels.<split>.tsv`
when present, else taken from each query's `positive_passages` (relevance 1).
"""
from __future__ import annotations

from pathlib import Path

from m3search.errors import InputError
from m3search.evaluation.datasets._files import first_existing, get_field, iter_jsonl, read_qrels
from m3search.evaluation.datasets.task import Corpus, RetrievalTask

TASK = "mldr"


def _language_dir(root: Path, lang: str) -> Path | None:
    for folder in (root / lang, root / f"mldr-v1.0-{lang}"):
        if folder.is_dir():
            return folder
    return None


def _queries_file(folder: Path, lang: str, split: str) -> Path | None:
    return first_existing(folder, [f"queries.{split}.jsonl", f"{split}.jsonl", f"mldr-v1.0-{lang}-{split}.jsonl"])


def _read_queries(path: Path) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    queries: dict[str, str] = {}
    positives: dict[str, dict[str, int]] = {}
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        qid = get_field(obj, ("query_id", "_id", "id"), where)
        if qid in queries:
            raise InputError(f"{where}: query id {qid!r} appears twice; ids must be unique")
        queries[qid] = get_field(obj, ("query", "text"), where)
        for i, p in enumerate(get_field(obj, ("positive_passages",), where, kind=list, optional=True) or []):
            if not isinstance(p, dict) or "docid" not in p:
                raise InputError(f"{where}: positive_passages[{i}] must be an object with a 'docid'")
            positives.setdefault(qid, {})[str(p["docid"])] = 1
    return queries, positives


def load(root: str | Path, language: str, split: str = "dev") -> RetrievalTask:
    root = Path(root)
    folder = _language_dir(root, language)
    queries_file = _queries_file(folder, language, split) if folder else None
    if queries_file is None:
        raise InputError(
            f"{root}: no MLDR queries for language {language!r}, split {split!r} (looked for {language}/queries.{split}.jsonl "
            f"and {language}/{split}.jsonl); languages found: {languages(root, split) or 'none'}"
        )
    queries, positives = _read_queries(queries_file)
    qrels_file = first_existing(folder, [f"qrels.{split}.tsv", f"qrels.mldr-v1.0-{language}-{split}.tsv"])
    qrels = read_qrels(qrels_file) if qrels_file else positives
    if not qrels:
        raise InputError(f"{queries_file}: no qrels.{split}.tsv and no positive_passages: nothing to score against")
    corpus_file = first_existing(folder, ["corpus.jsonl", f"corpus-{language}.jsonl"])
    if corpus_file is None:
        raise InputError(f"{folder}: no corpus.jsonl(.gz) for MLDR {language!r}")
    return RetrievalTask(TASK, language, split, Corpus([corpus_file]), queries, qrels)


def languages(root: str | Path, split: str = "dev") -> list[str]:
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for child in sorted(root.iterdir()):
        lang = child.name.removeprefix("mldr-v1.0-")
        if child.is_dir() and _queries_file(child, lang, split):
            out.append(lang)
    return out
