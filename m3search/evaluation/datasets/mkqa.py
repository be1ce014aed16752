"""MKQA: queries in many languages against one English corpus; scored by qrels or by answer strings.

Query files, looked up in this order under `<root>`:
- the offline layout: `queries.<split>/<lang>.tsv` (`qid<TAB>query`; a qid is shared by its translations)
  with `qrels.<split>.tsv`;
- BGE-M3's evaluation files: `<lang>.jsonl` with `{id, question, answers: [str]}`;
- Apple's release: `mkqa.jsonl[.gz]` with `{example_id, queries: {lang: str}, answers: {lang: [{text, aliases}]}}`.
The corpus is `corpus[.<split>].jsonl[.gz]` (`{_id|docid, title, text}`) unless given explicitly.
"""
from __future__ import annotations

from pathlib import Path

from m3search.errors import InputError
from m3search.evaluation.datasets._files import first_existing, get_field, iter_jsonl, read_qrels, read_topics
from m3search.evaluation.datasets.task import Corpus, RetrievalTask

TASK = "mkqa"


def _read_bge_jsonl(path: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    queries, answers = {}, {}
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        qid = get_field(obj, ("id", "query_id", "qid"), where)
        if qid in queries:
            raise InputError(f"{where}: query id {qid!r} appears twice; ids must be unique")
        queries[qid] = get_field(obj, ("question", "query"), where)
        found = get_field(obj, ("answers",), where, kind=list, optional=True) or []
        for i, a in enumerate(found):
            if not isinstance(a, str):
                raise InputError(f"{where}: answers[{i}] is {type(a).__name__}, expected a string")
        answers[qid] = found
    return queries, answers


def _read_apple_jsonl(path: Path, lang: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    queries, answers = {}, {}
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        qid = get_field(obj, ("example_id",), where)
        by_lang = get_field(obj, ("queries",), where, kind=dict)
        if lang not in by_lang:
            raise InputError(f"{where}: no query in language {lang!r} (languages: {sorted(by_lang)})")
        queries[qid] = by_lang[lang]
        strings = []
        for i, a in enumerate((get_field(obj, ("answers",), where, kind=dict).get(lang)) or []):
            if not isinstance(a, dict):
                raise InputError(f"{where}: answers[{lang!r}][{i}] is {type(a).__name__}, expected an object")
            # unanswerable and long answers carry text null: nothing to match
            strings += [s for s in [a.get("text"), *(a.get("aliases") or [])] if isinstance(s, str) and s]
        answers[qid] = strings
    return queries, answers


def _apple_file(root: Path) -> Path | None:
    return first_existing(root, ["mkqa.jsonl"])


def load(root: str | Path, language: str, split: str = "dev", corpus: str | Path | None = None) -> RetrievalTask:
    root = Path(root)
    answers: dict[str, list[str]] = {}
    tsv = first_existing(root / f"queries.{split}", [f"{language}.tsv"])
    bge = first_existing(root, [f"{language}.jsonl"])
    if tsv:
        queries = read_topics(tsv)
    elif bge:
        queries, answers = _read_bge_jsonl(bge)
    elif _apple_file(root):
        queries, answers = _read_apple_jsonl(_apple_file(root), language)
    else:
        raise InputError(
            f"{root}: no MKQA queries for language {language!r} (looked for queries.{split}/{language}.tsv, "
            f"{language}.jsonl and mkqa.jsonl); languages found: {languages(root, split) or 'none'}"
        )
    qrels_file = first_existing(root, [f"qrels.{split}.tsv"])
    qrels = read_qrels(qrels_file) if qrels_file else {}
    if not qrels and not any(answers.values()):
        raise InputError(f"{root}: MKQA {language!r} has neither qrels.{split}.tsv nor answer strings to score against")
    if corpus is not None:
        corpus_file = Path(corpus)
    else:
        corpus_file = first_existing(root, [f"corpus.{split}.jsonl", "corpus.jsonl"])
        if corpus_file is None:
            raise InputError(f"{root}: no corpus.jsonl(.gz) for MKQA: put the English corpus there or pass its path")
    return RetrievalTask(TASK, language, split, Corpus([corpus_file]), queries, qrels, answers, corpus_language="en")


def languages(root: str | Path, split: str = "dev") -> list[str]:
    root = Path(root)
    tsv_dir = root / f"queries.{split}"
    if tsv_dir.is_dir():
        return sorted(p.name.split(".")[0] for p in tsv_dir.iterdir() if p.name.endswith((".tsv", ".tsv.gz")))
    apple = _apple_file(root)
    if apple:
        for _, obj in iter_jsonl(apple):
            return sorted(obj.get("queries") or {})
        return []
    if not root.is_dir():
        return []
    return sorted(
        p.name.split(".")[0]
        for p in root.iterdir()
        if p.name.endswith((".jsonl", ".jsonl.gz")) and not p.name.startswith(("corpus", "mkqa"))
    )
