"""The M3 heads applied to packed hidden states (real tokens only), for training.

`M3Model.apply_heads` works on padded (B, L, h) states. In a training batch the passages of a group differ
widely in length, so most of a padded batch is padding; here the heads run on the T real token states only
(the same arithmetic per token), which is what makes heads-only training fast on a CPU:
- dense: the model's pooling (masked mean or CLS) of each text's states, L2-normalised;
- token weights: relu(sparse_linear(h)) per token, returned padded (n, L) beside the token ids;
- token vectors: normalize(colbert_linear(h)) for every token after the first, packed with their text index.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from m3search.encoder.model import M3Model
from m3search.trainer.losses import Reps


def packed_heads(model: M3Model, hidden: torch.Tensor, attention_mask: torch.Tensor,
                 input_ids: torch.Tensor) -> Reps:
    """hidden: (T, h) states of the real tokens of every text, text by text, in the order of
    `attention_mask` (n, L) read row-major (what `hidden_padded[attention_mask.bool()]` gives)."""
    mask = attention_mask.bool()
    lengths = mask.sum(-1)
    n = mask.shape[0]
    segments = torch.arange(n, device=hidden.device).repeat_interleave(lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    if model.pooling == "cls":
        pooled = hidden[starts]
    else:
        sums = hidden.new_zeros(n, hidden.shape[-1]).index_add(0, segments, hidden)
        pooled = sums / lengths.clamp(min=1).to(hidden.dtype)[:, None]
    dense = F.normalize(pooled, dim=-1)
    weights = torch.relu(model.sparse_linear(hidden)).squeeze(-1)
    token_weights = weights.new_zeros(mask.shape).masked_scatter(mask, weights)
    not_first = torch.ones(hidden.shape[0], dtype=torch.bool, device=hidden.device)
    not_first[starts[lengths > 0]] = False  # the CLS position has no token vector (BGE-M3)
    colbert = F.normalize(model.colbert_linear(hidden[not_first]), dim=-1)
    return Reps(dense=dense, token_weights=token_weights, input_ids=input_ids, colbert=colbert,
                colbert_segments=segments[not_first])
