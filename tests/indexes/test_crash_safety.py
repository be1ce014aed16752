"""Crash safety: a writer process is SIGKILLed at random instants and at each named crash point; the index
must then open at a committed generation holding exactly the documents committed up to it.

The writer runs the deterministic workload of engine_doubles.workload_step (adds, deletes, upserts, and a
marker document naming the step, all in one commit per step), with a tiny buffer (so adds flush pending
segments) and an eager merge policy (so kills land in merges too). It prints each step after its commit
returns; the recovered step must be the last printed one or the next (committed, not yet printed).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.engine_doubles import DOUBLES, LOSSY, assert_matches_brute_force, real_components, replay

from m3search.encoder import HashingEncoder
from m3search.errors import IndexFormatError, IndexLockedError
from m3search.indexes.index import Index

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
QUERIES = ["alpha river", "music theory engine", "golden castle harbor", "step 3"]
ENCODER = HashingEncoder(dim=16, vocab_size=3000, seed=0)

CHILD = r"""
import json, os, signal, sys
sys.path[:0] = [sys.argv[2], sys.argv[3]]
from pathlib import Path
from helpers.engine_doubles import DOUBLES, apply_step
from m3search.encoder import HashingEncoder
from m3search.indexes.index import Index
from m3search.indexes.merge_policy import TieredMergePolicy

path, steps = Path(sys.argv[1]), int(sys.argv[4])
components = json.loads(sys.argv[5])  # null: the test doubles; else kind -> config of the real components
spec = os.environ.get("M3S_TEST_CRASH_AT")  # "point:nth": die at the nth time the writer passes point
hits = {}

def crash_hook(point):
    if spec and point == spec.rsplit(":", 1)[0]:
        hits[point] = hits.get(point, 0) + 1
        if hits[point] == int(spec.rsplit(":", 1)[1]):
            os.kill(os.getpid(), signal.SIGKILL)

enc = HashingEncoder(dim=16, vocab_size=3000, seed=0)
opts = dict(registry=None if components else DOUBLES, buffer_bytes=6000, crash_hook=crash_hook,
            merge_policy=TieredMergePolicy(merge_factor=3, floor_docs=20, max_deleted_ratio=0.2),
            background_merge=os.environ.get("M3S_TEST_BACKGROUND", "1") == "1")
if (path / "manifest.json").exists():
    index = Index.open(path, writable=True, identity=enc.identity, **opts)
else:
    index = Index.create(path, enc.identity, "hashing:dim=16,vocab_size=3000", components=components, **opts)
with index.snapshot() as snap:
    marker = snap.internal_ids(["__step__"])[0]
    last = int(snap.docs([marker])[0].text.split()[1]) if marker >= 0 else -1
print("ready", last, flush=True)
for j in range(last + 1, last + 1 + steps):
    apply_step(index, enc, j)
    index.commit()
    print(j, flush=True)
