"""Split-batch (GradCache) encoding gives the whole batch's gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.trainer import make_examples, make_model, make_spec, make_tokenizer
from m3search.trainer.config import TrainConfig
from m3search.trainer.data import sample_group
from m3search.trainer.trainer import Trainer, enable_gradient_checkpointing


_computed: dict = {}


def gradients(config: TrainConfig, dropout: float, self_distill: bool = True) -> dict[str, torch.Tensor]:
    key = (repr(config), dropout, self_distill)
    if key not in _computed:  # the whole-batch reference serves several tests
        _computed[key] = _gradients(config, dropout, self_distill)
    return _computed[key]


def _gradients(config: TrainConfig, dropout: float, self_distill: bool) -> dict[str, torch.Tensor]:
    # float64, so equal gradients are equal to ~1e-15 rather than to float32's accumulation-order noise
    model = make_model(seed=1, dropout=dropout).double()
    tok = make_tokenizer()
    examples = make_examples(6, n_neg=3, seed=2)
    trainer = Trainer(model, tok, make_spec(), config, examples, "unused")
    model.train()
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model.backbone)
    rng = np.random.default_rng(0)
    groups = [sample_group(ex, 3, rng, False) for ex in examples]
    q, p = trainer._sides([g.query for g in groups], [t for g in groups for t in g.passages])
    torch.manual_seed(123)
    terms = trainer.forward_backward(q, p, None, self_distill=self_distill)
    assert torch.isfinite(terms.total)
    return {n: prm.grad.clone() for n, prm in model.named_parameters() if prm.grad is not None}


def config(**kw) -> TrainConfig:
    return TrainConfig(mode="full", group_size=4, batch_size=6, **kw)


def assert_same_gradients(a, b):
    assert a.keys() == b.keys()
    assert any(k.startswith("backbone.") for k in a)  # the backbone really is trained
    # absolute tolerance from the largest gradient overall: some gradients are exactly 0 in exact arithmetic
    # (e.g. attention key biases, softmax is shift-invariant), leaving only float noise to compare
    scale = max(g.abs().max().item() for g in a.values())
    for name in a:
        assert a[name].dtype == torch.float64
        torch.testing.assert_close(a[name], b[name], rtol=1e-9, atol=1e-11 * scale, msg=name)


@pytest.mark.parametrize("sub_batch", [1, 2, 5])
def test_split_batch_gradients_equal_whole_batch(sub_batch):
    whole = gradients(config(), dropout=0.0)
    split = gradients(config(sub_batch_size=sub_batch), dropout=0.0)
    assert_same_gradients(whole, split)
    assert sum(g.abs().sum().item() for g in whole.values()) > 0


def test_split_batch_with_gradient_checkpointing_equals_whole_batch():
    whole = gradients(config(), dropout=0.0)
    split = gradients(config(sub_batch_size=3, gradient_checkpointing=True), dropout=0.0)
    assert_same_gradients(whole, split)


def test_dropout_masks_are_replayed_in_the_second_pass():
    """One sub-batch per side draws the same dropout masks as the whole batch, so gradients match only if the
    second (autograd) pass replays the first pass's random state."""
    whole = gradients(config(), dropout=0.2)
    split = gradients(config(sub_batch_size=1000), dropout=0.2)
    assert_same_gradients(whole, split)
    no_dropout = gradients(config(), dropout=0.0)
    assert not torch.allclose(whole["backbone.embeddings.word_embeddings.weight"],
                              no_dropout["backbone.embeddings.word_embeddings.weight"])  # dropout is really on
