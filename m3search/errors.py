"""The errors m3search raises on purpose.

Every message names the bad input (file, line, field, position or value) and says how to fix it.
`assert` is kept for internal invariants only.
"""
from __future__ import annotations


class M3SearchError(Exception):
    """Base class: the CLI prints these as one line, without a traceback."""


class InputError(M3SearchError, ValueError):
    """A text, document, file or argument given by the user is malformed."""


class ConfigError(M3SearchError, ValueError):
    """An option has a value outside its valid choices."""


class ModelError(M3SearchError):
    """A model folder or checkpoint can't be loaded as asked."""


class IndexFormatError(M3SearchError):
    """An index on disk is of an unknown format or version, or is corrupt."""


class EncoderMismatchError(M3SearchError):
    """The encoder given does not match the one an index was built with."""


class IndexLockedError(M3SearchError):
    """Another writer holds the index."""


class MissingDependencyError(M3SearchError, ImportError):
    """An optional dependency is not installed; the message gives the install command."""


def missing_dependency(package: str, purpose: str, pip_name: str | None = None) -> MissingDependencyError:
    """Build the error for a lazily imported optional dependency."""
    return MissingDependencyError(
        f"{purpose} needs the package {package!r}, which is not installed: "
        f"pip install {pip_name or package}"
    )
