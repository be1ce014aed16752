"""Each term of the unified loss against a hand computation with plain loops (numpy, float64)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from m3search.trainer import losses as Lo
from m3search.trainer import scores as S

UNUSED = [0, 1, 2, 3]  # cls, pad, eos, unk as in XLM-R
TAU = 0.02


def make_reps(rng: np.random.Generator, n: int, length: int, dim: int, vocab: int = 12) -> Lo.Reps:
    """Random representations; text i has a random number of real tokens, the rest is padding.

    The padded arrays the hand references read are kept on the object as `raw`."""
    ids = np.full((n, length), 1, dtype=np.int64)  # pad id 1
    mask = np.zeros((n, length), dtype=np.int64)
    for i in range(n):
        real = rng.integers(2, length + 1)
        ids[i, 0] = 0  # <s>
        ids[i, 1 : real - 1] = rng.integers(3, vocab, size=real - 2)  # 3 = unk appears sometimes
        ids[i, real - 1] = 2  # </s>
        mask[i, :real] = 1
    weights = rng.uniform(0, 1, size=(n, length)) * mask
    colbert = rng.normal(size=(n, length - 1, dim))
    colbert /= np.linalg.norm(colbert, axis=-1, keepdims=True)
    colbert *= mask[:, 1:, None]
    dense = rng.normal(size=(n, dim))
    dense /= np.linalg.norm(dense, axis=-1, keepdims=True)
    t = lambda a, dt=torch.float64: torch.tensor(a, dtype=dt)
    packed, segments = S.pack(t(colbert), t(mask[:, 1:], torch.long))
    reps = Lo.Reps(
        dense=t(dense).requires_grad_(), token_weights=t(weights).requires_grad_(), input_ids=t(ids, torch.long),
        colbert=packed.detach().requires_grad_(), colbert_segments=segments,
    )
    reps.raw = {"mask": mask, "colbert": colbert, "weights": weights, "ids": ids, "dense": dense}
    return reps


# ---- hand references -------------------------------------------------------------------------------------

def hand_dense(q: Lo.Reps, p: Lo.Reps) -> np.ndarray:
    qd, pd = q.raw["dense"], p.raw["dense"]
    out = np.zeros((len(qd), len(pd)))
    for i in range(len(qd)):
        for j in range(len(pd)):
            out[i, j] = sum(qd[i, k] * pd[j, k] for k in range(qd.shape[1]))
    return out


def lexical_dict(weights, ids, mask) -> dict[int, float]:
    d: dict[int, float] = {}
    for w, t, m in zip(weights, ids, mask):
        if not m or t in UNUSED:
            continue
        d[int(t)] = max(d.get(int(t), 0.0), float(w))
    return d


def hand_lexical(q: Lo.Reps, p: Lo.Reps) -> np.ndarray:
    qs = [lexical_dict(*a) for a in zip(q.raw["weights"], q.raw["ids"], q.raw["mask"])]
    ps = [lexical_dict(*a) for a in zip(p.raw["weights"], p.raw["ids"], p.raw["mask"])]
    out = np.zeros((len(qs), len(ps)))
    for i, a in enumerate(qs):
        for j, b in enumerate(ps):
            out[i, j] = sum(w * b[t] for t, w in a.items() if t in b)
    return out


def hand_maxsim(q: Lo.Reps, p: Lo.Reps) -> np.ndarray:
    qc, pc = q.raw["colbert"], p.raw["colbert"]
    qm, pm = q.raw["mask"][:, 1:], p.raw["mask"][:, 1:]
    out = np.zeros((len(qc), len(pc)))
    for i in range(len(qc)):
        q_tokens = [qc[i, a] for a in range(qc.shape[1]) if qm[i, a]]
        for j in range(len(pc)):
            p_tokens = [pc[j, b] for b in range(pc.shape[1]) if pm[j, b]]
            total = 0.0
            for qt in q_tokens:
                total += max(float(np.dot(qt, pt)) for pt in p_tokens)
            out[i, j] = total / len(q_tokens)
    return out


def hand_info_nce(s: np.ndarray, group: int) -> float:
    losses = []
    for i in range(s.shape[0]):
        logz = math.log(sum(math.exp(x) for x in s[i]))
        losses.append(logz - s[i, i * group])
    return sum(losses) / len(losses)


def hand_soft_ce(teacher: np.ndarray, s: np.ndarray) -> float:
    losses = []
    for i in range(s.shape[0]):
        logz = math.log(sum(math.exp(x) for x in s[i]))
        losses.append(-sum(teacher[i, j] * (s[i, j] - logz) for j in range(s.shape[1])))
    return sum(losses) / len(losses)


def hand_softmax(s: np.ndarray) -> np.ndarray:
    out = np.zeros_like(s)
    for i in range(s.shape[0]):
        z = sum(math.exp(x - s[i].max()) for x in s[i])
        for j in range(s.shape[1]):
            out[i, j] = math.exp(s[i, j] - s[i].max()) / z
    return out


def hand_teacher_group_loss(teacher: np.ndarray, s: np.ndarray, group: int) -> float:
    total = 0.0
    for k in range(group):
        per_row = []
        for i in range(s.shape[0]):
            removed = {i * group + m for m in range(k)}
            logz = math.log(sum(math.exp(s[i, j]) for j in range(s.shape[1]) if j not in removed))
            per_row.append(teacher[i, k] * (logz - s[i, i * group + k]))
        total += sum(per_row) / len(per_row)
    return total


# ---- scores ----------------------------------------------------------------------------------------------

@pytest.fixture
def batch():
    rng = np.random.default_rng(7)
    q = make_reps(rng, 3, 6, 5)
    p = make_reps(rng, 9, 8, 5)  # groups of 3
    return q, p


def test_dense_scores(batch):
    q, p = batch
    np.testing.assert_allclose(S.dense_scores(q.dense, p.dense).detach().numpy(), hand_dense(q, p), rtol=1e-12)


def test_lexical_scores_max_over_occurrences_and_unused_ids(batch):
    q, p = batch
    got = S.lexical_scores(q.token_weights, q.input_ids, p.token_weights, p.input_ids, UNUSED)
    np.testing.assert_allclose(got.detach().numpy(), hand_lexical(q, p), rtol=1e-12)


def test_lexical_scores_repeated_token_takes_max():
    w_q = torch.tensor([[0.0, 0.5, 0.9, 0.2]], dtype=torch.float64)
    ids_q = torch.tensor([[0, 7, 7, 2]])
    w_p = torch.tensor([[0.0, 0.3, 0.4, 0.0]], dtype=torch.float64)
    ids_p = torch.tensor([[0, 7, 8, 2]])
    # token 7: max(0.5, 0.9) * 0.3; token 8 absent from the query; 0 and 2 unused
    assert S.lexical_scores(w_q, ids_q, w_p, ids_p, UNUSED).item() == pytest.approx(0.9 * 0.3)


def test_lexical_vectors_never_span_the_vocabulary():
    ids = torch.tensor([[0, 250_000, 17, 2]])
    w = torch.ones(1, 4)
    (vec,) = S.compact_lexical_vectors([w], [ids], UNUSED)
    assert vec.shape == (1, 4)  # 4 distinct ids, not 250k columns


@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_multivec_scores(batch, chunk):
    q, p = batch
    got = S.multivec_scores(q.colbert, q.colbert_segments, len(q), p.colbert, p.colbert_segments, len(p),
                            passage_chunk=chunk)
    np.testing.assert_allclose(got.detach().numpy(), hand_maxsim(q, p), rtol=1e-12)


@pytest.mark.slow
def test_multivec_gradient_matches_finite_differences(batch):
    q, p = batch

    def f(qc, pc):
        return S.multivec_scores(qc, q.colbert_segments, len(q), pc, p.colbert_segments, len(p), passage_chunk=4)

    assert torch.autograd.gradcheck(f, (q.colbert.detach().requires_grad_(),
                                        p.colbert.detach().requires_grad_()), eps=1e-6, atol=1e-6)


def test_multivec_keeps_negative_similarities_and_scores_empty_passages_zero():
    q = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[-1.0, 0.0]])  # passage 0 has one token; passage 1 has none
    s = S.multivec_scores(q, torch.tensor([0]), 1, p, torch.tensor([0]), 2)
    assert s.tolist() == [[-1.0, 0.0]]


# ---- loss terms ------------------------------------------------------------------------------------------

def test_info_nce(batch):
    rng = np.random.default_rng(3)
    s = rng.normal(size=(3, 9)) * 5
    got = Lo.info_nce(torch.tensor(s), group_size=3).item()
    assert got == pytest.approx(hand_info_nce(s, 3), rel=1e-12)


def test_soft_cross_entropy():
    rng = np.random.default_rng(4)
    s, t = rng.normal(size=(3, 9)), hand_softmax(rng.normal(size=(3, 9)))
    assert Lo.soft_cross_entropy(torch.tensor(t), torch.tensor(s)).item() == pytest.approx(hand_soft_ce(t, s), rel=1e-12)


def test_teacher_group_loss():
    rng = np.random.default_rng(5)
    s, t = rng.normal(size=(3, 9)) * 3, hand_softmax(rng.normal(size=(3, 3)))
    got = Lo.teacher_group_loss(torch.tensor(t), torch.tensor(s), group_size=3).item()
    assert got == pytest.approx(hand_teacher_group_loss(t, s, 3), rel=1e-12)


def hand_terms(q, p, group, self_distill):
    s_d = hand_dense(q, p) / TAU
    s_l = hand_lexical(q, p) / TAU
    s_m = hand_maxsim(q, p) / TAU
    s_i = s_d + 0.3 * s_l + s_m
    l_d, l_l, l_m, l_i = (hand_info_nce(s, group) for s in (s_d, s_l, s_m, s_i))
    unified = (l_d + l_i + 0.1 * l_l + l_m) / 4
    out = {"dense": l_d, "lexical": l_l, "multivec": l_m, "inter": l_i, "unified": unified, "total": unified}
    if self_distill:
        t = hand_softmax(s_i)
        dd, dl, dm = hand_soft_ce(t, s_d), hand_soft_ce(t, s_l), hand_soft_ce(t, s_m)
        distill = (dd + 0.1 * dl + dm) / 3
        out.update(distill_dense=dd, distill_lexical=dl, distill_multivec=dm, distill=distill, total=(unified + distill) / 2)
    return out


@pytest.mark.parametrize("self_distill", [False, True])
def test_unified_loss_matches_hand_computation(batch, self_distill):
    q, p = batch
    terms = Lo.unified_loss(q, p, temperature=TAU, unused_token_ids=UNUSED, self_distill=self_distill)
    expected = hand_terms(q, p, 3, self_distill)
    got = terms.as_floats()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-9), name
    if not self_distill:
        assert terms.distill is None


def test_self_distillation_teacher_is_detached(batch):
    """The teacher softmax(s_inter) must not carry gradient: L' only pulls the students toward it."""
    q, p = batch
    terms = Lo.unified_loss(q, p, temperature=TAU, unused_token_ids=UNUSED, self_distill=True)
    (g_auto,) = torch.autograd.grad(terms.distill_dense, q.dense)
    s_d = S.dense_scores(q.dense, p.dense) / TAU
    teacher = terms.scores["inter"].detach().softmax(-1)
    # gradient of mean_i CE(teacher_i, s_i) wrt s is (softmax(s) - teacher) / B; chain to q through p / TAU
    g_s = (s_d.softmax(-1) - teacher) / s_d.shape[0]
    g_hand = g_s.detach() @ p.dense.detach() / TAU
    np.testing.assert_allclose(g_auto.numpy(), g_hand.numpy(), rtol=1e-9, atol=1e-12)


