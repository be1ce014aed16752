"""Texts longer than a window: overlapping windows and their aggregation rules, and MCLS, checked by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from m3search.encoder.windows import content_capacity, make_pieces, piece_ids, window_spans

LONG = " ".join(f"word{i} Wort{i % 7} 词{i % 5}" for i in range(120))  # ~700 tokens


def test_window_spans_overlap_and_end_at_the_last_token():
    assert window_spans(5, capacity=8, overlap=2) == [(0, 5)]
    spans = window_spans(100, capacity=30, overlap=10)
    assert spans[0] == (0, 30) and spans[-1][1] == 100
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        assert b0 == a1 - 10, "consecutive windows share `overlap` tokens"
    with pytest.raises(ValueError):
        window_spans(100, capacity=30, overlap=30)


def test_content_capacity_leaves_room_for_mcls_tokens():
    assert content_capacity(512) == 510
    c = content_capacity(512, mcls_every=256)
    ids, cls_positions = piece_ids(np.arange(c), cls_id=0, eos_id=2, mcls_every=256)
    assert len(ids) <= 512 and content_capacity(512, 256) == 509
    assert cls_positions.tolist() == [0, 257]
    assert (ids[cls_positions] == 0).all() and ids[-1] == 2


def _by_hand(encoder, windows: list[list[int]]):
    """Run each window alone through backbone + heads: dense, {id: max weight}, token vectors."""
    dense, lexical, vectors = [], {}, []
    unused = encoder.tokenizer.unused_ids
    for ids in windows:
        ids_t = torch.tensor([ids])
        with torch.inference_mode():
            out = encoder.model(ids_t, torch.ones_like(ids_t))
        dense.append(out.dense[0].numpy())
        for tid, w in zip(ids, out.token_weights[0].tolist()):
            if tid not in unused and w > 0:
                lexical[tid] = max(lexical.get(tid, 0.0), w)
        vectors.append(out.colbert[0].numpy())
    return np.stack(dense), lexical, vectors


@pytest.mark.parametrize("long_dense", ["mean", "first"])
def test_long_text_is_windowed_and_aggregated(make_encoder, long_dense):
    encoder = make_encoder(window_tokens=128, window_overlap=16, long_dense=long_dense)
    tok = encoder.tokenizer
    content = tok.content_ids([LONG])[0]
    spans = window_spans(len(content), 126, 16)
    assert len(spans) >= 4
    windows = [[tok.cls_id, *content[a:b], tok.eos_id] for a, b in spans]
    dense, lexical, vectors = _by_hand(encoder, windows)

    batch = encoder.encode(["short one", LONG, "another"])
    # token vectors: every window's, in order (overlapping tokens once per window)
    np.testing.assert_allclose(batch.token_vectors(1), np.concatenate(vectors), atol=1e-5)
    assert batch.multivec_lengths[1] == sum(len(w) - 1 for w in windows)
    # lexical weights: max per token id over all windows
    got = batch.lexical_weights(1)
    assert got.keys() == lexical.keys()
    np.testing.assert_allclose([got[t] for t in lexical], list(lexical.values()), atol=1e-5)
    # dense: documented choice
    expected = dense[0] if long_dense == "first" else dense.mean(0) / np.linalg.norm(dense.mean(0))
    np.testing.assert_allclose(batch.dense[1], expected, atol=1e-5)
    # neighbours are unaffected
    np.testing.assert_allclose(batch.dense[0], encoder.encode("short one").dense[0], atol=1e-5)


def test_default_window_is_the_models_limit(tiny_encoder):
    assert tiny_encoder.window_tokens == 256
    n = len(tiny_encoder.tokenizer.content_ids([LONG])[0])
    batch = tiny_encoder.encode(LONG)
    spans = window_spans(n, 254, 64)
    assert batch.multivec_lengths[0] == sum(b - a + 1 for a, b in spans)


def test_text_within_the_limit_is_one_plain_piece(tiny_encoder):
    pieces = make_pieces([[5, 6, 7]], cls_id=0, eos_id=2, window_tokens=256)
    assert len(pieces) == 1 and pieces[0].ids.tolist() == [0, 5, 6, 7, 2]


def test_mcls_dense_is_the_mean_of_the_cls_states(make_encoder):
    # a CLS every 64 tokens (the paper uses 256) so a text within the tiny model's 256 tokens gets several
    encoder = make_encoder(mcls=64)
    tok = encoder.tokenizer
    text = " ".join(f"word{i}" for i in range(80))
    content = tok.content_ids([text])[0]
    assert 130 < len(content) < 240
    ids, cls_positions = piece_ids(np.asarray(content), tok.cls_id, tok.eos_id, 64)
    assert len(cls_positions) == int(np.ceil(len(content) / 64)) >= 3
    ids_t = torch.tensor([ids.tolist()])
    with torch.inference_mode():
        hidden = encoder.model.backbone(input_ids=ids_t, attention_mask=torch.ones_like(ids_t)).last_hidden_state
        out = encoder.model.apply_heads(hidden, torch.ones_like(ids_t))
    expected_dense = F.normalize(hidden[0, torch.as_tensor(cls_positions)].mean(0), dim=-1).numpy()
    keep = np.setdiff1d(np.arange(1, len(ids)), cls_positions[1:]) - 1  # colbert rows of text tokens and </s>
    batch = encoder.encode(["filler", text])
    np.testing.assert_allclose(batch.dense[1], expected_dense, atol=1e-5)
    np.testing.assert_allclose(batch.token_vectors(1), out.colbert[0].numpy()[keep], atol=1e-5)
    assert batch.multivec_lengths[1] == len(content) + 1


def test_mcls_on_a_short_text_equals_plain_cls(make_encoder, tiny_encoder):
    text = "A short text has one CLS token only."
    np.testing.assert_allclose(make_encoder(mcls=True).encode(text).dense, tiny_encoder.encode(text).dense, atol=1e-6)


def test_bad_window_options_are_refused(make_encoder):
    from m3search.errors import ConfigError

    with pytest.raises(ConfigError, match="window_tokens"):
        make_encoder(window_tokens=100000)
    with pytest.raises(ConfigError, match="long_dense"):
        make_encoder(long_dense="max")
    with pytest.raises(ConfigError, match="window_overlap"):
        make_encoder(window_overlap=-1)
