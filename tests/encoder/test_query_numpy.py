"""The torch-free query path (`fast_query.py`, `numpy_backbone.py`, `unigram.py`, `query_cache.py`) against
the torch M3Encoder and against `tokenizers` on the same files."""
from __future__ import annotations

import gzip
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.components import assert_same_batch

ATOL = 1e-4  # the bound; measured ~1e-6
ROOT = Path(__file__).resolve().parents[2]
QUERIES = ["How do I split cells?", "Wie teile ich Zellen?", "", "   ", "日本語の検索", "¿Cómo?  x\ty",
           "editieren podano " * 3, "Ünïcödé ﬁ ＡＢＣ ①"]


def assert_same(got, want, atol=ATOL):
    assert_same_batch(got, want, atol)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("query-cache")


@pytest.fixture(scope="module")
def fast(tiny_model_dir, cache):
    """A FastQueryEncoder read from an artifact written by an earlier load (as a second process would)."""
    from m3search.encoder.fast_query import FastQueryEncoder, load_fast

    first = load_fast(tiny_model_dir, device="cpu", cache_dir=cache)  # builds the artifact (with torch)
    assert isinstance(first, FastQueryEncoder) and first._full is not None
    encoder = load_fast(tiny_model_dir, device="cpu", cache_dir=cache)
    assert isinstance(encoder, FastQueryEncoder) and encoder._full is None
    return encoder


@pytest.mark.parametrize("kind", ["query", "passage"])
def test_numpy_path_matches_torch_encoder(fast, tiny_encoder, kind):
    got = fast.encode(QUERIES, kind=kind)
    assert fast._full is None  # answered without loading the torch encoder
    assert_same(got, tiny_encoder.encode(QUERIES, kind=kind))
    assert fast.identity == tiny_encoder.identity
    assert fast.token_strings([0, 5, 250001, 10**7]) == tiny_encoder.token_strings([0, 5, 250001, 10**7])


def test_flagembedding_reference(fast, flag_reference):
    for kind in ("query", "passage"):
        batch = fast.encode([str(t) for t in flag_reference[f"{kind}_texts"]], kind=kind)
        np.testing.assert_allclose(batch.dense, flag_reference[f"{kind}_dense"], atol=ATOL, rtol=0)
        np.testing.assert_allclose(batch.multivec, flag_reference[f"{kind}_colbert"], atol=ATOL, rtol=0)


