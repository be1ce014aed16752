"""A long-lived open_index() sees other writers' commits at its next search and pins nothing between
searches (issue #10 item 4: it stayed on generation 1 through 120 commits and bloated data.mdb 8x)."""
from __future__ import annotations

import subprocess
import sys

import pytest

import m3search

MODEL = "hashing:dim=16,vocab_size=3000"


def _writer_script(path, n_commits: int) -> str:
    return (
        "import m3search\n"
        f"ix = m3search.open_index({str(path)!r})\n"
        f"for i in range({n_commits}):\n"
        "    ix.add([(f'w{i}', f'written by another process number {i} ' + 'pad ' * 200)])\n"
        "    ix.delete([f'w{i - 1}']) if i % 2 else None\n"
        "ix.close()\n"
    )


def test_reader_sees_commits_of_another_process(tmp_path):
    path = tmp_path / "idx"
    m3search.build_index(path, [("a", "alpha first document")], model=MODEL).close()
    reader = m3search.open_index(path)
    assert [h.docid for h in reader.search("alpha first document", k=5)] == ["a"]
    first_gen = reader.refresh()
    run = subprocess.run([sys.executable, "-c", _writer_script(path, 3)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    hits = reader.search("written by another process number 2", k=10, mode="sparse")
    assert "w2" in [h.docid for h in hits]
    assert len(reader) == 3  # a, w1 and w2 (w0 was deleted)
    assert reader.refresh() > first_gen
    reader.close()


@pytest.mark.slow
def test_idle_reader_does_not_bloat_the_document_store(tmp_path):
    sizes = {}
    for with_reader in (False, True):
        path = tmp_path / f"idx-{with_reader}"
        m3search.build_index(path, [("a", "alpha first document")], model=MODEL).close()
        reader = m3search.open_index(path) if with_reader else None
        if reader is not None:
            reader.search("alpha", k=1)  # then stays open, idle, while another process commits
        run = subprocess.run([sys.executable, "-c", _writer_script(path, 20)], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        sizes[with_reader] = (path / "docs.lmdb" / "data.mdb").stat().st_size
        if reader is not None:
            assert reader.search("written by another process number 19", k=1, mode="sparse")[0].docid == "w19"
            reader.close()
    assert sizes[True] <= 1.5 * sizes[False], sizes
