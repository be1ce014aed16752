"""The package's docstring examples are collected by pytest itself (./conftest.py), not by hand-kept lists."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pytest_collects_the_docstring_examples_of_m3search_modules():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "m3search/ingest.py", "m3search/document.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "m3search/ingest.py::m3search.ingest" in out.stdout
    assert "m3search/document.py::m3search.document.UniqueIds" in out.stdout
