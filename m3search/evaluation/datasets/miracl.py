"""MIRACL: per-language corpus `{docid, title, text}`, `topics.*.tsv` (`qid<TAB>query`), TREC qrels.

Three layouts load through the same code, looked up in this order:
- the offline tasks: `<root>/<lang>/{topics.<split>.tsv, qrels.<split>.tsv, corpus[.<split>].jsonl[.gz]}`;
- the official release: `<root>/miracl-v1.0-<lang>/{topics,qrels}/{topics,qrels}.miracl-v1.0-<lang>-<split>.tsv`
  with the corpus in `<root>/miracl-corpus-v1.0-<lang>/docs-*.jsonl[.gz]`;
- ir-datasets' test samples: `<root>/<lang>/{topics,qrels}.miracl-v1.0-<lang>-<split>.sample.tsv`,
  `corpus.sample.jsonl`.
"""
from __future__ import annotations

import re
from pathlib import Path

from m3search.errors import InputError
from m3search.evaluation.datasets._files import first_existing, read_qrels, read_topics
from m3search.evaluation.datasets.task import Corpus, RetrievalTask

TASK = "miracl"


def _language_dirs(root: Path, lang: str) -> list[Path]:
    dirs = []
    for base in (root / lang, root / f"miracl-v1.0-{lang}"):
        dirs += [d for d in (base, base / "topics", base / "qrels") if d.is_dir()]
    return dirs


def _find(root: Path, lang: str, kind: str, split: str) -> Path | None:
    names = [f"{kind}.{split}.tsv", f"{kind}.miracl-v1.0-{lang}-{split}.tsv", f"{kind}.miracl-v1.0-{lang}-{split}.sample.tsv"]
    for folder in _language_dirs(root, lang):
        found = first_existing(folder, names)
        if found:
            return found
    return None


def _natural_key(path: Path) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name)]


def corpus_files(root: Path, lang: str, split: str) -> list[Path]:
    for folder in _language_dirs(root, lang):
        found = first_existing(folder, [f"corpus.{split}.jsonl", "corpus.jsonl", "corpus.sample.jsonl"])
        if found:
            return [found]
    for folder in (root / f"miracl-corpus-v1.0-{lang}", root / lang / f"miracl-corpus-v1.0-{lang}"):
        shards = sorted([*folder.glob("docs-*.jsonl"), *folder.glob("docs-*.jsonl.gz")], key=_natural_key)
        if shards:
            return shards
    return []


def load(root: str | Path, language: str, split: str = "dev") -> RetrievalTask:
    root = Path(root)
    topics = _find(root, language, "topics", split)
    if topics is None:
        raise InputError(
            f"{root}: no MIRACL topics for language {language!r}, split {split!r} (looked for "
            f"{language}/topics.{split}.tsv and miracl-v1.0-{language}/topics/topics.miracl-v1.0-{language}-{split}.tsv); "
            f"languages found: {languages(root, split) or 'none'}"
        )
    qrels_file = _find(root, language, "qrels", split)
    if qrels_file is None:
        raise InputError(
            f"{root}: no qrels for MIRACL {language!r} split {split!r} beside {topics.name}; MIRACL publishes qrels "
            "for train and dev only: evaluate on split 'dev'"
        )
    files = corpus_files(root, language, split)
    if not files:
        raise InputError(
            f"{root}: no corpus for MIRACL {language!r}: put corpus.jsonl(.gz) in {root / language} or the "
            f"official shards in {root / f'miracl-corpus-v1.0-{language}'}/docs-*.jsonl.gz"
        )
    return RetrievalTask(TASK, language, split, Corpus(files), read_topics(topics), read_qrels(qrels_file))


_LANG_DIR = re.compile(r"^(?:miracl-v1\.0-)?(?P<lang>[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]+)*)$")


def languages(root: str | Path, split: str = "dev") -> list[str]:
    """Languages under `root` that have topics for `split`."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = set()
    for child in root.iterdir():
        m = _LANG_DIR.match(child.name)
        if child.is_dir() and m and not child.name.startswith("miracl-corpus") and _find(root, m["lang"], "topics", split):
            found.add(m["lang"])
    return sorted(found)


_TOPICS_NAME = re.compile(r"^topics\.(?:miracl-v1\.0-(?P<lang>.+?)-)?(?P<split>train|dev|test-a|test-b|testA|testB|test)(?:\.sample)?\.tsv(?:\.gz)?$")


def splits(root: str | Path, language: str) -> list[str]:
    """The splits that have topics for `language` (e.g. ['dev', 'test-b'])."""
    out = set()
    for folder in _language_dirs(Path(root), language):
        for path in folder.iterdir():
            m = _TOPICS_NAME.match(path.name)
            if m and m["lang"] in (None, language):
                out.add(m["split"])
    return sorted(out)
