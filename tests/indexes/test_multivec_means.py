"""The mean-vector candidate stage (format 4): stored means against numpy, the stage's top-k against an
exhaustive dequantized ranking, recall against exact MaxSim, older segments, merges, corruption, the knob."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.components import clustered_tokens, flip_bits, vectors_batch

from m3search.errors import IndexFormatError, InputError
from m3search.indexes.multivec import MultivecComponent
from m3search.indexes.multivec import component as mc
from m3search.indexes.multivec import generator as gen
from m3search.indexes.multivec import means as mv

D = 32
N_DOCS, N_QUERIES, K = 600, 30, 10
BASE = {"coarse_k": 64, "min_train_tokens": 2000, "train_tokens": 8000, "threads": 1, "compression": "rpq8"}


@pytest.fixture(scope="module")
def data():
    return clustered_tokens(N_DOCS, D, seed=11, n_queries=N_QUERIES)


@pytest.fixture(scope="module")
def built(tmp_path_factory, data):
    docs, lengths, *_ = data
    root = tmp_path_factory.mktemp("means")
    comp = MultivecComponent(BASE)
    meta = comp.build(root / "s", vectors_batch(multivec=docs, lengths=lengths), root / "shared")
    return comp, meta, root


@pytest.fixture(scope="module")
def seg(built):
    comp, meta, root = built
    return comp.open(root / "s", meta, root / "shared")


def reference_means(docs, lengths):
    """Unit mean vectors (zero rows for documents without tokens) and the means' norms, in float64."""
    off = np.concatenate([[0], np.cumsum(lengths)])
    means = np.stack([docs[a:b].astype(np.float64).mean(0) if b > a else np.zeros(docs.shape[1])
                      for a, b in zip(off[:-1], off[1:])])
    norms = np.linalg.norm(means, axis=1)
    return means / np.maximum(norms, 1e-30)[:, None], norms


def exact_maxsim_top(docs, lengths, q, q_lengths, k):
    """Reference: exact fp32 MaxSim of every query against every document, top-k ids."""
    off = np.concatenate([[0], np.cumsum(lengths)])
    q_off = np.concatenate([[0], np.cumsum(q_lengths)])
    sim = q @ docs.T
    out = []
    for i in range(len(q_lengths)):
        s = sim[q_off[i]:q_off[i + 1]]
        scores = np.array([s[:, a:b].max(axis=1).sum() if b > a else 0.0 for a, b in zip(off[:-1], off[1:])])
        out.append(np.argsort(-scores, kind="stable")[:k])
    return np.array(out)


def one(q, q_lengths, i):
    q_off = np.concatenate([[0], np.cumsum(q_lengths)])
    return q[q_off[i]:q_off[i + 1]]


def recall(I, ref):
    return float(np.mean([len(set(a[a >= 0].tolist()) & set(b.tolist())) / len(b) for a, b in zip(I, ref)]))


# -- what is stored ------------------------------------------------------------------------------

def test_stored_means_equal_numpy_within_quantization(tmp_path, data, built, monkeypatch):
    """Built with chunks of 1,000 tokens, so documents are cut across chunks: the streamed means still equal
    the reference, up to each row's int8 rounding (half its scale)."""
    docs, lengths, *_ = data
    comp, _, root = built
    monkeypatch.setattr(mc, "_CHUNK_TOKENS", 1000)
    meta = comp.build(tmp_path / "s", vectors_batch(multivec=docs, lengths=lengths), root / "shared")
    assert meta["version"] == 4 and {mv.MEANS, mv.MEANS_SCALE} <= set(meta["files"])
    reader = comp.open(tmp_path / "s", meta, root / "shared")
    codes, scales = np.asarray(reader.means[0]), reader.means[1]
    assert codes.dtype == np.int8 and codes.shape == (N_DOCS, D) and scales.shape == (N_DOCS, 2)
    unit, norms = reference_means(docs, lengths)
    err = np.abs(mv.dequantize(codes, scales) - unit).max(axis=1)
    assert np.all(err <= scales[:, 0] / 2 + 1e-6)
    np.testing.assert_allclose(scales[:, 1], norms, rtol=1e-5, atol=1e-6)
    empty = lengths == 0
    assert empty.any() and not codes[empty].any() and not scales[empty].any()
    assert np.abs(codes[~empty]).max(axis=1).min() == 127  # each row uses its whole int8 range


