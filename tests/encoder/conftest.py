"""Fixtures of the encoder tests: the tiny random checkpoint (built once per session) and encoders on it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_checkpoint

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP spinning makes them 30x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return tiny_checkpoint.build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-m3")


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir):
    from m3search.encoder.checkpoint import load_m3_model

    return load_m3_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_encoder(tiny_loaded):
    from m3search.encoder.m3 import M3Encoder

    return M3Encoder(tiny_loaded)


@pytest.fixture(scope="session")
def make_encoder(tiny_loaded):
    """M3Encoder with other options on the same (shared, read-only) model."""
    from m3search.encoder.m3 import M3Encoder

    return lambda **options: M3Encoder(tiny_loaded, **options)


@pytest.fixture(scope="session")
def flag_reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "flagembedding_tiny.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