def test_teacher_scores_replace_info_nce_by_group_distillation(batch):
    q, p = batch
    rng = np.random.default_rng(9)
    teacher_scores = rng.normal(size=(3, 3))
    terms = Lo.unified_loss(
        q, p, temperature=TAU, unused_token_ids=UNUSED, self_distill=False, teacher_scores=torch.tensor(teacher_scores)
    )
    t = hand_softmax(teacher_scores)
    s_d = hand_dense(q, p) / TAU
    s_l = hand_lexical(q, p) / TAU
    assert terms.dense.item() == pytest.approx(hand_teacher_group_loss(t, s_d, 3), rel=1e-9)
    assert terms.lexical.item() == pytest.approx(hand_teacher_group_loss(t, s_l, 3), rel=1e-9)


def test_gathered_dense_uses_all_processes_for_dense_and_local_block_elsewhere(batch):
    q, p = batch
    rng = np.random.default_rng(11)
    other = make_reps(rng, 3, 6, 5), make_reps(rng, 9, 8, 5)
    # this process is rank 1 of 2
    gq = torch.cat([other[0].dense, q.dense])
    gp = torch.cat([other[1].dense, p.dense])
    terms = Lo.unified_loss(
        q, p, temperature=TAU, unused_token_ids=UNUSED, self_distill=True,
        gathered_dense=Lo.GatheredDense(q=gq, p=gp, rank=1),
    )
    all_q = Lo.Reps(gq, None, None, None, None)
    all_p = Lo.Reps(gp, None, None, None, None)
    all_q.raw = {"dense": gq.detach().numpy()}
    all_p.raw = {"dense": gp.detach().numpy()}
    assert terms.dense.item() == pytest.approx(hand_info_nce(hand_dense(all_q, all_p) / TAU, 3), rel=1e-9)
    local = hand_terms(q, p, 3, True)
    for name in ("lexical", "multivec", "inter", "distill"):
        assert terms.as_floats()[name] == pytest.approx(local[name], rel=1e-9), name


def test_dense_loss_weight_scales_only_the_minimised_total(batch):
    q, p = batch
    a = Lo.unified_loss(q, p, temperature=TAU, unused_token_ids=UNUSED, self_distill=True)
    b = Lo.unified_loss(q, p, temperature=TAU, unused_token_ids=UNUSED, self_distill=True, dense_loss_weight=3.0)
    assert b.unified.item() == pytest.approx(a.unified.item())
    assert b.total.item() == pytest.approx(a.total.item() + 2.0 * a.dense.item() / 8)
