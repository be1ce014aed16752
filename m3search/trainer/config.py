"""Every knob of a training run, saved as JSON beside its checkpoints so a run can be resumed or redone."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

from m3search.errors import ConfigError

Mode = Literal["heads", "full"]
MODES = ("heads", "full")
AMP_CHOICES = ("none", "bf16", "fp16")


@dataclasses.dataclass
class TrainConfig:
    mode: Mode = "heads"  # heads: frozen backbone, train sparse + multi-vector heads; full: everything
    # loss (paper defaults)
    temperature: float = 0.02
    self_distill: bool = True
    self_distill_start_step: int = 0  # L' joins the loss on steps > this one (FlagEmbedding's convention)
    teacher_scores: bool = False  # use the data's pos_scores / neg_scores as targets
    negatives_cross_device: bool = True  # dense negatives from every process when distributed
    # data
    group_size: int = 8  # 1 positive + group_size - 1 negatives
    batch_size: int = 32  # queries per step and process
    bucket_edges: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096)
    bucket_batch_sizes: tuple[int, ...] | None = None  # one per bucket, else batch_size everywhere
    group_batches_by: str | None = None  # a metadata field (e.g. "task"): batches never mix its values
    query_max_length: int = 64
    passage_max_length: int = 512
    # optimisation
    learning_rate: float = 1e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float | None = 1.0
    epochs: int = 1
    max_steps: int | None = None  # stop earlier than `epochs` would
    seed: int = 0
    # memory
    sub_batch_size: int | None = None  # encode this many texts at a time (GradCache-style, exact gradients)
    gradient_checkpointing: bool = False
    amp: str = "none"  # bf16 or fp16 autocast (fp16 on CUDA only)
    # bookkeeping
    log_every: int = 10
    save_every: int | None = None  # steps between checkpoints (None: only at the end)

    def __post_init__(self) -> None:
        self.bucket_edges = tuple(self.bucket_edges)
        if self.bucket_batch_sizes is not None:
            self.bucket_batch_sizes = tuple(self.bucket_batch_sizes)
        self.validate()

    def validate(self) -> None:
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.amp not in AMP_CHOICES:
            problems.append(f"amp must be one of {AMP_CHOICES}, got {self.amp!r}")
        if not self.temperature > 0:
            problems.append(f"temperature must be > 0, got {self.temperature}")
        for name in ("group_size", "batch_size", "query_max_length", "passage_max_length", "epochs", "log_every"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "sub_batch_size", "save_every"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                problems.append(f"{name} must be >= 1 or unset, got {v}")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.learning_rate <= 0:
            problems.append(f"learning_rate must be > 0, got {self.learning_rate}")
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))

    @property
    def n_negatives(self) -> int:
        return self.group_size - 1

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["bucket_edges"] = list(self.bucket_edges)
        if self.bucket_batch_sizes is not None:
            d["bucket_batch_sizes"] = list(self.bucket_batch_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown training options {unknown}; valid ones are {sorted(known)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"can't read the training config {path}: {e}") from None
        return cls.from_dict(d, source=str(path))