def test_mean_builder_is_independent_of_chunk_cuts(data):
    docs, lengths, *_ = data
    whole = mv.doc_means(docs, lengths)
    b = mv.MeanBuilder(lengths, D)
    for lo in range(0, len(docs), 37):
        b.add(docs[lo:lo + 37])
    cut = b.result()
    np.testing.assert_allclose(mv.dequantize(*cut), mv.dequantize(*whole), atol=1e-2)
    np.testing.assert_allclose(cut[1], whole[1], rtol=1e-5)
    with pytest.raises(InputError, match="tokens"):
        mv.MeanBuilder(lengths, D).result()  # no tokens given for documents that have some


# -- the stage's ranking -------------------------------------------------------------------------

def test_mean_stage_top_k_is_the_exhaustive_top_k_of_dequantized_scores(seg, data):
    *_, q, q_lengths = data
    rng = np.random.default_rng(3)
    deleted = rng.random(N_DOCS) < 0.2
    full = mv.dequantize(seg.means[0], seg.means[1]).astype(np.float64)
    for i in range(N_QUERIES):
        qi = one(q, q_lengths, i)
        est = seg.mean_estimates(qi, deleted)
        ref = full @ qi.sum(axis=0).astype(np.float64)
        np.testing.assert_allclose(est[~deleted], ref[~deleted], rtol=1e-4, atol=1e-4)
        assert np.all(np.isneginf(est[deleted]))
        for n in (1, 25, 100):
            top = gen.top_positions(est, n)
            want = np.argsort(-np.where(deleted, -np.inf, ref), kind="stable")[:n]
            assert len(top) == n and not deleted[top].any()
            # tolerant of ties and float rounding: the chosen scores are the best n scores
            np.testing.assert_allclose(np.sort(ref[top])[::-1], ref[want], atol=1e-4)


def test_means_add_candidates_and_recall_does_not_drop(seg, data):
    """A starved generator (few candidates, small pool): with mean candidates every document the generator
    re-scored is still re-scored, plus the means' top; recall against exact MaxSim does not drop."""
    docs, lengths, q, q_lengths = data
    ref = exact_maxsim_top(docs, lengths, q, q_lengths, K)
    knobs = dict(nprobe=1, candidates=K, pool=20)
    off, on = [], []
    _, I0 = seg.search(q, q_lengths, K, mean_candidates=0, scored=off, **knobs)
    _, I1 = seg.search(q, q_lengths, K, mean_candidates=40, scored=on, **knobs)
    for (qa, ids0, _), (qb, ids1, _) in zip(off, on):
        assert qa == qb and set(ids0.tolist()) <= set(ids1.tolist())
        top = gen.top_positions(seg.mean_estimates(one(q, q_lengths, qa), None), 40)
        assert set(top.tolist()) <= set(ids1.tolist()) and len(ids1) <= len(ids0) + 40
    r0, r1 = recall(I0, ref), recall(I1, ref)
    assert r1 >= r0 and r1 > 0.5, (r0, r1)


def test_defaults_use_the_means(seg, data):
    *_, q, q_lengths = data
    scored = []
    seg.search(q, q_lengths, K, candidates=K, pool=20, scored=scored)
    for qi, ids, _ in scored:
        top = gen.top_positions(seg.mean_estimates(one(q, q_lengths, qi), None), mv.DEFAULT_MEAN_CANDIDATES)
        assert set(top.tolist()) <= set(ids.tolist())
    assert seg.generator_settings()["generator_mean_candidates"] == mv.DEFAULT_MEAN_CANDIDATES


