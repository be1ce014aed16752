"""What every encoder offers, and the input checks they share."""
from __future__ import annotations

import abc
from typing import Literal, Sequence

from m3search.errors import InputError
from m3search.types import EncodedBatch, EncoderIdentity

Kind = Literal["passage", "query"]
KINDS = ("passage", "query")


def validate_texts(texts: Sequence[str] | str) -> list[str]:
    """Return the texts as a list, or raise an InputError naming the first bad item's position.

    A lone string is one text (the result is still batch-shaped). Empty and whitespace-only strings are
    valid: they encode to the model's output for no words. None, non-strings and strings that are not
    valid Unicode (lone surrogates, which can't be UTF-8 encoded) are refused.
    """
    if isinstance(texts, str):
        texts = [texts]
    if texts is None:
        raise InputError("texts is None: pass a string or a list of strings")
    try:
        texts = list(texts)
    except TypeError:
        raise InputError(f"texts must be a string or a list of strings, got {type(texts).__name__}") from None
    for i, t in enumerate(texts):
        if t is None:
            raise InputError(f"text at position {i} is None: pass '' for an empty text or drop the item")
        if not isinstance(t, str):
            raise InputError(f"text at position {i} is a {type(t).__name__}, not a string: convert it with str()")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputError(
                f"text at position {i} is not valid Unicode (a lone surrogate {t[e.start]!r} at character "
                f"{e.start}): decode its source with errors='replace' or fix the data"
            ) from None
    return texts


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InputError(f"kind must be one of {KINDS}, got {kind!r}")


class Encoder(abc.ABC):
    """Turns texts into an `EncodedBatch`: dense, lexical weights and token vectors from one pass."""

    @property
    @abc.abstractmethod
    def identity(self) -> EncoderIdentity:
        """Name, dimensions, vocabulary size and tokenizer hash; recorded in every index."""

    @abc.abstractmethod
    def encode(
        self, texts: Sequence[str] | str, kind: Kind = "passage", max_length: int | None = None
    ) -> EncodedBatch:
        """Encode texts; the result has one row per text, in the caller's order."""

    @abc.abstractmethod
    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        """Readable strings for lexical token ids (for explaining matches)."""
