"""Sparse term schemes: how the lexical head's per-position weights become a text's sparse row (issue #14).

- "pieces" (the default, BGE-M3's own): one term per piece id, the max of its weights over the text;
- "pieces-nopunct": the same without punctuation-only pieces ("▁,", ")", a bare "▁": see `pieces.piece_kind`);
- "pieces+words": the pieces, plus each whole word of two or more pieces as a term of its own (`words.py`:
  weight the sum of its pieces' weights, max over the text), in columns vocab_size + hash % 2**22 of one CSR.
  A query and a document then score the piece overlap plus an exact-word bonus; measured on mldr_like in
  bench/results/sparse_whole_words.md and through the engine in bench/results/sparse_words_engine.md;
- "pieces+words-nopunct": both.

The scheme is part of an index's encoder identity (`EncoderIdentity.sparse_terms`, `.sparse_width`): an
index's queries must be encoded with the scheme its documents were.

>>> sparse_width("pieces", 250002), sparse_width("pieces+words", 250002)
(250002, 4444306)
"""
from __future__ import annotations

import threading
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from m3search.encoder import words
from m3search.encoder.pieces import piece_kind, vocabulary_pieces
from m3search.encoder.postprocess import max_per_token
from m3search.errors import ConfigError

SCHEMES = ("pieces", "pieces-nopunct", "pieces+words", "pieces+words-nopunct")
DEFAULT_SCHEME = "pieces"
# the measured form (words.py's docstring): pieces plus words of 2+ pieces, a word's weight the sum of its pieces'
WORD_AGGREGATION = "sum"
WORD_BITS = words.DEFAULT_BITS


def check_scheme(scheme: str | None) -> str:
    """The scheme's name, validated (None: the default)."""
    if scheme is None:
        return DEFAULT_SCHEME
    if scheme not in SCHEMES:
        raise ConfigError(f"sparse_terms {scheme!r} is not one of {', '.join(SCHEMES)} (default {DEFAULT_SCHEME!r})")
    return scheme


def has_words(scheme: str) -> bool:
    return "+words" in check_scheme(scheme)


def drops_punctuation(scheme: str) -> bool:
    return check_scheme(scheme).endswith("-nopunct")


def sparse_width(scheme: str, vocab_size: int) -> int:
    """Columns of the sparse rows a scheme gives: the vocabulary, plus 2**22 word columns with words."""
    return int(vocab_size) + ((1 << WORD_BITS) if has_words(scheme) else 0)


def require_same_terms(path, recorded, given) -> None:
    """Raise EncoderMismatchError (with `mismatch_message`'s fix) when the encoder identity `given` uses another
    sparse term scheme than `recorded`, the identity an index or encoded corpus at `path` was built with. Checked
    before the other identity fields: this difference alone has a fix of its own."""
    if recorded.sparse_terms != given.sparse_terms:
        from m3search.errors import EncoderMismatchError

        raise EncoderMismatchError(mismatch_message(path, recorded.sparse_terms, given.sparse_terms))


def mismatch_message(path, recorded: str, given: str) -> str:
    """The one-line error for an index (or encoded corpus) at `path` built with another scheme."""
    return (f"{path} was built with sparse_terms={recorded!r} but the encoder given uses sparse_terms={given!r}: "
            f"load the encoder with sparse_terms={recorded!r} (open_index(path) and `m3search query` do this by "
            f"themselves), or build a new index with sparse_terms={given!r}")


class SparseTerms:
    """A scheme bound to an encoder's vocabulary. `rows` turns per-position weights into sparse rows.

    token_strings: the encoder's (id -> piece), read over the whole vocabulary once, on first need, for the
    schemes that look at what a piece is (not for "pieces").
    """

    def __init__(self, scheme: str | None, vocab_size: int,
                 token_strings: Callable[[Sequence[int]], list[str]] | None = None):
        self.scheme = check_scheme(scheme)
        self.vocab_size = int(vocab_size)
        self.width = sparse_width(self.scheme, self.vocab_size)
        if self.scheme != DEFAULT_SCHEME and token_strings is None:
            raise ConfigError(f"sparse_terms {self.scheme!r} needs the encoder's vocabulary (token_strings)")
        self._token_strings = token_strings
        self._classes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()

    def classes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(starts, alone, punctuation ids) over the vocabulary (`words.piece_classes`)."""
        with self._lock:
            if self._classes is None:
                pieces = vocabulary_pieces(self._token_strings, self.vocab_size)
                starts, alone = words.piece_classes(pieces)
                punct = np.flatnonzero([piece_kind(p) == "punctuation" for p in pieces]).astype(np.int64)
                self._classes = starts, alone, punct
            return self._classes

    def rows(self, n_texts: int, text_of: np.ndarray, weights: list, unused: np.ndarray) -> sp.csr_matrix:
        """(n_texts, width) float32 CSR, sorted indices, no zeros. text_of: the text of each piece (window);
        weights: each piece's (ids, weights) at every position, special tokens included; unused: the ids
        whose weights are dropped (cls/eos/pad/unk)."""
        unused = np.asarray(unused, dtype=np.int64)
        if self.scheme == DEFAULT_SCHEME:
            return max_per_token(n_texts, text_of, weights, self.vocab_size, unused)
        starts, alone, punct = self.classes()
        dropped = np.union1d(unused, punct) if drops_punctuation(self.scheme) else unused
        pieces = max_per_token(n_texts, text_of, weights, self.vocab_size, dropped)
        if not has_words(self.scheme):
            return pieces
        ids = np.concatenate([np.asarray(i, dtype=np.int64) for i, _ in weights] or [np.zeros(0, np.int64)])
        w = np.concatenate([np.asarray(x, dtype=np.float32) for _, x in weights] or [np.zeros(0, np.float32)])
        piece_ptr = np.zeros(len(weights) + 1, dtype=np.int64)
        np.cumsum([len(i) for i, _ in weights], out=piece_ptr[1:])
        word_rows = words.word_matrix(n_texts, np.asarray(text_of, dtype=np.int64), ids, w, piece_ptr, starts, alone,
                                      unused, self.vocab_size, agg=WORD_AGGREGATION, bits=WORD_BITS, multi_only=True)
        out = words.pieces_and_words(pieces, word_rows)
        out.sort_indices()
        out.eliminate_zeros()
        return sp.csr_matrix((out.data.astype(np.float32, copy=False), out.indices.astype(np.int32, copy=False),
                              out.indptr.astype(np.int64, copy=False)), shape=(n_texts, self.width))
