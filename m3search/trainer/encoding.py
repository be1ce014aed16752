"""Texts -> backbone hidden states for a training batch, whole or in sub-batches with exact gradients.

Split-batch encoding follows GradCache (Gao et al. 2021): the hidden states of all sub-batches are computed
without autograd, the loss is computed once over the whole batch and differentiated down to those hidden
states, then each sub-batch is encoded again with autograd and back-propagated with its slice of that
gradient. Peak activation memory is one sub-batch; the gradient is the whole batch's (dropout masks are
replayed by restoring the random state of each sub-batch). Gradient checkpointing inside the backbone cuts
the re-encoding's memory further.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Sequence

import torch

from m3search.encoder.tokenizer import M3Tokenizer


@dataclasses.dataclass
class Side:
    """Token ids of one side of a batch (queries or passages), right-padded, optionally with hidden states."""

    input_ids: torch.Tensor  # (n, L) int64
    attention_mask: torch.Tensor  # (n, L) int64
    hidden: torch.Tensor | None = None  # precomputed states (frozen backbone / cache): (n, L, h) or packed (T, h)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device) -> "Side":
        hidden = None if self.hidden is None else self.hidden.to(device)
        return Side(self.input_ids.to(device), self.attention_mask.to(device), hidden)


def tokenize(tokenizer: M3Tokenizer, texts: Sequence[str], prefix: str, max_length: int) -> Side:
    ids, mask = tokenizer.pad(tokenizer.encode([prefix + t for t in texts], max_length))
    return Side(torch.from_numpy(ids), torch.from_numpy(mask))


def autocast_context(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def run_backbone(backbone, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class _RandomState:
    """The CPU (and current CUDA device's) generator state, to replay dropout in the second pass."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def _chunks(side: Side, size: int):
    """(rows, input_ids, mask) per sub-batch, each trimmed to its own longest text."""
    for start in range(0, len(side), size):
        rows = slice(start, start + size)
        mask = side.attention_mask[rows]
        width = max(int(mask.sum(-1).max()), 1)
        yield rows, side.input_ids[rows, :width], mask[:, :width]


def encode_without_grad(backbone, side: Side, size: int, device: torch.device, amp: str):
    """First GradCache pass: hidden states (n, L, h) of the whole side and the random state per sub-batch."""
    states, out = [], None
    with torch.no_grad():
        for rows, ids, mask in _chunks(side, size):
            states.append(_RandomState(device))
            with autocast_context(device, amp):
                h = run_backbone(backbone, ids, mask)
            if out is None:
                out = h.new_zeros(len(side), side.input_ids.shape[1], h.shape[-1])
            out[rows, : h.shape[1]] = h
    return out, states


def backward_through_chunks(
    backbone, side: Side, size: int, grad_hidden: torch.Tensor, states: list, device: torch.device, amp: str
) -> None:
    """Second GradCache pass: re-encode each sub-batch with autograd and push its slice of the gradient."""
    after = _RandomState(device)
    for (rows, ids, mask), state in zip(_chunks(side, size), states):
        state.restore()
        with autocast_context(device, amp):
            h = run_backbone(backbone, ids, mask)
        h.backward(grad_hidden[rows, : h.shape[1]].to(h.dtype))
    after.restore()  # continue the random sequence as if each sub-batch had been drawn once
