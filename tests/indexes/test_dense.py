"""The dense component against exact inner-product search over its fp16 store, on seeded clustered data."""
from __future__ import annotations

import numpy as np
import pytest
from helpers.components import clustered_unit, flip_bits, truncate, vectors_batch

from m3search import scoring
from m3search.errors import ConfigError, IndexFormatError, InputError
from m3search.indexes.dense import DenseComponent, choose_structure
from m3search.indexes.dense.config import validate_config

D = 32


@pytest.fixture(scope="module")
def data():
    xb = clustered_unit(6000, D, n_clusters=40, spread=0.35, seed=3)
    rng = np.random.default_rng(4)
    xq = xb[rng.choice(len(xb), 40, replace=False)] + 0.05 * rng.standard_normal((40, D)).astype(np.float32)
    return xb, xq.astype(np.float32)


@pytest.fixture
def build(tmp_path):
    def build(x, config=None, name="seg"):
        comp = DenseComponent({"threads": 1, **(config or {})})  # 1 thread: fast on shared cores
        meta = comp.build(tmp_path / name, vectors_batch(dense=x), tmp_path / "shared")
        return comp.open(tmp_path / name, meta, tmp_path / "shared")

    return build


def exact(xb, xq, k, deleted=None):
    """Exact top-k over the fp16-rounded vectors (what every structure stores)."""
    s = scoring.dense_scores(xq, xb.astype(np.float16).astype(np.float32))
    if deleted is not None:
        s[:, deleted] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), order


def assert_same_topk(D1, I1, D2, I2, atol=1e-5):
    """Equal scores; ids equal except among scores tied (within atol) with the k-th (faiss contrib's habit)."""
    np.testing.assert_allclose(D1, D2, atol=atol)
    for d, a, b in zip(D1, I1, I2):
        clear = d > d[-1] + 2 * atol  # clearly inside the top-k: must be in both
        assert set(a[clear]) <= set(b), (a, b)
        assert set(b[clear]) <= set(a), (a, b)


def recall(I, Iref):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(I, Iref)])


def test_flat_is_exact(build, data):
    xb, xq = data
    r = build(xb)
    assert r.describe()["structure"] == "flat"
    assert_same_topk(*exact(xb, xq, 10), *r.search(xq, 10))


@pytest.mark.parametrize("kind", ["ivfflat", "ivfpq", "ivfpqfs"])
def test_ivf_visiting_every_list_equals_flat(build, data, kind):
    xb, xq = data
    r = build(xb, {"index": kind, "nlist": 16, "pq_m": 8})
    assert r.describe()["structure"] == kind
    # all lists probed and (for PQ) the re-ranking depth covering the whole segment: exact
    D, I = r.search(xq, 10, nprobe=16, refine=len(xb))
    assert_same_topk(*exact(xb, xq, 10), D, I)


def test_ivfpq_with_refine_meets_recall_floor(build, data):
    xb, xq = data
    _, Iref = exact(xb, xq, 10)
    r = build(xb, {"index": "ivfpqfs", "nlist": 32, "pq_m": 8})
    coarse = recall(r.search(xq, 10, nprobe=8, refine=0)[1], Iref)
    refined = recall(r.search(xq, 10, nprobe=8, refine=200)[1], Iref)
    assert refined >= 0.95
    assert refined > coarse  # 4-byte PQ codes alone are far from exact: the re-ranking is doing the work
    D, I = r.search(xq, 10, nprobe=8, refine=200)
    np.testing.assert_allclose(D.ravel(), r.score_pairs(xq, np.repeat(np.arange(len(xq)), 10), I.ravel()), atol=1e-6)


@pytest.mark.parametrize("kind", ["flat", "ivfpqfs", "hnsw"])
def test_deleted_documents_never_returned_and_k_live_results_kept(build, data, kind):
    xb, xq = data
    r = build(xb, {"index": kind, "nlist": 16, "pq_m": 8})
    deleted = np.zeros(len(xb), bool)
    deleted[exact(xb, xq, 5)[1].ravel()] = True  # every query's best five
    deleted[::3] = True
    D, I = r.search(xq, 10, deleted=deleted, nprobe=16, refine=len(xb), ef_search=len(xb))
    assert (I >= 0).all() and not deleted[I].any()
    assert_same_topk(*exact(xb, xq, 10, deleted), D, I)


