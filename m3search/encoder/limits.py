"""The per-text token limit: a 1 MB text is a mistake to report, not 600 s of encoding to sit through."""
from __future__ import annotations

from typing import Sequence

from m3search.errors import ConfigError, InputError

# BGE-M3's longest input; longer texts are encoded in windows up to this many tokens in all.
DEFAULT_MAX_DOC_TOKENS = 8192


class TextTooLongError(InputError):
    """A text has more tokens than the encoder's `max_doc_tokens`; `position` is its index in the call."""

    def __init__(self, message: str, position: int):
        super().__init__(message)
        self.position = position


def check_limit(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"max_doc_tokens must be a positive integer, got {value!r}")
    return value


def check_token_counts(counts: Sequence[int], limit: int) -> None:
    """Raise TextTooLongError for the first text with more than `limit` tokens."""
    for i, n in enumerate(counts):
        if n > limit:
            raise TextTooLongError(
                f"text {i} has {n} tokens, more than the limit of {limit} per text; split it into passages, "
                "truncate it (--max-length, or max_length=), or raise the limit (--max-doc-tokens, or "
                "encoder_options={'max_doc_tokens': N})",
                position=i,
            )
