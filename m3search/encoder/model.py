"""The M3 model: a transformer backbone plus the two small heads of BGE-M3.

One forward pass of the backbone gives the last hidden states H (B, L, h). From them:
- dense     = normalize(pool(H))                 pool = CLS (BGE-M3) or masked mean (e5-style);
- token_weights = relu(sparse_linear(H))          (B, L), one lexical weight per token position;
- colbert   = normalize(colbert_linear(H[:, 1:]) * mask[:, 1:])   (B, L-1, d'), pads are zero rows.

`apply_heads` works from hidden states alone, so a trainer can cache a frozen backbone's states.
The inference-side post-processing (max over a token id's occurrences, dropping special tokens, dropping
pads) lives in the encoder, not here.
"""
from __future__ import annotations

import hashlib

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Pooling = Literal["cls", "mean"]


@dataclasses.dataclass
class M3Output:
    dense: torch.Tensor  # (B, d) L2-normalised
    token_weights: torch.Tensor  # (B, L) >= 0
    colbert: torch.Tensor  # (B, L-1, d') L2-normalised rows, zero rows at pads


def pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    if pooling == "cls":
        return last_hidden_state[:, 0]
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
        return (last_hidden_state * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")


class M3Model(nn.Module):
    """Backbone + sparse head (hidden -> 1) + multi-vector head (hidden -> colbert_dim)."""

    def __init__(self, backbone: nn.Module, pooling: Pooling = "cls", colbert_dim: int | None = None):
        super().__init__()
        hidden = backbone.config.hidden_size
        self.backbone = backbone
        self.pooling: Pooling = pooling
        self.colbert_linear = nn.Linear(hidden, colbert_dim or hidden)
        self.sparse_linear = nn.Linear(hidden, 1)

    @property
    def hidden_size(self) -> int:
        return self.backbone.config.hidden_size

    @property
    def colbert_dim(self) -> int:
        return self.colbert_linear.out_features

    def heads_hash(self) -> str:
        """sha256 of the two heads' fp32 parameters: indexes record it, so an index built with fine-tuned
        heads refuses to be searched with other heads over the same backbone."""
        digest = hashlib.sha256()
        for head in (self.sparse_linear, self.colbert_linear):
            for name, tensor in sorted(head.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()

    def apply_heads(
        self, last_hidden_state: torch.Tensor, attention_mask: torch.Tensor
    ) -> M3Output:
        dense = F.normalize(pool(last_hidden_state, attention_mask, self.pooling), dim=-1)
        token_weights = torch.relu(self.sparse_linear(last_hidden_state)).squeeze(-1)
        colbert = self.colbert_linear(last_hidden_state[:, 1:])
        colbert = colbert * attention_mask[:, 1:].unsqueeze(-1).to(colbert.dtype)
        colbert = F.normalize(colbert, dim=-1)
        return M3Output(dense=dense, token_weights=token_weights, colbert=colbert)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> M3Output:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.apply_heads(hidden, attention_mask)