def test_by_default_the_stage_stays_off_where_its_scan_would_read_more_than_the_budget(seg, data, monkeypatch):
    """The scan reads n x d bytes per query: beyond DEFAULT_SCAN_BYTES the default is no mean stage (the
    generator's candidates alone), while an explicit mean_candidates still runs it."""
    *_, q, q_lengths = data
    assert mv.default_mean_candidates(seg.n_docs, seg.dim) == mv.DEFAULT_MEAN_CANDIDATES
    monkeypatch.setattr(mv, "DEFAULT_SCAN_BYTES", seg.n_docs * seg.dim - 1)
    assert mv.default_mean_candidates(seg.n_docs, seg.dim) == 0
    assert seg.generator_settings()["generator_mean_candidates"] == 0
    knobs = {"candidates": K, "pool": 20}
    runs = {}
    for name, value in (("default", None), ("off", 0), ("on", mv.DEFAULT_MEAN_CANDIDATES)):
        scored = []
        runs[name] = (*seg.search(q, q_lengths, K, mean_candidates=value, scored=scored, **knobs), scored)
    np.testing.assert_array_equal(runs["default"][1], runs["off"][1])
    assert [ids.tolist() for _, ids, _ in runs["default"][2]] == [ids.tolist() for _, ids, _ in runs["off"][2]]
    assert any(len(on[1]) > len(off[1]) for on, off in zip(runs["on"][2], runs["off"][2]))  # it still runs when asked


# -- older segments, merges, damage ----------------------------------------------------------------

def as_version_3(path):
    """Rewrite a segment as format 3 wrote it: no mean vectors."""
    header = json.loads((path / "multivec.json").read_text())
    for name in (mv.MEANS, mv.MEANS_SCALE):
        header["nbytes"] -= header["files"].pop(name)["bytes"]
        (path / name).unlink()
    (path / "multivec.json").write_text(json.dumps({**header, "version": 3}))


def test_version_3_segment_opens_and_searches_without_the_stage(tmp_path, data, built, seg):
    docs, lengths, q, q_lengths = data
    comp, _, root = built
    comp.build(tmp_path / "s", vectors_batch(multivec=docs, lengths=lengths), root / "shared")  # seg's codec
    as_version_3(tmp_path / "s")
    old = comp.open(tmp_path / "s", {}, root / "shared")
    assert old.means is None and old.generator_settings()["generator_mean_candidates"] == 0
    assert np.all(np.isneginf(old.mean_estimates(q[:3], None)))
    knobs = dict(nprobe=1, candidates=K, pool=20)
    D3, I3 = old.search(q, q_lengths, K, mean_candidates=100, **knobs)
    D4, I4 = seg.search(q, q_lengths, K, mean_candidates=0, **knobs)  # same codes (same seed), no means
    np.testing.assert_array_equal(I3, I4)
    np.testing.assert_allclose(D3, D4)


def _build(comp, path, shared, docs, lengths, ids):
    off = np.concatenate([[0], np.cumsum(lengths)])
    vecs = np.concatenate([docs[off[i]:off[i + 1]] for i in ids]) if len(ids) else np.zeros((0, D), np.float32)
    meta = comp.build(path, vectors_batch(multivec=vecs, lengths=lengths[ids]), shared)
    return comp.open(path, meta, shared)


def test_merge_keeps_the_means_of_a_fresh_build(tmp_path, data, built):
    docs, lengths, *_ = data
    comp, _, root = built
    shared = root / "shared"  # the codec exists: every segment below uses it
    a = _build(comp, tmp_path / "a", shared, docs, lengths, np.arange(0, 300))
    b = _build(comp, tmp_path / "b", shared, docs, lengths, np.arange(300, N_DOCS))
    keep = [np.arange(0, 300, 2), np.arange(0, 300, 3)]
    meta = comp.merge(tmp_path / "m", [a, b], keep, shared)
    merged = comp.open(tmp_path / "m", meta, shared)
    fresh = _build(comp, tmp_path / "f", shared, docs, lengths, np.concatenate([keep[0], 300 + keep[1]]))
    np.testing.assert_array_equal(np.asarray(merged.means[0]), np.asarray(fresh.means[0]))
    np.testing.assert_array_equal(merged.means[1], fresh.means[1])


