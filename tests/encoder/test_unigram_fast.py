"""The numba Unigram search (`unigram_fast.py`) against the pure-Python search of `unigram.py` (tie-breaking,
unknown runs) and against `tokenizers` on real text."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from m3search.encoder.unigram import UnigramVocab
from m3search.encoder.unigram_fast import FastUnigram


def _fast(pieces: list[str], scores: list[float], unk_id: int) -> FastUnigram:
    """The FastUnigram of a vocabulary, through the query cache's sorted form (as query_cache.py writes it)."""
    order = sorted(range(len(pieces)), key=pieces.__getitem__)
    encoded = [pieces[i].encode("utf-8") for i in order]
    return FastUnigram(np.frombuffer(b"".join(encoded), dtype=np.uint8),
                       np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64), np.asarray(order),
                       np.asarray(scores, dtype=np.float64), unk_id, max(len(p) for p in pieces))


def test_equals_python_search_with_ties_and_unknown_runs():
    """Random words over a small alphabet and a vocabulary with many equal scores: the same ids as the
    Python search (which tests/encoder/test_query_numpy.py checks against tokenizers), word by word and
    for all words in one call."""
    rng = np.random.default_rng(7)
    pieces = ["<unk>", "a", "b", "ab", "ba", "abc", "bc", "c", "ca", "aab", "é", "éa", "zz", "▁", "▁a", "日本", "本"]
    scores = [0.0] + [float(s) for s in rng.choice([-1.0, -2.0, -2.5, -3.0], size=len(pieces) - 1)]
    python, fast = UnigramVocab(pieces, scores, 0), _fast(pieces, scores, 0)
    alphabet = list("abcéz日本▁q") + ["🙂"]  # q, 🙂 and a lone z are in no piece: unknown runs
    words = ["".join(rng.choice(alphabet, size=rng.integers(1, 12))) for _ in range(2000)]
    want = [python.segment(w) for w in words]
    assert [fast.segment([w]).tolist() for w in words] == want
    assert fast.segment(words).tolist() == [i for ids in want for i in ids]
    assert any(0 in ids for ids in want)  # unknown runs happened
    assert fast.segment(["zz"]).tolist() == [pieces.index("zz")]
    assert fast.segment(["qqzq"]).tolist() == [0]  # one fused unknown token
    assert fast.segment([]).tolist() == [] and fast.segment(["", ""]).tolist() == []


def test_equals_tokenizers_on_real_text(tiny_loaded, shared_dir):
    backend = tiny_loaded.tokenizer.backend
    data = json.loads(backend.to_str())
    vocab = data["model"]["vocab"]
    fast = _fast([p for p, _ in vocab], [s for _, s in vocab], data["model"]["unk_id"])
    texts = ["How do I split cells?", "日本語の検索", "¿Cómo?  x\ty", "Ünïcödé ﬁ ＡＢＣ ①", "\u0000 \ufffd", "🙂🙃🙂",
             "a" * 300, "ꙮꙮ ꙮ", "ﷺ ﷽", "\u200b\u200dzz"]
    for corpus in sorted((Path(shared_dir) / "data" / "eval" / "miracl_like").glob("*/corpus.jsonl.gz")):
        with gzip.open(corpus, "rt", encoding="utf-8") as f:
            texts += [json.loads(next(f))["text"] for _ in range(15)]
    want = tiny_loaded.tokenizer.content_ids(texts)
    got = [fast.segment([w for w, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(t))])
           .tolist() for t in texts]
    assert got == want
    assert any(3 in ids for ids in want)  # the unknown-token path was exercised
