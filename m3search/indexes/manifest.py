"""`manifest.json`: what an index is, written once when it is created and never changed.

It names the format and its version, the m3search version that created the index, the encoder's identity
(name, dimensions, vocabulary size, tokenizer hash) and model reference, and each component's full config
(defaults filled in). Everything that changes with commits (counts, segments, deletions) lives in the
document store, whose write transaction is the commit point; so the manifest never needs rewriting and
can't disagree with a commit.

It is written last when an index is created (temp file, fsync, os.replace, fsync of the folder): a folder
without it is not an index (at most an interrupted creation).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import logging
from pathlib import Path

from m3search.errors import IndexFormatError
from m3search.indexes.fsutil import atomic_write_bytes
from m3search.types import EncoderIdentity

logger = logging.getLogger(__name__)

FORMAT = "m3search.index"
# 2: every array file is a checked array with block checksums, document records carry a CRC-32.
# Version 1 indexes are refused with the advice to rebuild them.
FORMAT_VERSION = 2
MIN_FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"


@dataclasses.dataclass(frozen=True)
class Manifest:
    identity: EncoderIdentity
    model: str | None
    components: dict[str, dict]
    m3search_version: str
    created_at: str
    format_version: int = FORMAT_VERSION

    @classmethod
    def new(cls, identity: EncoderIdentity, model: str | None, components: dict[str, dict]) -> "Manifest":
        from m3search import __version__

        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        return cls(identity=identity, model=model, components=components, m3search_version=__version__, created_at=now)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "m3search_version": self.m3search_version,
            "created_at": self.created_at,
            "encoder": self.identity.to_dict(),
            "model": self.model,
            "components": self.components,
        }


def is_index(path) -> bool:
    """Whether `path` is an index folder (it has a manifest). The one "is this an index?" check: the API and
    every command use it; `read_manifest` then says what is wrong with one that is damaged."""
    return (Path(path) / MANIFEST_NAME).is_file()


def is_any_index(path) -> bool:
    """Whether `path` is an index folder or a sharded index (m3search.sharding: a header and N indexes)."""
    from m3search.sharding.layout import is_sharded

    return is_index(path) or is_sharded(path)


def not_an_index_message(path) -> str:
    """Why `path` can't be opened as an index, and the way out (never a command that would overwrite it)."""
    path = Path(path)
    if not path.exists():
        return f"index {str(path)!r} does not exist: build one with `m3search index CORPUS -o {path}`"
    if not path.is_dir():
        return f"{str(path)!r} is a file, not an index folder"
    held = sorted(n for n in ("docs.lmdb", "segments", "components") if (path / n).exists())
    if held:
        return (f"{str(path)!r} holds {', '.join(held)} but no {MANIFEST_NAME}: it is a damaged index or a partial "
                f"copy of one; restore {MANIFEST_NAME} (copy the whole index folder again)")
    return f"{str(path)!r} is not an m3search index (it has no {MANIFEST_NAME}); give the path of an index folder"


def write_manifest(index_dir: Path, manifest: Manifest) -> None:
    data = json.dumps(manifest.to_dict(), indent=2, sort_keys=False).encode()
    atomic_write_bytes(index_dir / MANIFEST_NAME, data)


def read_manifest(index_dir: Path) -> Manifest:
    """Read and check the manifest; refuse unknown formats and newer versions."""
    path = index_dir / MANIFEST_NAME
    if not index_dir.is_dir():
        raise IndexFormatError(f"{index_dir} is not an index: no such folder (create one with Index.create)")
    if not path.is_file():
        raise IndexFormatError(
            f"{index_dir} is not an m3search index: {MANIFEST_NAME} is missing (if an Index.create was "
            "interrupted, call it again on the same path to finish it)"
        )
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexFormatError(f"{path} is not readable JSON ({e}); restore the index from a copy") from e
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        found = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise IndexFormatError(f"{path}: format {found!r} is not {FORMAT!r}; this folder is not an m3search index")
    version = d.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise IndexFormatError(f"{path}: format_version {version!r} is not a positive integer")
    if version < MIN_FORMAT_VERSION:
        raise IndexFormatError(
            f"{path}: index format version {version} (m3search {d.get('m3search_version')}) predates checksummed "
            f"arrays and documents; this m3search reads version {MIN_FORMAT_VERSION}..{FORMAT_VERSION}: rebuild the "
            "index from its corpus with `m3search index CORPUS -o NEW_INDEX`"
        )
    if version > FORMAT_VERSION:
        raise IndexFormatError(
            f"{path}: index format version {version} is newer than this m3search reads ({FORMAT_VERSION}); "
            f"upgrade m3search (the index was written by m3search {d.get('m3search_version')})"
        )
    missing = [k for k in ("encoder", "components", "m3search_version") if k not in d]
    if missing:
        raise IndexFormatError(f"{path} lacks the fields {missing}; restore the index from a copy")
    components = d["components"]
    if not isinstance(components, dict) or not all(isinstance(v, dict) for v in components.values()):
        raise IndexFormatError(f"{path}: 'components' must map a kind to its config, got {components!r}")
    if not isinstance(d["encoder"], dict):
        raise IndexFormatError(f"{path}: 'encoder' must be an object, got {d['encoder']!r}")
    _warn_if_newer(path, d["m3search_version"])
    return Manifest(
        identity=EncoderIdentity.from_dict(d["encoder"]),
        model=d.get("model"),
        components=components,
        m3search_version=d["m3search_version"],
        created_at=d.get("created_at", ""),
        format_version=version,
    )


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = []
    for p in str(v).split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _warn_if_newer(path: Path, written_by: str) -> None:
    from m3search import __version__

    if _version_tuple(written_by) > _version_tuple(__version__):
        logger.warning(
            "%s was written by m3search %s, newer than this %s; it uses a format this version knows, "
            "but consider upgrading", path, written_by, __version__,
        )