def test_large_long_and_special_inputs_go_to_torch(tiny_model_dir, cache, tiny_encoder, make_encoder):
    """...or, where ONNX Runtime is installed, to the torch-free batch path (tests/encoder/test_ort_passages.py)."""
    from m3search.encoder import ort_backbone
    from m3search.encoder.fast_query import LITE_TEXTS, LITE_TOKENS, load_fast

    batch_path = ort_backbone.available()
    fast = load_fast(tiny_model_dir, device="cpu", cache_dir=cache)
    special = ["a <mask> b", "<s> x </s>"]  # added tokens: split out by the full tokenizer first
    assert_same(fast.encode(special, kind="query"), tiny_encoder.encode(special, kind="query"))
    assert (fast._full is None and fast._ort is not None) if batch_path else fast._full is not None
    many = ["passage number %d about cells and tables" % i for i in range(max(LITE_TOKENS // 8, LITE_TEXTS + 1))]
    assert_same(fast.encode(many), tiny_encoder.encode(many), atol=1e-5)
    windowed = load_fast(tiny_model_dir, device="cpu", cache_dir=cache, window_tokens=16)
    long = ["word " * 40]
    assert_same(windowed.encode(long), make_encoder(window_tokens=16).encode(long), atol=1e-5)
    assert (windowed._full is None) if batch_path else windowed._full is not None


@pytest.mark.slow
def test_new_heads_make_a_new_artifact(tiny_model_dir, tmp_path, caplog):
    import torch

    from m3search.encoder.fast_query import FastQueryEncoder, load_fast
    from m3search.encoder.m3 import M3Encoder
    from m3search.encoder.query_cache import artifact_key

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    cache = tmp_path / "cache"
    before = load_fast(folder, device="cpu", cache_dir=cache)
    key = artifact_key(folder)
    colbert = torch.load(folder / "colbert_linear.pt", weights_only=True)
    torch.save({k: v * 0.5 + 0.01 for k, v in colbert.items()}, folder / "colbert_linear.pt")
    assert artifact_key(folder) != key
    after = load_fast(folder, device="cpu", cache_dir=cache)
    assert isinstance(after, FastQueryEncoder)
    assert after.identity.heads_hash != before.identity.heads_hash
    assert after._full is not None  # the torch encoder that built the artifact: the reference
    fresh = load_fast(folder, device="cpu", cache_dir=cache)
    assert fresh._full is None
    assert_same(fresh.encode(QUERIES, kind="query"), after._full.encode(QUERIES, kind="query"))
    assert len(list((cache / "query-encoders").iterdir())) == 2

    # a damaged artifact is reported and not used
    artifact = next(p for p in (cache / "query-encoders").iterdir() if artifact_key(folder)[:32] in p.name)
    data = bytearray((artifact / "query.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (artifact / "query.safetensors").write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        damaged = load_fast(folder, device="cpu", cache_dir=cache)
    assert isinstance(damaged, M3Encoder)
    assert "damaged" in caplog.text


def test_unigram_search_equals_tokenizers(tiny_loaded, shared_dir, fast):
    """Ids of the exact Viterbi over the cached vocabulary equal tokenizers' on real text in many scripts."""
    from m3search.encoder.unigram import UnigramVocab

    data = json.loads(tiny_loaded.tokenizer.backend.to_str())
    vocab = UnigramVocab([p for p, _ in data["model"]["vocab"]], [s for _, s in data["model"]["vocab"]],
                         data["model"]["unk_id"])
    backend = tiny_loaded.tokenizer.backend
    texts = list(QUERIES) + ["\u0000 \ufffd", "🙂🙃🙂", "a" * 300, "ꙮꙮ ꙮ", "ﷺ ﷽", "\u200b\u200dzz"]
    corpora = sorted((Path(shared_dir) / "data" / "eval" / "miracl_like").glob("*/corpus.jsonl.gz"))
    assert len(corpora) >= 20
    for corpus in corpora:
        with gzip.open(corpus, "rt", encoding="utf-8") as f:
            texts += [json.loads(next(f))["text"] for _ in range(15)]
    want = tiny_loaded.tokenizer.content_ids(texts)
    got = []
    for text in texts:
        words = backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text))
        got.append([i for w, _ in words for i in vocab.segment(w)])
    mismatched = [t[:60] for t, a, b in zip(texts, got, want) if a != b]
    assert not mismatched
    lite = fast._lite_path()  # the cached form: binary search over pieces in code-point order
    assert [lite.content_ids(t) for t in texts] == want
    assert any(3 in ids for ids in want)  # the unknown-token path was exercised


@pytest.mark.slow
def test_cold_query_process_imports_no_torch(tiny_model_dir, tmp_path):
    """A fresh process opens an index built with an M3 folder and searches it without importing torch."""
    import m3search

    cache = tmp_path / "cache"
    env_cache = {"M3SEARCH_CACHE": str(cache)}
    import os

    os.environ.update(env_cache)
    try:
        docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(["cells and tables", "split a cell", "Zellen teilen"])]
        with m3search.build_index(tmp_path / "idx", docs, model=str(tiny_model_dir), device="cpu") as index:
            want = index.search("split cells", k=3)
    finally:
        del os.environ["M3SEARCH_CACHE"]
    code = (
        "import sys, json, m3search\n"
        f"with m3search.open_index({str(tmp_path / 'idx')!r}) as index:\n"
        "    hits = index.search('split cells', k=3)\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'onnxruntime': 'onnxruntime' in sys.modules,"
        " 'ids': [h.docid for h in hits],"
        " 'scores': [h.score for h in hits]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={**os.environ, **env_cache, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["torch"] is False
    assert result["onnxruntime"] is False  # the optional ONNX Runtime layers are for passages, not a cold query
    assert result["ids"] == [h.docid for h in want]
    np.testing.assert_allclose(result["scores"], [h.score for h in want], atol=1e-4)


@pytest.mark.slow
def test_default_model_numpy_path_matches_torch():
    """m3search-small (real weights, real tokenizer), when converted in this machine's cache."""
    from m3search.encoder.default_model import NAME, cache_root

    folders = sorted((cache_root() / "models").glob(f"{NAME}-v*")) if (cache_root() / "models").is_dir() else []
    if not folders:
        pytest.skip("m3search-small is not converted in the m3search cache")
    from m3search.encoder.fast_query import FastQueryEncoder, load_fast
    from m3search.encoder.m3 import M3Encoder

    folder = folders[-1]
    load_fast(folder, device="cpu")
    fast = load_fast(folder, device="cpu")
    assert isinstance(fast, FastQueryEncoder)
    ref = M3Encoder.from_pretrained(folder, device="cpu")
    assert fast.identity == ref.identity
    for kind in ("query", "passage"):
        assert_same(fast.encode(QUERIES, kind=kind), ref.encode(QUERIES, kind=kind))
