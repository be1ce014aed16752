"""Helpers shared by the tests, imported as a package (`from helpers.engine_doubles import DOUBLES`):
pytest puts `tests/` on the path (`pythonpath` in pyproject.toml); subprocesses get it on PYTHONPATH."""
