"""Loaders for the benchmark formats (MIRACL, MKQA, MLDR, BEIR) from local files, into `RetrievalTask`s.

>>> from m3search.evaluation.datasets import TASKS
>>> sorted(TASKS)
['beir', 'miracl', 'mkqa', 'mldr']
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

from m3search.errors import ConfigError, InputError
from m3search.evaluation.datasets import beir, miracl, mkqa, mldr
from m3search.evaluation.datasets.task import Corpus, RetrievalTask

__all__ = ["Corpus", "RetrievalTask", "TASKS", "load_task", "load_tasks", "task_languages"]


class TaskFormat(NamedTuple):
    load: Callable[..., RetrievalTask]
    languages: Callable[..., list[str]]
    default_split: str


TASKS: dict[str, TaskFormat] = {
    "miracl": TaskFormat(miracl.load, miracl.languages, "dev"),
    "mkqa": TaskFormat(mkqa.load, mkqa.languages, "dev"),
    "mldr": TaskFormat(mldr.load, mldr.languages, "dev"),
    "beir": TaskFormat(beir.load, beir.languages, "test"),
}


def _format(task: str) -> TaskFormat:
    if task not in TASKS:
        raise ConfigError(f"unknown benchmark {task!r}; choose one of {sorted(TASKS)}")
    return TASKS[task]


def task_languages(task: str, data_dir: str | Path, split: str | None = None) -> list[str]:
    fmt = _format(task)
    return fmt.languages(Path(data_dir), split or fmt.default_split)


def load_task(task: str, data_dir: str | Path, language: str, split: str | None = None) -> RetrievalTask:
    fmt = _format(task)
    return fmt.load(Path(data_dir), language, split or fmt.default_split)


def load_tasks(
    task: str, data_dir: str | Path, languages: list[str] | None = None, split: str | None = None
) -> list[RetrievalTask]:
    """Every language of `task` under `data_dir` (or those asked for), in the order given or sorted."""
    available = task_languages(task, data_dir, split)
    if not available:
        raise InputError(f"{data_dir}: no {task} data found (split {split or _format(task).default_split!r})")
    if languages:
        unknown = [lang for lang in languages if lang not in available]
        if unknown:
            raise ConfigError(f"{task} in {data_dir} has no language {unknown}; available: {available}")
    return [load_task(task, data_dir, lang, split) for lang in (languages or available)]
