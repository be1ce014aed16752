"""The multi-vector component against exact MaxSim (m3search.scoring) on seeded clustered token vectors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.components import clustered_tokens, flip_bits, truncate, vectors_batch

from m3search import scoring
from m3search.errors import ConfigError, IndexFormatError, InputError
from m3search.indexes.multivec import Codec, MultivecComponent
from m3search.indexes.multivec.codecs import coarse_ids
from m3search.indexes.multivec.config import validate_config

D = 32
N_DOCS, N_QUERIES = 500, 40
BASE = {"coarse_k": 64, "min_train_tokens": 2000, "train_tokens": 8000, "threads": 1}

# Floors measured on this data with margin (seeded: these are regressions, not luck). Top-10 agreement of
# compressed MaxSim re-ranking with exact MaxSim, and the largest score error.
FLOORS = {
    "fp16": (1.0, 1e-3),
    "sq8": (0.95, 0.01),
    "sq4": (0.85, 0.05),
    "pq8": (0.70, 0.15),
    "rpq8": (0.70, 0.15),
}


@pytest.fixture(scope="module")
def data():
    docs, lengths, q, q_lengths = clustered_tokens(N_DOCS, D, seed=5, n_queries=N_QUERIES)
    exact = scoring.multivec_scores(
        vectors_batch(multivec=q, lengths=q_lengths), vectors_batch(multivec=docs, lengths=lengths)
    )
    return docs, lengths, q, q_lengths, exact


@pytest.fixture(scope="module")
def segment(tmp_path_factory, data):
    """segment(compression) -> a reader over all documents, built once per module (training costs)."""
    docs, lengths, *_ = data
    root, built = tmp_path_factory.mktemp("segments"), {}

    def get(compression):
        if compression not in built:
            comp = MultivecComponent({**BASE, "compression": compression})
            path, shared = root / compression, root / f"shared-{compression}"
            meta = comp.build(path, vectors_batch(multivec=docs, lengths=lengths), shared)
            built[compression] = comp.open(path, meta, shared)
        return built[compression]

    return get


@pytest.fixture
def build(tmp_path):
    def build(docs, lengths, config=None, name="seg", shared="shared"):
        comp = MultivecComponent({**BASE, **(config or {})})
        meta = comp.build(tmp_path / name, vectors_batch(multivec=docs, lengths=lengths), tmp_path / shared)
        return comp.open(tmp_path / name, meta, tmp_path / shared)

    return build


def all_pairs(reader, q, q_lengths, **kw):
    m, n = len(q_lengths), reader.n_docs
    qi, ids = np.repeat(np.arange(m), n), np.tile(np.arange(n), m)
    return reader.score_pairs(q, q_lengths, qi, ids, **kw).reshape(m, n)


def top10_agreement(scores, exact):
    return np.mean([len(set(np.argsort(-e)[:10]) & set(np.argsort(-s)[:10])) / 10 for s, e in zip(scores, exact)])


@pytest.mark.parametrize("compression", list(FLOORS))
def test_compressed_maxsim_within_tolerance_of_exact(segment, data, compression):
    docs, lengths, q, q_lengths, exact = data
    r = segment(compression)
    assert r.codec.name == compression
    got = all_pairs(r, q, q_lengths)
    floor, tol = FLOORS[compression]
    assert np.abs(got - exact).max() <= tol
    assert top10_agreement(got, exact) >= floor
    assert (got[:, :2] == 0).all()  # documents without tokens


@pytest.mark.parametrize("compression", ["pq8", "rpq8"])
def test_lookup_tables_equal_decompression(segment, data, compression):
    docs, lengths, q, q_lengths, _ = data
    r = segment(compression)
    np.testing.assert_allclose(all_pairs(r, q, q_lengths, scorer="lut"), all_pairs(r, q, q_lengths, scorer="decode"),
                               atol=1e-5)


def test_score_pairs_in_any_order_and_with_repeats(segment, data):
    docs, lengths, q, q_lengths, exact = data
    r = segment("fp16")
    rng = np.random.default_rng(0)
    qi, ids = rng.integers(0, N_QUERIES, 700), rng.integers(0, N_DOCS, 700)
    np.testing.assert_allclose(r.score_pairs(q, q_lengths, qi, ids), exact[qi, ids], atol=1e-3)
    assert r.score_pairs(q, q_lengths, np.zeros(0, np.int64), np.zeros(0, np.int64)).shape == (0,)


def test_codec_is_trained_once_and_reused(build, data, tmp_path):
    docs, lengths, q, q_lengths, _ = data
    half = int(lengths[:250].sum())
    a = build(docs[:half], lengths[:250], {"compression": "rpq8"}, "a")
    codec_dir = tmp_path / "shared" / "codec"
    before = {f.name: f.read_bytes() for f in codec_dir.iterdir()}
    b = build(docs[half:], lengths[250:], {"compression": "rpq8"}, "b")
    assert a.codec.codec_id == b.codec.codec_id
    assert {f.name: f.read_bytes() for f in codec_dir.iterdir()} == before  # never rewritten
    # merging segments of one codec copies their codes
    comp = MultivecComponent({**BASE, "compression": "rpq8"})
    meta = comp.merge(tmp_path / "m", [a, b], [np.arange(250), np.arange(250)], tmp_path / "shared")
    m = comp.open(tmp_path / "m", meta, tmp_path / "shared")
    np.testing.assert_array_equal(np.asarray(m.codes), np.concatenate([a.codes, b.codes]))
    whole = build(docs, lengths, {"compression": "rpq8"}, "whole")
    np.testing.assert_array_equal(np.asarray(whole.codes), np.asarray(m.codes))


def test_segments_before_the_codec_store_fp16_and_are_reencoded_on_merge(build, data, tmp_path):
    docs, lengths, q, q_lengths, exact = data
    cut = int(lengths[:40].sum())  # fewer tokens than min_train_tokens
    small = build(docs[:cut], lengths[:40], {"compression": "pq8"}, "small")
    assert small.codec.name == "fp16" and not (tmp_path / "shared" / "codec").exists()
    big = build(docs[cut:], lengths[40:], {"compression": "pq8"}, "big")
    assert big.codec.name == "pq8"
    comp = MultivecComponent({**BASE, "compression": "pq8"})
    keep = [np.arange(0, 40, 2), np.arange(0, 460, 3)]
    meta = comp.merge(tmp_path / "m", [small, big], keep, tmp_path / "shared")
    merged = comp.open(tmp_path / "m", meta, tmp_path / "shared")
    assert merged.codec.codec_id == big.codec.codec_id
    kept = np.concatenate([keep[0], 40 + keep[1]])
    want_codes = np.concatenate([big.codec.encode(small.token_vectors(keep[0])[0]), big.token_codes(keep[1])[0]])
    np.testing.assert_array_equal(np.asarray(merged.codes), want_codes)
    np.testing.assert_array_equal(merged.doc_lengths(np.arange(len(kept))), lengths[kept])
    got = all_pairs(merged, q, q_lengths)
    assert top10_agreement(got, exact[:, kept]) >= FLOORS["pq8"][0]


def test_a_merge_of_fp16_segments_trains_the_codec_on_whole_documents_drawn_at_random(build, data, tmp_path):
    """The merge's training sample, rebuilt here from the readers' decoded tokens, gives the same codec."""
    docs, lengths, *_ = data
    cut = int(lengths[:40].sum())
    end = int(lengths[:80].sum())
    biggest = max(cut, end - cut)  # each segment too small to train a codec, both together enough
    config = {"compression": "pq8", "min_train_tokens": biggest + 1, "train_tokens": int(1.2 * biggest)}
    a = build(docs[:cut], lengths[:40], config, "a")
    b = build(docs[cut:end], lengths[40:80], config, "b")
    assert a.codec.name == b.codec.name == "fp16"
    comp = MultivecComponent({**BASE, **config})
    keep = [np.arange(0, 40, 2), np.arange(1, 40)]
    meta = comp.merge(tmp_path / "m", [a, b], keep, tmp_path / "shared")
    merged = comp.open(tmp_path / "m", meta, tmp_path / "shared")
    assert merged.codec.name == "pq8"

    kept_docs = [v for r, k in zip((a, b), keep) for v in np.split(r.token_vectors(k)[0], np.cumsum(r.doc_lengths(k))[:-1])]
    kept_lengths = np.array([len(v) for v in kept_docs])
    rng = np.random.default_rng(comp.config["seed"])
    order = rng.permutation(len(kept_docs))
    n_take = int(np.searchsorted(np.cumsum(kept_lengths[order]), config["train_tokens"])) + 1
    sample = np.concatenate([kept_docs[i] for i in np.sort(order[:n_take])])
    assert config["train_tokens"] <= len(sample) < kept_lengths.sum()  # a real subset
    ref = MultivecComponent({**BASE, **config}).codec(tmp_path / "ref", D, int(kept_lengths.sum()), lambda: sample)
    assert ref.codec_id == merged.codec.codec_id


def test_merge_with_keep_masks_equals_building_the_kept_documents(build, data, tmp_path):
    docs, lengths, q, q_lengths, _ = data
    cut = int(lengths[:300].sum())
    a = build(docs[:cut], lengths[:300], {"compression": "sq8"}, "a")
    b = build(docs[cut:], lengths[300:], {"compression": "sq8"}, "b")
    keep = [np.arange(1, 300, 2), np.array([0, 5, 199])]
    comp = MultivecComponent({**BASE, "compression": "sq8"})
    m = comp.open(tmp_path / "m", comp.merge(tmp_path / "m", [a, b], keep, tmp_path / "shared"), tmp_path / "shared")
    kept = np.concatenate([keep[0], 300 + keep[1]])
    vecs = np.concatenate([docs[o : o + n] for o, n in zip(np.r_[0, np.cumsum(lengths)][kept], lengths[kept])])
    direct = build(vecs, lengths[kept], {"compression": "sq8"}, "direct")
    np.testing.assert_array_equal(np.asarray(m.codes), np.asarray(direct.codes))
    np.testing.assert_array_equal(m.offsets, direct.offsets)
    np.testing.assert_allclose(all_pairs(m, q, q_lengths), all_pairs(direct, q, q_lengths), atol=1e-6)


def test_fidelity_reports_compression_and_reconstruction(segment):
    f = segment("pq8").fidelity()
    assert f["compression"] == "pq8" and f["bytes_per_token"] == 8 and f["fp16_ratio"] == 8 / (2 * D)
    assert 0.7 < f["mean_cosine"] < 0.99 and f["ip_error_std"] > 0
    assert segment("sq8").fidelity()["mean_cosine"] > segment("sq4").fidelity()["mean_cosine"] > f["mean_cosine"]
    assert segment("fp16").fidelity()["mean_cosine"] > 0.9999


def test_token_vectors_round_trip(segment, data):
    docs, lengths, *_ = data
    r = segment("fp16")
    vecs, lens = r.token_vectors(np.array([3, 2, 7]))
    off = np.r_[0, np.cumsum(lengths)]
    np.testing.assert_array_equal(lens, lengths[[3, 2, 7]])
    want = np.concatenate([docs[off[i] : off[i + 1]] for i in (3, 2, 7)])
    np.testing.assert_array_equal(vecs, want.astype(np.float16).astype(np.float32))


# -- formats and corruption ----------------------------------------------------------------------

def _seg(tmp_path, data, compression="pq8"):
    docs, lengths, *_ = data
    comp = MultivecComponent({**BASE, "compression": compression})
    meta = comp.build(tmp_path / "seg", vectors_batch(multivec=docs, lengths=lengths), tmp_path / "shared")
    return comp, meta, tmp_path / "seg"


def test_truncated_codes_are_refused(tmp_path, data):
    comp, meta, path = _seg(tmp_path, data)
    truncate(path / "codes.arr", 16)
    with pytest.raises(IndexFormatError, match="truncated"):
        comp.open(path, meta, tmp_path / "shared")


def test_corrupt_offsets_are_refused(tmp_path, data):
    comp, meta, path = _seg(tmp_path, data)
    flip_bits(path / "offsets.arr", 0x10, at=-3)
    with pytest.raises(IndexFormatError, match="checksum"):
        comp.open(path, meta, tmp_path / "shared")


def test_missing_or_corrupt_codec_is_refused(tmp_path, data):
    comp, meta, path = _seg(tmp_path, data)
    flip_bits(tmp_path / "shared" / "codec" / "pq_centroids.arr", 0x01, at=-5)
    with pytest.raises(IndexFormatError, match="checksum"):
        MultivecComponent(BASE).open(path, meta, tmp_path / "shared")
    with pytest.raises(IndexFormatError, match="codec"):
        MultivecComponent(BASE).open(path, meta, tmp_path / "elsewhere")


def test_unknown_version_is_refused(tmp_path, data):
    comp, meta, path = _seg(tmp_path, data, "sq8")
    header = json.loads((path / "multivec.json").read_text())
    (path / "multivec.json").write_text(json.dumps({**header, "version": 5}))
    with pytest.raises(IndexFormatError, match="version 5"):
        comp.open(path, {}, tmp_path / "shared")
    (path / "multivec.json").write_text(json.dumps({**header, "format": "something.else"}))
    with pytest.raises(IndexFormatError, match="format"):
        comp.open(path, {}, tmp_path / "shared")


# -- configuration and inputs --------------------------------------------------------------------

@pytest.mark.parametrize(
    "config, key",
    [({"compression": "zip"}, "compression"), ({"compression": "pq0"}, "compression"),
     ({"coarse_k": 70000}, "coarse_k"), ({"scorer": "fast"}, "scorer"), ({"threads": 0}, "threads"),
     ({"compresion": "sq8"}, "compresion")],
)
def test_bad_config_names_the_key(config, key):
    with pytest.raises(ConfigError, match=key):
        validate_config(config)


def test_sub_quantizers_must_divide_the_dimension(tmp_path, data):
    docs, lengths, *_ = data
    comp = MultivecComponent({**BASE, "compression": "pq7"})
    with pytest.raises(ConfigError, match="divide"):
        comp.build(tmp_path / "seg", vectors_batch(multivec=docs, lengths=lengths), tmp_path / "shared")


def test_bad_score_inputs_are_refused(segment, data):
    docs, lengths, q, q_lengths, _ = data
    r = segment("sq8")
    one = np.array([0])
    with pytest.raises(InputError, match="q_vecs"):
        r.score_pairs(q[:, :8], q_lengths, one, one)
    with pytest.raises(InputError, match="q_lengths"):
        r.score_pairs(q, q_lengths + 1, one, one)
    with pytest.raises(InputError, match="ids"):
        r.score_pairs(q, q_lengths, one, np.array([N_DOCS]))
    with pytest.raises(InputError, match="lut"):
        r.score_pairs(q, q_lengths, one, one, scorer="lut")


def test_codec_id_follows_replaced_arrays(data):
    docs, *_ = data
    codec = Codec.train("pq4", docs[:600])
    before = codec.codec_id
    assert codec.codec_id == before  # remembered, not recomputed: the same value
    codec.arrays["pq_centroids"] = codec.arrays["pq_centroids"] + 1e-3  # training replaces arrays
    assert codec.codec_id != before
    assert codec.codec_id == Codec("pq4", codec.dim, dict(codec.arrays)).codec_id


def test_lut_tables_kept_for_the_same_query_only(data):
    docs, *_ = data
    codec = Codec.train("rpq4", docs[:600], coarse_k=8)
    q, other = docs[:3], docs[3:6]
    first = codec.lut_tables(q)
    assert codec.lut_tables(q.copy())[0] is first[0]  # same tokens: the kept tables
    fresh = Codec("rpq4", codec.dim, dict(codec.arrays)).lut_tables(other)
    np.testing.assert_array_equal(codec.lut_tables(other)[0], fresh[0])  # another query: its own
    np.testing.assert_array_equal(codec.lut_tables(other)[1], fresh[1])
    codec.arrays["pq_centroids"] = codec.arrays["pq_centroids"] * 2  # replaced arrays: computed again
    np.testing.assert_allclose(codec.lut_tables(other)[0], 2 * fresh[0], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_codec_save_load_round_trip(tmp_path, data):
    docs, *_ = data
    codec = Codec.train("ropq4", docs[:1500], coarse_k=16)  # every kind of learned array
    header = codec.save(tmp_path)
    again = Codec.load(tmp_path, header)
    assert again.codec_id == codec.codec_id
    np.testing.assert_array_equal(again.encode(docs[:100]), codec.encode(docs[:100]))
    assert set(codec.arrays) == {"coarse", "rotation", "pq_centroids"}
    tables, coarse = codec.lut_tables(docs[:3])  # rotation + residual: tables still equal decoding
    c = codec.encode(docs[3:50])
    via_tables = coarse[coarse_ids(c)] + sum(tables[m, c[:, 2 + m]] for m in range(4))
    np.testing.assert_allclose(via_tables, codec.decode(c) @ docs[:3].T, atol=1e-5)


def test_rescaling_unit_norm_reconstructions_reduces_score_error(tmp_path, segment, data):
    docs, lengths, q, q_lengths, exact = data
    rescaled = segment("pq8")
    assert rescaled.rescale and rescaled.fidelity()["rescaled_to_unit_norm"]
    comp = MultivecComponent({**BASE, "compression": "pq8", "rescale": False})
    plain = comp.open(rescaled.path, {}, rescaled.path.parent / "shared-pq8")  # same codes, read without it
    assert not plain.rescale
    err_rescaled = np.abs(all_pairs(rescaled, q, q_lengths) - exact).mean()
    err_plain = np.abs(all_pairs(plain, q, q_lengths) - exact).mean()
    assert err_rescaled < 0.9 * err_plain  # measured 0.82
    vecs, _ = rescaled.token_vectors(np.arange(2, 10))
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_inputs_not_unit_norm_are_not_rescaled(build, data):
    docs, lengths, *_ = data
    r = build(docs * 2.0, lengths, {"compression": "pq8"})
    assert not r.header["unit_norm"] and not r.rescale


@pytest.mark.parametrize("scorer", ["lut", "decode"])
def test_queries_without_tokens_score_zero(segment, data, scorer):
    docs, lengths, q, q_lengths, exact = data
    r = segment("pq8")
    q_len = np.array([0, q_lengths[0], 0], np.int64)
    qi, ids = np.array([0, 1, 2, 1]), np.array([5, 5, 6, 7])
    got = r.score_pairs(q[: q_lengths[0]], q_len, qi, ids, scorer=scorer)
    assert got[0] == 0 and got[2] == 0
    np.testing.assert_allclose(got[[1, 3]], exact[0, [5, 7]], atol=FLOORS["pq8"][1])


def test_residual_codes_store_a_norm_byte_that_restores_token_norms(build, data):
    docs, lengths, q, q_lengths, exact = data
    scale = np.random.default_rng(3).uniform(0.5, 2.0, len(docs)).astype(np.float32)[:, None]
    for x, unit in ((docs, True), (docs * scale, False)):
        with_byte = build(x, lengths, {"compression": "rpq8"}, name=f"a{unit}", shared=f"sa{unit}")
        without = build(x, lengths, {"compression": "rpq8", "rescale": False}, name=f"b{unit}", shared=f"sb{unit}")
        assert with_byte.codec.has_norm_byte and not without.codec.has_norm_byte
        assert with_byte.fidelity()["norm_byte"] and not without.fidelity()["norm_byte"]  # what `info` shows
        assert with_byte.codec.code_size == without.codec.code_size + 1 == 8 + 2 + 1
        ids = np.arange(len(lengths))
        lo, hi = with_byte.codec.arrays["norm_range"]
        half_step = np.expm1((hi - lo) / 255 / 2)  # the log-quantized ratio is off by at most half a level
        got = np.linalg.norm(with_byte.token_vectors(ids)[0], axis=1)
        np.testing.assert_allclose(got, np.linalg.norm(x, axis=1), rtol=half_step + 1e-5)
        assert np.abs(np.linalg.norm(without.token_vectors(ids)[0], axis=1) / np.linalg.norm(x, axis=1) - 1).mean() > 0.02
        if unit:
            errs = [np.abs(all_pairs(r, q, q_lengths, scorer=s) - exact).mean()
                    for r in (with_byte, without) for s in ("lut", "decode")]
            assert abs(errs[0] - errs[1]) < 1e-5 and errs[0] < 0.9 * errs[2]
