"""Plain helpers of the component tests: data generators and file damage. A module of its own, not
conftest.py, because `from conftest import ...` picks another folder's conftest when folders run together."""
from __future__ import annotations

from pathlib import Path


# -- dense and multivec components ------------------------------------------------------------------

def clustered_unit(n: int, d: int, n_clusters: int, spread: float, seed: int):
    """(n, d) float32 L2-normalised vectors around n_clusters random centres (IVF sees real clusters)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, n_clusters, n)] + spread * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def vectors_batch(dense=None, multivec=None, lengths=None):
    """An EncodedBatch carrying only dense vectors or only token vectors (what one component reads)."""
    import numpy as np
    import scipy.sparse as sp

    from m3search.types import EncodedBatch

    n = len(dense) if dense is not None else len(lengths)
    return EncodedBatch(
        dense=dense if dense is not None else np.zeros((n, 1), np.float32),
        sparse=sp.csr_matrix((n, 8), dtype=np.float32),
        multivec=multivec if multivec is not None else np.zeros((0, 1), np.float32),
        multivec_lengths=lengths if lengths is not None else np.zeros(n, np.int64),
    )


def clustered_tokens(n_docs: int, d: int, seed: int, n_queries: int = 0, vocab: int = 400, n_topics: int = 12):
    """Token vectors shaped like ColBERT's: each token = a token-type prototype + its document's topic
    context + noise; documents of 4..40 tokens (some of the first empty). Queries take most of their token
    types from one target document. Returns (doc vecs, doc lengths, query vecs, query lengths)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    protos = unit(rng.standard_normal((vocab, d))).astype(np.float32)
    topics = unit(rng.standard_normal((n_topics, d))).astype(np.float32)
    doc_topic = rng.integers(0, n_topics, n_docs)
    lengths = rng.integers(4, 41, n_docs)
    lengths[:2] = 0  # documents without tokens score 0
    types = [rng.integers(0, vocab, ln) for ln in lengths]

    def tokens(ts, topic):
        noise = rng.standard_normal((len(ts), d)).astype(np.float32) / np.sqrt(d)
        return unit(protos[ts] + 0.6 * topics[topic] + 0.6 * noise).astype(np.float32)

    docs = np.concatenate([tokens(ts, t) for ts, t in zip(types, doc_topic)])
    q_vecs, q_lengths = [], []
    for _ in range(n_queries):
        target = int(rng.integers(2, n_docs))
        ln = int(rng.integers(3, 12))
        ts = np.where(rng.random(ln) < 0.7, rng.choice(types[target], ln), rng.integers(0, vocab, ln))
        q_vecs.append(tokens(ts, doc_topic[target]))
        q_lengths.append(ln)
    q = np.concatenate(q_vecs) if q_vecs else np.zeros((0, d), np.float32)
    return docs, lengths.astype(np.int64), q, np.array(q_lengths, np.int64)


# -- damaging files (corruption tests) --------------------------------------------------------------

def truncate(path: Path, n_bytes: int) -> None:
    """Cut the last `n_bytes` off the file."""
    path.write_bytes(path.read_bytes()[:-n_bytes])


def flip_bits(path: Path, mask: int, at: int | None = None) -> None:
    """XOR the byte at offset `at` (negative: from the end; None: the middle) with `mask`."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 if at is None else at] ^= mask
    path.write_bytes(bytes(raw))


def assert_same_batch(got, want, atol: float) -> None:
    """Two EncodedBatches equal: dense, token vectors and lexical weights within atol, ids and lengths exactly."""
    import numpy as np

    np.testing.assert_allclose(got.dense, want.dense, atol=atol, rtol=0)
    assert got.multivec_lengths.tolist() == want.multivec_lengths.tolist()
    np.testing.assert_allclose(got.multivec, want.multivec, atol=atol, rtol=0)
    assert got.sparse.indptr.tolist() == want.sparse.indptr.tolist()
    assert got.sparse.indices.tolist() == want.sparse.indices.tolist()
    np.testing.assert_allclose(got.sparse.data, want.sparse.data, atol=atol, rtol=0)
