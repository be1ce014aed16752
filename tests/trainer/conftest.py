"""Tiny models and synthetic training data for the trainer's tests (small vocabulary, 2 layers, hidden 32)."""
from __future__ import annotations

import pytest

from m3search.encoder.checkpoint import save_m3_model
from m3search.encoder.tokenizer import M3Tokenizer
from helpers.trainer import make_model, make_spec, make_tokenizer


@pytest.fixture
def tiny_tokenizer() -> M3Tokenizer:
    return make_tokenizer()


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A saved tiny model folder in BGE-M3 layout."""
    path = tmp_path / "tiny-model"
    save_m3_model(make_model(), make_tokenizer(), path, make_spec())
    return path
