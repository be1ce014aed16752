"""Fixtures for the Python API tests: a small multilingual corpus and the deterministic hashing encoder."""
from __future__ import annotations

import pytest

import m3search
from helpers.sample_docs import MODEL, sample_docs

DOCS = sample_docs("id")


@pytest.fixture
def docs():
    return sample_docs("id")


@pytest.fixture
def model():
    return MODEL


@pytest.fixture(scope="module")
def shared_index(tmp_path_factory):
    """One index of DOCS for read-only tests."""
    index = m3search.build_index(tmp_path_factory.mktemp("api") / "idx", DOCS, model=MODEL)
    yield index
    index.close()
