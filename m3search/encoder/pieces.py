"""Kinds of sentencepiece pieces, for looking at (and optionally ignoring) what the lexical head weighs.

XLM-R's sentencepiece marks a piece that starts a word with '▁'. A piece is
- punctuation: nothing but punctuation or symbols once the '▁' is stripped, or a bare '▁';
- single character: one character (letter, digit, ...) once the '▁' is stripped, and not punctuation;
- a fragment: a piece that does not start a word (no leading '▁') and is not punctuation. In scripts
  written without spaces (Chinese, Japanese, Thai) most pieces are fragments by this rule, so the share
  says little there.
Special tokens (`<s>`, `</s>`, `<pad>`, `<unk>`) are none of these: the encoder already drops their weights,
as FlagEmbedding's BGE-M3 does (`unused_tokens`).

>>> piece_kind("▁Navigator"), piece_kind("ing"), piece_kind("▁,"), piece_kind("▁K"), piece_kind(")")
('word', 'fragment', 'punctuation', 'single', 'punctuation')
"""
from __future__ import annotations

import unicodedata
from typing import Iterable, Sequence

import numpy as np

WORD_START = "\u2581"  # '▁'
KINDS = ("punctuation", "single", "fragment", "word", "special")


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


def piece_kind(piece: str) -> str:
    """'punctuation', 'single', 'fragment', 'word' (a word-initial piece of 2+ characters) or 'special'."""
    if piece.startswith("<") and piece.endswith(">") and len(piece) > 2:
        return "special"
    body = piece[1:] if piece.startswith(WORD_START) else piece
    if not body or all(_is_punct(c) for c in body):
        return "punctuation"
    if len(body) == 1:
        return "single"
    return "word" if piece.startswith(WORD_START) else "fragment"


def kind_masks(pieces: Sequence[str]) -> dict[str, np.ndarray]:
    """{kind: bool array over the vocabulary}: which token ids are of each kind."""
    kinds = np.array([piece_kind(p) for p in pieces])
    return {k: kinds == k for k in KINDS}


def vocabulary_pieces(token_strings, vocab_size: int, chunk: int = 50_000) -> list[str]:
    """Every piece of a vocabulary, by id, through an encoder's `token_strings`."""
    out: list[str] = []
    for start in range(0, vocab_size, chunk):
        out.extend(token_strings(list(range(start, min(vocab_size, start + chunk)))))
    return out


def drop_columns(matrix, mask: np.ndarray):
    """A copy of a CSR matrix of lexical weights without the token ids where `mask` is True."""
    m = matrix.tocsr(copy=True)
    m.data[mask[m.indices]] = 0
    m.eliminate_zeros()
    return m


def kinds_of(ids: Iterable[int], masks: dict[str, np.ndarray]) -> list[str]:
    ids = list(ids)
    return [next((k for k in KINDS if masks[k][i]), "word") for i in ids]


DROPPABLE = ("punctuation", "single", "fragment")


def parse_kinds(spec: str | Sequence[str]) -> tuple[str, ...]:
    """'punctuation,single' -> ('punctuation', 'single'), validated.

    >>> parse_kinds("single, punctuation")
    ('punctuation', 'single')
    """
    from m3search.errors import ConfigError

    parts = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec) if p and p.strip()]
    bad = [p for p in parts if p not in DROPPABLE]
    if bad or not parts:
        raise ConfigError(f"unknown kind of piece {bad[0] if bad else spec!r} to drop: choose from "
                          f"{', '.join(DROPPABLE)}, e.g. 'punctuation' or 'punctuation,single'")
    return tuple(k for k in DROPPABLE if k in parts)


def drop_mask(token_strings, vocab_size: int, kinds: Sequence[str]) -> np.ndarray:
    """bool over the vocabulary: the token ids of the given kinds."""
    masks = kind_masks(vocabulary_pieces(token_strings, vocab_size))
    out = np.zeros(vocab_size, dtype=bool)
    for k in kinds:
        out |= masks[k]
    return out
