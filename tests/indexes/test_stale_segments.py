"""Segments written as fp16 before the multi-vector codec existed are rewritten with it at the next commit."""
from __future__ import annotations

import numpy as np

from m3search.indexes.index import Index
from m3search.indexes.merge_policy import TieredMergePolicy


def _texts(prefix: str, n: int) -> list[str]:
    words = "alpha river music theory engine golden castle harbor stone paper glass".split()
    rng = np.random.default_rng(len(prefix) + n)
    return [" ".join(rng.choice(words, size=12)) + f" {prefix}{i}" for i in range(n)]


def test_fp16_segment_is_reencoded_once_the_codec_exists(tmp_path, hashing_encoder):
    components = {"multivec": {"compression": "sq8", "min_train_tokens": 300}}
    index = Index.create(tmp_path / "ix", hashing_encoder.identity, "hashing", components=components)
    small = _texts("a", 5)  # ~70 tokens: below min_train_tokens, stored fp16
    index.add([f"a{i}" for i in range(5)], hashing_encoder.encode(small), [{"text": t} for t in small])
    index.commit()
    assert [s.metas["multivec"]["codec"] for s in index._committed_state().segments] == ["fp16"]
    big = _texts("b", 60)  # trains the codec
    index.add([f"b{i}" for i in range(60)], hashing_encoder.encode(big), [{"text": t} for t in big])
    index.commit()
    index.wait_for_merges()  # the rewrite runs in the background of the commit
    segs = index._committed_state().segments
    assert len(segs) == 2  # two small segments: the tiered policy alone would leave both as they are
    assert TieredMergePolicy().plan([s.n for s in segs], [0, 0]) == []
    assert [s.metas["multivec"]["codec"] for s in segs] == ["sq8", "sq8"]
    with index.snapshot() as snap:  # the rewritten segment still scores like its fp16 original
        q = hashing_encoder.encode(["alpha river a1"], kind="query")
        ids = snap.internal_ids([f"a{i}" for i in range(5)])
        got = snap.multivec.score_pairs(q.multivec, q.multivec_lengths, np.zeros(5, np.int64), ids)
        docs = hashing_encoder.encode(small)
        offs = np.r_[0, np.cumsum(docs.multivec_lengths)]
        want = [float((q.multivec @ docs.multivec[offs[i]:offs[i + 1]].T).max(axis=1).mean()) for i in range(5)]  # MaxSim, averaged over query tokens
    np.testing.assert_allclose(got, want, atol=0.05)
    index.close()
