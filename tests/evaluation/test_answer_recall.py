"""MKQA's answer-string recall with DPR's has_answer convention."""
from __future__ import annotations

import pytest

from m3search.errors import InputError
from m3search.evaluation.answers import answer_recall, answer_recall_per_query, has_answer, normalize_tokens


def test_normalisation_follows_dpr():
    assert normalize_tokens("The U.S. Open, 2019!") == ["the", "u", ".", "s", ".", "open", ",", "2019", "!"]
    # NFD: accents become combining marks that stay inside their word
    assert normalize_tokens("Café") == ["cafe\u0301"]
    assert normalize_tokens("हिन्दी भाषा") == [normalize_tokens("हिन्दी")[0], normalize_tokens("भाषा")[0]]


@pytest.mark.parametrize(
    ("answers", "text", "expected"),
    [
        (["Barack Obama"], "President barack OBAMA was elected.", True),
        (["Obama"], "Obamacare passed.", False),  # whole tokens only
        (["Café Society"], "the CAFÉ  society club", True),  # case, accents composed or not, spaces
        (["1,000"], "about 1,000 people", True),
        (["1,000"], "about 1000 people", False),  # punctuation is a token: no stripping
        (["the Beatles"], "Beatles songs", False),  # articles are not stripped either
        (["", "Rome"], "Rome", True),  # an empty answer never matches, the other does
        ([], "anything", False),
    ],
)
def test_has_answer(answers, text, expected):
    assert has_answer(answers, text) is expected


def test_answer_recall_at_k():
    texts = {"p1": "Paris is the capital.", "p2": "Berlin is big.", "p3": "nothing here"}
    run = {"q1": {"p2": 3.0, "p1": 2.0}, "q2": {"p3": 1.0, "p1": 0.5}, "q3": {"p1": 1.0}}
    answers = {"q1": ["Paris"], "q2": ["Rome"], "q3": []}
    assert answer_recall_per_query(run, answers, texts.__getitem__, k=1) == {"q1": 0.0, "q2": 0.0}
    assert answer_recall_per_query(run, answers, texts.__getitem__, k=2) == {"q1": 1.0, "q2": 0.0}
    assert answer_recall(run, answers, texts.__getitem__, k=2) == 0.5  # q3 has no answer: left out
    with pytest.raises(InputError):
        answer_recall(run, {"q3": []}, texts.__getitem__, k=2)
    with pytest.raises(InputError):
        answer_recall(run, answers, texts.__getitem__, k=0)
