"""What a benchmark run does: `BenchConfig`, each task's defaults (headline metric first, passage length,
fusion weights) and the index presets."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

from m3search.errors import ConfigError
from m3search.evaluation import metrics as M
from m3search.evaluation.modes import BM25, DEFAULT_MODES, PAPER_WEIGHTS, mode_signals


@dataclasses.dataclass(frozen=True)
class TaskDefaults:
    metrics: tuple[str, ...]  # the first is the headline metric, as in the paper's table
    answer_metrics: tuple[str, ...] = ()
    max_length: int | None = None  # passage tokens; None: the encoder's default
    fusion: tuple[tuple[str, float], ...] = tuple(PAPER_WEIGHTS.items())  # weights of the fused modes


# Every task starts from the paper's fusion weights (dense 1, sparse 0.3, multivec 1); the weight sweep in
# each report shows how far another choice would move the headline metric.
TASK_DEFAULTS = {
    "miracl": TaskDefaults(("ndcg@10", "recall@100", "mrr@10")),
    "mkqa": TaskDefaults(("recall@100", "recall@20", "ndcg@10"), ("answer_recall@100", "answer_recall@20")),
    # MLDR is about long documents: the paper encodes up to 8192 tokens
    "mldr": TaskDefaults(("ndcg@10", "recall@100", "mrr@10"), max_length=8192),
    "beir": TaskDefaults(("ndcg@10", "recall@100", "mrr@10")),
}


# Index settings per preset. "exact": flat dense search and uncompressed (fp16) token vectors, the settings
# the paper's numbers assume; "default": what `Index.create` gives a user (lossy token-vector compression).
INDEX_CONFIGS: dict[str, dict[str, dict] | None] = {
    "exact": {"dense": {"index": "flat"}, "sparse": {}, "multivec": {"compression": "fp16"}},
    "default": None,
    # exact dense and sparse, compressed token vectors: what the token store's compression costs in quality
    "multivec-sq8": {"dense": {"index": "flat"}, "sparse": {}, "multivec": {"compression": "sq8"}},
    "multivec-sq4": {"dense": {"index": "flat"}, "sparse": {}, "multivec": {"compression": "sq4"}},
    "multivec-pq48": {"dense": {"index": "flat"}, "sparse": {}, "multivec": {"compression": "pq48"}},
    # residual codes against the candidate generator's centroids (m3search.indexes.multivec.generator)
    **{f"multivec-rpq{m}": {"dense": {"index": "flat"}, "sparse": {}, "multivec": {"compression": f"rpq{m}"}}
       for m in (32, 48, 64, 96)},
}


@dataclasses.dataclass
class BenchConfig:
    """What to run. Unset fields take the task's defaults (TASK_DEFAULTS)."""

    task: str
    data_dir: Path
    model: str | None = None
    languages: Sequence[str] | None = None
    split: str | None = None
    modes: Sequence[str] = (*DEFAULT_MODES, BM25)
    fusion_weights: Mapping[str, float] | None = None
    metrics: Sequence[str] | None = None
    k: int = 100
    depth: int = 100
    max_length: int | None = None
    batch_size: int = 16
    cache_dir: Path | None = None
    backend: str = "engine"  # "engine" (index + planner) or "exact" (brute force, the reference)
    components: Mapping[str, dict] | None = dataclasses.field(default_factory=lambda: INDEX_CONFIGS["exact"])
    sweep_sparse: Sequence[float] = (0.0, 0.1, 0.3, 0.5, 1.0)
    sweep_multivec: Sequence[float] = (0.0, 0.5, 1.0)
    max_queries: int | None = None  # first N judged queries per language, for dry runs
    work_dir: Path | None = None  # where indexes are built (a temporary folder inside it, removed after)
    runs_dir: Path | None = None  # where TREC runs go; None: not written
    runs_gzip: bool = False  # write runs/<lang>/<mode>.trec.gz instead of .trec
    # the text (BM25) component's language for modes with 'text': "auto" = the corpus language's stemmer
    # where tantivy has one, else "multilingual"; or a language code for every corpus
    text_language: str = "auto"
    text_sweep: Sequence[float] = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)  # text weights tried beside 'all'

    def __post_init__(self) -> None:
        if self.task not in TASK_DEFAULTS:
            raise ConfigError(f"unknown benchmark {self.task!r}; choose one of {sorted(TASK_DEFAULTS)}")
        if self.backend not in ("engine", "exact"):
            raise ConfigError(f"backend must be 'engine' or 'exact', got {self.backend!r}")
        for name in ("k", "depth", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for m in self.modes:
            if m != BM25:
                mode_signals(m)
        if self.metrics:
            for m in self.metrics:
                if not m.startswith("answer_recall@"):
                    M.parse_metric(m)

    @property
    def defaults(self) -> TaskDefaults:
        return TASK_DEFAULTS[self.task]

    @property
    def passage_max_length(self) -> int | None:
        return self.max_length if self.max_length is not None else self.defaults.max_length

    @property
    def fusion(self) -> dict[str, float]:
        return {**dict(self.defaults.fusion), **dict(self.fusion_weights or {})}
