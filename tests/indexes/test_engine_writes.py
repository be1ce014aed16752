"""Index engine: delete and upsert semantics, uncommitted changes, buffering into pending segments."""
from __future__ import annotations

import numpy as np
import pytest
from helpers.engine_doubles import assert_matches_brute_force, make_text

from m3search.errors import InputError
from m3search.indexes.index import Index

QUERIES = ["alpha river", "music theory engine", "golden castle harbor", "stone paper glass"]


def add(index, encoder, ids, version=""):
    texts = [make_text(i + version) for i in ids]
    index.add(ids, encoder.encode(texts), [{"text": t} for t in texts])
    return dict(zip(ids, texts))


def upsert(index, encoder, ids, version):
    texts = [make_text(i + version) for i in ids]
    index.upsert(ids, encoder.encode(texts), [{"text": t} for t in texts])
    return dict(zip(ids, texts))


def all_hits(snap, encoder, k=1000):
    """Internal ids any dense or sparse search can return (k large enough to return everything)."""
    q = encoder.encode(QUERIES + ["alpha beta gamma delta river mountain forest ocean"], kind="query")
    D, I = snap.dense.search(q.dense, k)
    Ds, Is = snap.sparse.search(q.sparse, k)
    return set(I[I >= 0].tolist()) | set(Is[Is >= 0].tolist())


def test_deleted_documents_are_never_returned(make_index, hashing_encoder):
    index = make_index()
    live = add(index, hashing_encoder, [f"a{i}" for i in range(40)])
    index.commit()
    assert index.delete(["a1", "a5", "a5", "missing"]) == 1 + 1, "duplicates and unknown ids are not counted"
    with index.snapshot() as before:
        assert before.n_docs == 40, "deletes are invisible until commit"
    index.commit()
    for gone in ("a1", "a5"):
        live.pop(gone)
    with index.snapshot() as snap:
        deleted_internal = set(snap.internal_ids(["a1", "a5"]).tolist())
        assert deleted_internal == {-1}
        assert len(all_hits(snap, hashing_encoder)) == 40 - 2
        assert_matches_brute_force(snap, hashing_encoder, live, QUERIES)


def test_candidates_that_are_deleted_are_rejected(make_index, hashing_encoder):
    index = make_index()
    add(index, hashing_encoder, [f"a{i}" for i in range(10)])
    index.commit()
    with index.snapshot() as old:
        old_id = int(old.internal_ids(["a3"])[0])
    index.delete(["a3"])
    index.commit()
    q = hashing_encoder.encode(["alpha"], kind="query")
    with index.snapshot() as snap:
        with pytest.raises(InputError, match=rf"internal ids \[{old_id}\] are not live documents"):
            snap.dense.score_pairs(q.dense, np.array([0]), np.array([old_id]))
        with pytest.raises(InputError, match="not live documents"):
            snap.multivec.score_pairs(q.multivec, q.multivec_lengths, np.array([0]), np.array([old_id]))
        with pytest.raises(InputError, match="not live documents"):
            snap.docs([old_id])
        with pytest.raises(InputError, match="not live documents"):
            snap.sparse.doc_weights(np.array([10_000]))  # never assigned
        with pytest.raises(InputError, match="not live documents"):
            snap.dense.vectors(np.array([-1]))


def test_upsert_replaces_content(make_index, hashing_encoder):
    index = make_index()
    live = add(index, hashing_encoder, [f"a{i}" for i in range(20)])
    index.commit()
    with index.snapshot() as snap:
        old_internal = snap.internal_ids(["a2", "a7"])
    live.update(upsert(index, hashing_encoder, ["a2", "a7", "new1"], "-v2"))
    index.commit()
    with index.snapshot() as snap:
        new_internal = snap.internal_ids(["a2", "a7"])
        assert not set(new_internal) & set(old_internal), "an upserted document gets a new internal id"
        assert snap.docs(new_internal)[0].text == make_text("a2-v2")
        assert_matches_brute_force(snap, hashing_encoder, live, QUERIES)
        assert not set(old_internal.tolist()) & all_hits(snap, hashing_encoder)