def test_merge_of_a_version_3_segment_computes_means_from_decoded_tokens(tmp_path, data, built):
    docs, lengths, *_ = data
    comp, _, root = built
    shared = root / "shared"
    ids = np.arange(100, 400)
    _build(comp, tmp_path / "old", shared, docs, lengths, ids)
    as_version_3(tmp_path / "old")
    old = comp.open(tmp_path / "old", {}, shared)
    new = _build(comp, tmp_path / "new", shared, docs, lengths, np.arange(0, 100))
    meta = comp.merge(tmp_path / "m", [old, new], [np.arange(300), np.arange(100)], shared)
    merged = comp.open(tmp_path / "m", meta, shared)
    got = mv.dequantize(merged.means[0], merged.means[1])
    np.testing.assert_array_equal(np.asarray(merged.means[0][300:]), np.asarray(new.means[0]))  # copied
    decoded = mv.dequantize(*mv.doc_means(*old.token_vectors(np.arange(300))))
    np.testing.assert_allclose(got[:300], decoded, atol=1e-6)
    exact, _ = reference_means(docs, lengths)
    full = lengths[ids] > 0
    cos = np.einsum("nd,nd->n", got[:300][full], exact[ids][full])
    assert cos.min() > 0.9  # the decoded tokens' means point where the originals' do


def test_corrupt_means_are_detected(tmp_path, data, built):
    docs, lengths, q, q_lengths = data
    comp, _, root = built
    meta = comp.build(tmp_path / "s", vectors_batch(multivec=docs, lengths=lengths), root / "shared")
    flip_bits(tmp_path / "s" / mv.MEANS, 0x40, at=100)
    reader = comp.open(tmp_path / "s", meta, root / "shared")  # data blocks are checked when read
    reader.search(q, q_lengths, K, mean_candidates=0)  # the stage off: the means are not read
    with pytest.raises(IndexFormatError, match="means.arr.*checksum"):
        reader.search(q, q_lengths, K, mean_candidates=50)
    flip_bits(tmp_path / "s" / mv.MEANS_SCALE, 0x01, at=3)
    with pytest.raises(IndexFormatError, match="means_scale.arr.*checksum"):
        comp.open(tmp_path / "s", meta, root / "shared")


# -- the knob --------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [-1, mv.MAX_MEAN_CANDIDATES + 1, 2.5, True, "100"])
def test_bad_mean_candidates_are_refused_in_one_line(seg, data, value):
    *_, q, q_lengths = data
    with pytest.raises(InputError, match="mean_candidates must be an integer in \\[0, 100000\\]") as e:
        seg.search(q, q_lengths, K, mean_candidates=value)
    assert "\n" not in str(e.value) and repr(value) in str(e.value)


@pytest.fixture(scope="module")
def api_index(tmp_path_factory):
    import m3search
    from helpers.sample_docs import MODEL, sample_docs

    index = m3search.build_index(tmp_path_factory.mktemp("api") / "idx", sample_docs("id"), model=MODEL)
    yield index, MODEL
    index.close()


def test_api_and_cli_take_the_knob(api_index, monkeypatch):
    from click.testing import CliRunner

    from m3search.cli import main

    index, model = api_index
    base = index.search("delete a column", k=3, mode="multivec")
    same = index.search("delete a column", k=3, mode="multivec", params={"multivec": {"mean_candidates": 0}})
    assert [h.docid for h in same] == [h.docid for h in base]  # a small index is scored exhaustively
    with pytest.raises(InputError, match="mean_candidates"):
        index.search("delete a column", mode="multivec", params={"multivec": {"mean_candidates": -5}})
    monkeypatch.setenv("M3SEARCH_MODEL", model)
    run = lambda *args: CliRunner().invoke(main, ["query", str(index.path), "delete a column", "--mode",  # noqa: E731
                                                  "multivec", "-k", "3", "--json", *args])
    ok = run("--param", "multivec.mean_candidates=200")
    assert ok.exit_code == 0 and [h["docid"] for h in json.loads(ok.stdout)["hits"]] == [h.docid for h in base]
    bad = run("--param", "multivec.mean_candidates=-1")
    assert bad.exit_code == 1 and "mean_candidates" in bad.stderr and "Traceback" not in bad.output
    assert len(bad.stderr.strip().splitlines()) == 1
