"""The unified fine-tuning loss with self-knowledge distillation (BGE-M3 paper v4, section 3.3).

Layout of a batch: B queries; B * G passages where passages [i*G, (i+1)*G) are query i's group, the first
being its positive and the rest its hard negatives. Every query is scored against every passage of the
batch (in-batch negatives), so score matrices are (B, B * G) and the positive of query i is column i * G.

With s_x = score_x / temperature for x in dense, lex(ical), mul(ti-vector):

    s_inter = s_dense + 0.3 * s_lex + s_mul
    L       = (L_dense + L_inter + 0.1 * L_lex + L_mul) / 4          each L_x = InfoNCE(s_x)
    teacher = softmax(s_inter), detached, over the whole row (in-batch negatives included)
    L'      = (CE(teacher, s_dense) + 0.1 * CE(teacher, s_lex) + CE(teacher, s_mul)) / 3
    L_final = (L + L') / 2                                             once self-distillation is on

With teacher scores in the data (`pos_scores` / `neg_scores`), each InfoNCE L_x becomes FlagEmbedding's
"m3_kd_loss": for every member k of the group, the teacher's probability of k times the cross-entropy of
picking k among the row with the group members before k removed.

Cross-device negatives (dense only, as FlagEmbedding): L_dense is computed over the queries and passages of
all processes; s_dense in s_inter and L' stays this process's (B, B * G) block.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from m3search.trainer import scores as S

INTER_LEX_WEIGHT = 0.3  # weight of the lexical score inside s_inter
LEX_LOSS_WEIGHT = 0.1  # weight of the lexical terms in L and L'


@dataclasses.dataclass
class Reps:
    """One side (queries or passages) of a batch, as the heads produce it."""

    dense: torch.Tensor  # (n, d)
    token_weights: torch.Tensor  # (n, L), token position j of text i (padding included)
    input_ids: torch.Tensor  # (n, L)
    colbert: torch.Tensor  # (T, d'): the token vectors of all texts back to back, no padding
    colbert_segments: torch.Tensor  # (T,): the text each row of `colbert` belongs to

    def __len__(self) -> int:
        return self.dense.shape[0]


@dataclasses.dataclass
class GatheredDense:
    """Dense vectors of every process's batch, and where this process's block sits in them."""

    q: torch.Tensor  # (W * B, d)
    p: torch.Tensor  # (W * B * G, d)
    rank: int
    teacher_scores: torch.Tensor | None = None  # (W * B, G) when the data carries teacher scores


@dataclasses.dataclass
class LossTerms:
    """Every term of the unified loss; `total` is what is minimised."""

    total: torch.Tensor
    unified: torch.Tensor  # L
    dense: torch.Tensor
    lexical: torch.Tensor
    multivec: torch.Tensor
    inter: torch.Tensor
    distill: torch.Tensor | None = None  # L'
    distill_dense: torch.Tensor | None = None
    distill_lexical: torch.Tensor | None = None
    distill_multivec: torch.Tensor | None = None
    scores: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    diagnostics: dict[str, float] = dataclasses.field(default_factory=dict)  # logged beside the terms

    def as_floats(self) -> dict[str, float]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                out[f.name] = float(v.detach())
        out.update(self.diagnostics)
        return out


def positive_columns(n_queries: int, group_size: int, device=None) -> torch.Tensor:
    return torch.arange(n_queries, device=device, dtype=torch.long) * group_size


def info_nce(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """Mean cross-entropy of each query's positive (column i * G) among its whole row."""
    return F.cross_entropy(scores, positive_columns(scores.shape[0], group_size, scores.device))


