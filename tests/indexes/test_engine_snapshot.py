"""Index engine: snapshot isolation against commits and merges, in this process and another one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers.engine_doubles import assert_matches_brute_force, make_text

from m3search.errors import InputError
from m3search.indexes.index import Index

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
QUERIES = ["alpha river", "music theory engine", "golden castle harbor"]


def add(index, encoder, ids, version=""):
    texts = [make_text(i + version) for i in ids]
    index.add(ids, encoder.encode(texts), [{"text": t} for t in texts])
    return dict(zip(ids, texts))


def test_snapshot_is_stable_across_commits_deletes_and_merges(make_index, hashing_encoder, tmp_path, engine_registry):
    index = make_index(auto_merge=False)
    v1 = add(index, hashing_encoder, [f"a{i}" for i in range(15)])
    index.commit()
    v1.update(add(index, hashing_encoder, [f"b{i}" for i in range(15)]))
    index.commit()
    old = index.snapshot()
    reader = Index.open(tmp_path / "ix", registry=engine_registry)  # a separate read-only Index, same process
    old_ro = reader.snapshot()

    index.delete(["a1", "b2"])
    index.upsert(["a3"], hashing_encoder.encode(["changed text"]), [{"text": "changed text"}])
    add(index, hashing_encoder, ["c1"])
    index.commit()
    index.optimize()
    merged_away = {s.name for s in old.segments}
    with index.snapshot() as new:
        assert len(new.segments) == 1 and new.generation == 4
        assert merged_away.isdisjoint(s.name for s in new.segments)
    # the old segment folders are still on disk: snapshots pin them
    assert merged_away <= {p.name for p in (tmp_path / "ix" / "segments").iterdir()}

    for snap in (old, old_ro):
        assert snap.generation == 2
        assert_matches_brute_force(snap, hashing_encoder, v1, QUERIES)
        assert snap.internal_ids(["c1"]).tolist() == [-1]
    old.close()
    old_ro.close()
    reader.close()
    index.commit()  # nothing to commit, nothing collected; the close below collects
    index.close()
    remaining = {p.name for p in (tmp_path / "ix" / "segments").iterdir()}
    assert merged_away.isdisjoint(remaining), "unpinned merged-away segments are deleted"


def test_snapshot_of_writable_index_sees_last_commit_only(make_index, hashing_encoder):
    index = make_index()
    add(index, hashing_encoder, ["a"])
    index.commit()
    add(index, hashing_encoder, ["b"])
    with index.snapshot() as snap:
        assert snap.internal_ids(["a", "b"]).tolist()[1] == -1 and snap.n_docs == 1


def test_closed_snapshot_and_index_refuse_use(make_index, hashing_encoder):
    index = make_index()
    add(index, hashing_encoder, ["a"])
    index.commit()
    snap = index.snapshot()
    snap.close()
    with pytest.raises(InputError, match="snapshot is closed"):
        snap.docs([0])
    kept = index.snapshot()
    index.close()
    assert kept.closed, "closing the Index closes its snapshots"
    with pytest.raises(InputError, match="is closed"):
        index.snapshot()


def test_snapshots_share_opened_segments(make_index, hashing_encoder):
    index = make_index(auto_merge=False)
    add(index, hashing_encoder, ["a"])
    index.commit()
    with index.snapshot() as s1:
        add(index, hashing_encoder, ["b"])
        index.commit()
        with index.snapshot() as s2:
            r1 = s1.dense.segset.views[0].readers["dense"]
            r2 = s2.dense.segset.views[0].readers["dense"]
            assert r1 is r2, "an unchanged segment is not opened again"


def test_snapshot_used_from_threads(make_index, hashing_encoder):
    index = make_index()
    live = add(index, hashing_encoder, [f"a{i}" for i in range(30)])
    index.commit()
    snap = index.snapshot()
    errors = []

    def work():
        try:
            for _ in range(20):
                recs = snap.docs(snap.internal_ids(sorted(live)))
                assert [r.text for r in recs] == [live[e] for e in sorted(live)]
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    snap.close()


READER = r"""
import json, sys
sys.path[:0] = [sys.argv[2], sys.argv[3]]
from helpers.engine_doubles import DOUBLES
from m3search.encoder import HashingEncoder
from m3search.indexes.index import Index
enc = HashingEncoder(dim=32, vocab_size=5000, seed=0)
q = enc.encode(["alpha river", "golden castle"], kind="query")
with Index.open(sys.argv[1], registry=DOUBLES) as index:
    snap = index.snapshot()
    def report():
        D, I = snap.dense.search(q.dense, 50)
        ids = [r.id for r in snap.docs(I[I >= 0])]
        print(json.dumps({"gen": snap.generation, "n": snap.n_docs, "ids": ids}), flush=True)
    report()
    sys.stdin.readline()  # the parent commits, deletes and merges meanwhile
    report()
