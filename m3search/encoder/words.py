"""Whole-word lexical terms from per-position lexical weights (issue #14; measured in
bench/sparse_whole_words.py, results in bench/results/sparse_whole_words.md).

The lexical head gives each piece position a weight; BGE-M3 keeps the max per piece id, so a fragment such as
"s" or "ing" is a term of its own and matches across unrelated words. Here a term can be a word instead:
- a word is a word-initial piece (sentencepiece's '▁') and the continuation pieces that follow it;
- punctuation pieces and pieces holding a character of a script written without spaces (CJK, kana, Hangul,
  Thai, ...) are terms of their own and never join a word; the piece after one starts a new term;
- a piece (window) start and a special token (cls/eos/pad/unk) end a word, so no word spans two windows;
- a word's weight at one occurrence aggregates its pieces' weights ("sum", "max", "mean", "sqrtsum":
  sum / sqrt(pieces), "first"), and a text keeps the max over the word's occurrences (as for pieces);
- a word's identity is its exact piece-id sequence: a 64-bit FNV-1a-style hash of the ids, folded into
  `2**bits` columns placed after the vocabulary (column vocab_size + hash % 2**bits), so one CSR holds
  pieces and words side by side (`pieces_and_words`). Two words can share a column (a hash collision);
  with 2**22 columns and 100k distinct words in a corpus about 1% of them share one.

The measured winner on mldr_like is the sum of today's piece score and the whole-word score with "sum",
i.e. pieces plus words of two or more pieces (single-piece words are pieces already, so `multi_only`
leaves them out instead of counting them twice) -- see the results file for the numbers.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from m3search.encoder.pieces import WORD_START, piece_kind

AGGREGATIONS = ("sum", "max", "mean", "sqrtsum", "first")
DEFAULT_BITS = 22
_FNV_OFFSET = np.uint64(1469598103934665603)
_FNV_PRIME = np.uint64(1099511628211)
_MIX = np.uint64(0x9E3779B97F4A7C15)


def piece_classes(pieces: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(starts, alone): bool over the vocabulary. starts: a word-initial piece ('▁' first); alone: a piece
    that is a term of its own (punctuation, or a character of a script written without spaces)."""
    from m3search.evaluation._unicode import UNSPACED_CLASS

    unspaced = re.compile(f"[{UNSPACED_CLASS}]")
    starts = np.array([p.startswith(WORD_START) for p in pieces], dtype=bool)
    alone = np.array([piece_kind(p) == "punctuation" or bool(unspaced.search(p)) for p in pieces], dtype=bool)
    return starts, alone


def split_units(ids: np.ndarray, piece_ptr: np.ndarray, starts: np.ndarray, alone: np.ndarray,
                unused: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The terms of every piece (window): (positions kept, each term's first index into them). ids: every
    position of every piece, concatenated; piece_ptr: piece i is ids[piece_ptr[i]:piece_ptr[i+1]]."""
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    special = np.isin(ids, unused)
    first = np.zeros(n, dtype=bool)
    first[np.asarray(piece_ptr[:-1])[np.asarray(piece_ptr[:-1]) < n]] = True
    lone = alone[ids] if n else np.zeros(0, dtype=bool)
    begins = (starts[ids] if n else first) | lone | np.r_[True, lone[:-1]] | first | np.r_[True, special[:-1]]
    pos = np.flatnonzero(~special)
    begins = begins[pos]
    if len(begins):
        begins[0] = True
    return pos, np.flatnonzero(begins)


def unit_hashes(ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """64-bit hash of each term's exact id sequence ids[starts[i] : starts[i] + lengths[i]]."""
    h = np.full(len(starts), _FNV_OFFSET, dtype=np.uint64)
    ids = np.asarray(ids).astype(np.uint64)
    with np.errstate(over="ignore"):
        for k in range(int(lengths.max(initial=0))):
            live = lengths > k
            h[live] = (h[live] ^ _MIX ^ ids[starts[live] + k]) * _FNV_PRIME
    return h


def aggregate(w: np.ndarray, starts: np.ndarray, lengths: np.ndarray, agg: str) -> np.ndarray:
    """Each term's weight from its pieces' weights w[starts[i] : starts[i] + lengths[i]]."""
    if agg not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {agg!r}: choose one of {', '.join(AGGREGATIONS)}")
    w = np.asarray(w, dtype=np.float64)
    if not len(starts):
        return w[:0]
    if agg == "first":
        return w[starts]
    if agg == "max":
        return np.maximum.reduceat(w, starts)
    total = np.add.reduceat(w, starts)
    return total if agg == "sum" else total / (lengths if agg == "mean" else np.sqrt(lengths))


def word_matrix(n_texts: int, piece_text: np.ndarray, ids: np.ndarray, w: np.ndarray, piece_ptr: np.ndarray,
                starts: np.ndarray, alone: np.ndarray, unused: np.ndarray, vocab_size: int, agg: str = "sum",
                bits: int = DEFAULT_BITS, multi_only: bool = True) -> sp.csr_matrix:
    """CSR (n_texts x vocab_size + 2**bits) of whole-word weights, max over each word's occurrences in a
    text, in columns vocab_size + hash % 2**bits. multi_only: only words of two or more pieces."""
    pos, first = split_units(ids, piece_ptr, starts, alone, unused)
    kept_ids = np.asarray(ids, dtype=np.int64)[pos]
    lengths = np.diff(np.r_[first, len(pos)]).astype(np.int64)
    weights = aggregate(np.asarray(w)[pos], first, lengths, agg)
    piece_of = np.searchsorted(piece_ptr, pos[first], side="right") - 1
    text = np.asarray(piece_text, dtype=np.int64)[piece_of]
    cols = vocab_size + (unit_hashes(kept_ids, first, lengths) % np.uint64(1 << bits)).astype(np.int64)
    ok = weights > 0
    if multi_only:
        ok &= lengths > 1
    text, cols, weights = text[ok], cols[ok], weights[ok]
    if len(weights):
        order = np.lexsort((cols, text))
        text, cols, weights = text[order], cols[order], weights[order]
        at = np.flatnonzero(np.r_[True, (text[1:] != text[:-1]) | (cols[1:] != cols[:-1])])
        text, cols, weights = text[at], cols[at], np.maximum.reduceat(weights, at)
    indptr = np.zeros(n_texts + 1, dtype=np.int64)
    np.cumsum(np.bincount(text, minlength=n_texts), out=indptr[1:])
    return sp.csr_matrix((weights.astype(np.float32), cols, indptr), shape=(n_texts, vocab_size + (1 << bits)))


def pieces_and_words(pieces_csr: sp.csr_matrix, words_csr: sp.csr_matrix) -> sp.csr_matrix:
    """One CSR with the piece weights in columns < vocab_size and the word weights after them: its dot
    product is the piece score plus the word score."""
    a = pieces_csr.tocsr()
    a = sp.csr_matrix((a.data, a.indices, a.indptr), shape=(a.shape[0], words_csr.shape[1]))
    return (a + words_csr).tocsr()
