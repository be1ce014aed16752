"""The training heads on packed states equal M3Model.apply_heads on padded states (at the real tokens)."""
from __future__ import annotations

import pytest
import torch

from helpers.trainer import make_model, make_tokenizer
from m3search.trainer import scores as S
from m3search.trainer.heads import packed_heads


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_packed_heads_equal_apply_heads(pooling):
    model, tok = make_model(seed=4, pooling=pooling).double(), make_tokenizer()
    torch.nn.init.normal_(model.sparse_linear.weight, std=0.3)
    ids, mask = tok.pad(tok.encode(["w1 w2 w3 w4 w5", "w6", "w7 w8 w9"], 32))
    ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
    with torch.no_grad():
        hidden = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        ref = model.apply_heads(hidden, mask)
        got = packed_heads(model, hidden[mask.bool()], mask, ids)
    torch.testing.assert_close(got.dense, ref.dense, rtol=1e-12, atol=1e-12)
    real = mask.bool()
    torch.testing.assert_close(got.token_weights[real], ref.token_weights[real], rtol=1e-12, atol=1e-12)
    assert torch.all(got.token_weights[~real] == 0)
    packed, segments = S.pack(ref.colbert, mask[:, 1:])
    torch.testing.assert_close(got.colbert, packed, rtol=1e-12, atol=1e-12)
    assert torch.equal(got.colbert_segments, segments)
    assert got.colbert.shape[0] == int(mask.sum()) - 3  # no vector for each text's first token
