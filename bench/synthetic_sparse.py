"""Seeded synthetic lexical weights shaped like BGE-M3's, for sparse index benchmarks and tests.

BGE-M3's lexical weights are `relu(linear(h))` per token of an XLM-R vocabulary (250,002 ids), max-pooled
over repeated occurrences, so a passage of a few hundred tokens carries ~100 distinct ids, a query ~10.
The shape reproduced here, and why:

- Which ids: token popularity is Zipf-like (rank r drawn with probability ~ 1 / r^zipf_a, a=1 as in
  natural text) and ranks are mapped to ids by a seeded permutation, so popular ids are spread over the
  vocabulary rather than clustered at low ids. A few dozen ids (punctuation, "the", "</s>") appear in
  most passages; most of the vocabulary appears in a handful.
- How many: distinct ids per passage are lognormal (median ~ mean_terms, sigma 0.35), clipped to
  [8, 4 * mean_terms]; duplicates of a draw are merged, as BGE-M3 max-pools repeats.
- Weights: frequent tokens get low weights and rare, content-bearing ones higher, as BGE-M3 learns
  (stop words ~0.02-0.05, content words ~0.1-0.3, the most salient ids of a passage up to ~0.5).
  weight = exp(log(0.03) + 1.9 * idf01 + token_salience + noise), where idf01 = log(rank) / log(vocab),
  token_salience ~ N(0, 0.3) is fixed per id (some ids matter more than their frequency says) and
  noise ~ N(0, 0.45) per occurrence; clipped to [1e-3, 0.9].
- Queries: ~mean_terms distinct ids (lognormal, sigma 0.4, at least 1). About 75% are drawn from one
  random target passage, favouring its highest-weighted ids (queries name what a passage is about);
  the rest come from the Zipf popularity (question words, punctuation). Query weights follow the same
  model, 1.4x higher, as BGE-M3's query weights are.

Everything is a pure function of the arguments and the seed.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

BGE_M3_VOCAB = 250_002


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Per-id popularity and salience, shared by the corpus and its queries."""

    probs: np.ndarray  # (vocab,) float64 draw probability of each id
    idf01: np.ndarray  # (vocab,) float32 log(rank) / log(vocab), 0 for the most popular id
    salience: np.ndarray  # (vocab,) float32 fixed per-id offset of the log-weight

    @property
    def size(self) -> int:
        return len(self.probs)


def make_vocabulary(vocab_size: int = BGE_M3_VOCAB, zipf_a: float = 1.0, seed: int = 0) -> Vocabulary:
    rng = np.random.default_rng([seed, 0])
    ranks = np.arange(1, vocab_size + 1, dtype=np.float64)
    by_rank = ranks ** -zipf_a
    by_rank /= by_rank.sum()
    rank_of_id = rng.permutation(vocab_size)  # id -> rank - 1
    probs = by_rank[rank_of_id]
    idf01 = (np.log(rank_of_id + 1.0) / np.log(vocab_size)).astype(np.float32)
    salience = rng.normal(0.0, 0.3, vocab_size).astype(np.float32)
    return Vocabulary(probs=probs, idf01=idf01, salience=salience)


def _weights(vocab: Vocabulary, ids: np.ndarray, rng: np.random.Generator, boost: float) -> np.ndarray:
    log_w = np.log(0.03 * boost) + 1.9 * vocab.idf01[ids] + vocab.salience[ids]
    log_w = log_w + rng.normal(0.0, 0.45, len(ids)).astype(np.float32)
    return np.clip(np.exp(log_w), 1e-3, 0.9).astype(np.float32)


def _rows_of_unique_draws(
    vocab: Vocabulary, cdf: np.ndarray, n_draws: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """indptr, sorted distinct ids of each row, from n_draws[i] popularity draws for row i."""
    rows = np.repeat(np.arange(len(n_draws), dtype=np.int64), n_draws)
    ids = np.searchsorted(cdf, rng.random(len(rows)), side="right").clip(0, vocab.size - 1)
    keys = np.unique(rows * vocab.size + ids)
    row_of = keys // vocab.size
    indptr = np.zeros(len(n_draws) + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of, minlength=len(n_draws)), out=indptr[1:])
    return indptr, (keys % vocab.size).astype(np.int32)


