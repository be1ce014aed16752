"""Shared fixtures. Each area keeps its own fixtures in its folder's conftest.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"the shared data folder {SHARED} is missing: the tests expect ../shared beside the checkout")
    return SHARED


@pytest.fixture(scope="session")
def hashing_encoder():
    from m3search.encoder import HashingEncoder

    return HashingEncoder(dim=32, vocab_size=5000, seed=0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