index.close()
"""


class Child:
    """The writer subprocess; collects the steps it reports as committed."""

    def __init__(self, path: Path, steps: int, crash_at: str | None = None, components: dict | None = None,
                 background: bool = True):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "M3S_TEST_BACKGROUND": "1" if background else "0"}
        env.pop("M3S_TEST_CRASH_AT", None)
        if crash_at:
            env["M3S_TEST_CRASH_AT"] = crash_at
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(ROOT), str(HERE.parent), str(steps), json.dumps(components)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.ready = threading.Event()
        self.first_commit = threading.Event()
        self.start_step: int | None = None
        self.steps: list[int] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            parts = line.split()
            if parts[0] == "ready":
                self.start_step = int(parts[1])
                self.ready.set()
            else:
                self.steps.append(int(parts[0]))
                self.first_commit.set()
        self.ready.set()
        self.first_commit.set()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)

    def wait(self) -> int:
        code = self.proc.wait(timeout=120)
        self._reader.join(timeout=10)
        self.stderr = self.proc.stderr.read()
        self.proc.stderr.close()
        return code

    @property
    def last_reported(self) -> int:
        return self.steps[-1] if self.steps else self.start_step


def committed_state(path: Path, real: bool = False) -> int:
    """Open the index read-only, check it holds exactly the committed documents, return its step."""
    registry = None if real else DOUBLES
    with Index.open(path, registry=registry, identity=ENCODER.identity) as index, index.snapshot() as snap:
        marker = snap.internal_ids(["__step__"])[0]
        step = int(snap.docs([marker])[0].text.split()[1]) if marker >= 0 else -1
        live = replay(step)
        assert {e for e, _ in snap.iter_ids()} == set(live)
        assert_matches_brute_force(snap, ENCODER, live, QUERIES, **(LOSSY if real else {}))
    return step


def recover(path: Path, real: bool = False) -> tuple[set[str], set[str]]:
    """Open for writing (which clears crash leftovers); return (folders before, folders after)."""
    before = {p.name for p in (path / "segments").iterdir()}
    with Index.open(path, writable=True, registry=None if real else DOUBLES) as index, index.snapshot() as snap:
        listed = {s.name for s in snap.segments}
    after = {p.name for p in (path / "segments").iterdir()}
    assert after == listed, f"leftovers not collected: {sorted(after - listed)}"
    return before, after


@pytest.mark.slow
def test_random_kills_leave_the_last_commit(tmp_path):
    path = tmp_path / "ix"
    rng = np.random.default_rng(20240611)
    step = -1
    for _ in range(8):
        child = Child(path, steps=500)
        assert child.ready.wait(timeout=60), "the writer did not start"
        if step == -1:  # while the writer process holds the index, a second writer is refused
            with pytest.raises(IndexLockedError, match=rf"another writer \(process {child.proc.pid}\)"):
                Index.open(path, writable=True, registry=DOUBLES)
        assert child.first_commit.wait(timeout=60), "the writer committed nothing in a minute"
        time.sleep(float(rng.uniform(0.0, 0.4)))  # then kill it anywhere in the following steps
        child.kill()
        code = child.wait()
        assert code == -signal.SIGKILL, f"the writer ended on its own ({code}): {child.stderr[-2000:]}"
        assert child.start_step == step, "the writer must resume at the step last recovered"
        recovered = committed_state(path)
        assert child.last_reported <= recovered <= child.last_reported + 1
        recover(path)
        step = recovered
    assert step >= 7, "every round commits at least one step"


@pytest.mark.parametrize(
    "point, nth, committed",
    [
        ("flush:segment-built", 3, False),
        ("commit:before-txn", 3, False),
        ("commit:after-txn", 3, True),
        ("merge:built", 1, True),
        ("merge:after-txn", 1, True),
        ("gc:renamed", 1, True),
    ],
)
def test_kill_at_each_crash_point(tmp_path, point, nth, committed):
    path = tmp_path / "ix"
    child = Child(path, steps=40, crash_at=f"{point}:{nth}", background=False)  # merges inside commit()
    code = child.wait()
    assert code == -signal.SIGKILL, f"crash point {point} was never reached: {child.stderr[-2000:]}"
    recovered = committed_state(path)
    assert recovered == child.last_reported + (1 if committed else 0)
    before, after = recover(path)
    if point in ("flush:segment-built", "commit:before-txn", "merge:built", "merge:after-txn", "gc:renamed"):
        assert before - after, "the crash should have left a folder for the next writer to remove"


@pytest.mark.parametrize("point, nth", [("merge:built", 1), ("merge:built", 3), ("merge:after-txn", 2),
                                         ("gc:renamed", 2)])
def test_kill_during_a_background_merge(tmp_path, point, nth):
    """Killed on the merge thread while the writer goes on committing: the index opens at a commit the
    writer made (the last one it reported, or the next one, committed but not yet reported)."""
    path = tmp_path / "ix"
    child = Child(path, steps=40, crash_at=f"{point}:{nth}", background=True)
    code = child.wait()
    assert code == -signal.SIGKILL, f"crash point {point} was never reached: {child.stderr[-2000:]}"
    recovered = committed_state(path)
    assert child.last_reported <= recovered <= child.last_reported + 1
    before, after = recover(path)
    if point != "gc:renamed":
        assert before - after, "the crash should have left a folder for the next writer to remove"
    again = Child(path, steps=3)  # the next writer resumes at the recovered step and merges again
    assert again.wait() == 0, again.stderr[-2000:]
    assert again.start_step == recovered and committed_state(path) == recovered + 3


def test_kill_while_creating(tmp_path):
    path = tmp_path / "ix"
    child = Child(path, steps=1, crash_at="create:before-manifest:1")
    assert child.wait() == -signal.SIGKILL
    # the index is built beside `path` and renamed into place: a killed creation leaves nothing at `path`
    with pytest.raises(IndexFormatError, match="no such folder"):
        Index.open(path, registry=DOUBLES)
    again = Child(path, steps=2)  # creating again on the same path finishes the job
    assert again.wait() == 0, again.stderr[-2000:]
    assert committed_state(path) == 1


@pytest.mark.slow
def test_real_components_survive_kills(tmp_path):
    """The same checks with the real components (fewer rounds: they start slower)."""
    components = real_components()
    path = tmp_path / "ix"
    child = Child(path, steps=40, crash_at="merge:built:1", components=components, background=False)
    assert child.wait() == -signal.SIGKILL, child.stderr[-2000:]
    step = committed_state(path, real=True)
    assert step == child.last_reported + 1
    recover(path, real=True)
    rng = np.random.default_rng(7)
    for _ in range(3):
        child = Child(path, steps=500, components=components)
        assert child.first_commit.wait(timeout=60)
        time.sleep(float(rng.uniform(0.0, 0.5)))
        child.kill()
        assert child.wait() == -signal.SIGKILL, child.stderr[-2000:]
        assert child.start_step == step
        step = committed_state(path, real=True)
        assert child.last_reported <= step <= child.last_reported + 1
        recover(path, real=True)
