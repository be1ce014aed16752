"""On-disk format of sparse segments: versions, truncation and corruption are refused with IndexFormatError."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.components import flip_bits

from m3search.errors import IndexFormatError
from m3search.indexes import segment_files
from m3search.indexes.fsutil import sealed_json
from m3search.indexes.sparse import SparseComponent


@pytest.fixture
def segment(tmp_path, sparse_batch, sparse_docs):
    comp = SparseComponent({"block_docs": 16, "dense_fraction": 0.1})
    meta = comp.build(tmp_path / "seg", sparse_batch(sparse_docs), tmp_path / "shared")
    return comp, tmp_path / "seg", meta, tmp_path / "shared"


def _open(segment):
    comp, path, meta, shared = segment
    return comp.open(path, meta, shared)


def _open_and_use(segment):
    """Open, then touch every array: a search and the stored weights of every document."""
    reader = _open(segment)
    q = reader.doc_weights(np.arange(reader.n_docs))
    reader.search(q[:4], k=5)
    return reader


def _edit_header(path, **changes):
    header = json.loads((path / "sparse.json").read_text())
    header.update(changes)
    (path / "sparse.json").write_text(json.dumps(header))


def test_segment_is_self_describing_and_sized(segment):
    comp, path, meta, shared = segment
    header = json.loads((path / "sparse.json").read_text())
    assert header["format"] == "m3search.sparse.segment" and header["version"] == 4
    files = {p.name for p in path.iterdir()}
    assert files == {"sparse.json"} | {f"{name}.arr" for name in header["arrays"]}
    reader = _open(segment)
    assert reader.nbytes() == sum(p.stat().st_size for p in path.iterdir()) == meta["nbytes"]
    assert meta["n_docs"] == reader.n_docs == 1500


@pytest.mark.parametrize("name", ["postings", "term_ptr", "fwd_weights", "dense_max"])
def test_truncated_file_is_refused(segment, name):
    path = segment[1] / f"{name}.arr"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 3])
    with pytest.raises(IndexFormatError, match="truncated"):
        _open(segment)


def test_appended_bytes_are_refused(segment):
    path = segment[1] / "postings.arr"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(IndexFormatError, match="truncated or overwritten"):
        _open(segment)


@pytest.mark.parametrize("name", ["postings", "fwd_ids", "term_ids"])
def test_flipped_byte_is_refused(segment, name):
    flip_bits(segment[1] / f"{name}.arr", 0x5A)
    with pytest.raises(IndexFormatError, match=f"{name}.arr.*checksum"):
        _open_and_use(segment)


def test_every_byte_is_checked_lazily_by_block(tmp_path, sparse_batch, sparse_docs, monkeypatch):
    """A flipped bit anywhere in a big array passes the open (cheap) and is caught the first time the
    array is used; `verify="full"` catches it at open."""
    monkeypatch.setattr(segment_files, "BLOCK_BYTES", 256)
    comp = SparseComponent()
    path, shared = tmp_path / "big", tmp_path / "shared"
    meta = comp.build(path, sparse_batch(sparse_docs), shared)
    segment = (comp, path, meta, shared)
    file = path / "postings.arr"
    nbytes = json.loads((path / "sparse.json").read_text())["arrays"]["postings"]["nbytes"]
    assert nbytes > 2048
    data = bytearray(file.read_bytes())
    data[nbytes // 2] ^= 0x01  # in the middle, where the old edge checks never looked
    file.write_bytes(bytes(data))
    reader = _open(segment)
    with pytest.raises(IndexFormatError, match=r"postings.arr: bytes \d+\.\.\d+ fail their checksum"):
        reader.search(reader.doc_weights(np.arange(20)), k=5)
    with pytest.raises(IndexFormatError, match="checksum"):
        SparseComponent({"verify": "full"}).open(path, meta, shared)


def test_missing_file_or_header_is_refused(segment):
    (segment[1] / "group_ptr.arr").unlink()
    with pytest.raises(IndexFormatError, match="missing"):
        _open(segment)
    (segment[1] / "sparse.json").unlink()
    with pytest.raises(IndexFormatError, match="missing"):
        _open(segment)


def test_newer_or_unknown_versions_are_refused(segment):
    _edit_header(segment[1], version=5)
    with pytest.raises(IndexFormatError, match="newer.*upgrade"):
        _open(segment)
    _edit_header(segment[1], version=1)
    with pytest.raises(IndexFormatError, match="older m3search.*rebuild"):
        _open(segment)
    _edit_header(segment[1], version=2, format="something.else")
    with pytest.raises(IndexFormatError, match="format"):
        _open(segment)
    _edit_header(segment[1], format="m3search.sparse.segment", version="1")
    with pytest.raises(IndexFormatError, match="version"):
        _open(segment)


def test_inconsistent_header_is_refused(segment):
    _edit_header(segment[1], n_docs=1499)
    with pytest.raises(IndexFormatError):
        _open(segment)


def test_garbage_header_is_refused(segment):
    (segment[1] / "sparse.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="unreadable"):
        _open(segment)


def test_structural_damage_with_matching_checksums_is_refused(segment):
    """A pointer array that is wrong but internally consistent (re-checksummed) still fails the checks."""
    comp, path, meta, shared = segment
    header = json.loads((path / "sparse.json").read_text())
    ptr = np.array(segment_files.open_array(path, "term_ptr.arr", header["arrays"]["term_ptr"]))
    ptr[5], ptr[6] = ptr[6], ptr[5]
    header["arrays"]["term_ptr"] = segment_files.write_array(path, "term_ptr.arr", ptr)
    (path / "sparse.json").write_text(json.dumps(header))
    with pytest.raises(IndexFormatError, match="monotone"):
        _open(segment)


def test_segment_of_another_index_is_refused(segment, tmp_path, sparse_batch, sparse_docs):
    comp, path, meta, shared = segment
    other = SparseComponent({"max_weight": 9.0})
    other.build(tmp_path / "other", sparse_batch(sparse_docs[:10]), tmp_path / "other_shared")
    with pytest.raises(IndexFormatError, match="another index"):
        comp.open(path, meta, tmp_path / "other_shared")
    with pytest.raises(IndexFormatError, match="documents"):
        comp.open(path, {**meta, "n_docs": 3}, shared)


def test_quantizer_file_versions(segment):
    comp, path, meta, shared = segment
    q = json.loads((shared / "quantizer.json").read_text())
    assert q["format"] == "m3search.sparse.quantizer" and q["bits"] == 8
    (shared / "quantizer.json").write_text(json.dumps({**q, "version": 99}))
    with pytest.raises(IndexFormatError, match="newer"):
        comp.open(path, meta, shared)
    body = {k: v for k, v in q.items() if k != "sha256"}
    (shared / "quantizer.json").write_text(json.dumps(sealed_json({**body, "max_weight": -1})))
    with pytest.raises(IndexFormatError, match="max_weight"):
        comp.open(path, meta, shared)
    (shared / "quantizer.json").write_text(json.dumps({**q, "max_weight": q["max_weight"] * 2}))
    with pytest.raises(IndexFormatError, match="checksum"):  # changed without resealing
        comp.open(path, meta, shared)
    (shared / "quantizer.json").write_text(json.dumps({**body, "version": 1}))  # version 1 had no checksum
    comp.open(path, meta, shared)
