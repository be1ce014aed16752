"""Bad and odd inputs: each either encodes to a defined result or raises an InputError naming its position."""
from __future__ import annotations

import numpy as np
import pytest

from m3search.errors import InputError


@pytest.mark.parametrize(
    "texts, position",
    [
        (["ok", None], 1),
        (["ok", "fine", 42], 2),
        ([b"bytes"], 0),
        (["ok", "lone \ud800 surrogate"], 1),
    ],
)
def test_invalid_items_are_refused_with_their_position(tiny_encoder, texts, position):
    with pytest.raises(InputError, match=f"position {position}"):
        tiny_encoder.encode(texts)


def test_invalid_arguments_are_refused(tiny_encoder):
    with pytest.raises(InputError, match="None"):
        tiny_encoder.encode(None)
    with pytest.raises(InputError, match="kind"):
        tiny_encoder.encode(["x"], kind="document")
    with pytest.raises(InputError, match="max_length"):
        tiny_encoder.encode(["x"], max_length=1)


def test_empty_and_whitespace_texts_encode_to_the_no_word_input(tiny_encoder):
    batch = tiny_encoder.encode(["", "   ", "\n\t ", "word"])
    # sentencepiece strips whitespace: all three are "[cls] [eos]"
    np.testing.assert_allclose(batch.dense[0], batch.dense[1], atol=1e-6)
    np.testing.assert_allclose(batch.dense[0], batch.dense[2], atol=1e-6)
    assert batch.multivec_lengths.tolist()[:3] == [1, 1, 1]  # only the </s> vector
    assert np.diff(batch.sparse.indptr).tolist()[:3] == [0, 0, 0]  # cls and eos carry no lexical weight
    assert np.isfinite(batch.dense).all() and np.allclose(np.linalg.norm(batch.dense, axis=1), 1, atol=1e-5)


def test_shapes_are_batch_shaped_for_any_input(tiny_encoder):
    one = tiny_encoder.encode("a single string")
    assert one.dense.shape == (1, 32) and one.sparse.shape[0] == 1 and len(one.multivec_lengths) == 1
    none = tiny_encoder.encode([])
    assert none.dense.shape == (0, 32) and none.sparse.shape == (0, tiny_encoder.vocab_size)
    assert none.multivec.shape == (0, 32) and none.multivec_lengths.shape == (0,)
    from_tuple = tiny_encoder.encode(("a", "b"))
    assert len(from_tuple) == 2


def test_unknown_characters_and_literal_special_tokens(tiny_encoder):
    batch = tiny_encoder.encode(["🦜 ꙮ", "<s> literal </s> <pad>"])
    ids = tiny_encoder.tokenizer.encode(["🦜 ꙮ"])[0]
    assert tiny_encoder.tokenizer.unk_id in ids
    assert tiny_encoder.tokenizer.unk_id not in batch.sparse[0].indices
    assert batch.multivec_lengths[0] == len(ids) - 1


@pytest.mark.slow
def test_a_megabyte_string_encodes_in_windows(make_encoder):
    text = ("Megabyte strings must not blow up. 大きな文字列。 " * 25000)[:1_000_000]
    from m3search.encoder.limits import TextTooLongError

    with pytest.raises(TextTooLongError, match="text 1 has .* tokens, more than the limit of 8192"):
        make_encoder(batch_tokens=16384).encode(["before", text, "after"])  # by default: refused, not 600 s
    encoder = make_encoder(batch_tokens=16384, max_doc_tokens=10**7)  # raised on purpose: encoded in windows
    batch = encoder.encode(["before", text, "after"])
    n_content = len(encoder.tokenizer.content_ids([text])[0])
    from m3search.encoder.windows import window_spans

    spans = window_spans(n_content, 254, 64)
    assert len(spans) > 1000
    assert batch.multivec_lengths[1] == sum(b - a + 1 for a, b in spans)
    assert batch.multivec_lengths[0] == len(encoder.tokenizer.encode(["before"])[0]) - 1
    assert np.isfinite(batch.multivec).all()
