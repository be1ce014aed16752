"""The training loop: batches from length buckets -> hidden states -> heads -> unified loss -> optimizer step.

Output folder of a run:
    train_config.json         the config (what `--resume` and a rerun need)
    log.jsonl                 one line per logged step: every loss term (mean over the logging window), lr
    checkpoint-<step>/        BGE-M3 layout model + trainer_state/ (optimizer, progress, RNG) for resuming
    model/                    the final model in BGE-M3 layout
    heads.safetensors         the final sparse + multi-vector heads alone
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from m3search.encoder.checkpoint import ModelSpec, save_m3_model
from m3search.encoder.model import M3Model
from m3search.encoder.tokenizer import M3Tokenizer
from m3search.errors import ConfigError, InputError
from m3search.trainer import distributed as D
from m3search.trainer.bucketing import BucketBatchSampler
from m3search.trainer.config import TrainConfig
from m3search.trainer.data import TrainExample, check_for_training, sample_group
from m3search.trainer.encoding import (
    Side, autocast_context, backward_through_chunks, encode_without_grad, run_backbone, tokenize,
)
from m3search.trainer.heads import packed_heads
from m3search.trainer.heads_file import save_heads
from m3search.trainer.losses import GatheredDense, LossTerms, Reps, unified_loss
from m3search.trainer.state import Progress, load_state, restore_rng, save_state
from m3search.trainer.state_cache import StateCache

logger = logging.getLogger(__name__)

LOG_FILE = "log.jsonl"
CONFIG_FILE = "train_config.json"
FINAL_MODEL = "model"
HEADS_FILE = "heads.safetensors"


class TrainCallback:
    """Hooks for progress display; the default does nothing."""

    def on_start(self, total_steps: int, first_step: int) -> None: ...

    def on_step(self, step: int, losses: dict[str, float]) -> None: ...

    def on_log(self, record: dict) -> None: ...

    def on_save(self, path: Path) -> None: ...


@dataclasses.dataclass
class TrainResult:
    out_dir: Path
    steps: int
    model_dir: Path | None
    heads_file: Path | None
    last_log: dict | None


def learning_rate(step: int, total: int, peak: float, warmup_ratio: float) -> float:
    """Linear warm-up to `peak`, then linear decay to 0 (the Hugging Face Trainer's default schedule)."""
    warmup = int(math.ceil(total * warmup_ratio))
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


class Trainer:
    """Fine-tunes an M3Model with the unified loss.

    caches: (queries, passages) hidden-state caches for heads mode; without them heads mode runs the frozen
    backbone on every batch.
    """

    def __init__(
        self,
        model: M3Model,
        tokenizer: M3Tokenizer,
        spec: ModelSpec,
        config: TrainConfig,
        examples: Sequence[TrainExample],
        out_dir: str | Path,
        *,
        run_name: str | None = None,
        caches: tuple[StateCache, StateCache] | None = None,
        callback: TrainCallback | None = None,
        data_source: str = "training data",
    ):
        config.validate()
        check_for_training(list(examples), config.n_negatives, config.teacher_scores, data_source)
        if caches is not None and config.mode != "heads":
            raise ConfigError("hidden-state caches only serve heads mode (the backbone is frozen there)")
        self.model, self.tokenizer, self.spec, self.config = model, tokenizer, spec, config
        self.examples = list(examples)
        self.out_dir = Path(out_dir)
        self.run_name = run_name or self.out_dir.name
        self.caches = caches
        self.callback = callback or TrainCallback()
        self.device = next(model.parameters()).device
        self.dist = D.current()
        self.unused_ids = sorted(tokenizer.unused_ids)
        if config.amp == "fp16" and self.device.type != "cuda":
            raise ConfigError("amp='fp16' needs a CUDA device; use amp='bf16' or 'none' on CPU")

    # -- setup ------------------------------------------------------------------------------------

    def _trainable(self) -> list[torch.nn.Parameter]:
        heads_only = self.config.mode == "heads"
        self.model.backbone.requires_grad_(not heads_only)
        return [p for p in self.model.parameters() if p.requires_grad]

    def _passage_lengths(self) -> list[int]:
        """Bucketing length of each example: its longest passage in tokens (after truncation)."""
        if self.caches is not None:
            cache = self.caches[1]
            n = np.diff(cache.offsets)
            return [max(int(n[r]) for r in cache.rows([*ex.pos, *ex.neg])) for ex in self.examples]
        texts = list(dict.fromkeys(t for ex in self.examples for t in (*ex.pos, *ex.neg)))
        prefix = self.spec.prefix("passage")
        lengths = dict(zip(texts, (len(ids) for ids in self.tokenizer.encode(
            [prefix + t for t in texts], self.config.passage_max_length))))
        return [max(lengths[t] for t in (*ex.pos, *ex.neg)) for ex in self.examples]

    def _sampler(self) -> BucketBatchSampler:
        c, w = self.config, self.dist.world_size
        groups = None
        if c.group_batches_by:
            missing = [i for i, ex in enumerate(self.examples) if c.group_batches_by not in ex.meta]
            if missing:
                raise InputError(f"example {missing[0] + 1} has no field {c.group_batches_by!r}, which "
                                 "group_batches_by asks batches to be grouped by")
            groups = [str(ex.meta[c.group_batches_by]) for ex in self.examples]
        sizes = c.bucket_batch_sizes if c.bucket_batch_sizes is not None else c.batch_size
        sizes = [s * w for s in sizes] if not np.isscalar(sizes) else sizes * w
        return BucketBatchSampler(self._passage_lengths(), c.bucket_edges, sizes, c.seed, groups, drop_last=True)

    def _optimizer(self, params) -> torch.optim.Optimizer:
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]  # biases and norms, as is customary
        return torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.config.learning_rate,
        )

    # -- one step ---------------------------------------------------------------------------------

    def _sides(self, queries: list[str], passages: list[str]) -> tuple[Side, Side]:
        c = self.config
        if self.caches is not None:
            qc, pc = self.caches
            return (qc.side(qc.rows(queries), self.tokenizer.pad_id).to(self.device),
                    pc.side(pc.rows(passages), self.tokenizer.pad_id).to(self.device))
        q = tokenize(self.tokenizer, queries, self.spec.prefix("query"), c.query_max_length).to(self.device)
        p = tokenize(self.tokenizer, passages, self.spec.prefix("passage"), c.passage_max_length).to(self.device)
        return q, p

    def _reps(self, hidden: torch.Tensor, side: Side) -> Reps:
        """Heads on (n, L, h) padded or (T, h) packed hidden states, computed on real tokens only."""
        if hidden.dim() == 3:
            hidden = hidden[side.attention_mask.bool()]
        # heads and losses in at least float32 whatever the autocast dtype of the backbone
        hidden = hidden.to(torch.promote_types(hidden.dtype, torch.float32))
        with autocast_context(self.device, self.config.amp):
            reps = packed_heads(self.model, hidden, side.attention_mask, side.input_ids)
        dtype = hidden.dtype
        return Reps(reps.dense.to(dtype), reps.token_weights.to(dtype), reps.input_ids, reps.colbert.to(dtype),
                    reps.colbert_segments)

    def _loss(self, hq: torch.Tensor, hp: torch.Tensor, q: Side, p: Side, teacher: torch.Tensor | None,
              self_distill: bool) -> LossTerms:
        rq, rp = self._reps(hq, q), self._reps(hp, p)
        gathered, dense_weight = None, 1.0
        if self.dist.enabled and self.config.negatives_cross_device:
            gathered = GatheredDense(
                q=D.gather_with_local_grad(rq.dense, self.dist),
                p=D.gather_with_local_grad(rp.dense, self.dist),
                rank=self.dist.rank,
                teacher_scores=None if teacher is None else D.gather_with_local_grad(teacher, self.dist),
            )
            dense_weight = float(self.dist.world_size)
        terms = unified_loss(
            rq, rp, temperature=self.config.temperature, unused_token_ids=self.unused_ids,
            self_distill=self_distill, teacher_scores=teacher, gathered_dense=gathered,
            dense_loss_weight=dense_weight,
        )
        terms.diagnostics = self._sparse_health(rp)
        return terms

    def _sparse_health(self, rp: Reps) -> dict[str, float]:
        """How many passage tokens the sparse head keeps (weight > 0) and their mean weight: a collapsing
        sparse head (all weights 0 after ReLU, FlagEmbedding users' complaint) shows here first."""
        with torch.no_grad():
            real = ~torch.isin(rp.input_ids, torch.tensor(self.unused_ids, device=rp.input_ids.device))
            w = rp.token_weights[real]
            active = (w > 0).float().mean() if w.numel() else w.new_zeros(())
            return {"sparse_active": float(active), "sparse_mean_weight": float(w.mean()) if w.numel() else 0.0}

    def forward_backward(self, q: Side, p: Side, teacher: torch.Tensor | None, self_distill: bool,
                         scaler=None) -> LossTerms:
        """Compute the loss of one batch and accumulate its gradients into the trainable parameters."""
        c, backbone = self.config, self.model.backbone
        scale = (lambda t: scaler.scale(t)) if scaler is not None else (lambda t: t)
        if c.mode == "heads":
            hq, hp = q.hidden, p.hidden
            if hq is None or hp is None:
                with torch.no_grad(), autocast_context(self.device, c.amp):
                    hq = run_backbone(backbone, q.input_ids, q.attention_mask)
                    hp = run_backbone(backbone, p.input_ids, p.attention_mask)
            terms = self._loss(hq, hp, q, p, teacher, self_distill)
            scale(terms.total).backward()
            return terms
        if c.sub_batch_size is None:
            with autocast_context(self.device, c.amp):
                hq = run_backbone(backbone, q.input_ids, q.attention_mask)
                hp = run_backbone(backbone, p.input_ids, p.attention_mask)
            terms = self._loss(hq, hp, q, p, teacher, self_distill)
            scale(terms.total).backward()
            return terms
        size = c.sub_batch_size
        hq, q_states = encode_without_grad(backbone, q, size, self.device, c.amp)
        hp, p_states = encode_without_grad(backbone, p, size, self.device, c.amp)
        hq, hp = hq.detach().requires_grad_(), hp.detach().requires_grad_()
        terms = self._loss(hq, hp, q, p, teacher, self_distill)
        scale(terms.total).backward()
        backward_through_chunks(backbone, q, size, hq.grad, q_states, self.device, c.amp)
        backward_through_chunks(backbone, p, size, hp.grad, p_states, self.device, c.amp)
        return terms

    # -- the loop ---------------------------------------------------------------------------------

    def _batch(self, indices: list[int], epoch: int, position: int):
        """This process's share of a global batch: query texts, passage texts, teacher scores."""
        rng = np.random.default_rng([self.config.seed, epoch, position])
        groups = [sample_group(self.examples[i], self.config.n_negatives, rng, self.config.teacher_scores)
                  for i in indices]
        per_rank = len(groups) // self.dist.world_size
        mine = groups[self.dist.rank * per_rank : (self.dist.rank + 1) * per_rank]
        queries = [g.query for g in mine]
        passages = [t for g in mine for t in g.passages]
        teacher = None
        if self.config.teacher_scores:
            teacher = torch.tensor([g.teacher_scores for g in mine], dtype=torch.float32, device=self.device)
        return queries, passages, teacher

    def fit(self, resume_from: str | Path | None = None) -> TrainResult:
        """Train; `resume_from` is a checkpoint folder of this run (the model must already be loaded from it)."""
        c = self.config
        torch.manual_seed(c.seed)
        params = self._trainable()
        if c.mode == "heads":
            self.model.backbone.eval()  # frozen features: no dropout, identical to the cache
            self.model.sparse_linear.train()
            self.model.colbert_linear.train()
        else:
            self.model.train()
            if c.gradient_checkpointing:
                enable_gradient_checkpointing(self.model.backbone)
        sampler = self._sampler()
        per_epoch = len(sampler.epoch(0))
        if per_epoch == 0:
            raise InputError(f"{len(self.examples)} examples make no full batch of {c.batch_size} per process "
                             f"in any length bucket: lower --batch-size or give more data")
        total = per_epoch * c.epochs if c.max_steps is None else min(c.max_steps, per_epoch * c.epochs)
        optimizer = self._optimizer(params)
        scaler = torch.amp.GradScaler("cuda") if c.amp == "fp16" else None
        progress = Progress(step=0, epoch=0, batch_in_epoch=0)
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume_from is not None:
            state = load_state(resume_from)
            progress = state.progress
            optimizer.load_state_dict(state.optimizer_state)
            if scaler is not None and state.scaler_state:
                scaler.load_state_dict(state.scaler_state)
            restore_rng(state.rng)
            if self.dist.is_main:
                _truncate_log(self.out_dir / LOG_FILE, progress.step)
            logger.info("resuming at step %d (epoch %d, batch %d)", progress.step, progress.epoch,
                        progress.batch_in_epoch)
        elif self.dist.is_main:
            _check_fresh_output(self.out_dir)
        if self.dist.is_main:
            c.save(self.out_dir / CONFIG_FILE)

        self.callback.on_start(total, progress.step)
        window: dict[str, float] = {}
        window_steps, window_start, last_log = 0, time.perf_counter(), None
        epoch = progress.epoch
        while progress.step < total and epoch < c.epochs:
            batches = sampler.epoch(epoch)
            for position in range(progress.batch_in_epoch, len(batches)):
                if progress.step >= total:
                    break
                queries, passages, teacher = self._batch(batches[position], epoch, position)
                q, p = self._sides(queries, passages)
                lr = learning_rate(progress.step, total, c.learning_rate, c.warmup_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                distill_on = c.self_distill and progress.step >= c.self_distill_start_step
                terms = self.forward_backward(q, p, teacher, distill_on, scaler)
                D.average_gradients(params, self.dist)
                if scaler is not None:
                    scaler.unscale_(optimizer)
                grad_norm = None
                if c.max_grad_norm is not None:
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, c.max_grad_norm))
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                progress = Progress(progress.step + 1, epoch, position + 1)
                losses = terms.as_floats()
                if grad_norm is not None:
                    losses["grad_norm"] = grad_norm
                for k, v in losses.items():
                    window[k] = window.get(k, 0.0) + v
                window_steps += 1
                self.callback.on_step(progress.step, losses)
                if progress.step % c.log_every == 0 or progress.step == total:
                    means = D.mean_over_ranks({k: v / window_steps for k, v in window.items()}, self.dist, self.device)
                    last_log = {"step": progress.step, "epoch": epoch, "lr": lr,
                                "seconds_per_step": (time.perf_counter() - window_start) / window_steps, **means}
                    if self.dist.is_main:
                        with open(self.out_dir / LOG_FILE, "a", encoding="utf-8") as f:
                            f.write(json.dumps(last_log) + "\n")
                    self.callback.on_log(last_log)
                    window, window_steps, window_start = {}, 0, time.perf_counter()
                if c.save_every and progress.step % c.save_every == 0 and progress.step < total:
                    self.save_checkpoint(progress, optimizer, scaler)
            if progress.epoch == epoch and progress.batch_in_epoch < len(batches):
                break  # stopped by max_steps inside the epoch; the checkpoint resumes right here
            epoch += 1
            progress = Progress(progress.step, epoch, 0)

        model_dir = heads = None
        if self.dist.is_main:
            self.save_checkpoint(progress, optimizer, scaler)
            model_dir = self._publish_model(self.out_dir / FINAL_MODEL, self.run_name)
            heads = save_heads(self.model, self.out_dir / HEADS_FILE, self._heads_metadata(progress.step))
        return TrainResult(self.out_dir, progress.step, model_dir, heads, last_log)

    # -- saving -----------------------------------------------------------------------------------

    def _heads_metadata(self, step: int) -> dict:
        return {"base_model": self.spec.name, "run": self.run_name, "steps": str(step),
                "config": self.config.to_dict()}

    def _publish_model(self, path: Path, name: str) -> Path:
        """Save the model in BGE-M3 layout to `path` (replacing a previous save of this run there)."""
        spec = dataclasses.replace(self.spec, name=name, heads_trained=True)
        tmp = path.with_name(f".{path.name}.saving-{os.getpid()}")
        save_m3_model(self.model, self.tokenizer, tmp, spec)
        _replace_dir(tmp, path)
        return path

    def save_checkpoint(self, progress: Progress, optimizer, scaler) -> Path | None:
        if not self.dist.is_main:
            return None
        path = self.out_dir / f"checkpoint-{progress.step:06d}"
        spec = dataclasses.replace(self.spec, name=f"{self.run_name}-step{progress.step}", heads_trained=True)
        tmp = path.with_name(f".{path.name}.saving-{os.getpid()}")
        save_m3_model(self.model, self.tokenizer, tmp, spec)
        save_state(tmp, progress, optimizer, self.config.to_dict(),
                   scaler.state_dict() if scaler is not None else None)
        save_heads(self.model, tmp / HEADS_FILE, self._heads_metadata(progress.step))
        _replace_dir(tmp, path)
        self.callback.on_save(path)
        logger.info("saved %s", path)
        return path


def enable_gradient_checkpointing(backbone) -> None:
    """Recompute each layer's activations in backward (transformers renamed the method in v5)."""
    if hasattr(backbone, "activation_checkpointing_enable"):
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _replace_dir(src: Path, dst: Path) -> None:
    """Publish `src` as `dst`; an older `dst` written by this trainer is moved aside first, then removed."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _check_fresh_output(out_dir: Path) -> None:
    clashing = [n for n in (LOG_FILE, FINAL_MODEL, HEADS_FILE) if (out_dir / n).exists()]
    clashing += [p.name for p in out_dir.glob("checkpoint-*")]
    if clashing:
        raise InputError(f"{out_dir} already holds a training run ({', '.join(sorted(clashing)[:3])}): "
                         "give a new --out folder, or --resume one of its checkpoints")


def _truncate_log(log_file: Path, step: int) -> None:
    """Drop log lines after the resumed step, so a resumed run's log has each step once."""
    if not log_file.is_file():
        return
    keep = [line for line in log_file.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    tmp = log_file.with_name(log_file.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
    tmp.replace(log_file)
