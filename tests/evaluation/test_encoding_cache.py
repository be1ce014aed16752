"""The corpus encoding cache: keyed by encoder fingerprint, corpus content and options; atomic; versioned."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from m3search.encoder import HashingEncoder
from m3search.errors import IndexFormatError
from m3search.evaluation.cache import EncodingCache, cache_key, encoder_fingerprint


def test_round_trip(tmp_path, hashing_encoder):
    cache = EncodingCache(tmp_path)
    batch = hashing_encoder.encode(["one text", "another longer text"])
    key = cache_key(encoder_fingerprint(hashing_encoder), "corpus-hash", {"max_length": None})
    assert cache.get(key) is None
    cache.put(key, ["a", "b"], batch, {"note": "x"})
    docids, loaded, info = cache.get(key)
    assert info["note"] == "x"
    assert docids == ["a", "b"]
    np.testing.assert_array_equal(loaded.dense, batch.dense)
    np.testing.assert_array_equal(loaded.multivec, batch.multivec)
    assert (loaded.sparse != batch.sparse).nnz == 0
    # only the published entry is left, no temporary folder
    assert [p.name for p in (tmp_path / "v1").iterdir()] == [key]


def test_key_follows_every_input(hashing_encoder):
    fp = encoder_fingerprint(hashing_encoder)
    base = cache_key(fp, "c1", {"max_length": 512})
    assert cache_key(fp, "c2", {"max_length": 512}) != base
    assert cache_key(fp, "c1", {"max_length": 8192}) != base
    other = encoder_fingerprint(HashingEncoder(dim=32, vocab_size=5000, seed=1))
    assert cache_key(other, "c1", {"max_length": 512}) != base
    assert cache_key(encoder_fingerprint(HashingEncoder(dim=32, vocab_size=5000, seed=0)), "c1", {"max_length": 512}) == base


class _TorchEncoder(HashingEncoder):
    """A hashing encoder that also holds a torch module, as the M3 encoder holds its model."""

    def __init__(self, head_value: float):
        super().__init__(dim=8, vocab_size=100)
        self.model = torch.nn.Linear(2, 1)
        with torch.no_grad():
            self.model.weight.fill_(head_value)
            self.model.bias.fill_(0.0)


def test_fingerprint_changes_with_weights():
    a, b, a2 = _TorchEncoder(0.5), _TorchEncoder(0.25), _TorchEncoder(0.5)
    assert a.identity == b.identity  # the identity alone would not tell new heads apart
    assert encoder_fingerprint(a)["weights"] != encoder_fingerprint(b)["weights"]
    assert encoder_fingerprint(a) == encoder_fingerprint(a2)


def test_newer_or_foreign_entries_are_refused(tmp_path, hashing_encoder):
    cache = EncodingCache(tmp_path)
    cache.put("k", ["a"], hashing_encoder.encode(["x"]), {})
    meta_file = tmp_path / "v1" / "k" / "entry.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(IndexFormatError, match="upgrade"):
        cache.get("k")
    meta_file.write_text("{not json")
    with pytest.raises(IndexFormatError, match="corrupt cache entry"):
        cache.get("k")
