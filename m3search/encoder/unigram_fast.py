"""Exact Unigram segmentation of many words at once in numba, over the compact vocabulary of the query cache.

Why: tokenizers' Unigram model over XLM-R's 250,002 pieces holds ~282 MB (its trie and maps) for as long as
an encoder lives, a quarter of indexing's peak RSS. `unigram.py` runs the same search over a compact sorted
vocabulary (~6 MB here) but in pure Python: 17.8 s for 2,000 passages where tokenizers takes 0.4 s. This
module is that search in numba over code-point arrays; the normalizer and pre-tokenizer stay tokenizers'
(built without the vocabulary, see `query_cache.py`).

The search is `unigram.UnigramVocab.segment` step for step (tokenizers' `encode_optimized`): at each start
position the pieces beginning there are visited shortest first, a candidate replaces a node's best path
only when its f64 score is strictly greater, a character no single-character piece covers gets the unknown
score (min score - 10), and a run of unknown characters becomes one token: the run's string looked up again,
the unknown id if it is not a piece. The pieces that begin at a position are found by narrowing a range of
the code-point-sorted vocabulary one character at a time (two binary searches per character), which is the
trie walk without a trie. `tests/encoder/test_unigram_fast.py` checks the ids against `tokenizers` and
`unigram.py` on real text in many scripts.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from m3search.encoder.unigram import UNK_PENALTY


@njit(cache=True, nogil=True)
def _narrow(cps, coff, lo, hi, depth, c):
    """Within [lo, hi) (pieces sharing their first `depth` characters, sorted), the sub-range whose character
    at `depth` is c. A piece of exactly `depth` characters sorts first and has no such character."""
    if lo < hi and coff[lo + 1] - coff[lo] == depth:
        lo += 1
    a, b = lo, hi  # first piece with char >= c
    while a < b:
        m = (a + b) >> 1
        if cps[coff[m] + depth] < c:
            a = m + 1
        else:
            b = m
    first = a
    b = hi  # first piece with char > c
    while a < b:
        m = (a + b) >> 1
        if cps[coff[m] + depth] <= c:
            a = m + 1
        else:
            b = m
    return first, a


@njit(cache=True, nogil=True)
def _lookup(cps, coff, order, text, start, end):
    """Id of the piece text[start:end], -1 if it is not one."""
    lo, hi = 0, len(coff) - 1
    for depth in range(end - start):
        lo, hi = _narrow(cps, coff, lo, hi, depth, text[start + depth])
        if lo >= hi:
            return -1
    if coff[lo + 1] - coff[lo] == end - start:
        return order[lo]
    return -1


@njit(cache=True, nogil=True)
def segment_words(cps, coff, order, scores, unk_id, unk_score, max_chars, text, bounds, out):
    """Token ids of the words text[bounds[w]:bounds[w+1]] (code points), written in order into out; returns
    how many. out needs len(text) slots (every token covers at least one character)."""
    n_out = 0
    n_total = len(text)
    best = np.empty(n_total + 1, np.float64)
    prev = np.empty(n_total + 1, np.int64)
    tid_at = np.empty(n_total + 1, np.int64)
    reached = np.zeros(n_total + 1, np.bool_)
    rev = np.empty(n_total + 1, np.int64)
    n_pieces = len(coff) - 1
    for w in range(len(bounds) - 1):
        s0, s1 = bounds[w], bounds[w + 1]
        n = s1 - s0
        if n == 0:
            continue
        for i in range(n + 1):
            reached[i] = False
        best[0] = 0.0
        reached[0] = True
        prev[0] = 0
        tid_at[0] = -1
        for start in range(n):
            if not reached[start]:
                continue
            base = best[start]
            single = False
            lo, hi = 0, n_pieces
            limit = min(n - start, max_chars)
            for depth in range(limit):
                lo, hi = _narrow(cps, coff, lo, hi, depth, text[s0 + start + depth])
                if lo >= hi:
                    break
                if coff[lo + 1] - coff[lo] == depth + 1:  # the piece text[start:start+depth+1]
                    tid = order[lo]
                    end = start + depth + 1
                    if depth == 0:
                        single = True
                    cand = scores[tid] + base
                    if not reached[end] or cand > best[end]:
                        best[end] = cand
                        prev[end] = start
                        tid_at[end] = tid
                        reached[end] = True
            if not single:
                cand = unk_score + base
                if not reached[start + 1] or cand > best[start + 1]:
                    best[start + 1] = cand
                    prev[start + 1] = start
                    tid_at[start + 1] = unk_id
                    reached[start + 1] = True
        # backwards: a run of unknown-id nodes becomes one token, the run's string looked up again
        k = 0
        end = n
        run_end = -1
        while end > 0:
            start = prev[end]
            if tid_at[end] == unk_id:
                if run_end < 0:
                    run_end = end
            else:
                if run_end >= 0:
                    t = _lookup(cps, coff, order, text, s0 + end, s0 + run_end)
                    rev[k] = unk_id if t < 0 else t
                    k += 1
                    run_end = -1
                rev[k] = tid_at[end]
                k += 1
            end = start
        if run_end >= 0:
            t = _lookup(cps, coff, order, text, s0, s0 + run_end)
            rev[k] = unk_id if t < 0 else t
            k += 1
        for i in range(k):
            out[n_out + i] = rev[k - 1 - i]
        n_out += k
    return n_out


class FastUnigram:
    """The vocabulary as code points in code-point order: `segment(words)` -> ids of the words in turn."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray, order: np.ndarray, scores: np.ndarray, unk_id: int,
                 max_chars: int):
        """blob[offsets[i]:offsets[i+1]] is the i-th smallest piece in UTF-8 (the query cache's vocab_sorted
        and vocab_offsets), order[i] its id, scores[id] its f64 score."""
        blob = np.asarray(blob, dtype=np.uint8)
        offsets = np.asarray(offsets, dtype=np.int64)
        text = blob.tobytes().decode("utf-8")
        self.cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.int32)
        starts = (blob & 0xC0) != 0x80  # a code point starts at every byte that is not a continuation byte
        cum = np.concatenate([[0], np.cumsum(starts, dtype=np.int64)])
        self.coff = cum[offsets]
        if self.coff[-1] != len(self.cps):
            raise ValueError("vocabulary offsets do not fall on character boundaries")
        self.order = np.ascontiguousarray(order, dtype=np.int64)
        self.scores = np.ascontiguousarray(scores, dtype=np.float64)
        self.unk_id = int(unk_id)
        self.unk_score = float(self.scores.min()) - UNK_PENALTY if len(self.scores) else -UNK_PENALTY
        self.max_chars = int(max_chars)

    def segment(self, words: list[str]) -> np.ndarray:
        """int64 token ids of the words, one after the other."""
        joined = "".join(words)
        if not joined:
            return np.zeros(0, np.int64)
        text = np.frombuffer(joined.encode("utf-32-le"), dtype=np.int32)
        bounds = np.zeros(len(words) + 1, np.int64)
        np.cumsum([len(w) for w in words], out=bounds[1:])
        out = np.empty(len(text), np.int64)
        n = segment_words(self.cps, self.coff, self.order, self.scores, self.unk_id, self.unk_score,
                          self.max_chars, text, bounds, out)
        return out[:n]
