"""Hard-negative mining with m3search's own index (dense retrieval), excluding the positives.

For each query: search the index in dense mode, drop the query's positives (and the query text itself),
take the candidates ranked in [start, end) and sample the negatives from them, as FlagEmbedding's
`hn_mine` does with its `range_for_sampling` (skipping the very top guards against unlabelled positives).
When fewer candidates remain than negatives asked for, random passages of the corpus fill the group.
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from m3search.encoder.base import Encoder, check_kind, validate_texts
from m3search.errors import ConfigError, InputError
from m3search.trainer.data import TrainExample
from m3search.types import EncodedBatch, EncoderIdentity

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MiningConfig:
    n_negatives: int = 7
    rank_start: int = 2  # 0-based rank (after removing positives) of the first candidate to sample from
    rank_end: int = 200  # exclusive
    seed: int = 0
    query_batch: int = 256  # queries per search call

    def __post_init__(self) -> None:
        if self.n_negatives < 1:
            raise ConfigError(f"n_negatives must be >= 1, got {self.n_negatives}")
        if not 0 <= self.rank_start < self.rank_end:
            raise ConfigError(f"the rank range must satisfy 0 <= start < end, got {self.rank_start}:{self.rank_end}")


def parse_range(text: str) -> tuple[int, int]:
    """'2:200' or '2-200' -> (2, 200)."""
    for sep in (":", "-"):
        if sep in text:
            a, _, b = text.partition(sep)
            try:
                return int(a), int(b)
            except ValueError:
                break
    raise ConfigError(f"a rank range looks like START:END (e.g. 2:200), got {text!r}")


def corpus_of(examples: Sequence[TrainExample]) -> list[str]:
    """Distinct passages of the data (positives and any existing negatives), in first-seen order."""
    return list(dict.fromkeys(t for ex in examples for t in (*ex.pos, *ex.neg)))


def choose_negatives(
    ranked: Sequence[str], example: TrainExample, corpus: Sequence[str], config: MiningConfig,
    rng: np.random.Generator,
) -> tuple[str, ...]:
    """Sample the negatives of one example from its ranked candidate texts."""
    excluded = set(example.pos) | {example.query}
    candidates = list(dict.fromkeys(t for t in ranked if t not in excluded))[config.rank_start : config.rank_end]
    if len(candidates) >= config.n_negatives:
        picked = rng.choice(len(candidates), size=config.n_negatives, replace=False)
        return tuple(candidates[i] for i in sorted(picked))
    chosen = list(candidates)
    taken = set(chosen) | excluded
    attempts = 0
    while len(chosen) < config.n_negatives and attempts < 100 * config.n_negatives:
        t = corpus[int(rng.integers(len(corpus)))]
        attempts += 1
        if t not in taken:
            chosen.append(t)
            taken.add(t)
    return tuple(chosen)


def mine_from_ranked(
    examples: Sequence[TrainExample],
    search: Callable[[list[str], int], list[list[str]]],
    corpus: Sequence[str],
    config: MiningConfig,
    progress: Callable[[int], None] | None = None,
) -> list[TrainExample]:
    """New examples whose `neg` are mined from `search(queries, k)` -> ranked passage texts per query."""
    if not corpus:
        raise InputError("the mining corpus is empty")
    rng = np.random.default_rng(config.seed)
    out: list[TrainExample] = []
    for start in range(0, len(examples), config.query_batch):
        chunk = list(examples[start : start + config.query_batch])
        k = config.rank_end + max(len(ex.pos) for ex in chunk) + 1
        ranked = search([ex.query for ex in chunk], k)
        for ex, texts in zip(chunk, ranked):
            negs = choose_negatives(texts, ex, corpus, config, rng)
            # teacher scores belong to the old negatives: drop them rather than mismatch
            out.append(dataclasses.replace(ex, neg=negs, pos_scores=None, neg_scores=None))
        if progress is not None:
            progress(len(chunk))
    return out


def index_search(index, corpus_by_id: dict[str, str] | None = None, encode_queries=None):
    """A `search` function over an m3search SearchIndex in dense mode (texts from the index or `corpus_by_id`)."""

    def search(queries: list[str], k: int) -> list[list[str]]:
        if encode_queries is not None:
            hits = index.search_encoded(encode_queries(queries), k=k, mode="dense", with_text=corpus_by_id is None)
        else:
            hits = index.search_many(queries, k=k, mode="dense", with_text=corpus_by_id is None)
        if corpus_by_id is None:
            return [[h.text for h in row if h.text is not None] for row in hits]
        return [[corpus_by_id[h.docid] for h in row] for row in hits]

    return search


def mine_with_new_index(
    examples: Sequence[TrainExample],
    encoder: Encoder,
    config: MiningConfig,
    corpus: Sequence[str] | None = None,
    index_dir: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    query_max_length: int | None = None,
    passage_max_length: int | None = None,
) -> list[TrainExample]:
    """Index `corpus` (default: the data's own passages) densely with `encoder`, then mine.

    index_dir: where to build the index (kept); default a temporary folder, removed afterwards.
    """
    from m3search.api import build_index
    from m3search.document import Document

    corpus = list(dict.fromkeys(corpus if corpus is not None else corpus_of(examples)))
    by_id = {str(i): t for i, t in enumerate(corpus)}

    def encode_queries(queries: list[str]) -> EncodedBatch:
        return encoder.encode(queries, kind="query", max_length=query_max_length)

    with tempfile.TemporaryDirectory(prefix="m3search-mine-") as tmp:
        path = Path(index_dir) if index_dir is not None else Path(tmp) / "index"
        docs = [Document(i, t) for i, t in by_id.items()]  # indexed through m3search.ingest by build_index
        with build_index(path, docs, model=encoder, components={"dense": {}}, max_length=passage_max_length) as index:
            return mine_from_ranked(examples, index_search(index, by_id, encode_queries), corpus, config, progress)


class PrecomputedDenseEncoder(Encoder):
    """An Encoder that returns dense vectors computed earlier (e.g. from hidden-state caches), so mining
    does not run the backbone a second time. Lexical weights and token vectors come back empty."""

    def __init__(self, identity: EncoderIdentity, vectors: dict[str, Callable[[str], np.ndarray | None]],
                 reference: str | None = None):
        self._identity = identity
        self._lookup = vectors  # kind -> text -> vector
        self.reference = reference  # the model the vectors came from, recorded by an index built with them

    @property
    def identity(self) -> EncoderIdentity:
        return self._identity

    def encode(self, texts, kind="passage", max_length=None) -> EncodedBatch:
        check_kind(kind)
        texts = validate_texts(texts)
        rows = []
        for t in texts:
            v = self._lookup[kind](t)
            if v is None:
                raise InputError(f"no precomputed {kind} vector for text {t[:60]!r}")
            rows.append(np.asarray(v, dtype=np.float32))
        dense = np.stack(rows) if rows else np.zeros((0, self._identity.dense_dim), dtype=np.float32)
        return EncodedBatch(
            dense=dense,
            sparse=sp.csr_matrix((len(texts), self._identity.vocab_size), dtype=np.float32),
            multivec=np.zeros((0, self._identity.multivec_dim), dtype=np.float32),
            multivec_lengths=np.zeros(len(texts), dtype=np.int64),
        )

    def token_strings(self, token_ids):
        return [f"#{int(t)}" for t in token_ids]
