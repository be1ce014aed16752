"""Hard-negative mining through m3search's own index, checked against brute-force dense ranking."""
from __future__ import annotations

import numpy as np
import pytest

from m3search import scoring
from m3search.encoder import HashingEncoder
from m3search.trainer.data import TrainExample
from m3search.trainer.mining import (
    MiningConfig, PrecomputedDenseEncoder, choose_negatives, corpus_of, mine_with_new_index, parse_range,
)

TOPICS = ["cells merge split table", "print page margins layout", "macro script python basic",
          "chart axis legend title", "font size bold italic", "database query form report"]


def make_data(n_per_topic=4):
    rng = np.random.default_rng(0)
    examples = []
    for t, topic in enumerate(TOPICS):
        words = topic.split()
        for i in range(n_per_topic):
            q = f"{words[i % 4]} {words[(i + 1) % 4]} q{t}{i}"
            pos = " ".join(rng.choice(words, size=6)) + f" doc{t}_{i}"
            examples.append(TrainExample(q, (pos,)))
    return examples


def brute_force_candidates(encoder, ex, corpus, start, end):
    q = encoder.encode([ex.query], kind="query")
    d = encoder.encode(corpus, kind="passage")
    s = scoring.dense_scores(q.dense, d.dense)[0]
    order = np.argsort(-s, kind="stable")
    ranked = [corpus[i] for i in order if corpus[i] not in ex.pos and corpus[i] != ex.query]
    return ranked[start:end], s, {t: s[i] for i, t in enumerate(corpus)}


def test_mined_negatives_come_from_the_rank_range_and_exclude_positives(tmp_path):
    examples = make_data()
    corpus = corpus_of(examples)
    encoder = HashingEncoder(dim=32, vocab_size=5000, seed=0)
    config = MiningConfig(n_negatives=3, rank_start=1, rank_end=8, seed=3)
    mined = mine_with_new_index(examples, encoder, config, index_dir=tmp_path / "idx")
    assert (tmp_path / "idx" / "manifest.json").is_file()  # m3search's index really was built and kept
    assert [m.query for m in mined] == [e.query for e in examples]
    for ex, m in zip(examples, mined):
        assert len(m.neg) == 3 and len(set(m.neg)) == 3
        assert not set(m.neg) & set(ex.pos)
        window, _, score = brute_force_candidates(encoder, ex, corpus, 1, 8)
        # ties at the window's edges may order differently: allow equal-score texts
        edge = min(score[t] for t in window)
        for neg in m.neg:
            assert neg in window or score[neg] == pytest.approx(edge), (ex.query, neg)
    again = mine_with_new_index(examples, encoder, config)
    assert [m.neg for m in again] == [m.neg for m in mined]


def test_too_few_candidates_are_filled_with_random_passages():
    ex = TrainExample("q", ("p",))
    corpus = ["p", "a", "b", "c", "d", "e"]
    negs = choose_negatives(["p", "a"], ex, corpus, MiningConfig(n_negatives=4, rank_start=0, rank_end=10),
                            np.random.default_rng(0))
    assert negs[0] == "a" and len(negs) == 4 and len(set(negs)) == 4 and "p" not in negs


def test_precomputed_vectors_serve_as_an_encoder():
    enc = HashingEncoder(dim=16, vocab_size=100, seed=0)
    vecs = {"x": np.ones(16, dtype=np.float32) / 4}
    pre = PrecomputedDenseEncoder(enc.identity, {"query": vecs.get, "passage": vecs.get})
    batch = pre.encode(["x", "x"], kind="passage")
    assert batch.dense.shape == (2, 16) and batch.sparse.shape == (2, 100) and batch.multivec.shape == (0, enc.identity.multivec_dim)


def test_parse_range():
    assert parse_range("2:200") == (2, 200) and parse_range("3-50") == (3, 50)
    with pytest.raises(Exception, match="START:END"):
        parse_range("x")
