"""m3search's encoder against FlagEmbedding's BGEM3FlagModel on the same tiny checkpoint (fp32, CPU).

The reference values were written by fixtures/make_flagembedding_fixture.py running FlagEmbedding 1.4.2
itself in a separate virtualenv; the tiny checkpoint is rebuilt here from the same seed.
"""
from __future__ import annotations

import numpy as np
import pytest

from m3search import scoring

ATOL = 1e-5


def _split(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []


def _reference(ref: dict, kind: str) -> dict:
    indptr = ref[f"{kind}_lexical_indptr"]
    lexical = [
        dict(zip(ref[f"{kind}_lexical_ids"][a:b].tolist(), ref[f"{kind}_lexical_weights"][a:b].tolist()))
        for a, b in zip(indptr[:-1], indptr[1:])
    ]
    return {
        "texts": [str(t) for t in ref[f"{kind}_texts"]],
        "token_ids": [t.tolist() for t in _split(ref[f"{kind}_token_ids"], ref[f"{kind}_token_lengths"])],
        "dense": ref[f"{kind}_dense"],
        "lexical": lexical,
        "colbert": _split(ref[f"{kind}_colbert"], ref[f"{kind}_colbert_lengths"]),
    }


@pytest.mark.parametrize("kind", ["passage", "query"])
def test_token_ids_match_flagembedding(tiny_encoder, flag_reference, kind):
    expected = _reference(flag_reference, kind)
    assert tiny_encoder.tokenizer.encode(expected["texts"]) == expected["token_ids"]


@pytest.mark.parametrize("kind", ["passage", "query"])
@pytest.mark.parametrize("batch_tokens", [None, 40])  # default budget, and one that forces many small batches
def test_outputs_match_flagembedding(make_encoder, flag_reference, kind, batch_tokens):
    expected = _reference(flag_reference, kind)
    batch = make_encoder(batch_tokens=batch_tokens).encode(expected["texts"], kind=kind)

    np.testing.assert_allclose(batch.dense, expected["dense"], atol=ATOL, rtol=0)
    for i, ref_lexical in enumerate(expected["lexical"]):
        ours = batch.lexical_weights(i)
        assert sorted(ours) == sorted(ref_lexical), f"token ids of text {i} differ"
        np.testing.assert_allclose([ours[t] for t in sorted(ours)], [ref_lexical[t] for t in sorted(ours)], atol=ATOL)
    assert batch.multivec_lengths.tolist() == [len(v) for v in expected["colbert"]]
    np.testing.assert_allclose(batch.multivec, np.concatenate(expected["colbert"]), atol=ATOL, rtol=0)


def test_pair_scores_match_compute_score(tiny_encoder, flag_reference):
    pairs = flag_reference["pairs"]
    queries = tiny_encoder.encode([str(t) for t in flag_reference["query_texts"]], kind="query")
    passages = tiny_encoder.encode([str(t) for t in flag_reference["passage_texts"]], kind="passage")
    q, p = queries.select(pairs[:, 0]), passages.select(pairs[:, 1])
    dense = np.einsum("ij,ij->i", q.dense, p.dense)
    sparse = np.asarray(q.sparse.multiply(p.sparse).sum(axis=1)).ravel()
    colbert = np.asarray([scoring.maxsim(q.token_vectors(i), p.token_vectors(i)) for i in range(len(pairs))])
    expected = {k: flag_reference[f"score_{k}"] for k in ("dense", "sparse", "colbert", "sparse_dense", "colbert_sparse_dense")}

    np.testing.assert_allclose(dense, expected["dense"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(sparse, expected["sparse"], atol=ATOL, rtol=1e-6)
    np.testing.assert_allclose(colbert, expected["colbert"], atol=ATOL, rtol=0)
    np.testing.assert_allclose((dense + sparse) / 2, expected["sparse_dense"], atol=ATOL, rtol=1e-6)
    np.testing.assert_allclose((dense + sparse + colbert) / 3, expected["colbert_sparse_dense"], atol=ATOL, rtol=1e-6)
    # the fixture has non-trivial lexical overlap, or the sparse comparison proves little
    assert (expected["sparse"] > 0.1).sum() >= 3


def test_scoring_module_agrees_with_pair_scores(tiny_encoder, flag_reference):
    """The reference scorers of m3search.scoring give the same matrix entries as compute_score's pairs."""
    pairs = flag_reference["pairs"]
    queries = tiny_encoder.encode([str(t) for t in flag_reference["query_texts"]], kind="query")
    passages = tiny_encoder.encode([str(t) for t in flag_reference["passage_texts"]], kind="passage")
    scores = scoring.all_scores(queries, passages)
    for name, key in (("dense", "dense"), ("sparse", "sparse"), ("multivec", "colbert")):
        np.testing.assert_allclose(scores[name][pairs[:, 0], pairs[:, 1]], flag_reference[f"score_{key}"], atol=ATOL, rtol=1e-6)
