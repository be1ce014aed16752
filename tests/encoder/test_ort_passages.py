"""The torch-free passage path of FastQueryEncoder (`ort_passages.py`: ONNX Runtime layers, numpy embeddings
and heads, the numba Unigram) against the torch M3Encoder."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.components import assert_same_batch

from m3search.encoder import ort_backbone

pytestmark = pytest.mark.skipif(not ort_backbone.available(), reason="onnxruntime/onnx not installed")
ROOT = Path(__file__).resolve().parents[2]
ATOL = 1e-4  # the bound; measured ~1e-6
TEXTS = ["passage number %d about cells and tables" % i for i in range(40)] + [
    "short", "a longer text with several words " * 30, "x", "  spaced   out  ", "Straße 42 — ünïcödé " * 5,
    "中文的句子，不太长。", "word " * 700, "a <mask> b", "<s> x </s>", "", "🙂 ꙮ \u200b",
    "<s> literal </s> special <pad> tokens <unk> inside"]  # a literal pad token: RoBERTa positions by id


def assert_same(got, want, atol=ATOL):
    assert_same_batch(got, want, atol)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("query-cache")


def _fast(folder, cache, **options):
    from m3search.encoder.fast_query import FastQueryEncoder, load_fast

    load_fast(folder, device="cpu", cache_dir=cache, **options)  # writes the artifact (with torch) if missing
    encoder = load_fast(folder, device="cpu", cache_dir=cache, **options)
    assert isinstance(encoder, FastQueryEncoder) and encoder._full is None
    return encoder


@pytest.mark.parametrize("options", [{}, {"window_tokens": 16, "batch_tokens": 64}, {"long_dense": "first",
                                                                                    "window_tokens": 32}])
def test_passages_match_torch_encoder(tiny_model_dir, cache, make_encoder, options):
    fast = _fast(tiny_model_dir, cache, **options)
    for kind in ("passage", "query"):
        got = fast.encode(TEXTS, kind=kind)
        assert fast._full is None and fast._ort is not None  # no torch encoder was loaded
        assert_same(got, make_encoder(**options).encode(TEXTS, kind=kind))
    cut = fast.encode(TEXTS, max_length=8)
    assert_same(cut, make_encoder(**options).encode(TEXTS, max_length=8))
    assert fast._ort._full_tokenizer is not None  # the texts with added tokens went to the full tokenizer


def test_small_batches_run_one_piece_at_a_time(tiny_model_dir, cache, tiny_encoder):
    """More than LITE_TEXTS short texts: the ONNX Runtime path, whose batches of <= 256 padded tokens go
    through the numpy backbone; same outputs."""
    from m3search.encoder.fast_query import LITE_TEXTS

    fast = _fast(tiny_model_dir, cache)
    texts = ["cell %d" % i for i in range(LITE_TEXTS + 3)] + ["a <pad> b"]
    assert_same(fast.encode(texts), tiny_encoder.encode(texts))
    assert fast._ort is not None and fast._full is None


def test_options_it_does_not_reproduce_go_to_torch(tiny_model_dir, cache, make_encoder, monkeypatch):
    fast = _fast(tiny_model_dir, cache, mcls=True)
    assert_same(fast.encode(TEXTS[:45]), make_encoder(mcls=True).encode(TEXTS[:45]))
    assert fast._ort is None and fast._full is not None
    monkeypatch.setenv(ort_backbone.ENV_SWITCH, "0")
    off = _fast(tiny_model_dir, cache)
    off.encode(TEXTS[:45])
    assert off._ort is None and off._full is not None


@pytest.mark.slow
def test_indexing_process_imports_no_torch(tiny_model_dir, tmp_path):
    """A process building an index from a model folder whose query cache exists encodes its passages without
    importing torch, and the index answers as one built with the torch encoder does."""
    import m3search

    cache = tmp_path / "cache"
    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(TEXTS[40:] + TEXTS[:20]) if t.strip()]
    import os

    os.environ["M3SEARCH_CACHE"] = str(cache)
    try:
        from m3search.encoder.fast_query import load_fast

        load_fast(tiny_model_dir, device="cpu")  # writes the query cache
        with m3search.build_index(tmp_path / "ref", docs, model=str(tiny_model_dir), device="cpu",
                                  encoder_options={"onnx": False, "mcls": False}) as index:
            want = index.search("split cells", k=5, mode="all")
    finally:
        del os.environ["M3SEARCH_CACHE"]
    code = (
        "import sys, json, m3search\n"
        f"docs = {docs!r}\n"
        f"with m3search.build_index({str(tmp_path / 'idx')!r}, docs, model={str(tiny_model_dir)!r}, device='cpu') as index:\n"
        "    hits = index.search('split cells', k=5, mode='all')\n"
        "    ort = index.encoder._ort is not None\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'ort': ort, 'ids': [h.docid for h in hits],"
        " 'scores': [h.score for h in hits]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={**os.environ, "M3SEARCH_CACHE": str(cache), "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["torch"] is False and result["ort"] is True
    assert result["ids"] == [h.docid for h in want]
    np.testing.assert_allclose(result["scores"], [h.score for h in want], atol=1e-4)