def test_changes_within_one_uncommitted_session(make_index, hashing_encoder):
    """add, delete, re-add and upsert of the same ids before one commit end in the last state."""
    index = make_index()
    live = add(index, hashing_encoder, ["a", "b", "c"])
    assert index.delete(["b"]) == 1
    assert index.contains(["a", "b"]).tolist() == [True, False]
    live.update(add(index, hashing_encoder, ["b"], "-again"))
    live.update(upsert(index, hashing_encoder, ["c"], "-v2"))
    live.update(upsert(index, hashing_encoder, ["c"], "-v3"))
    del live["b"]
    index.delete(["b"])
    index.commit()
    with index.snapshot() as snap:
        assert_matches_brute_force(snap, hashing_encoder, live, QUERIES)
        assert snap.docs(snap.internal_ids(["c"]))[0].text == make_text("c-v3")


def test_rollback_and_close_discard_uncommitted_changes(make_index, hashing_encoder, engine_registry, tmp_path):
    index = make_index(buffer_bytes=1)  # every add becomes a pending segment folder at once
    live = add(index, hashing_encoder, [f"a{i}" for i in range(5)])
    index.commit()
    add(index, hashing_encoder, ["x", "y"])
    index.delete(["a0"])
    assert len(list((tmp_path / "ix" / "segments").iterdir())) == 2
    index.rollback()
    assert len(list((tmp_path / "ix" / "segments").iterdir())) == 1, "pending segment folders are removed"
    assert index.contains(["x", "a0"]).tolist() == [False, True]
    add(index, hashing_encoder, ["z"])
    index.close()
    with Index.open(tmp_path / "ix", registry=engine_registry) as reopened, reopened.snapshot() as snap:
        assert snap.generation == 1
        assert_matches_brute_force(snap, hashing_encoder, live, QUERIES)


def test_auto_flush_builds_pending_segments_invisible_until_commit(make_index, hashing_encoder, tmp_path):
    index = make_index(buffer_bytes=20_000, auto_merge=False)
    live = {}
    for b in range(6):
        live.update(add(index, hashing_encoder, [f"b{b}-{i}" for i in range(10)]))
    folders = list((tmp_path / "ix" / "segments").iterdir())
    assert len(folders) >= 2, "the buffer should have been flushed into pending segments"
    with index.snapshot() as snap:
        assert snap.n_docs == 0 and not snap.segments
    index.delete(["b0-0", "b5-9"])  # one in a pending segment, one still in the buffer
    del live["b0-0"], live["b5-9"]
    index.commit()
    with index.snapshot() as snap:
        assert {f.name for f in folders} <= {s.name for s in snap.segments}, "pending segments get committed"
        assert_matches_brute_force(snap, hashing_encoder, live, QUERIES)


def test_empty_add_and_empty_index_search(make_index, hashing_encoder):
    index = make_index()
    index.add([], hashing_encoder.encode([]))
    assert index.commit() == 0
    q = hashing_encoder.encode(["alpha"], kind="query")
    with index.snapshot() as snap:
        D, I = snap.dense.search(q.dense, 3)
        assert I.tolist() == [[-1, -1, -1]] and np.isneginf(D).all()
        assert snap.dense.vectors(np.array([], dtype=np.int64)).shape == (0, 32)
        vecs, lens = snap.multivec.token_vectors(np.array([], dtype=np.int64))
        assert vecs.shape == (0, 32) and lens.shape == (0,)
        assert snap.docs([]) == [] and list(snap.iter_ids()) == []


def test_every_document_deleted(make_index, hashing_encoder):
    index = make_index()
    add(index, hashing_encoder, ["a", "b"])
    index.commit()
    index.delete(["a", "b"])
    index.commit()
    index.wait_for_merges()  # the policy drops the empty segment in the background
    with index.snapshot() as snap:
        assert snap.n_docs == 0 and not snap.segments, "a segment with nothing live is dropped"
        D, I = snap.sparse.search(hashing_encoder.encode(["alpha"], kind="query").sparse, 2)
        assert (I == -1).all()


def test_clean_up_touches_only_what_the_engine_made(make_index, hashing_encoder, engine_registry, tmp_path):
    index = make_index()
    add(index, hashing_encoder, ["a"])
    index.commit()
    index.close()
    segments = tmp_path / "ix" / "segments"
    (segments / "my-notes").mkdir()
    (segments / ".trash-not-ours").mkdir()
    orphan = segments / "seg-000000000099-0123abcd"  # looks like a crashed writer's pending segment
    orphan.mkdir()
    Index.open(tmp_path / "ix", writable=True, registry=engine_registry).close()
    assert (segments / "my-notes").is_dir() and (segments / ".trash-not-ours").is_dir()
    assert not orphan.exists()
