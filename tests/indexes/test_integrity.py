"""Storage damage is detected and reported, never served: record checksums, array block checksums,
LMDB errors as IndexFormatError, `m3search check`, format versions."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

import m3search
from m3search.errors import IndexFormatError
from m3search.indexes.check import check_index

MODEL = "hashing:dim=16,vocab_size=3000"
DOCS = [(f"d{i}", f"passage number {i} about topic {i % 7} and more words") for i in range(300)]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = tmp_path_factory.mktemp("integrity") / "idx"
    index = m3search.build_index(path, DOCS[:200], model=MODEL)
    index.add(DOCS[200:])
    index.delete(["d3"])
    index.close()
    return path


@pytest.fixture
def copy(pristine, tmp_path):
    target = tmp_path / "idx"
    shutil.copytree(pristine, target)
    return target


def _flip_all(path, needle: bytes, offset: int = 5):
    data = bytearray(path.read_bytes())
    hits = [m.start() for m in re.finditer(re.escape(needle), bytes(data))]
    assert hits, needle
    for i in hits:
        data[i + offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_intact_index_checks_ok(pristine):
    report = check_index(pristine)
    assert report.ok, report.problems
    assert report.documents == 299 and report.arrays > 10


def test_flipped_bit_in_a_document_text_is_reported_not_served(copy):
    _flip_all(copy / "docs.lmdb" / "data.mdb", b"passage number 42 about")
    with m3search.open_index(copy) as index:
        with pytest.raises(IndexFormatError, match=r"docs.lmdb: document record 42 fails its checksum"):
            index.search("passage number 42 about topic 0", k=3, mode="sparse")
        # documents not touched are still served
        assert index.search("passage number 43 about topic 1", k=1, mode="sparse", with_text=False)[0].docid == "d43"
    report = check_index(copy)
    assert report.problems == [p for p in report.problems if "document record 42" in p] and len(report.problems) == 1


def test_flipped_byte_deep_in_a_segment_array_is_reported(copy):
    arrays = sorted(copy.glob("segments/*/multivec/codes.arr"))
    target = arrays[0]
    entry = json.loads((target.parent / "multivec.json").read_text())["files"]["codes.arr"]
    data = bytearray(target.read_bytes())
    data[entry["nbytes"] - 10] ^= 0x10  # near the end of the data, where no sample check looked
    target.write_bytes(bytes(data))
    with m3search.open_index(copy) as index:
        with pytest.raises(IndexFormatError, match=r"codes.arr: bytes \d+\.\.\d+ fail their checksum"):
            for i in range(0, 300, 10):
                index.search(f"passage number {i} about", k=5, mode="multivec", depths=300)
    report = check_index(copy)
    assert len(report.problems) == 1 and "codes.arr" in report.problems[0]


def test_check_command_exit_status(pristine, copy):
    ok = subprocess.run([sys.executable, "-m", "m3search", "check", str(pristine)], capture_output=True, text=True)
    assert ok.returncode == 0 and "OK" in ok.stderr
    _flip_all(copy / "docs.lmdb" / "data.mdb", b"passage number 7 about")
    bad = subprocess.run([sys.executable, "-m", "m3search", "check", str(copy), "--json"], capture_output=True,
                         text=True)
    assert bad.returncode == 1, bad.stderr
    report = json.loads(bad.stdout)
    assert report["ok"] is False and any("document record 7" in p for p in report["problems"])
    assert "Traceback" not in bad.stderr


def test_old_format_version_is_refused_with_the_way_out(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(IndexFormatError, match="format version 1 .*rebuild the index"):
        m3search.open_index(copy)


def test_lmdb_error_becomes_index_format_error(copy):
    """Damaged LMDB pages raise lmdb errors deep inside reads: they come out as one IndexFormatError."""
    data = copy / "docs.lmdb" / "data.mdb"
    raw = bytearray(data.read_bytes())
    psize = 4096
    for page in range(2, len(raw) // psize):  # every page but the two meta pages: garbage
        raw[page * psize : page * psize + 16] = b"\xff" * 16
    data.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="docs.lmdb"):
        with m3search.open_index(copy) as index:
            index.search("passage number 1", k=3)
    assert not check_index(copy).ok
