"""Sparse search over many segments passes each segment the k-th best score found so far (its floor):
results equal searching every segment in full, and after a merge into one segment; later segments skip
blocks."""
from __future__ import annotations

import numpy as np
import pytest

from m3search.indexes import segments
from m3search.indexes.index import Index
from m3search.types import EncoderIdentity

IDENTITY = EncoderIdentity(name="sparse-only", dense_dim=1, multivec_dim=1, vocab_size=1200, tokenizer_hash="t")


@pytest.fixture
def five_segments(tmp_path, sparse_docs, sparse_batch):
    index = Index.create(tmp_path / "ix", IDENTITY, None, components={"sparse": {}}, auto_merge=False)
    for lo in range(0, 1500, 300):
        index.add([f"d{i}" for i in range(lo, lo + 300)], sparse_batch(sparse_docs[lo : lo + 300]))
        index.commit()
    index.delete([f"d{i}" for i in range(0, 1500, 7)])
    index.commit()
    yield index
    index.close()


def _blocks_scored(snap) -> int:
    return sum(v.readers["sparse"].last_search_counters.get("blocks_fully_scored", 0) for v in snap.sparse.segset.views)


@pytest.mark.parametrize("k", [1, 10, 100])
def test_floors_give_the_full_search_results(five_segments, sparse_queries, k):
    with five_segments.snapshot() as snap:
        assert len(snap.segments) == 5
        mask = np.zeros(snap.id_space, bool)
        mask[::11] = True
        for deleted in (None, mask):
            D, I = snap.sparse.search(sparse_queries, k, deleted=deleted)
            with_floors = _blocks_scored(snap)
            D0, I0 = segments._search(snap.sparse.segset, "sparse", sparse_queries, sparse_queries.shape[0], k,
                                      deleted, {})
            without = _blocks_scored(snap)
            np.testing.assert_array_equal(I, I0)
            np.testing.assert_array_equal(D, D0)
        ext = [[snap.docs([i])[0].id if i >= 0 else None for i in row] for row in I0.tolist()]
    assert with_floors <= without
    five_segments.optimize()
    with five_segments.snapshot() as snap:
        D1, I1 = snap.sparse.search(sparse_queries, k, deleted=None)
        mask1 = np.zeros(snap.id_space, bool)
        mask1[::11] = True
        D1, I1 = snap.sparse.search(sparse_queries, k, deleted=mask1)
        ext1 = [[snap.docs([i])[0].id if i >= 0 else None for i in row] for row in I1.tolist()]
    np.testing.assert_allclose(D1, D0, rtol=1e-6)
    assert ext1 == ext


def test_floors_skip_work_in_later_segments(five_segments, sparse_queries):
    with five_segments.snapshot() as snap:
        snap.sparse.search(sparse_queries, 10)
        skipped = sum(v.readers["sparse"].last_search_counters["blocks_fully_scored"] for v in snap.sparse.segset.views)
        segments._search(snap.sparse.segset, "sparse", sparse_queries, sparse_queries.shape[0], 10, None, {})
        full = sum(v.readers["sparse"].last_search_counters["blocks_fully_scored"] for v in snap.sparse.segset.views)
    assert skipped < full


def test_floor_is_checked(five_segments, sparse_queries):
    from m3search.errors import InputError

    with five_segments.snapshot() as snap:
        reader = snap.sparse.segset.views[0].readers["sparse"]
        with pytest.raises(InputError, match="one score per query"):
            reader.search(sparse_queries, 5, floor=np.zeros(3, np.float32))
