"""Paths from stored state and from corpus folders stay inside their folders (issue #10 item 6)."""
from __future__ import annotations

import os

import pytest

import m3search
from m3search.errors import IndexFormatError
from m3search.indexes import docstore
from m3search.indexes.state import CommitState

MODEL = "hashing:dim=16,vocab_size=3000"


def test_crafted_segment_name_is_refused(tmp_path):
    path = tmp_path / "idx"
    m3search.build_index(path, [(f"d{i}", f"text {i}") for i in range(5)], model=MODEL).close()
    outside = tmp_path / "outside_seg"
    outside.mkdir()
    env = docstore.open_env(path)
    store = docstore.DocStore.open(env, path / docstore.DOCS_DIR)
    with env.begin(write=True) as txn:
        state = store.state(txn).to_dict()
        state["segments"][0]["name"] = "../../outside_seg"
        txn.put(docstore.KEY_STATE, docstore.seal(docstore.pack(state)), db=store.meta)
    docstore.release_env(env)
    with pytest.raises(IndexFormatError, match="segment name '../../outside_seg' is not one m3search writes"):
        m3search.open_index(path)
    with pytest.raises(IndexFormatError):
        CommitState.from_dict(state, where="x")


def test_folder_indexing_does_not_follow_symlinks_out(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("inside text")
    secret = tmp_path / "secret.txt"
    secret.write_text("outside secret")
    os.symlink(secret, notes / "leak.txt")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "b.md").write_text("another outside file")
    os.symlink(tmp_path / "elsewhere", notes / "linked-dir")
    from click.testing import CliRunner

    from m3search.cli import main

    result = CliRunner().invoke(main, ["index", str(notes), "-o", str(tmp_path / "idx"), "--model", MODEL])
    assert result.exit_code == 0, result.output
    assert "symbolic link that leads out of the folder" in result.output
    with m3search.open_index(tmp_path / "idx") as index:
        assert len(index) == 1
        assert index.search("outside secret", k=5)[0].docid == "a.txt"
