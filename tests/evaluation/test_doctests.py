"""The examples in the evaluation modules' docstrings run."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["m3search.evaluation", "m3search.evaluation.metrics", "m3search.evaluation.answers",
           "m3search.evaluation.bm25", "m3search.evaluation.modes", "m3search.evaluation.datasets"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