def soft_cross_entropy(teacher_probs: torch.Tensor, student_scores: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_j teacher_j * log softmax(student)_j."""
    return -(teacher_probs * torch.log_softmax(student_scores, dim=-1)).sum(-1).mean()


def teacher_group_loss(teacher_probs: torch.Tensor, scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """FlagEmbedding's m3_kd_loss: teacher_probs (B, G) over each query's own group, scores (B, B * G).

    sum_k mean_i teacher[i, k] * CE(row i without columns i*G .. i*G+k-1, target i*G+k).
    """
    columns = positive_columns(scores.shape[0], group_size, scores.device)
    rows = torch.arange(scores.shape[0], device=scores.device)
    masked = scores
    loss = scores.new_zeros(())
    for k in range(group_size):
        ce = F.cross_entropy(masked, columns + k, reduction="none")
        loss = loss + (teacher_probs[:, k] * ce).mean()
        # member k is no longer a competitor for the members after it
        masked = masked.index_put((rows, columns + k), scores.new_tensor(float("-inf")))
    return loss


def _probabilities(teacher_scores: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # at least float32 even under AMP, so the targets sum to 1
    return torch.softmax(teacher_scores.detach().to(torch.promote_types(dtype, torch.float32)), dim=-1)


def _contrastive(scores: torch.Tensor, group_size: int, teacher_probs: torch.Tensor | None) -> torch.Tensor:
    if teacher_probs is None:
        return info_nce(scores, group_size)
    return teacher_group_loss(teacher_probs, scores, group_size)


def unified_loss(
    q: Reps,
    p: Reps,
    *,
    temperature: float,
    unused_token_ids: list[int],
    self_distill: bool,
    teacher_scores: torch.Tensor | None = None,
    gathered_dense: GatheredDense | None = None,
    dense_loss_weight: float = 1.0,
) -> LossTerms:
    """All terms of the loss for one batch (see the module docstring).

    teacher_scores: (B, G) scores from the data, turned into probabilities with a softmax.
    dense_loss_weight: multiplies L_dense inside `total` only (the logged terms are unweighted); the
    distributed trainer passes the world size so that averaging gradients over processes gives the gradient
    of the global objective.
    """
    n_q = q.dense.shape[0]
    if p.dense.shape[0] % n_q:
        raise ValueError(f"{p.dense.shape[0]} passages is not a whole number of groups for {n_q} queries")
    group_size = p.dense.shape[0] // n_q
    teacher_probs = None if teacher_scores is None else _probabilities(teacher_scores, q.dense.dtype)

    if gathered_dense is None:
        s_dense = S.dense_scores(q.dense, p.dense) / temperature
        loss_dense = _contrastive(s_dense, group_size, teacher_probs)
    else:
        s_all = S.dense_scores(gathered_dense.q, gathered_dense.p) / temperature
        all_teacher = None
        if teacher_probs is not None:
            if gathered_dense.teacher_scores is None:
                raise ValueError("teacher scores given but not gathered across processes")
            all_teacher = _probabilities(gathered_dense.teacher_scores, q.dense.dtype)
        loss_dense = _contrastive(s_all, group_size, all_teacher)
        r = gathered_dense.rank
        n_p = p.dense.shape[0]
        s_dense = s_all[r * n_q : (r + 1) * n_q, r * n_p : (r + 1) * n_p]

    s_lex = S.lexical_scores(q.token_weights, q.input_ids, p.token_weights, p.input_ids, unused_token_ids) / temperature
    s_mul = S.multivec_scores(q.colbert, q.colbert_segments, len(q), p.colbert, p.colbert_segments, len(p)) / temperature
    s_inter = s_dense + INTER_LEX_WEIGHT * s_lex + s_mul

    loss_lex = _contrastive(s_lex, group_size, teacher_probs)
    loss_mul = _contrastive(s_mul, group_size, teacher_probs)
    loss_inter = _contrastive(s_inter, group_size, teacher_probs)
    unified = (loss_dense + loss_inter + LEX_LOSS_WEIGHT * loss_lex + loss_mul) / 4
    total = unified + (dense_loss_weight - 1.0) * loss_dense / 4

    terms = LossTerms(
        total=total, unified=unified, dense=loss_dense, lexical=loss_lex, multivec=loss_mul, inter=loss_inter,
        scores={"dense": s_dense, "lexical": s_lex, "multivec": s_mul, "inter": s_inter},
    )
    if self_distill:
        teacher = torch.softmax(s_inter.detach(), dim=-1)
        terms.distill_dense = soft_cross_entropy(teacher, s_dense)
        terms.distill_lexical = soft_cross_entropy(teacher, s_lex)
        terms.distill_multivec = soft_cross_entropy(teacher, s_mul)
        terms.distill = (terms.distill_dense + LEX_LOSS_WEIGHT * terms.distill_lexical + terms.distill_multivec) / 3
        terms.total = (total + terms.distill) / 2
    return terms
