"""Integrity at the command line: nothing deleted that the run did not create, damage reported clearly."""
from __future__ import annotations

import json
import shutil

import pytest

import m3search
from m3search.errors import IndexFormatError


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_folder_without_manifest_is_refused_not_wiped(run, jsonl, tmp_path, docs):
    """A partial copy (manifest.json missing) must survive `m3search index more -o idx` untouched."""
    idx = tmp_path / "idx"
    assert run(["index", jsonl, "-o", idx, "-q"]).exit_code == 0
    (idx / "manifest.json").unlink()
    before = _tree(idx)
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"id": "new-1", "text": "a new passage"}) + "\n", encoding="utf-8")
    result = run(["index", more, "-o", idx])
    assert result.exit_code != 0
    assert "no manifest.json" in result.stderr and "will not" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert _tree(idx) == before  # nothing removed, nothing added
    # the query error names the damage and the way out, and never recommends the indexing command
    q = run(["query", idx, "anything"])
    assert q.exit_code != 0 and "no manifest.json" in q.stderr and "m3search index" not in q.stderr


def test_api_build_index_refuses_folder_without_manifest(tmp_path):
    idx = tmp_path / "idx"
    m3search.build_index(idx, [("a", "alpha text")], model="hashing:dim=16").close()
    (idx / "manifest.json").unlink()
    size = (idx / "docs.lmdb" / "data.mdb").stat().st_size
    with pytest.raises(IndexFormatError, match="no manifest.json"):
        m3search.build_index(idx, [("b", "beta text")], model="hashing:dim=16")
    assert (idx / "docs.lmdb" / "data.mdb").stat().st_size == size and (idx / "segments").is_dir()


def test_user_files_are_never_removed(run, jsonl, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    result = run(["index", jsonl, "-o", folder])
    assert result.exit_code != 0 and "not an index" in result.stderr
    assert (folder / "notes.txt").read_text() == "keep me"


def test_empty_folder_becomes_an_index(run, jsonl, tmp_path, docs):
    folder = tmp_path / "empty"
    folder.mkdir()
    assert run(["index", jsonl, "-o", folder, "-q"]).exit_code == 0
    with m3search.open_index(folder) as index:
        assert len(index) == len(docs)
    assert not [p for p in tmp_path.iterdir() if ".creating-" in p.name]
