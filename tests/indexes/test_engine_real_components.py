"""The engine over the real components (those importable so far), set up as exactly as they go.

The other engine tests use exact test doubles; these check that the real components fit the engine:
searches over several segments with deletions, upserts, merges that keep results, snapshot isolation,
and corruption surfaced with the segment named.
"""
from __future__ import annotations

import numpy as np
import pytest
from helpers.engine_doubles import LOSSY, assert_matches_brute_force, make_text, real_components

from m3search.errors import IndexFormatError
from m3search.indexes.index import Index

QUERIES = ["alpha river", "music theory engine", "golden castle harbor", "stone paper glass"]


@pytest.fixture
def components():
    return real_components()


def test_a_broken_component_import_fails_loudly_instead_of_skipping():
    from m3search.errors import ConfigError
    from m3search.indexes.registry import DEFAULT_COMPONENTS

    broken = {**DEFAULT_COMPONENTS, "sparse": "m3search.indexes.no_such_module:SparseComponent"}
    with pytest.raises(ConfigError, match="no_such_module"):
        real_components(broken)


def add(index, encoder, ids, version=""):
    texts = [make_text(i + version) for i in ids]
    index.add(ids, encoder.encode(texts), [{"text": t} for t in texts])
    return dict(zip(ids, texts))


def searches(snap, encoder):
    q = encoder.encode(QUERIES, kind="query")
    out = []
    if snap.dense is not None:
        out.append(snap.dense.search(q.dense, 10))
    if snap.sparse is not None:
        out.append(snap.sparse.search(q.sparse, 10))
    if snap.multivec is not None:
        ids = snap.internal_ids(sorted(e for e, _ in snap.iter_ids()))
        qi = np.repeat(np.arange(len(QUERIES)), len(ids))
        scores = snap.multivec.score_pairs(q.multivec, q.multivec_lengths, qi, np.tile(ids, len(QUERIES)))
        out.append((scores, ids))
    return out


def test_real_components_through_writes_merges_and_snapshots(tmp_path, hashing_encoder, components):
    index = Index.create(tmp_path / "ix", hashing_encoder.identity, "hashing", components=components, auto_merge=False)
    live = {}
    for b in range(4):
        live.update(add(index, hashing_encoder, [f"b{b}-{i}" for i in range(25)]))
        index.commit()
    index.delete(["b0-1", "b2-5", "b3-24"])
    live.update(add(index, hashing_encoder, ["new"]))
    index.upsert(["b1-7"], hashing_encoder.encode(["golden castle harbor"]), [{"text": "golden castle harbor"}])
    index.commit()
    for gone in ("b0-1", "b2-5", "b3-24"):
        live.pop(gone)
    live["b1-7"] = "golden castle harbor"

    old = index.snapshot()
    assert len(old.segments) == 5
    assert_matches_brute_force(old, hashing_encoder, live, QUERIES, **LOSSY)
    before = searches(old, hashing_encoder)
    index.optimize()
    with index.snapshot() as new:
        assert len(new.segments) == 1 and new.segments[0].n_deleted == 0
        for (D1, I1), (D2, I2) in zip(before, searches(new, hashing_encoder)):
            np.testing.assert_array_equal(I1, I2)  # internal ids survive merges; results are identical
            np.testing.assert_allclose(D1, D2, atol=1e-6)
    # the snapshot taken before the merge still reads the merged-away segments
    assert_matches_brute_force(old, hashing_encoder, live, QUERIES, **LOSSY)
    old.close()
    info = index.info()
    assert info["n_docs"] == len(live) and all(c["bytes"] > 0 for c in info["components"].values())
    index.close()

    with Index.open(tmp_path / "ix", identity=hashing_encoder.identity) as reopened, reopened.snapshot() as snap:
        assert_matches_brute_force(snap, hashing_encoder, live, QUERIES, **LOSSY)


def test_real_component_damage_names_the_segment(tmp_path, hashing_encoder, components):
    index = Index.create(tmp_path / "ix", hashing_encoder.identity, "hashing", components=components)
    add(index, hashing_encoder, [f"d{i}" for i in range(30)])
    index.commit()
    index.close()
    (seg,) = (tmp_path / "ix" / "segments").iterdir()
    kind = sorted(components)[0]
    largest = max((p for p in (seg / kind).rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with open(largest, "r+b") as f:
        f.truncate(largest.stat().st_size - 1)
    with Index.open(tmp_path / "ix") as reader:
        with pytest.raises(IndexFormatError, match=rf"segment {seg.name}.*{largest.name}"):
            reader.snapshot()
    # same size, different bytes: only the component's own checks can tell
    with open(largest, "r+b") as f:
        f.truncate(largest.stat().st_size + 1)
        f.seek(0)
        f.write(b"\xa5" * min(64, largest.stat().st_size))
    with Index.open(tmp_path / "ix") as reader:
        with pytest.raises(IndexFormatError, match=rf"segment {seg.name}"):
            reader.snapshot()
