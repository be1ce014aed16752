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


@pytest.fixture(params=["embedded", "remote"])
def any_index(request, tmp_path):
    """The same tests against an embedded SearchIndex and against m3search.connect() to a real server
    over that index. Yields (index, embedded) where `embedded` is the local SearchIndex (for checks)."""
    from helpers.live_server import serve

    local = m3search.build_index(tmp_path / "idx", DOCS, model=MODEL)
    try:
        if request.param == "embedded":
            yield local
        else:
            with serve(local) as url, m3search.connect(url) as client:
                yield client
    finally:
        local.close()
