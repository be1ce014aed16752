import numpy as np
import pytest
import scipy.sparse as sp

from m3search.errors import IndexFormatError, InputError
from m3search.types import EncodedBatch, EncoderIdentity


def random_batch(rng, n=5, d=8, dm=4, vocab=50):
    lengths = rng.integers(0, 6, size=n)
    dense = rng.standard_normal((n, d)).astype(np.float32)
    sparse = sp.random(n, vocab, density=0.1, format="csr", dtype=np.float32, random_state=1)
    return EncodedBatch(dense, sparse, rng.standard_normal((int(lengths.sum()), dm)).astype(np.float32), lengths)


def test_select_and_concat_round_trip(rng):
    b = random_batch(rng)
    order = np.array([3, 0, 4, 1, 2])
    s = b.select(order)
    for j, i in enumerate(order):
        np.testing.assert_array_equal(s.dense[j], b.dense[i])
        np.testing.assert_array_equal(s.token_vectors(j), b.token_vectors(i))
        assert s.lexical_weights(j) == b.lexical_weights(i)
    inv = np.argsort(order)
    back = EncodedBatch.concat([s.select(inv[:1]), s.select(inv[1:])])
    np.testing.assert_array_equal(back.dense, b.dense)
    np.testing.assert_array_equal(back.multivec, b.multivec)
    assert (back.sparse != b.sparse).nnz == 0


def test_save_load_mmap(tmp_path, rng):
    b = random_batch(rng)
    b.save(tmp_path / "enc")
    c = EncodedBatch.load(tmp_path / "enc")
    assert isinstance(c.dense, np.memmap)
    np.testing.assert_array_equal(c.dense, b.dense)
    np.testing.assert_array_equal(c.multivec_lengths, b.multivec_lengths)
    assert (c.sparse != b.sparse).nnz == 0


def test_load_refuses_newer_version(tmp_path, rng):
    b = random_batch(rng)
    b.save(tmp_path / "enc")
    header = (tmp_path / "enc" / "batch.json")
    header.write_text(header.read_text().replace('"version": 1', '"version": 99'))
    with pytest.raises(IndexFormatError, match="newer"):
        EncodedBatch.load(tmp_path / "enc")


def test_invalid_shapes_are_named(rng):
    b = random_batch(rng)
    with pytest.raises(InputError, match="multivec_lengths sum"):
        EncodedBatch(b.dense, b.sparse, b.multivec, b.multivec_lengths + 1)
    with pytest.raises(InputError, match="float32"):
        EncodedBatch(b.dense.astype(np.float64), b.sparse, b.multivec, b.multivec_lengths)


def test_identity_mismatch_lists_fields():
    a = EncoderIdentity("m", 8, 8, 100, "abc")
    b = EncoderIdentity("m", 16, 8, 100, "abd")
    assert a.mismatches(b) == ["dense_dim: 8 != 16", "tokenizer_hash: 'abc' != 'abd'"]
    assert EncoderIdentity.from_dict(a.to_dict()) == a
