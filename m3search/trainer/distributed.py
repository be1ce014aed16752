"""Data-parallel helpers over torch.distributed (gloo on CPU, nccl on CUDA), for `torchrun` launches.

Each process takes its own slice of every batch. Dense vectors are all-gathered so each query also meets the
other processes' passages as negatives; the local slice of the gathered tensor is the local tensor itself,
so gradient flows into this process's representations (the others' arrive as constants, FlagEmbedding's
trick). Gradients are then averaged over processes by an explicit all-reduce (no DDP wrapper: split-batch
encoding runs several backward passes per step, which DDP's hooks would all-reduce each time).
"""
from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> DistInfo:
    """This process's place in an initialised process group (rank 0 of 1 when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size())
    return DistInfo()


def init_from_env(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1), if any."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return current()
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return current()


def gather_with_local_grad(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate `t` from every process along dim 0 (same shape everywhere), in rank order.

    The block at this rank is `t` itself, so autograd reaches it; the other blocks are detached copies.
    """
    if not info.enabled:
        return t
    parts = [torch.empty_like(t) for _ in range(info.world_size)]
    dist.all_gather(parts, t.detach().contiguous())
    parts[info.rank] = t
    return torch.cat(parts, dim=0)


def average_gradients(params, info: DistInfo) -> None:
    """All-reduce the parameters' gradients and divide by the world size (missing gradients count as 0)."""
    if not info.enabled:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad /= info.world_size


def mean_over_ranks(values: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    """Mean of each number over processes, for logging (every rank must pass the same keys)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist())}
