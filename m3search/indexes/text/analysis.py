"""Text -> BM25 terms, per language, and terms -> the 64-bit term ids the text index stores.

Every language starts from the same word split (the BM25 baseline's, `m3search.evaluation.bm25.analyze`):
NFKC, case-folded, words are runs of letters, digits and combining marks; scripts written without spaces
(CJK, kana, Hangul, Thai, Lao, Khmer, Myanmar) become overlapping character bigrams, as Lucene's CJK analyser
does. A language with a Snowball stemmer in tantivy (`TextAnalyzerBuilder(...).filter(Filter.stemmer(..))`)
then stems each word; the CJK bigrams are left as they are. "multilingual" (the default) does not stem, so
one index can hold every language.

Terms are stored as ids: the first 8 bytes of blake2b over the UTF-8 term (stable across processes and
platforms, unlike `hash`). Two different terms share an id with probability ~1e-19 per pair.
"""
from __future__ import annotations

import functools
import hashlib
from collections import Counter
from typing import Sequence

import numpy as np

from m3search.errors import ConfigError, missing_dependency
from m3search.evaluation.bm25 import analyze as split_words

# ISO 639-1 code -> tantivy's Snowball stemmer (tantivy.Filter.stemmer names)
STEMMERS: dict[str, str] = {
    "ar": "arabic", "da": "danish", "de": "german", "el": "greek", "en": "english", "es": "spanish",
    "fi": "finnish", "fr": "french", "hu": "hungarian", "it": "italian", "nb": "norwegian", "nl": "dutch",
    "no": "norwegian", "pt": "portuguese", "ro": "romanian", "ru": "russian", "sv": "swedish", "ta": "tamil",
    "tr": "turkish",
}
# languages whose words the common split already handles (bigrams for unspaced scripts), no stemmer
PLAIN = ("multilingual", "zh", "ja", "ko", "th")
LANGUAGES = tuple(sorted({*PLAIN, *STEMMERS}))


def check_language(language: str) -> str:
    if not isinstance(language, str) or language.lower() not in LANGUAGES:
        raise ConfigError(f"text language {language!r} is not one of {', '.join(LANGUAGES)} (multilingual: no "
                          "stemming, CJK/Thai bigrams, fits any mix of languages)")
    return language.lower()


class Analyzer:
    """Text -> terms for one language.

    >>> Analyzer("multilingual").terms("Ganze Spalten löschen")
    ['ganze', 'spalten', 'löschen']
    >>> Analyzer("de").terms("Ganze Spalten löschen")
    ['ganz', 'spalt', 'losch']
    >>> Analyzer("en").terms("列全体 running")
    ['列全', '全体', 'run']
    """

    def __init__(self, language: str = "multilingual"):
        self.language = check_language(language)
        self._stem = _stemmer(STEMMERS[self.language]) if self.language in STEMMERS else None

    def terms(self, text: str) -> list[str]:
        words = split_words(text or "")
        if self._stem is None or not words:
            return words
        # one call per text: the whitespace tokenizer keeps our words (they hold no spaces) one to one
        stemmed = self._stem.analyze(" ".join(words))
        if len(stemmed) != len(words):  # never expected; keep the unstemmed words rather than misalign
            return words
        return [s or w for s, w in zip(stemmed, words)]

    def term_counts(self, text: str) -> tuple[np.ndarray, np.ndarray, int]:
        """(sorted unique term ids uint64, their counts uint32, number of terms) of one text."""
        terms = self.terms(text)
        if not terms:
            return np.zeros(0, np.uint64), np.zeros(0, np.uint32), 0
        ids, counts = np.unique(term_ids(terms), return_counts=True)
        return ids, counts.astype(np.uint32), len(terms)


@functools.lru_cache(maxsize=None)
def _stemmer(name: str):
    try:
        import tantivy
    except ImportError:
        raise missing_dependency("tantivy", "the text (BM25) component") from None
    return tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.whitespace()).filter(tantivy.Filter.stemmer(name)).build()


def term_id(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=8).digest(), "little")


def term_ids(terms: Sequence[str]) -> np.ndarray:
    return np.fromiter((term_id(t) for t in terms), dtype=np.uint64, count=len(terms))


def query_terms(analyzer: Analyzer, text: str) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique term ids, how often each occurs in the query): a repeated query term weighs as often
    as it occurs (the bag-of-words query of Anserini and of the BM25 baseline)."""
    counts = Counter(term_ids(analyzer.terms(text)).tolist())
    ids = np.asarray(sorted(counts), dtype=np.uint64)
    return ids, np.asarray([counts[i] for i in ids.tolist()], dtype=np.float32)
