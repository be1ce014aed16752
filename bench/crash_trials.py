"""Crash-safety trials: SIGKILL writer processes at random instants and at every named crash point, then
check that the index opens at its last commit holding exactly the committed documents, that `m3search
check` finds nothing wrong, and that the next writer clears the leftovers.

The writer is tests/indexes/test_crash_safety.py's child: each step of its workload adds, deletes and
upserts documents and commits once; a small buffer makes adds flush segments and an eager merge policy
makes merges frequent, so kills land in adds, deletes, upserts, commits and merges. Three sets:

  random      killed 0-0.4 s after its first commit (test doubles: fast, exact brute-force comparison)
  real        the same with the real dense/sparse/multi-vector components
  points      killed at the nth pass through each crash point (segment flush, before/after the commit
              transaction, merge built, merge committed, garbage collection)

Usage: flock /tmp/m3search-heavy.lock python3 bench/crash_trials.py --random 80 --real 30 --out bench/results/crash_trials.md
"""
from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "indexes")]

from engine_doubles import DOUBLES, real_components  # noqa: E402
from test_crash_safety import Child, committed_state, recover  # noqa: E402

from m3search.indexes.check import check_index  # noqa: E402

POINTS = ("flush:segment-built", "commit:before-txn", "commit:after-txn", "merge:built", "merge:after-txn",
          "gc:renamed")


def trial(path: Path, rng, *, real: bool, crash_at: str | None = None) -> dict:
    components = real_components() if real else None
    before = committed_state(path, real) if (path / "manifest.json").exists() else -1
    child = Child(path, steps=40 if crash_at else 500, crash_at=crash_at, components=components)
    if crash_at is None:
        if not child.first_commit.wait(timeout=120):
            raise RuntimeError("the writer committed nothing in two minutes")
        time.sleep(float(rng.uniform(0.0, 0.4)))
        child.kill()
    code = child.wait()
    if code != -signal.SIGKILL:
        raise RuntimeError(f"the writer was not killed (exit {code}): {child.stderr[-2000:]}")
    if child.start_step != before:
        raise RuntimeError(f"the writer resumed at step {child.start_step}, not at the recovered {before}")
    recovered = committed_state(path, real)  # exactly the documents of the recovered step, scores exact
    if not child.last_reported <= recovered <= child.last_reported + 1:
        raise RuntimeError(f"recovered step {recovered}, but the writer had reported {child.last_reported}")
    report = check_index(path, registry=None if real else DOUBLES)
    if not report.ok:
        raise RuntimeError(f"check found damage after a kill: {report.problems[:3]}")
    leftovers_before, after = recover(path, real)
    return {"steps_committed": recovered - before, "leftovers": len(leftovers_before - after)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--random", type=int, default=80, help="random kills with the test-double components")
    parser.add_argument("--real", type=int, default=30, help="random kills with the real components")
    parser.add_argument("--nth", type=int, nargs="+", default=[1, 2, 3], help="crash-point passes to kill at")
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows, failures, started = [], [], time.time()
    with tempfile.TemporaryDirectory(prefix="m3s-crash-") as tmp:
        sets = [("random (doubles)", False, [None] * args.random), ("random (real)", True, [None] * args.real),
                ("crash points (doubles)", False, [f"{p}:{n}" for p in POINTS for n in args.nth]),
                ("crash points (real)", True, [f"{p}:1" for p in POINTS])]
        for name, real, points in sets:
            path = Path(tmp) / name.replace(" ", "_").replace("(", "").replace(")", "")
            kills = steps = leftovers = 0
            t0 = time.time()
            for crash_at in points:
                target = path if crash_at is None else path.with_name(path.name + "_" + crash_at.replace(":", "_"))
                try:
                    out = trial(target, rng, real=real, crash_at=crash_at)
                except Exception as e:  # noqa: BLE001 (a failed trial is the finding)
                    failures.append(f"{name} {crash_at or 'random'}: {type(e).__name__}: {e}")
                    continue
                kills += 1
                steps += out["steps_committed"]
                leftovers += out["leftovers"]
            rows.append((name, len(points), kills, steps, leftovers, time.time() - t0))
            print(rows[-1], flush=True)
    total = sum(r[1] for r in rows)
    lines = ["| set | kills | recovered exactly | steps committed in between | crash leftovers removed | s |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {n} | {k} | {ok} | {s} | {lo} | {t:.0f} |" for n, k, ok, s, lo, t in rows]
    text = (f"# Crash trials\n\n{total} SIGKILLs, {total - len(failures)} recovered at their last commit with exactly the "
            f"committed documents (brute-force checked), `m3search check` clean after each; {len(failures)} failures. "
            f"{time.time() - started:.0f} s on 2 shared CPU cores.\n\n" + "\n".join(lines) + "\n")
    if failures:
        text += "\n## Failures\n\n" + "\n".join(f"- {f[:400]}" for f in failures) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
