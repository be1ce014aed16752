import pytest

from m3search.encoder import load_encoder
from m3search.errors import InputError, ModelError


def test_deterministic_and_batch_shaped():
    a = load_encoder("hashing:dim=16,vocab_size=1000").encode("Hello, world!")
    b = load_encoder("hashing:dim=16,vocab_size=1000").encode(["Hello, world!"])
    assert a.dense.shape == (1, 16)
    assert (a.dense == b.dense).all() and (a.multivec == b.multivec).all()


@pytest.mark.parametrize(
    "texts, pos",
    [(["ok", None], 1), (["ok", "fine", 3], 2), (["\ud800 broken"], 0)],
)
def test_bad_inputs_name_their_position(texts, pos, hashing_encoder):
    with pytest.raises(InputError, match=f"position {pos}"):
        hashing_encoder.encode(texts)


def test_empty_text_has_defined_result(hashing_encoder):
    b = hashing_encoder.encode(["", "   "])
    assert b.sparse.nnz == 0
    assert list(b.multivec_lengths) == [1, 1]


def test_unknown_model_is_refused():
    with pytest.raises(ModelError, match="never downloads"):
        load_encoder("BAAI/bge-m3-not-here")
