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

import bisect
from typing import Sequence

UNK_PENALTY = 10.0


class UnigramVocab:
    """pieces[i] has score scores[i] (f64, tokenizers' vocabulary order); unk_id as in tokenizer.json."""

    def __init__(self, pieces: Sequence[str], scores: Sequence[float], unk_id: int):
        if len(pieces) != len(scores):
            raise ValueError(f"{len(pieces)} pieces but {len(scores)} scores")
        ids = dict(zip(pieces, range(len(pieces))))
        if len(ids) != len(pieces):
            raise ValueError("the vocabulary repeats a piece (tokenizers refuses such a Unigram too)")
        self._setup(ids.get, [float(s) for s in scores], unk_id, max((len(p) for p in pieces), default=1))

    @classmethod
    def from_sorted(cls, blob: bytes, offsets: memoryview, order: memoryview, scores: memoryview, unk_id: int,
                    max_chars: int) -> "UnigramVocab":
        """A vocabulary looked up by binary search over pieces stored in code-point order, nothing built:
        blob[offsets[i]:offsets[i+1]] is the i-th smallest piece (UTF-8), order[i] its id, scores[id] its
        score. Loading is free; each look-up decodes ~18 pieces (building a dict of 250k pieces took 0.3-0.5 s
        of a cold query)."""
        pieces = _SortedPieces(blob, offsets)
        n = len(pieces)

        def lookup(piece: str) -> int | None:
            i = bisect.bisect_left(pieces, piece)
            return order[i] if i < n and pieces[i] == piece else None

        vocab = cls.__new__(cls)
        vocab._setup(lookup, scores, unk_id, max_chars)
        return vocab

    def _setup(self, lookup, scores, unk_id: int, max_chars: int) -> None:
        self.lookup = lookup
        self.scores = scores
        self.unk_id = int(unk_id)
        self.unk_score = min(scores) - UNK_PENALTY
        self.max_chars = int(max_chars)

    def segment(self, text: str) -> list[int]:
        """Token ids of one pre-tokenized piece (the best Viterbi path, unknown runs fused)."""
        n = len(text)
        if n == 0:
            return []
        lookup, scores = self.lookup, self.scores
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
                tid = lookup(text[start:end])
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
                    out.append(self._run_id(run))
                    run = []
                out.append(tid)
            end = start
        if run:
            out.append(self._run_id(run))
        out.reverse()
        return out

    def _run_id(self, run: list[str]) -> int:
        tid = self.lookup("".join(reversed(run)))
        return self.unk_id if tid is None else tid


class _SortedPieces:
    """Sequence view of NUL-free UTF-8 pieces in one blob, for bisect."""

    def __init__(self, blob: bytes, offsets: memoryview):
        self.blob, self.offsets = blob, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.blob[self.offsets[i] : self.offsets[i + 1]].decode("utf-8")
