"""`check_index(path)`: read and verify every byte an index holds, and list what is damaged.

Searches verify lazily (each array block on first read, each document record when it is fetched); this
reads everything now: the manifest, every value of every LMDB table (checksums, layout, the id map against
the records), the committed state, every segment's files (size, every array block, FAISS files whole),
the shared component state, and finally opens a snapshot so the components' structural checks run too.
It never writes: it opens the document store read-only.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable

import lmdb

from m3search.errors import IndexFormatError, M3SearchError
from m3search.indexes.docstore import (
    DB_DELETED,
    DB_DOCS,
    DB_EXT2INT,
    DB_META,
    DOCS_DIR,
    KEY_FORMAT,
    KEY_STATE,
    check_not_truncated,
    ext_key,
    unpack,
    unpack_record,
    unseal,
)
from m3search.indexes.fsutil import check_file_sizes
from m3search.indexes.manifest import read_manifest
from m3search.indexes.segment_files import ARRAY_FORMAT, check_file, open_checked
from m3search.indexes.state import CommitState


@dataclasses.dataclass
class CheckReport:
    path: str
    problems: list[str] = dataclasses.field(default_factory=list)
    documents: int = 0
    segments: int = 0
    arrays: int = 0
    array_bytes: int = 0
    files: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ok": self.ok}


def check_index(path: str | Path, progress: Callable[[str], None] | None = None, registry=None) -> CheckReport:
    """Verify everything under `path`; damage is listed in the report (never raised), one line per finding.
    registry: the component implementations to open it with (default: the real ones)."""
    path = Path(path)
    report = CheckReport(str(path))
    say = progress or (lambda _msg: None)
    try:
        manifest = read_manifest(path)
    except IndexFormatError as e:
        report.problems.append(str(e))
        return report
    say("document store")
    state = _check_docstore_isolated(path, report)
    if state is not None:
        for info in state.segments:
            say(f"segment {info.name}")
            _check_segment(path, info, report)
    for kind in manifest.components:
        _check_headers_under(path / "components" / kind, report)
    if report.ok:
        say("opening a snapshot")
        _check_open(path, report, registry)
    return report


def _check_docstore_isolated(path: Path, report: CheckReport) -> CommitState | None:
    """Run the LMDB scan in a forked child where fork exists: LMDB trusts its page headers, so a damaged
    one can make it read past the end of the file (SIGBUS); that becomes a finding instead of a crash."""
    if not hasattr(os, "fork"):
        return _check_docstore(path, report)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: scan, send the findings, exit without running any parent cleanup
        code = 0
        try:
            os.close(read_fd)
            child = CheckReport(report.path)
            state = _check_docstore(path, child)
            payload = {"problems": child.problems, "documents": child.documents,
                       "state": state.to_dict() if state is not None else None}
            data = json.dumps(payload).encode()
            with os.fdopen(write_fd, "wb") as f:
                f.write(data)
        except BaseException:  # noqa: BLE001 (reported by the parent as an unreadable store)
            code = 1
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        raw = f.read()
    _, status = os.waitpid(pid, 0)
    where = path / DOCS_DIR
    if os.WIFSIGNALED(status) or not raw:
        why = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else "an internal error"
        report.problems.append(f"{where}: reading it crashed the reader ({why}): its LMDB pages are damaged; "
                               "restore the index from a copy")
        return None
    payload = json.loads(raw)
    report.problems.extend(payload["problems"])
    report.documents += payload["documents"]
    return CommitState.from_dict(payload["state"], where=str(where)) if payload["state"] is not None else None


def _check_docstore(path: Path, report: CheckReport) -> CommitState | None:
    where = path / DOCS_DIR
    try:
        try:
            env = lmdb.open(str(where), readonly=True, subdir=True, max_dbs=8, create=False)
        except lmdb.Error:  # e.g. a read-only copy without a lock file
            env = lmdb.open(str(where), readonly=True, lock=False, subdir=True, max_dbs=8, create=False)
        check_not_truncated(env, where / "data.mdb")  # else LMDB would read past the file's end (SIGBUS)
    except lmdb.Error as e:
        report.problems.append(f"{where}: the document store can't be opened ({type(e).__name__}: {e})")
        return None
    except IndexFormatError as e:
        report.problems.append(str(e))
        return None
    state = None
    try:
        with env.begin(buffers=False) as txn:
            dbs = {name: env.open_db(name, txn=txn, create=False) for name in (DB_META, DB_EXT2INT, DB_DOCS, DB_DELETED)}
            meta = dbs[DB_META]
            fmt = txn.get(KEY_FORMAT, db=meta)
            if fmt is None:
                report.problems.append(f"{where}: the format record is missing")
            raw = txn.get(KEY_STATE, db=meta)
            if raw is None:
                report.problems.append(f"{where}: the committed state record is missing")
            else:
                state = CommitState.from_dict(unpack(unseal(raw, "the committed state", where), "the committed state"),
                                              where=str(where))
            ids: dict[int, str | None] = {}  # None: a damaged record (reported once, not again below)
            for key, value in txn.cursor(db=dbs[DB_DOCS]):
                internal = int.from_bytes(key, "big")
                try:
                    ids[internal] = unpack_record(value, internal, where).id
                    report.documents += 1
                except IndexFormatError as e:
                    ids[internal] = None
                    report.problems.append(str(e))
            mapped = 0
            for key, value in txn.cursor(db=dbs[DB_EXT2INT]):
                try:
                    internal = int.from_bytes(unseal(value, f"the id map entry {bytes(key)[:40]!r}", where), "big")
                except IndexFormatError as e:
                    report.problems.append(str(e))
                    continue
                mapped += 1
                if internal in ids and ids[internal] is None:
                    continue
                ext = ids.get(internal)
                if ext is None or ext_key(ext) != bytes(key):
                    report.problems.append(f"{where}: the id map entry {bytes(key)[:40]!r} points at internal id "
                                           f"{internal}, whose record {'is missing' if ext is None else 'has another id'}")
            if mapped != len(ids):
                report.problems.append(f"{where}: {len(ids)} document records but {mapped} id map entries")
            for key, value in txn.cursor(db=dbs[DB_DELETED]):
                try:
                    unseal(value, f"the deletion bitmap of segment {bytes(key).decode(errors='replace')}", where)
                except IndexFormatError as e:
                    report.problems.append(str(e))
            if report.ok and state is not None and state.n_live != len(ids):
                report.problems.append(f"{where}: the committed state counts {state.n_live} live documents but "
                                       f"{len(ids)} records are stored")
    except (lmdb.Error, IndexFormatError) as e:
        report.problems.append(str(e) if isinstance(e, IndexFormatError)
                               else f"{where}: can't be read ({type(e).__name__}: {e})")
    finally:
        env.close()
    return state


def _check_segment(path: Path, info, report: CheckReport) -> None:
    seg_dir = path / "segments" / info.name
    report.segments += 1
    if not seg_dir.is_dir():
        report.problems.append(f"segment folder {seg_dir} is missing although the last commit lists it")
        return
    try:
        check_file_sizes(seg_dir, info.files, f"segment {info.name}")
    except IndexFormatError as e:
        report.problems.append(str(e))
        return
    _check_headers_under(seg_dir, report)


def _check_headers_under(root: Path, report: CheckReport) -> None:
    """Verify every file a JSON header under `root` describes (arrays block by block, blobs whole)."""
    if not root.is_dir():
        return
    for header_path in sorted(root.rglob("*.json")):
        try:
            header = json.loads(header_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            report.problems.append(f"{header_path} is unreadable ({e})")
            continue
        folder = header_path.parent
        if header.get("format") == ARRAY_FORMAT:  # a lone array's header (a merged segment's ids)
            _verify_entry(folder, header_path.stem + ".arr", header, report)
            continue
        for group in ("files", "arrays"):
            for name, entry in (header.get(group) or {}).items():
                if isinstance(entry, dict):
                    _verify_entry(folder, name, entry, report)


def _verify_entry(folder: Path, name: str, entry: dict, report: CheckReport) -> None:
    if not (folder / name).exists() and (folder / f"{name}.arr").exists():
        name = f"{name}.arr"
    try:
        if entry.get("format") == ARRAY_FORMAT:
            arr = open_checked(folder, name, entry).verify_all()
            report.arrays += 1
            report.array_bytes += int(arr.nbytes)
        else:
            check_file(folder, name, entry)
            report.files += 1
    except IndexFormatError as e:
        report.problems.append(str(e))


def _check_open(path: Path, report: CheckReport, registry) -> None:
    from m3search.indexes.index import Index

    try:
        with Index.open(path, registry=registry) as index, index.snapshot() as snap:
            if snap.n_docs != report.documents:
                report.problems.append(f"{path}: the snapshot holds {snap.n_docs} documents, the store {report.documents}")
    except M3SearchError as e:
        report.problems.append(str(e))
