"""Precomputed representations are range-checked at the boundary (writes and queries), in one place."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import m3search
from m3search.encoder import HashingEncoder
from m3search.errors import InputError

MODEL = "hashing:dim=16,vocab_size=3000"
DOCS = [(f"d{i}", f"text {i} words w{i % 5} more") for i in range(40)]


@pytest.fixture
def index(tmp_path):
    ix = m3search.build_index(tmp_path / "idx", DOCS, model=MODEL)
    yield ix
    ix.close()


def _engine(index):
    from m3search.indexes.index import Index

    return Index.open(index.path, writable=True)


def test_huge_sparse_weight_is_refused(index):
    """1e5 passed the NaN check, overflowed float16 storage to inf and ranked the document first always."""
    batch = index.encoder.encode(["evil text"])
    batch.sparse.data[:] = 1e5
    with _engine(index) as engine, pytest.raises(InputError, match=r"lexical weight .* 'evil' .* is 100000.0.* \[0, 100\]"):
        engine.add(["evil"], batch)


def test_scaled_dense_vector_is_refused_and_near_unit_ones_renormalised(index):
    batch = index.encoder.encode(["scaled text", "almost unit"])
    dense = batch.dense.copy()
    dense[0] *= 1000
    dense[1] *= 1.004
    with _engine(index) as engine:
        with pytest.raises(InputError, match=r"dense vector of document 'x' .* length 1000.*unit length"):
            engine.add(["x", "y"], dataclasses.replace(batch, dense=dense))
        dense[0] /= 1000
        engine.add(["x", "y"], dataclasses.replace(batch, dense=dense))
        engine.commit()
        with engine.snapshot() as snap:
            stored = snap.dense.vectors(snap.internal_ids(["y"]))
    assert np.linalg.norm(stored) == pytest.approx(1.0, abs=1e-3)


def test_nan_in_a_query_vector_is_an_error_not_nan_scores(index):
    queries = index.encoder.encode(["text 3 words"], kind="query")
    queries.dense[0, 0] = np.nan
    with pytest.raises(InputError, match="dense vector of row 0 holds NaN"):
        index.search_encoded(queries, k=3, mode="dense")
    queries = index.encoder.encode(["text 3 words"], kind="query")
    queries.multivec[0, 0] = np.nan
    with pytest.raises(InputError, match="token vector 0 of row 0"):
        index.search_encoded(queries, k=3, mode="multivec")


def test_inf_token_vector_refused_at_write(index):
    batch = HashingEncoder(dim=16, vocab_size=3000).encode(["t"])
    batch.multivec[0, 1] = 1e9
    with _engine(index) as engine, pytest.raises(InputError, match="beyond"):
        engine.add(["t"], batch)
