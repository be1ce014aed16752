"""Precomputed representations on disk: a corpus encoded once (here or on a Ray cluster), indexed anywhere.

An ENCODED folder holds a header and numbered parts; part i holds the documents at positions
[i * part_size, (i + 1) * part_size) of the corpus, in corpus order:

    ENCODED/encoded.json          {"format": "m3search.encoded", "version": 1, "encoder": {identity},
                                   "model": reference, "part_size": P, "m3search_version": ...}
    ENCODED/part-000000/          one EncodedBatch (`EncodedBatch.save`: dense.npy, sparse_*.npy (CSR),
                                  multivec.npy, multivec_lengths.npy, batch.json) plus docs.msgpack
                                  ([[id, text, title, metadata], ...]) and part.json
    ENCODED/part-000000/part.json {"format": "m3search.encoded.part", "version": 1, "part": i, "n": n,
                                   "ids_digest": blake2b of the ids, "files": {name: {"bytes", "crc32"}}}

Arrays are plain .npy (memory-mapped when read, never pickled); part.json is written last, inside a
temporary folder that is renamed into place, so a part either exists complete or not at all. That makes
encoding resumable without duplicates: a rerun encodes only the parts that are missing, and a part written
twice (a retried worker) lands once. Reading checks every file's size and CRC-32 and the encoder identity.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import msgpack

from m3search.document import Document
from m3search.errors import EncoderMismatchError, IndexFormatError, InputError
from m3search.indexes.fsutil import fsync_dir, fsync_file, read_versioned_json, write_json_atomic
from m3search.indexes.segment_files import describe
from m3search.types import EncodedBatch, EncoderIdentity

log = logging.getLogger(__name__)

FORMAT = "m3search.encoded"
PART_FORMAT = "m3search.encoded.part"
VERSION = 1
HEADER = "encoded.json"
PART_HEADER = "part.json"
DOCS_FILE = "docs.msgpack"
DEFAULT_PART_SIZE = 1024
_PART_RE = re.compile(r"^part-(\d{6,})$")


def is_encoded(path: str | Path) -> bool:
    return (Path(path) / HEADER).is_file()


def part_name(i: int) -> str:
    return f"part-{i:06d}"


def ids_digest(ids: Sequence[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for i in ids:
        h.update(i.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class EncodedPart:
    """One part, loaded: ids, the stored records ({'text', 'title'?, 'metadata'?}) and the representations."""

    index: int
    ids: list[str]
    docs: list[dict[str, Any]]
    batch: EncodedBatch


class EncodedCorpus:
    """An ENCODED folder: create or open it, write parts atomically, read them back verified."""

    def __init__(self, path: Path, header: dict):
        self.path = path
        self.header = header
        self.identity = EncoderIdentity.from_dict(header["encoder"])
        self.model: str | None = header.get("model")
        self.part_size = int(header["part_size"])

    @classmethod
    def open(cls, path: str | Path) -> "EncodedCorpus":
        path = Path(path)
        file = path / HEADER
        if not file.is_file():
            raise InputError(f"{path} is not an encoded corpus ({HEADER} is missing): make one with "
                             f"`m3search encode CORPUS -o {path}`")
        header = read_versioned_json(file, FORMAT, VERSION,
                                     "the encoded corpus is damaged: encode it again into a new folder")
        for key in ("encoder", "part_size"):
            if key not in header:
                raise IndexFormatError(f"{file} lacks {key!r}; the folder is damaged")
        return cls(path, header)

    @classmethod
    def create_or_open(cls, path: str | Path, identity: EncoderIdentity, model: str | None,
                       part_size: int = DEFAULT_PART_SIZE) -> "EncodedCorpus":
        """Open the folder to resume it (the encoder and part size must match), or start a new one."""
        path = Path(path)
        if is_encoded(path):
            enc = cls.open(path)
            from m3search.encoder.terms import require_same_terms

            require_same_terms(path, enc.identity, identity)
            problems = identity.mismatches(enc.identity)
            if problems:
                raise EncoderMismatchError(f"{path} was encoded with another encoder ({'; '.join(problems)}): "
                                           "resume with the same model, or write to a new folder")
            if enc.part_size != part_size:
                raise InputError(f"{path} was encoded with --part-size {enc.part_size}, not {part_size}: resume with "
                                 f"--part-size {enc.part_size}, or write to a new folder")
            return enc
        if path.exists() and any(path.iterdir()):
            raise InputError(f"{path} exists and is not an encoded corpus: give a new or empty folder")
        from m3search import __version__

        header = {"format": FORMAT, "version": VERSION, "encoder": identity.to_dict(), "model": model,
                  "part_size": int(part_size), "m3search_version": __version__}
        path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path / HEADER, header)
        return cls(path, header)

    # -- parts -----------------------------------------------------------------------------------

    def done_parts(self) -> set[int]:
        """Parts that are complete (their part.json exists; it is written last)."""
        out = set()
        for entry in self.path.iterdir():
            m = _PART_RE.match(entry.name)
            if m and (entry / PART_HEADER).is_file():
                out.add(int(m.group(1)))
        return out

    def write_part(self, index: int, ids: Sequence[str], docs: Sequence[Document], batch: EncodedBatch) -> bool:
        """Write part `index` atomically; returns False (writing nothing) when it is already there."""
        final = self.path / part_name(index)
        if (final / PART_HEADER).is_file():
            return False
        if len(ids) != len(batch) or len(docs) != len(ids):
            raise InputError(f"part {index}: {len(ids)} ids, {len(docs)} docs, {len(batch)} encoded rows")
        tmp = self.path / f".tmp-{part_name(index)}-{secrets.token_hex(4)}"
        try:
            batch.save(tmp)
            rows = [[i, d.text, d.title, d.metadata] for i, d in zip(ids, docs)]
            with open(tmp / DOCS_FILE, "wb") as f:
                f.write(msgpack.packb(rows, use_bin_type=True))
            files = {p.name: describe(p) for p in sorted(tmp.iterdir())}
            for p in tmp.iterdir():
                fsync_file(p)
            header = {"format": PART_FORMAT, "version": VERSION, "part": int(index), "n": len(ids),
                      "ids_digest": ids_digest(list(ids)), "files": files}
            write_json_atomic(tmp / PART_HEADER, header)
            fsync_dir(tmp)
            try:
                os.rename(tmp, final)  # fails if another writer (a retried task) got there first
            except OSError:
                if (final / PART_HEADER).is_file():
                    return False
                raise
            fsync_dir(self.path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)  # our own temporary folder
        return True

    def part_header(self, index: int) -> dict:
        file = self.path / part_name(index) / PART_HEADER
        return read_versioned_json(file, PART_FORMAT, VERSION, f"move {file.parent} aside and re-run "
                                                               "`m3search encode` to rewrite the part")

    def read_part(self, index: int, verify: bool = True, mmap: bool = True) -> EncodedPart:
        folder = self.path / part_name(index)
        header = self.part_header(index)
        if verify:
            for name, want in header["files"].items():
                p = folder / name
                if not p.is_file():
                    raise IndexFormatError(f"{p} is missing; the encoded part is damaged (re-encode it: move "
                                           f"{folder} aside and run `m3search encode` again)")
                got = describe(p)
                size, crc = got["bytes"], got["crc32"]
                if size != want["bytes"] or crc != want["crc32"]:
                    raise IndexFormatError(f"{p}: checksum mismatch (size {size}, crc32 {crc:#x}; part.json says "
                                           f"{want['bytes']}, {want['crc32']:#x}); the encoded part is damaged "
                                           f"(move {folder} aside and run `m3search encode` again)")
        batch = EncodedBatch.load(folder, mmap=mmap)
        rows = msgpack.unpackb((folder / DOCS_FILE).read_bytes(), raw=False)
        ids = [r[0] for r in rows]
        if len(ids) != header["n"] or len(batch) != header["n"] or ids_digest(ids) != header["ids_digest"]:
            raise IndexFormatError(f"{folder}: the documents do not match part.json; the part is damaged")
        docs = [Document(*r) for r in rows]
        return EncodedPart(index=index, ids=ids, docs=docs, batch=batch)

    def parts(self) -> list[int]:
        return sorted(self.done_parts())

    def __iter__(self) -> Iterator[EncodedPart]:
        for i in self.parts():
            yield self.read_part(i)

    def __len__(self) -> int:
        return sum(int(self.part_header(i)["n"]) for i in self.parts())


def plan_parts(docs: Iterable[Any], part_size: int) -> Iterator[tuple[int, list[Any]]]:
    """(part index, documents) in corpus order: the fixed cut that makes reruns and retries land in place."""
    chunk: list[Any] = []
    index = 0
    for d in docs:
        chunk.append(d)
        if len(chunk) == part_size:
            yield index, chunk
            index, chunk = index + 1, []
    if chunk:
        yield index, chunk


def check_part_ids(enc: EncodedCorpus, index: int, ids: Sequence[str]) -> None:
    """A complete part must hold the same documents as the corpus has at its positions (a resumed run)."""
    header = enc.part_header(index)
    if header["n"] != len(ids) or header["ids_digest"] != ids_digest(list(ids)):
        raise InputError(f"{enc.path / part_name(index)} holds other documents than the corpus has at positions "
                         f"{index * enc.part_size}..{index * enc.part_size + len(ids) - 1}: the corpus changed since "
                         "it was encoded; encode it into a new folder")
