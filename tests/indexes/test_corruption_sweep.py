"""The small corruption sweep: one file of every kind bit-flipped, LMDB pages overwritten;
every damaged copy gives a clear one-line error or the correct answers, never garbage, a traceback or a
crash. The big sweep is bench/corruption_sweep.py (results in bench/results/corruption_sweep.md)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "corruption_sweep.py"

# The sweep forks one child per damaged copy; it runs in a fresh interpreter, because this test process may
# hold threads (another package's Ray cluster, FAISS, uvicorn) that make forking it unsafe.
_RUN = """
import importlib.util, json, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("corruption_sweep", sys.argv[1])
sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sweep)
result = sweep.sweep(Path(sys.argv[2]), flips=1, seed=3, one_file_per_kind=True,
                     mutations_kept=("flip", "page-garbage"))
Path(sys.argv[3]).write_text(json.dumps(result))
"""


def _load_sweep():
    spec = importlib.util.spec_from_file_location("corruption_sweep", BENCH)
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    return sweep


@pytest.mark.slow
def test_damaged_copies_are_reported_or_answered_correctly(tmp_path):
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-c", _RUN, str(BENCH), str(tmp_path / "work"), str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    summary, table = _load_sweep().summarise(result)
    bad = [c for c in result["cases"] if c["outcome"] not in ("correct", "error") or not c.get("one_line", True)]
    assert not bad, f"{table}\n{bad[:5]}"
    assert summary["cases"] >= 28 and summary["error"] >= 20, table
    assert summary["check_missed"] == 0 and summary["check_crashed"] == 0, table
