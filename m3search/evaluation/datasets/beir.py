"""BEIR: `corpus.jsonl` `{_id, title, text}`, `queries.jsonl` `{_id, text}`, `qrels/<split>.tsv`.

`root` is one dataset folder or a folder of dataset folders; each dataset plays the part of a language
(a column of the report).
"""
from __future__ import annotations

from pathlib import Path

from m3search.errors import InputError
from m3search.evaluation.datasets._files import first_existing, get_field, iter_jsonl, read_qrels
from m3search.evaluation.datasets.task import Corpus, RetrievalTask

TASK = "beir"


def _dataset_dir(root: Path, name: str) -> Path:
    if root.name == name and first_existing(root, ["corpus.jsonl"]):
        return root
    return root / name


def load(root: str | Path, language: str, split: str = "test") -> RetrievalTask:
    folder = _dataset_dir(Path(root), language)
    corpus_file = first_existing(folder, ["corpus.jsonl"])
    queries_file = first_existing(folder, ["queries.jsonl"])
    qrels_file = first_existing(folder / "qrels", [f"{split}.tsv"])
    missing = [n for n, f in (("corpus.jsonl", corpus_file), ("queries.jsonl", queries_file), (f"qrels/{split}.tsv", qrels_file)) if f is None]
    if missing:
        raise InputError(f"{folder}: not a BEIR dataset folder for split {split!r}: missing {', '.join(missing)}")
    queries: dict[str, str] = {}
    for lineno, obj in iter_jsonl(queries_file):
        where = f"{queries_file}:{lineno}"
        queries[get_field(obj, ("_id", "id"), where)] = get_field(obj, ("text", "query"), where)
    return RetrievalTask(TASK, language, split, Corpus([corpus_file]), queries, read_qrels(qrels_file))


def languages(root: str | Path, split: str = "test") -> list[str]:
    """Dataset names: `root` itself when it is a dataset, else its subfolders that are."""
    root = Path(root)
    if first_existing(root, ["corpus.jsonl"]):
        return [root.name]
    if not root.is_dir():
        return []
    return sorted(c.name for c in root.iterdir() if c.is_dir() and first_existing(c, ["corpus.jsonl"]))
