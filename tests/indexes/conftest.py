"""Fixtures of the index tests (engine and components). Add yours; keep the others'."""
from __future__ import annotations

import pytest
from helpers.engine_doubles import DOUBLES

ENGINE_MODEL = "hashing:dim=32,vocab_size=5000"


@pytest.fixture
def engine_registry():
    """Exact test-double components for the engine tests."""
    return DOUBLES


@pytest.fixture
def make_index(tmp_path, hashing_encoder, engine_registry):
    """make_index(**options) -> a new writable Index at tmp_path / 'ix' (closed at teardown)."""
    from m3search.indexes.index import Index

    opened = []

    def make(name: str = "ix", **options):
        options.setdefault("registry", engine_registry)
        index = Index.create(tmp_path / name, hashing_encoder.identity, ENGINE_MODEL, **options)
        opened.append(index)
        return index

    yield make
    for index in opened:
        index.close()


# -- sparse component --------------------------------------------------------------------------------

def _sparse_weights(n_rows: int, vocab: int, mean_terms: float, seed: int, boost: float = 1.0):
    """Seeded CSR lexical weights with a Zipf-like token popularity (a few tokens in most rows)."""
    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, vocab + 1) ** 1.05
    popularity = popularity[rng.permutation(vocab)]
    popularity /= popularity.sum()
    rows, cols = [], []
    for i in range(n_rows):
        n = int(rng.poisson(mean_terms))
        ids = np.unique(rng.choice(vocab, size=n, p=popularity)) if n else np.zeros(0, np.int64)
        rows.append(np.full(len(ids), i))
        cols.append(ids)
    r, c = np.concatenate(rows), np.concatenate(cols)
    w = np.clip(rng.lognormal(np.log(0.1 * boost), 0.8, len(r)), 1e-3, 2.0).astype(np.float32)
    return sp.csr_matrix((w, (r, c)), shape=(n_rows, vocab), dtype=np.float32)


@pytest.fixture(scope="session")
def sparse_docs():
    """(1500, 1200) document weights: ~40 per row, some empty rows, 30 duplicated rows (score ties)."""
    import scipy.sparse as sp

    x = _sparse_weights(1500, 1200, 40, seed=7).tolil()
    for i in range(0, 1500, 97):
        x[i] = 0  # empty documents
    for i in range(30):
        x[1000 + 7 * i] = x[11]  # identical documents spread over many blocks
    return sp.csr_matrix(x)


@pytest.fixture(scope="session")
def sparse_queries():
    """(60, 1200) query weights, ~8 per row, the last row empty."""
    q = _sparse_weights(60, 1200, 8, seed=8, boost=2.0).tolil()
    q[59] = 0
    return q.tocsr()


def _sparse_batch(x):
    import numpy as np

    from m3search.types import EncodedBatch

    n = x.shape[0]
    return EncodedBatch(dense=np.zeros((n, 1), np.float32), sparse=x.tocsr().astype(np.float32),
                        multivec=np.zeros((0, 1), np.float32), multivec_lengths=np.zeros(n, np.int64))


@pytest.fixture(scope="session")
def sparse_batch():
    """sparse_batch(x) -> an EncodedBatch carrying only lexical weights x (all the sparse component reads)."""
    return _sparse_batch


@pytest.fixture
def build_sparse(tmp_path):
    """build_sparse(x, config=None, name="seg", shared="shared") -> opened reader of a new segment."""
    from m3search.indexes.sparse import SparseComponent

    def build(x, config=None, name="seg", shared="shared"):
        comp = SparseComponent(config)
        meta = comp.build(tmp_path / name, _sparse_batch(x), tmp_path / shared)
        return comp.open(tmp_path / name, meta, tmp_path / shared)

    return build
