"""Collects the docstring examples of every m3search module, as `pytest --doctest-modules m3search` does,
so no list of modules with examples is kept by hand. Only the package: the test tree's files are tests.

Subpackages of optional extras are collected only where the extra is installed.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from _pytest.doctest import DoctestModule

PACKAGE = Path(__file__).resolve().parent / "m3search"
# subpackage -> the module its optional extra installs
EXTRAS = {"distributed": "ray", "server": "fastapi"}


def pytest_collect_file(file_path: Path, parent):
    if file_path.suffix != ".py" or file_path.name == "__main__.py" or PACKAGE not in file_path.parents:
        return None
    parts = file_path.relative_to(PACKAGE).parts
    needs = EXTRAS.get(parts[0]) if len(parts) > 1 else None
    if needs and importlib.util.find_spec(needs) is None:
        return None
    return DoctestModule.from_parent(parent, path=file_path)
