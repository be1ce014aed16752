"""Exact Unigram segmentation over a compact vocabulary, for the cold query path.

Why: `tokenizers.Tokenizer.from_file` on XLM-R's 250,002-piece Unigram takes ~1-1.4 s and holds ~300 MB
(its trie and maps), which is most of a cold `m3search query`. A query needs a few dozen vocabulary look-ups.
So the query path keeps `tokenizers` for everything but the model: its normalizer and pre-tokenizer (built
from the same tokenizer.json with the vocabulary left out, ~10 ms) produce the pieces, and this module runs
the Unigram Viterbi over them with the vocabulary as a plain dict built from a cached compact form
(`query_cache.py`).

The search is tokenizers' `Unigram::encode_optimized` (sentencepiece's EncodeOptimized), step for step, so
ties break the same way: at each start position the vocabulary pieces that begin there are visited
shortest first, a candidate replaces a node's best path only when its f64 score is strictly greater, a
character no single-character piece covers gets the unknown score (min score - 10), and consecutive
unknown characters fuse into one unknown token. `tests/encoder/test_query_numpy.py` checks the ids against
`tokenizers` on real text in many scripts.
"""
from __future__ import annotations

from typing import Sequence

UNK_PENALTY = 10.0


class UnigramVocab:
    """pieces[i] has score scores[i] (f64, tokenizers' vocabulary order); unk_id as in tokenizer.json."""

    def __init__(self, pieces: Sequence[str], scores: Sequence[float], unk_id: int):
        if len(pieces) != len(scores):
            raise ValueError(f"{len(pieces)} pieces but {len(scores)} scores")
        self.ids = {p: i for i, p in enumerate(pieces)}  # a repeated piece: the last id, like tokenizers
        if len(self.ids) != len(pieces):
            raise ValueError("the vocabulary repeats a piece (tokenizers refuses such a Unigram too)")
        self.scores = [float(s) for s in scores]
        self.unk_id = int(unk_id)
        self.unk_score = min(self.scores) - UNK_PENALTY
        self.max_chars = max((len(p) for p in pieces), default=1)

    def segment(self, text: str) -> list[int]:
        """Token ids of one pre-tokenized piece (the best Viterbi path, unknown runs fused)."""
        n = len(text)
        if n == 0:
            return []
        ids, scores = self.ids, self.scores
        # best[e] = (score, start, id) of the best path covering text[:e]; None = not reached yet
        best: list = [None] * (n + 1)
        best[0] = (0.0, 0, -1)
        for start in range(n):
            here = best[start]
            if here is None:  # unreachable: every position is reached by the single-character fallback
                continue
            base = here[0]
            single = False
            for end in range(start + 1, min(n, start + self.max_chars) + 1):
                tid = ids.get(text[start:end])
                if tid is None:
                    continue
                if end == start + 1:
                    single = True
                cand = scores[tid] + base
                node = best[end]
                if node is None or cand > node[0]:
                    best[end] = (cand, start, tid)
            if not single:
                cand = self.unk_score + base
                node = best[start + 1]
                if node is None or cand > node[0]:
                    best[start + 1] = (cand, start, self.unk_id)
        # Backwards, as tokenizers does: a run of unknown-id nodes becomes one token whose id is the run's
        # string looked up again (the unknown id unless the run happens to be a piece).
        out: list[int] = []
        run: list[str] = []
        end = n
        while end > 0:
            _, start, tid = best[end]
            if tid == self.unk_id:
                run.append(text[start:end])
            else:
                if run:
                    out.append(ids.get("".join(reversed(run)), self.unk_id))
                    run = []
                out.append(tid)
            end = start
        if run:
            out.append(ids.get("".join(reversed(run)), self.unk_id))
        out.reverse()
        return out
