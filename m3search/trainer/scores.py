"""Differentiable query x passage scores of the three M3 representations, for training.

Every function returns an (n_queries, n_passages) matrix of raw scores (no temperature). They agree with
`m3search.scoring` (the inference references) on the same representations:

- dense:    <q, p>.
- lexical:  sum over token ids t in both texts of w_q(t) * w_p(t), where w(t) is the max weight over t's
            occurrences and special tokens (cls/eos/pad/unk) weigh nothing. FlagEmbedding scatters the token
            weights into a (batch x length x vocab) tensor; here the batch's token ids are mapped to a compact
            id space first, so memory is (batch x distinct ids in the batch).
- multivec: ColBERT MaxSim averaged over the query's tokens; padding rows take no part in the max.
            (FlagEmbedding's training einsum lets a shorter passage's zero padding rows win the max when all
            real similarities are negative; masking them keeps training equal to inference scoring.)
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.checkpoint import checkpoint


def dense_scores(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """(m, d) x (n, d) -> (m, n) inner products."""
    return q @ p.transpose(0, 1)


def compact_lexical_vectors(
    weights: Sequence[torch.Tensor],
    token_ids: Sequence[torch.Tensor],
    unused_token_ids: Sequence[int],
) -> list[torch.Tensor]:
    """Per-text lexical vectors over the distinct ids of all the given batches.

    weights[k], token_ids[k]: (n_k, L_k) token weights (>= 0) and their token ids (padding carries the pad
    id, which is an unused id). Returns one (n_k, U) tensor per batch, column u standing for the u-th distinct
    id; entry = max weight of that id in the text, 0 for absent and unused ids.
    """
    flat = torch.cat([ids.reshape(-1) for ids in token_ids])
    distinct, inverse = torch.unique(flat, return_inverse=True)
    unused = torch.tensor(list(unused_token_ids), dtype=distinct.dtype, device=distinct.device)
    keep = ~torch.isin(distinct, unused)
    out, start = [], 0
    for w, ids in zip(weights, token_ids):
        n = ids.numel()
        local = inverse[start : start + n].view(ids.shape)
        start += n
        vec = torch.zeros(ids.shape[0], distinct.numel(), dtype=w.dtype, device=w.device)
        # include_self: the zero start acts like FlagEmbedding's zero-initialised vocab vector (weights are >= 0)
        vec = vec.scatter_reduce(1, local, w, reduce="amax", include_self=True)
        out.append(vec * keep.to(w.dtype))
    return out


def lexical_scores(
    q_weights: torch.Tensor,
    q_ids: torch.Tensor,
    p_weights: torch.Tensor,
    p_ids: torch.Tensor,
    unused_token_ids: Sequence[int],
) -> torch.Tensor:
    """(m, Lq) / (n, Lp) token weights and ids -> (m, n) lexical matching scores."""
    q_vec, p_vec = compact_lexical_vectors([q_weights, p_weights], [q_ids, p_ids], unused_token_ids)
    return q_vec @ p_vec.transpose(0, 1)


def multivec_scores(
    q_tokens: torch.Tensor,
    q_segments: torch.Tensor,
    n_queries: int,
    p_tokens: torch.Tensor,
    p_segments: torch.Tensor,
    n_passages: int,
    passage_chunk: int = 256,
) -> torch.Tensor:
    """ColBERT MaxSim over packed token vectors -> (n_queries, n_passages).

    q_tokens (Tq, d) / p_tokens (Tp, d): every text's token vectors back to back (no padding, so no work is
    spent on it); q_segments / p_segments: the text each row belongs to, non-decreasing. Passages are scored
    `passage_chunk` at a time under activation checkpointing, so the (Tq x chunk tokens) similarity block is
    the largest thing kept. A query without tokens scores 0; a passage without tokens scores 0.
    """
    n_q_tokens = torch.bincount(q_segments, minlength=n_queries).clamp(min=1).to(q_tokens.dtype)
    starts = torch.searchsorted(p_segments, torch.arange(0, n_passages + 1, passage_chunk, device=p_segments.device))
    bounds = [*starts.tolist(), p_segments.numel()]
    recompute = torch.is_grad_enabled() and (q_tokens.requires_grad or p_tokens.requires_grad)
    blocks = []
    for c, first in enumerate(range(0, n_passages, passage_chunk)):
        count = min(passage_chunk, n_passages - first)
        a, b = bounds[c], bounds[c + 1]
        args = (q_tokens, q_segments, n_queries, p_tokens[a:b], p_segments[a:b] - first, count)
        if recompute:
            blocks.append(checkpoint(_maxsim_block, *args, use_reentrant=False))
        else:
            blocks.append(_maxsim_block(*args))
    if not blocks:
        return q_tokens.new_zeros(n_queries, 0)
    return torch.cat(blocks, dim=1) / n_q_tokens[:, None]


def _maxsim_block(q_tokens, q_segments, n_queries, p_tokens, p_segments, n_passages) -> torch.Tensor:
    """Sum over each query's tokens of the max similarity within each passage: (n_queries, n_passages)."""
    sim = q_tokens @ p_tokens.transpose(0, 1)  # (Tq, Tp_chunk)
    best = sim.new_zeros(sim.shape[0], n_passages)
    if p_tokens.shape[0]:
        best = best.scatter_reduce(1, p_segments.expand_as(sim), sim, reduce="amax", include_self=False)
    return sim.new_zeros(n_queries, n_passages).index_add(0, q_segments, best)


def pack(padded: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, L, d) + (n, L) mask -> (T, d) rows where mask is set, and the text index of each row."""
    mask = mask.bool()
    segments = torch.arange(mask.shape[0], device=mask.device).repeat_interleave(mask.sum(-1))
    return padded[mask], segments
