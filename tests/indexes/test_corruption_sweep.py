"""The small corruption sweep: one file of every kind bit-flipped, LMDB pages overwritten;
every damaged copy gives a clear one-line error or the correct answers, never garbage, a traceback or a
crash. The big sweep is bench/corruption_sweep.py (results in bench/results/corruption_sweep.md)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "corruption_sweep.py"


@pytest.mark.slow
def test_damaged_copies_are_reported_or_answered_correctly(tmp_path):
    spec = importlib.util.spec_from_file_location("corruption_sweep", BENCH)
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    result = sweep.sweep(tmp_path, flips=1, seed=3, one_file_per_kind=True,
                         mutations_kept=("flip", "page-garbage"))
    summary, table = sweep.summarise(result)
    bad = [c for c in result["cases"] if c["outcome"] not in ("correct", "error") or not c.get("one_line", True)]
    assert not bad, f"{table}\n{bad[:5]}"
    assert summary["cases"] >= 28 and summary["error"] >= 20, table
    assert summary["check_missed"] == 0 and summary["check_crashed"] == 0, table
