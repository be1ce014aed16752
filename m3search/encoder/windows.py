"""Model inputs for texts of any length: overlapping windows, and MCLS (multiple CLS tokens).

A text's content tokens (no special tokens) go into one or more pieces, each `[cls] + slice + [eos]`:
- If it fits in `window_tokens` (special tokens included) it is one piece: exactly the plain BGE-M3 input.
- Otherwise it is cut into windows of `capacity` content tokens starting every `capacity - overlap` tokens;
  the last window ends at the last token. Consecutive windows share `overlap` tokens of context.
- MCLS (M3-Embedding paper, section 3.4): inside a piece, a CLS token is inserted before every `mcls_every`
  content tokens after the first block: `[cls] t1..t256 [cls] t257..t512 ... [eos]`; the dense vector is the
  mean of the final states of all CLS tokens. The inserted CLS positions give no token vectors.

How the pieces of one text are merged (see `m3.py`): lexical weights = max per token id over all pieces;
token vectors = all pieces' vectors, in order (overlapping tokens appear once per window); dense = mean of
the pieces' normalised dense vectors, renormalised ("mean"), or the first piece's ("first").
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

DEFAULT_OVERLAP = 64
MCLS_EVERY = 256


@dataclasses.dataclass(frozen=True)
class Piece:
    """One model input: `ids` of text `text`, window number `window`; `cls_positions` (MCLS) or None."""

    text: int
    window: int
    ids: np.ndarray
    cls_positions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)


def _extra_cls(n_content: int, mcls_every: int | None) -> int:
    """CLS tokens MCLS inserts besides the leading one."""
    if not mcls_every or n_content == 0:
        return 0
    return math.ceil(n_content / mcls_every) - 1


def content_capacity(window_tokens: int, mcls_every: int | None = None) -> int:
    """The most content tokens one piece of `window_tokens` tokens can hold."""
    capacity = window_tokens - 2
    while capacity > 0 and capacity + _extra_cls(capacity, mcls_every) + 2 > window_tokens:
        capacity -= 1
    if capacity < 1:
        raise ValueError(f"window_tokens={window_tokens} leaves no room for text after the special tokens")
    return capacity


def window_spans(n_content: int, capacity: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) content ranges of the windows of a text with n_content tokens.

    >>> window_spans(10, capacity=4, overlap=1)
    [(0, 4), (3, 7), (6, 10)]
    """
    if n_content <= capacity:
        return [(0, n_content)]
    if not 0 <= overlap < capacity:
        raise ValueError(f"window overlap must be in [0, {capacity}), got {overlap}")
    stride = capacity - overlap
    spans, start = [], 0
    while True:
        end = min(start + capacity, n_content)
        spans.append((start, end))
        if end >= n_content:
            return spans
        start += stride


def piece_ids(content: np.ndarray, cls_id: int, eos_id: int, mcls_every: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """`[cls] + content + [eos]`, with MCLS's extra CLS tokens when mcls_every is set."""
    if not mcls_every:
        ids = np.empty(len(content) + 2, dtype=np.int64)
        ids[0], ids[-1] = cls_id, eos_id
        ids[1:-1] = content
        return ids, None
    parts, cls_positions, pos = [], [], 0
    for start in range(0, max(len(content), 1), mcls_every):
        block = content[start : start + mcls_every]
        parts.append(np.asarray([cls_id], dtype=np.int64))
        parts.append(np.asarray(block, dtype=np.int64))
        cls_positions.append(pos)
        pos += 1 + len(block)
    parts.append(np.asarray([eos_id], dtype=np.int64))
    return np.concatenate(parts), np.asarray(cls_positions, dtype=np.int64)


def make_pieces(
    content_ids: list[list[int]],
    cls_id: int,
    eos_id: int,
    window_tokens: int,
    overlap: int = DEFAULT_OVERLAP,
    mcls_every: int | None = None,
) -> list[Piece]:
    """All pieces of all texts, text by text, windows in order."""
    capacity = content_capacity(window_tokens, mcls_every)
    overlap = min(overlap, capacity - 1)
    pieces = []
    for i, ids in enumerate(content_ids):
        ids = np.asarray(ids, dtype=np.int64)
        for w, (start, end) in enumerate(window_spans(len(ids), capacity, overlap)):
            seq, cls_positions = piece_ids(ids[start:end], cls_id, eos_id, mcls_every)
            pieces.append(Piece(text=i, window=w, ids=seq, cls_positions=cls_positions))
    return pieces