def test_fewer_live_documents_than_k_are_padded(build, data):
    xb, xq = data
    r = build(xb[:50])
    deleted = np.ones(50, bool)
    deleted[[3, 7, 11]] = False
    D, I = r.search(xq[:2], 5, deleted=deleted)
    assert sorted(I[0, :3]) == [3, 7, 11] and (I[:, 3:] == -1).all() and np.isneginf(D[:, 3:]).all()
    D, I = r.search(xq[:2], 5, deleted=np.ones(50, bool))
    assert (I == -1).all()


def test_score_pairs_and_vectors_match_reference(build, data):
    xb, xq = data
    r = build(xb, {"index": "ivfpqfs", "nlist": 16, "pq_m": 8})
    rng = np.random.default_rng(0)
    qi, ids = rng.integers(0, len(xq), 500), rng.integers(0, len(xb), 500)
    got = r.score_pairs(xq, qi, ids)
    want = np.einsum("pd,pd->p", xq[qi], xb[ids])
    np.testing.assert_allclose(got, want, atol=2e-3)  # fp16 storage
    np.testing.assert_array_equal(r.vectors(ids), xb[ids].astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("config", [{}, {"index": "ivfpqfs", "nlist": 16, "pq_m": 8}])
def test_merge_with_keep_masks_equals_building_the_kept_documents(build, data, tmp_path, config):
    xb, xq = data
    a, b = build(xb[:3500], config, "a"), build(xb[3500:], config, "b")
    keep_a, keep_b = np.arange(0, 3500, 2), np.arange(0, 2500, 3)
    comp = DenseComponent({"threads": 1, **config})
    meta = comp.merge(tmp_path / "m", [a, b], [keep_a, keep_b], tmp_path / "shared")
    merged = comp.open(tmp_path / "m", meta, tmp_path / "shared")
    direct = build(np.concatenate([xb[:3500][keep_a], xb[3500:][keep_b]]), config, "direct")
    assert merged.n_docs == direct.n_docs == len(keep_a) + len(keep_b)
    np.testing.assert_array_equal(merged.vectors(np.arange(merged.n_docs)), direct.vectors(np.arange(direct.n_docs)))
    for params in ({}, {"nprobe": 4, "refine": 0}):
        D1, I1 = merged.search(xq, 10, **params)
        D2, I2 = direct.search(xq, 10, **params)
        np.testing.assert_array_equal(I1, I2)
        np.testing.assert_allclose(D1, D2, atol=1e-6)


def test_nbytes_counts_the_files(build, data):
    xb, _ = data
    r = build(xb, {"index": "ivfpqfs", "nlist": 16, "pq_m": 8})
    assert r.nbytes() == sum(f.stat().st_size for f in r.path.iterdir())
    assert r.nbytes() > xb.shape[0] * D * 2  # the fp16 store plus the IVF codes


# -- formats and corruption ----------------------------------------------------------------------

def _built(tmp_path, data, config=None):
    comp = DenseComponent({"threads": 1, **(config or {})})
    meta = comp.build(tmp_path / "seg", vectors_batch(dense=data[0][:2000]), tmp_path / "shared")
    return comp, meta, tmp_path / "seg"


@pytest.mark.parametrize("victim", ["vectors.arr", "ivf.faiss"])
def test_truncated_file_is_refused(tmp_path, data, victim):
    comp, meta, path = _built(tmp_path, data, {"index": "ivfpqfs", "nlist": 8, "pq_m": 8})
    truncate(path / victim, 100)
    with pytest.raises(IndexFormatError, match="truncated"):
        comp.open(path, meta, tmp_path / "shared")


def test_flipped_byte_is_refused(tmp_path, data):
    comp, meta, path = _built(tmp_path, data)
    flip_bits(path / "vectors.arr", 0xFF)  # in the data: found when the rows are first read
    reader = comp.open(path, meta, tmp_path / "shared")
    with pytest.raises(IndexFormatError, match=r"vectors.arr: bytes \d+\.\.\d+ fail their checksum"):
        reader.vectors(np.arange(reader.n_docs))
    with pytest.raises(IndexFormatError, match="checksum"):  # and on every later read: never served
        reader.search(np.ones((1, reader.d), np.float32), k=3)


def test_newer_version_and_missing_header_are_refused(tmp_path, data):
    import json

    comp, meta, path = _built(tmp_path, data)
    header = json.loads((path / "dense.json").read_text())
    (path / "dense.json").write_text(json.dumps({**header, "version": 99}))
    with pytest.raises(IndexFormatError, match="version 99"):
        comp.open(path, {}, tmp_path / "shared")
    (path / "dense.json").unlink()
    with pytest.raises(IndexFormatError, match="missing"):
        comp.open(path, {}, tmp_path / "shared")


def test_header_not_matching_index_metadata_is_refused(tmp_path, data):
    comp, meta, path = _built(tmp_path, data)
    with pytest.raises(IndexFormatError, match="metadata"):
        comp.open(path, {**meta, "n": meta["n"] + 1}, tmp_path / "shared")


# -- configuration and inputs --------------------------------------------------------------------

@pytest.mark.parametrize(
    "config, key",
    [({"nprobe": 0}, "nprobe"), ({"index": "hnswx"}, "index"), ({"hnsw_m": 1}, "hnsw_m"), ({"ef_search": 0}, "ef_search"), ({"nlist": "many"}, "nlist"),
     ({"refine": -1}, "refine"), ({"gpu": "maybe"}, "gpu"), ({"n_probe": 3}, "n_probe"), ({"nprobe": True}, "nprobe")],
)
def test_bad_config_names_the_key(config, key):
    with pytest.raises(ConfigError, match=key):
        validate_config(config)


def test_pq_m_must_divide_the_dimension():
    with pytest.raises(ConfigError, match="pq_m"):
        choose_structure(100_000, 1024, validate_config({"pq_m": 100, "index": "ivfpqfs"}))


def test_structure_follows_the_size():
    config = validate_config({})
    assert choose_structure(4_000, 1024, config).kind == "flat"
    assert choose_structure(50_000, 1024, config).factory == "HNSW32_SQfp16"
    assert choose_structure(1_000_000, 1024, config).factory == "HNSW32_SQfp16"
    s = choose_structure(1_000_000, 1024, validate_config({"hnsw_max_docs": 500_000}))
    assert (s.kind, s.nlist, s.pq_m, s.factory) == ("ivfpqfs", 1024, 256, "IVF1024,PQ256x4fs")
    assert choose_structure(200, 64, validate_config({"index": "ivfpq"})).kind == "flat"  # too few to train


def test_bad_queries_are_refused(build, data):
    xb, xq = data
    r = build(xb[:100])
    with pytest.raises(InputError, match=r"\(m, 32\)"):
        r.search(xq[:, :16], 5)
    with pytest.raises(InputError, match="k must"):
        r.search(xq, 0)
    with pytest.raises(InputError, match="deleted"):
        r.search(xq, 5, deleted=np.zeros(99, bool))
    with pytest.raises(InputError, match="ids"):
        r.score_pairs(xq, np.array([0]), np.array([100]))


@pytest.mark.parametrize("kind", ["flat", "ivfpq"])
def test_over_fetch_path_used_on_gpu_equals_selector_path(build, data, kind, monkeypatch):
    """GPU FAISS takes no id selectors; its over-fetch-and-filter path must give the selector's results.
    (No GPU here: the CPU index is driven through that path.)"""
    xb, xq = data
    r = build(xb, {"index": kind, "nlist": 16, "pq_m": 8})
    deleted = np.zeros(len(xb), bool)
    deleted[exact(xb, xq, 3)[1].ravel()] = True
    deleted[::4] = True
    want = r.search(xq, 10, deleted=deleted, nprobe=16, refine=len(xb) // 2)
    cpu, _ = r._searcher()
    monkeypatch.setattr(r, "_searcher", lambda: (cpu, False))
    got = r.search(xq, 10, deleted=deleted, nprobe=16, refine=len(xb) // 2)
    assert not deleted[got[1]].any()
    assert_same_topk(*want, *got)


def test_hnsw_scores_are_exact_and_recall_is_high(build, data, tmp_path):
    xb, xq = data
    r = build(xb, {"index": "hnsw", "hnsw_m": 16})
    assert r.describe()["structure"] == "hnsw"
    D, I = r.search(xq, 10)
    np.testing.assert_allclose(D, r.score_pairs(xq, np.repeat(np.arange(len(xq)), 10), I.ravel()).reshape(D.shape),
                               atol=1e-5)  # the graph's scores are the fp16 store's
    assert recall(I, exact(xb, xq, 10)[1]) >= 0.95
    assert_same_topk(*exact(xb, xq, 10), *r.search(xq, 10, ef_search=len(xb)))  # an exhaustive walk is exact
    comp = DenseComponent({"threads": 1, "index": "hnsw", "hnsw_m": 16})
    keep = np.arange(0, len(xb), 2)
    meta = comp.merge(tmp_path / "m", [r], [keep], tmp_path / "shared")
    merged = comp.open(tmp_path / "m", meta, tmp_path / "shared")
    assert meta["version"] == 3 and merged.structure.kind == "hnsw"
    assert_same_topk(*exact(xb[keep], xq, 10), *merged.search(xq, 10, ef_search=len(keep)))
