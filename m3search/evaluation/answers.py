"""MKQA's answer-string Recall@k, with DPR's `has_answer` convention.

A query is a hit at k when one of its answer strings occurs, as a whole token sequence, in one of its top-k
passages. Both sides are normalised the DPR way: Unicode NFD, lowercased, split by DPR's SimpleTokenizer rule
(a token is a run of letters, digits and combining marks, or any other single non-space character).
So punctuation is matched as its own token ("U.S." needs "u . s ."), and articles are not stripped: DPR's
has_answer does neither (stripping them is SQuAD's exact-match normalisation, English-only). A run of
CJK characters is one token, as in DPR: MKQA matches answers against English passages. Queries without any
answer string are left out of the mean, as they cannot be hit.

>>> has_answer(["Barack Obama"], "President barack OBAMA, 2009.")
True
>>> has_answer(["bama"], "Obama")
False
"""
from __future__ import annotations

import functools
import re
import unicodedata
from typing import Callable, Mapping, Sequence

from m3search.errors import InputError
from m3search.evaluation._unicode import word_char_class
from m3search.evaluation.metrics import Run, rank


@functools.lru_cache(maxsize=1)
def _token_pattern() -> re.Pattern:
    cls = word_char_class()
    return re.compile(f"[{cls}]+|[^{cls}\\s]")


def normalize_tokens(text: str) -> list[str]:
    """DPR's normalisation: NFD, lowercase, SimpleTokenizer tokens."""
    return _token_pattern().findall(unicodedata.normalize("NFD", text).lower())


def _contains(tokens: Sequence[str], needle: Sequence[str]) -> bool:
    n = len(needle)
    first = needle[0]
    return any(tokens[i] == first and tokens[i : i + n] == needle for i in range(len(tokens) - n + 1))


def has_answer(answers: Sequence[str], text: str) -> bool:
    tokens = normalize_tokens(text)
    return any(_contains(tokens, needle) for needle in (normalize_tokens(a) for a in answers) if needle)


def answer_recall_per_query(
    run: Mapping[str, Mapping[str, float]],
    answers: Mapping[str, Sequence[str]],
    passage_text: Callable[[str], str],
    k: int,
) -> dict[str, float]:
    """{qid: 1.0 or 0.0} for the queries of `run` that have at least one answer string.

    passage_text(docid) gives a passage's text (title included when the retriever saw it).
    """
    if k < 1:
        raise InputError(f"answer recall needs k >= 1, got {k}")
    tokens = functools.lru_cache(maxsize=None)(lambda docid: normalize_tokens(passage_text(docid)))
    out = {}
    for qid, scores in run.items():
        needles = [t for t in (normalize_tokens(a) for a in answers.get(qid, ())) if t]
        if needles:
            top = rank(scores)[:k]
            out[qid] = float(any(_contains(tokens(d), n) for d in top for n in needles))
    return out


def answer_recall(run: Run, answers: Mapping[str, Sequence[str]], passage_text: Callable[[str], str], k: int) -> float:
    """Mean answer-string Recall@k over the queries with answers (see the module docstring)."""
    per_query = answer_recall_per_query(run, answers, passage_text, k)
    if not per_query:
        raise InputError("no query of the run has an answer string: check the run's query ids against the answers")
    return sum(per_query.values()) / len(per_query)
