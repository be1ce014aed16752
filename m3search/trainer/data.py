"""Training data in FlagEmbedding's JSON-lines format, and the sampling of one group per query.

One line per query: {"query": str, "pos": [str, ...], "neg": [str, ...]} with optional "pos_scores" and
"neg_scores" (a teacher's scores, one per passage) and any other fields (kept as `meta`, e.g. "lang",
"task"). Files may be gzip-compressed (.gz).
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import json
import math
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from m3search.data.lines import iter_lines
from m3search.errors import InputError

KNOWN_FIELDS = ("query", "pos", "neg", "pos_scores", "neg_scores")


@dataclasses.dataclass(frozen=True)
class TrainExample:
    query: str
    pos: tuple[str, ...]
    neg: tuple[str, ...] = ()
    pos_scores: tuple[float, ...] | None = None
    neg_scores: tuple[float, ...] | None = None
    meta: dict = dataclasses.field(default_factory=dict, compare=False)

    @property
    def has_teacher_scores(self) -> bool:
        return self.pos_scores is not None and self.neg_scores is not None

    def to_json(self) -> dict:
        out: dict = {"query": self.query, "pos": list(self.pos), "neg": list(self.neg)}
        if self.pos_scores is not None:
            out["pos_scores"] = list(self.pos_scores)
        if self.neg_scores is not None:
            out["neg_scores"] = list(self.neg_scores)
        out.update(self.meta)
        return out


def _open_text(path: Path, mode: str, gz: bool | None = None) -> io.TextIOBase:
    """For writing (reading goes through m3search.data.lines)."""
    if path.suffix == ".gz" if gz is None else gz:
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def _texts(value, where: str, field: str, allow_empty: bool) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise InputError(f"{where}: field {field!r} must be a list of strings, got {json.dumps(value)[:80]}")
    if not value and not allow_empty:
        raise InputError(f"{where}: field {field!r} is empty: every query needs at least one positive passage")
    return tuple(value)


def _scores(value, n: int, where: str, field: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    ok = isinstance(value, list) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value
    )
    if not ok:
        raise InputError(f"{where}: field {field!r} must be a list of finite numbers, got {json.dumps(value)[:80]}")
    if len(value) != n:
        texts = field.split("_")[0]
        raise InputError(f"{where}: field {field!r} has {len(value)} scores but {texts!r} has {n} passages: "
                         "give one score per passage")
    return tuple(float(x) for x in value)


def parse_example(record, where: str) -> TrainExample:
    """Validate one decoded JSON line; `where` ("file:line") prefixes every error."""
    if not isinstance(record, dict):
        raise InputError(f"{where}: a line must be a JSON object with 'query' and 'pos', got {type(record).__name__}")
    for field in ("query", "pos"):
        if field not in record:
            raise InputError(f"{where}: field {field!r} is missing: each line needs "
                             '{"query": "...", "pos": ["..."], "neg": ["..."]}')
    if not isinstance(record["query"], str):
        raise InputError(f"{where}: field 'query' must be a string, got {json.dumps(record['query'])[:80]}")
    pos = _texts(record["pos"], where, "pos", allow_empty=False)
    neg = _texts(record.get("neg", []), where, "neg", allow_empty=True)
    pos_scores = _scores(record.get("pos_scores"), len(pos), where, "pos_scores")
    neg_scores = _scores(record.get("neg_scores"), len(neg), where, "neg_scores")
    meta = {k: v for k, v in record.items() if k not in KNOWN_FIELDS}
    return TrainExample(record["query"], pos, neg, pos_scores, neg_scores, meta)


def iter_examples(path: str | Path) -> Iterator[TrainExample]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"training data {path} does not exist")
    for line_no, line in iter_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        yield parse_example(record, where)


def read_examples(path: str | Path) -> list[TrainExample]:
    examples = list(iter_examples(path))
    if not examples:
        raise InputError(f"training data {path} holds no examples")
    return examples


def write_examples(path: str | Path, examples: Iterable[TrainExample]) -> None:
    """Write JSON lines (gzip when the name ends in .gz) through a temporary file, then publish."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with _open_text(tmp, "w", gz=path.suffix == ".gz") as f:
        for ex in examples:
            f.write(json.dumps(ex.to_json(), ensure_ascii=False) + "\n")
    tmp.replace(path)


def check_for_training(examples: list[TrainExample], n_negatives: int, teacher_scores: bool, source: str) -> None:
    """Refuse data that can't fill the groups asked for, naming the first bad example."""
    for i, ex in enumerate(examples):
        if n_negatives > 0 and not ex.neg:
            raise InputError(
                f"{source}: example {i + 1} (query {ex.query[:60]!r}) has no negatives but groups need "
                f"{n_negatives}: mine some with `m3search train mine-negatives` or use --group-size 1"
            )
        if teacher_scores and not ex.has_teacher_scores:
            raise InputError(
                f"{source}: example {i + 1} (query {ex.query[:60]!r}) lacks 'pos_scores'/'neg_scores', "
                "which teacher-score distillation needs: add them or drop --teacher-scores"
            )


@dataclasses.dataclass(frozen=True)
class Group:
    """One query's share of a batch: its positive first, then its negatives."""

    query: str
    passages: tuple[str, ...]
    teacher_scores: tuple[float, ...] | None


def sample_group(ex: TrainExample, n_negatives: int, rng: np.random.Generator, teacher_scores: bool) -> Group:
    """FlagEmbedding's sampling: one random positive; negatives without replacement when there are enough,
    otherwise the list repeated as often as needed and sampled from."""
    pos_i = int(rng.integers(len(ex.pos)))
    if n_negatives == 0:
        neg_idx: list[int] = []
    elif len(ex.neg) >= n_negatives:
        neg_idx = rng.choice(len(ex.neg), size=n_negatives, replace=False).tolist()
    else:
        pool = list(range(len(ex.neg))) * math.ceil(n_negatives / len(ex.neg))
        neg_idx = [pool[j] for j in rng.choice(len(pool), size=n_negatives, replace=False)]
    passages = (ex.pos[pos_i], *(ex.neg[j] for j in neg_idx))
    scores = None
    if teacher_scores:
        scores = (ex.pos_scores[pos_i], *(ex.neg_scores[j] for j in neg_idx))
    return Group(ex.query, passages, scores)
