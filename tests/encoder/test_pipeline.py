"""Length-sorted token-budget batching: every text once, budgets respected, the caller's order restored."""
from __future__ import annotations

import numpy as np
import pytest

from m3search.encoder.batching import padding_ratio, plan_batches
from m3search.types import EncoderIdentity

MIXED = [
    "a",
    "Die Katze schläft auf dem Sofa, und der Hund bellt im Garten, während es draußen regnet.",
    "猫",
    "short text",
    "A much longer English passage about retrieval, ranking, sparse lexical weights and multi-vector "
    "late interaction, written to be several times longer than the others in this list.",
    "",
    "Кошка спит.",
    "a",  # duplicate of the first, at another position
]


def test_plan_batches_covers_every_item_once_within_budget(rng):
    lengths = rng.integers(1, 300, size=500)
    batches = plan_batches(lengths, batch_tokens=1024)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))
    for b in batches:
        assert len(b) == 1 or len(b) * lengths[b].max() <= 1024
        assert np.all(np.diff(lengths[b]) <= 0), "descending length inside a batch"
    assert padding_ratio(lengths, batches) < 1.1


def test_plan_batches_gives_an_oversized_item_its_own_batch():
    batches = plan_batches([5000, 3, 3], batch_tokens=100)
    assert [b.tolist() for b in batches] == [[0], [1, 2]]
    with pytest.raises(ValueError):
        plan_batches([1], batch_tokens=0)


def _assert_same(a, b, atol=1e-5):
    np.testing.assert_allclose(a.dense, b.dense, atol=atol, rtol=0)
    assert a.multivec_lengths.tolist() == b.multivec_lengths.tolist()
    np.testing.assert_allclose(a.multivec, b.multivec, atol=atol, rtol=0)
    assert (a.sparse.indptr == b.sparse.indptr).all() and (a.sparse.indices == b.sparse.indices).all()
    np.testing.assert_allclose(a.sparse.data, b.sparse.data, atol=atol, rtol=0)


@pytest.mark.parametrize("batch_tokens", [8, 64, 100000])
def test_batch_equals_one_by_one_in_callers_order(make_encoder, tiny_encoder, batch_tokens):
    batch = make_encoder(batch_tokens=batch_tokens).encode(MIXED)
    singles = [tiny_encoder.encode(t) for t in MIXED]
    from m3search.types import EncodedBatch

    _assert_same(batch, EncodedBatch.concat(singles))
    assert batch.sparse.has_sorted_indices


def test_duplicate_texts_encode_identically(tiny_encoder):
    batch = tiny_encoder.encode(MIXED)
    np.testing.assert_allclose(batch.dense[0], batch.dense[7], atol=1e-6)
    np.testing.assert_allclose(batch.token_vectors(0), batch.token_vectors(7), atol=1e-6)


def test_outputs_are_normalised_and_typed(tiny_encoder):
    batch = tiny_encoder.encode(MIXED)
    assert batch.dense.dtype == np.float32 and batch.multivec.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch.dense, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batch.multivec, axis=1), 1.0, atol=1e-5)
    assert batch.sparse.shape == (len(MIXED), tiny_encoder.vocab_size)
    assert (batch.sparse.data > 0).all()
    unused = tiny_encoder.tokenizer.unused_ids
    assert not set(batch.sparse.indices.tolist()) & unused
    # one token vector per token after CLS, the final </s> included
    ids = tiny_encoder.tokenizer.encode(MIXED)
    assert batch.multivec_lengths.tolist() == [len(t) - 1 for t in ids]


def test_lexical_weight_is_the_max_over_a_tokens_occurrences(tiny_encoder):
    import torch

    text = "the cat the dog the bird"
    ids = tiny_encoder.tokenizer.encode([text])[0]
    ids_t = torch.tensor([ids])
    with torch.inference_mode():
        out = tiny_encoder.model(ids_t, torch.ones_like(ids_t))
    weights = out.token_weights[0].numpy()
    expected = {}
    for tid, w in zip(ids, weights):
        if tid not in tiny_encoder.tokenizer.unused_ids and w > 0:
            expected[tid] = max(expected.get(tid, 0.0), float(w))
    got = tiny_encoder.encode(text).lexical_weights(0)
    assert got.keys() == expected.keys()
    for tid in expected:
        assert got[tid] == pytest.approx(expected[tid], abs=1e-6)
    assert ids.count(ids[1]) == 3, "the test text must repeat a token"


def test_max_length_truncates_like_flagembedding(tiny_encoder):
    text = MIXED[4]
    full_ids = tiny_encoder.tokenizer.encode([text])[0]
    cut = tiny_encoder.encode(text, max_length=10)
    assert cut.multivec_lengths.tolist() == [9]
    by_ids = tiny_encoder.tokenizer.encode([text], max_length=10)[0]
    assert by_ids == full_ids[:9] + [full_ids[-1]]


def test_identity(tiny_encoder):
    identity = tiny_encoder.identity
    assert isinstance(identity, EncoderIdentity)
    assert (identity.dense_dim, identity.multivec_dim, identity.vocab_size) == (32, 32, 250002)
    assert len(identity.tokenizer_hash) == 64
    assert tiny_encoder.token_strings([35378, 8999]) == ["▁Hello", "▁world"]


def test_oom_halves_the_budget_and_retries(make_encoder, tiny_encoder, caplog):
    encoder = make_encoder(batch_tokens=4096)
    real_forward = encoder._forward
    attempts, done = [], []

    def flaky_forward(batch):
        attempts.append(len(batch))
        if len(batch) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        done.append(len(batch))
        return real_forward(batch)

    encoder._forward = flaky_forward
    with caplog.at_level("WARNING"):
        batch = encoder.encode(MIXED)
    _assert_same(batch, tiny_encoder.encode(MIXED))
    assert attempts[0] == len(MIXED) and sum(done) == len(MIXED)
    assert "retrying with batch_tokens=2048" in caplog.text
    assert encoder.batch_tokens == 4096, "the budget is reduced for that call only"


def test_oom_on_a_single_piece_names_the_text(make_encoder):
    from m3search.errors import ModelError

    encoder = make_encoder()

    def always_oom(batch):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory")

    encoder._forward = always_oom
    with pytest.raises(ModelError, match="position 0"):
        encoder.encode(["only one"])


def test_other_runtime_errors_propagate(make_encoder):
    encoder = make_encoder()

    def broken(batch):
        raise RuntimeError("shape mismatch")

    encoder._forward = broken
    with pytest.raises(RuntimeError, match="shape mismatch"):
        encoder.encode(["x", "y"])


def test_int8_dynamic_quantization_runs_and_stays_close(tiny_model_dir, tiny_encoder):
    import warnings

    from m3search.encoder.m3 import M3Encoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao's quantize_dynamic is deprecated
        warnings.simplefilter("ignore", UserWarning)
        int8 = M3Encoder.from_pretrained(tiny_model_dir, device="cpu", quantize="int8")
        got = int8.encode(MIXED)
    want = tiny_encoder.encode(MIXED)
    assert any("quantized" in type(m).__module__ for m in int8.model.backbone.modules())
    cos = np.einsum("ij,ij->i", got.dense, want.dense)
    assert cos.min() > 0.95
    assert got.multivec_lengths.tolist() == want.multivec_lengths.tolist()


def test_bad_quantize_option_is_refused(make_encoder):
    from m3search.errors import ConfigError

    with pytest.raises(ConfigError, match="quantize"):
        make_encoder(quantize="int4")
