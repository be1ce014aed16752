"""Unified fine-tuning of M3 models with self-knowledge distillation (BGE-M3, arXiv 2402.03216).

Modules, in the order data flows through them:
- `data`: FlagEmbedding's JSON-lines format, validation, group sampling;
- `mining`: hard negatives from m3search's own index;
- `bucketing`: batches from one length bucket at a time;
- `state_cache`: a frozen backbone's hidden states, cached once (heads-only training, evaluation);
- `encoding`: whole-batch or split-batch (GradCache) encoding with exact gradients;
- `scores`, `losses`: the three scores and the unified loss with self-distillation;
- `distributed`: torchrun / torch.distributed data parallel with cross-device dense negatives;
- `trainer`: the loop, checkpoints in BGE-M3 layout, resume (`state`), `heads_file`, `curves`;
- `pipeline`: `fit` and `mine`, what `m3search train` runs.
"""
from __future__ import annotations

from m3search.trainer.config import TrainConfig
from m3search.trainer.data import TrainExample, read_examples, write_examples
from m3search.trainer.mining import MiningConfig
from m3search.trainer.pipeline import fit, mine
from m3search.trainer.trainer import TrainCallback, Trainer, TrainResult

__all__ = [
    "MiningConfig", "TrainCallback", "TrainConfig", "TrainExample", "TrainResult", "Trainer", "fit", "mine",
    "read_examples", "write_examples",
]
