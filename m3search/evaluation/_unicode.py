"""Unicode character classes shared by the BM25 analyser and the answer matcher."""
from __future__ import annotations

import functools
import re
import sys
import unicodedata


@functools.lru_cache(maxsize=1)
def word_char_class() -> str:
    """A regex class body matching letters (L*), numbers (N*) and combining marks (M*): "word" characters
    that keep Devanagari or Khmer vowel signs inside their word, unlike `\\w`."""
    ranges, start = [], None
    for cp in range(sys.maxunicode + 1):
        inside = unicodedata.category(chr(cp))[0] in "LNM"
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            ranges.append((start, cp - 1))
            start = None
    if start is not None:
        ranges.append((start, sys.maxunicode))
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


# Scripts written without spaces between words: CJK ideographs, kana, Hangul, Thai, Lao, Myanmar, Khmer.
UNSPACED_CLASS = (
    "\u0e00-\u0eff\u1000-\u109f\u1100-\u11ff\u1780-\u17ff\u19e0-\u19ff\u2e80-\u2fdf\u3040-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f"
)
