"""Data parallel with cross-device dense negatives: 2 CPU processes on the gloo backend."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers.trainer import make_examples, make_model, make_spec, make_tokenizer
from m3search.trainer import distributed as D
from m3search.trainer.config import TrainConfig
from m3search.trainer.data import sample_group
from m3search.trainer.losses import unified_loss
from m3search.trainer.trainer import Trainer

WORLD = 2
PER_RANK = 3
GROUP = 3
TAU = 0.02


def global_batch():
    examples = make_examples(WORLD * PER_RANK, n_neg=GROUP - 1, seed=4)
    rng = np.random.default_rng(0)
    groups = [sample_group(ex, GROUP - 1, rng, False) for ex in examples]
    return examples, groups


def config() -> TrainConfig:
    return TrainConfig(mode="full", group_size=GROUP, batch_size=PER_RANK, temperature=TAU)


def make_trainer(examples):
    model = make_model(seed=1).double()
    model.train()
    return Trainer(model, make_tokenizer(), make_spec(), config(), examples, "unused"), model


def worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        examples, groups = global_batch()
        mine = groups[rank * PER_RANK : (rank + 1) * PER_RANK]
        trainer, model = make_trainer(examples)
        assert trainer.dist == D.DistInfo(rank, WORLD)
        q, p = trainer._sides([g.query for g in mine], [t for g in mine for t in g.passages])
        with torch.no_grad():
            local_q = trainer._reps(model.backbone(input_ids=q.input_ids, attention_mask=q.attention_mask).last_hidden_state, q).dense
            local_p = trainer._reps(model.backbone(input_ids=p.input_ids, attention_mask=p.attention_mask).last_hidden_state, p).dense
        gathered_q = D.gather_with_local_grad(local_q, trainer.dist)
        gathered_p = D.gather_with_local_grad(local_p, trainer.dist)
        terms = trainer.forward_backward(q, p, None, self_distill=True)
        D.average_gradients([prm for prm in model.parameters()], trainer.dist)
        np.savez(
            f"{out_dir}/rank{rank}.npz", local_q=local_q.numpy(), local_p=local_p.numpy(),
            gathered_q=gathered_q.numpy(), gathered_p=gathered_p.numpy(), dense=terms.dense.item(),
            **{f"grad/{n}": prm.grad.numpy() for n, prm in model.named_parameters()},
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_share_dense_negatives_and_match_one_process(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(WORLD)]

    # the gathered negatives are the other process's representations, in rank order
    for r in range(WORLD):
        np.testing.assert_array_equal(ranks[r]["gathered_q"], np.concatenate([x["local_q"] for x in ranks]))
        np.testing.assert_array_equal(ranks[r]["gathered_p"], np.concatenate([x["local_p"] for x in ranks]))
    assert not np.allclose(ranks[0]["local_p"], ranks[1]["local_p"])

    # one process over the concatenated batch
    examples, groups = global_batch()
    trainer, model = make_trainer(examples)
    sides = []
    for r in range(WORLD):
        mine = groups[r * PER_RANK : (r + 1) * PER_RANK]
        sides.append(trainer._sides([g.query for g in mine], [t for g in mine for t in g.passages]))
    reps = []
    for q, p in sides:
        hq = model.backbone(input_ids=q.input_ids, attention_mask=q.attention_mask).last_hidden_state
        hp = model.backbone(input_ids=p.input_ids, attention_mask=p.attention_mask).last_hidden_state
        reps.append((trainer._reps(hq, q), trainer._reps(hp, p)))
    all_q = torch.cat([rq.dense for rq, _ in reps])
    all_p = torch.cat([rp.dense for _, rp in reps])
    # L_dense over all queries and all passages, written out: CE of column i * GROUP
    s = (all_q @ all_p.T / TAU)
    dense_global = torch.stack([torch.logsumexp(s[i], 0) - s[i, i * GROUP] for i in range(len(s))]).mean()
    for r in range(WORLD):
        assert ranks[r]["dense"] == pytest.approx(dense_global.item(), rel=1e-10)

    # gradients: c * L_dense(global) + mean over processes of everything else (computed on local batches)
    c = 1 / 8  # weight of L_dense in L_final = ((L_dense + ...) / 4 + L') / 2
    objective = c * dense_global
    for rq, rp in reps:
        local = unified_loss(rq, rp, temperature=TAU, unused_token_ids=sorted(trainer.unused_ids), self_distill=True)
        objective = objective + (local.total - c * local.dense) / WORLD
    objective.backward()
    # some gradients are 0 in exact arithmetic (attention key biases): tolerance from the largest gradient
    scale = max(float(prm.grad.abs().max()) for prm in model.parameters())
    for name, prm in model.named_parameters():
        for r in range(WORLD):
            np.testing.assert_allclose(ranks[r][f"grad/{name}"], prm.grad.numpy(), rtol=1e-7, atol=1e-11 * scale,
                                       err_msg=name)