"""


def test_reader_in_another_process_keeps_its_snapshot(make_index, hashing_encoder, tmp_path):
    index = make_index(auto_merge=False)
    for b in range(3):
        add(index, hashing_encoder, [f"b{b}-{i}" for i in range(8)])
        index.commit()
    child = subprocess.Popen(
        [sys.executable, "-c", READER, str(tmp_path / "ix"), str(ROOT), str(HERE.parent)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        first = json.loads(child.stdout.readline() or "null")
        assert first is not None, child.stderr.read()
        index.delete([f"b1-{i}" for i in range(8)])
        add(index, hashing_encoder, ["late"])
        index.commit()
        index.optimize()  # tries to delete the reader's segments: they are pinned, so they stay
        child.stdin.write("\n")
        child.stdin.flush()
        second = json.loads(child.stdout.readline() or "null")
        assert second is not None, child.stderr.read()
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    assert first == second and first["gen"] == 3 and first["n"] == 24
    assert len(list((tmp_path / "ix" / "segments").iterdir())) > 1, "the reader's segments were pinned"
    index.close()  # the reader is gone: its segments can now be removed
    assert len(list((tmp_path / "ix" / "segments").iterdir())) == 1


def test_many_snapshots_do_not_exhaust_reader_slots(make_index, hashing_encoder):
    index = make_index()
    add(index, hashing_encoder, ["a"])
    index.commit()
    for _ in range(300):  # more than LMDB's default 126 reader slots, closed or collected as we go
        snap = index.snapshot()
        assert snap.n_docs == 1
    held = [index.snapshot() for _ in range(150)]
    assert all(s.n_docs == 1 for s in held)
    for s in held:
        s.close()
    np.testing.assert_equal(index.contains(["a"]), [True])


def test_snapshot_retries_when_a_merge_removes_segments_it_just_listed(
    make_index, hashing_encoder, tmp_path, engine_registry
):
    """The race a reader can lose: it reads the segment list, then the writer merges those segments away and
    deletes their folders before the reader pins them. The reader must notice and pin the newer commit."""
    writer = make_index(auto_merge=False)
    live = {}
    for b in range(3):
        live.update(add(writer, hashing_encoder, [f"b{b}-{i}" for i in range(6)]))
        writer.commit()
    reader = Index.open(tmp_path / "ix", registry=engine_registry)
    original = reader._cache.acquire
    raced = []

    def acquire_after_a_merge(infos):
        if not raced:
            raced.append([i.name for i in infos])
            writer.optimize()  # commits a merged segment and deletes the unpinned old folders
        return original(infos)

    reader._cache.acquire = acquire_after_a_merge
    with reader.snapshot() as snap:
        assert len(raced[0]) == 3
        assert snap.generation == 4 and len(snap.segments) == 1
        assert_matches_brute_force(snap, hashing_encoder, live, QUERIES)
    reader.close()


def test_a_snapshot_released_inside_the_cache_lock_does_not_deadlock(make_index, hashing_encoder, monkeypatch):
    # The garbage collector may run a snapshot's finalizer (which releases its handles) inside any
    # allocation, also one the handle cache makes while it holds its lock to open a segment.
    from m3search.indexes import handles

    index = make_index(auto_merge=False)
    add(index, hashing_encoder, ["a0", "a1"])
    index.commit()
    old = index.snapshot()
    add(index, hashing_encoder, ["b0"])
    index.commit()
    opened = handles.SegmentHandle.__init__

    def open_and_collect(self, *args, **kwargs):
        opened(self, *args, **kwargs)
        if old._finalizer.alive:
            old._finalizer()  # what gc would do here; before the fix this blocked on the cache's own lock

    monkeypatch.setattr(handles.SegmentHandle, "__init__", open_and_collect)
    done = []
    t = threading.Thread(target=lambda: done.append(index.snapshot()), daemon=True)
    t.start()
    t.join(30)
    assert done, "taking a snapshot deadlocked"
    assert not old._finalizer.alive and done[0].n_docs == 3
    done[0].close()