def make_corpus(
    n_docs: int,
    vocab: Vocabulary | None = None,
    mean_terms: float = 100.0,
    seed: int = 0,
    chunk: int = 50_000,
) -> sp.csr_matrix:
    """(n_docs, vocab) float32 CSR of passage lexical weights, sorted indices."""
    vocab = vocab or make_vocabulary()
    cdf = np.cumsum(vocab.probs)
    parts = []
    for start in range(0, n_docs, chunk):
        rng = np.random.default_rng([seed, 1, start])
        n = min(chunk, n_docs - start)
        target = np.clip(rng.lognormal(np.log(mean_terms), 0.35, n), 8, 4 * mean_terms)
        # repeated draws of popular ids merge; 1.12x draws give ~target distinct ids at a=1
        indptr, ids = _rows_of_unique_draws(vocab, cdf, np.ceil(target * 1.12).astype(np.int64), rng)
        parts.append(sp.csr_matrix((_weights(vocab, ids, rng, 1.0), ids, indptr), shape=(n, vocab.size)))
    if not parts:
        return sp.csr_matrix((0, vocab.size), dtype=np.float32)
    return sp.vstack(parts, format="csr", dtype=np.float32)


def make_queries(
    corpus: sp.csr_matrix,
    n_queries: int,
    vocab: Vocabulary | None = None,
    mean_terms: float = 10.0,
    seed: int = 1,
    from_target: float = 0.75,
) -> sp.csr_matrix:
    """(n_queries, vocab) float32 CSR of query lexical weights matching passages of `corpus`."""
    vocab = vocab or make_vocabulary(corpus.shape[1])
    rng = np.random.default_rng([seed, 2])
    cdf = np.cumsum(vocab.probs)
    rows, cols = [], []
    for qi in range(n_queries):
        n_terms = max(1, int(round(rng.lognormal(np.log(mean_terms), 0.4))))
        doc = corpus[int(rng.integers(corpus.shape[0]))]
        chosen: set[int] = set()
        n_target = min(doc.nnz, int(round(n_terms * from_target)))
        if n_target:
            p = doc.data.astype(np.float64) ** 2
            chosen.update(rng.choice(doc.indices, size=n_target, replace=False, p=p / p.sum()).tolist())
        while len(chosen) < n_terms:
            chosen.add(int(np.searchsorted(cdf, rng.random(), side="right").clip(0, vocab.size - 1)))
        ids = np.sort(np.fromiter(chosen, dtype=np.int64))
        rows.append(np.full(len(ids), qi, dtype=np.int64))
        cols.append(ids)
    rows_a = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols_a = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    data = _weights(vocab, cols_a, rng, 1.4)
    q = sp.csr_matrix((data, (rows_a, cols_a)), shape=(n_queries, vocab.size), dtype=np.float32)
    q.sort_indices()
    return q


def describe(x: sp.csr_matrix) -> dict:
    """Shape statistics of a weight matrix (terms per row, weight quantiles, document frequencies)."""
    per_row = np.diff(x.indptr)
    df = np.bincount(x.indices, minlength=x.shape[1])
    w = x.data
    return {
        "rows": int(x.shape[0]),
        "nnz": int(x.nnz),
        "terms_per_row_mean": float(per_row.mean()) if len(per_row) else 0.0,
        "terms_per_row_p5_p50_p95": [float(v) for v in np.percentile(per_row, [5, 50, 95])] if len(per_row) else [],
        "weight_p5_p50_p95_max": [float(v) for v in np.percentile(w, [5, 50, 95, 100])] if len(w) else [],
        "distinct_ids": int((df > 0).sum()),
        "max_df_fraction": float(df.max() / max(1, x.shape[0])),
    }


if __name__ == "__main__":  # a quick look at the shape
    import json

    v = make_vocabulary()
    c = make_corpus(20_000, v)
    q = make_queries(c, 1000, v)
    print(json.dumps({"corpus": describe(c), "queries": describe(q)}, indent=1))
