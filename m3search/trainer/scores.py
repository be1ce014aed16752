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
    q_vecs: torch.Tensor,
    q_mask: torch.Tensor,
    p_vecs: torch.Tensor,
    p_mask: torch.Tensor,
    passage_chunk: int = 256,
) -> torch.Tensor:
    """ColBERT MaxSim: (m, Lq, d) / (n, Lp, d) token vectors with boolean masks -> (m, n).

    Scores are computed for `passage_chunk` passages at a time so the (m, chunk, Lq, Lp) similarity block
    stays bounded. A query without tokens scores 0; a passage without tokens scores 0.
    """
    q_mask = q_mask.bool()
    p_mask = p_mask.bool()
    recompute = torch.is_grad_enabled() and (q_vecs.requires_grad or p_vecs.requires_grad)
    blocks = []
    for start in range(0, p_vecs.shape[0], passage_chunk):
        args = (q_vecs, q_mask, p_vecs[start : start + passage_chunk], p_mask[start : start + passage_chunk])
        if recompute:
            # keep only each block's (m, c) output for backward; the (m, c, Lq, Lp) block is recomputed
            blocks.append(checkpoint(_maxsim_block, *args, use_reentrant=False))
        else:
            blocks.append(_maxsim_block(*args))
    if not blocks:
        return q_vecs.new_zeros(q_vecs.shape[0], 0)
    return torch.cat(blocks, dim=1)


def _maxsim_block(q_vecs, q_mask, p_vecs, p_mask) -> torch.Tensor:
    sim = torch.einsum("qid,pjd->qpij", q_vecs, p_vecs)  # (m, c, Lq, Lp)
    sim = sim.masked_fill(~p_mask[None, :, None, :], float("-inf"))
    best = sim.amax(dim=-1)  # (m, c, Lq)
    # padded query rows and token-less passages (all -inf) contribute nothing
    valid = q_mask[:, None, :] & p_mask.any(-1)[None, :, None]
    best = torch.where(valid, best, torch.zeros((), dtype=best.dtype, device=best.device))
    n_q_tokens = q_mask.sum(-1).clamp(min=1).to(best.dtype)
    return best.sum(-1) / n_q_tokens[:, None]
