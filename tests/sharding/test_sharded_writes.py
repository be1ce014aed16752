"""Writes to a sharded index: interruptions leave every shard at a commit and a rerun resumes; a lost
insertion-order file is rebuilt; mismatched shard counts are refused."""
from __future__ import annotations

import pytest

import m3search
from m3search.errors import ConfigError
from m3search.sharding.layout import order_file, read_order

MODEL = "hashing:dim=16,vocab_size=3000"


def _docs(n):
    return [{"id": f"d{i}", "text": f"document number {i} about topic {i % 7}"} for i in range(n)]


def test_interrupted_add_resumes_without_duplicates(tmp_path):
    def failing():
        yield from _docs(60)
        raise KeyboardInterrupt

    index = m3search.build_index(tmp_path / "s", model=MODEL, shards=3)
    with pytest.raises(KeyboardInterrupt):
        index.add(failing(), batch_size=20, commit_interval=0)  # commits after every chunk
    assert len(index) == 60
    result = index.add(_docs(100), batch_size=20)
    assert (result.added, result.skipped) == (40, 60)
    assert len(index) == 100
    hits = index.search("document number 42", k=100, mode="dense")
    assert sorted(h.docid for h in hits) == sorted(d["id"] for d in _docs(100))
    assert sorted(h.internal_id for h in hits) == list(range(100))  # insertion numbers, each once
    index.close()


def test_lost_order_file_is_rebuilt_at_the_next_write(tmp_path):
    index = m3search.build_index(tmp_path / "s", _docs(30), model=MODEL, shards=2)
    order_file(index.path, "shard-001").unlink()  # as if a crash hit between the commit and its save
    index._refresh()
    assert len(index.search("document", k=30, mode="dense")) == 30  # still searchable
    index.add(_docs(31))
    order = read_order(index.path, "shard-001")
    assert len(order) and (order >= 0).all()
    keys = sorted(h.internal_id for h in index.search("document", k=31, mode="dense"))
    # unique, and real numbers now (the repaired documents follow the known ones, then the new one)
    assert len(set(keys)) == 31 and max(keys) < 1 << 62
    index.close()


def test_shard_count_mismatches_are_refused(tmp_path):
    m3search.build_index(tmp_path / "s", _docs(5), model=MODEL, shards=2).close()
    with pytest.raises(ConfigError, match="has 2 shards, not 3"):
        m3search.build_index(tmp_path / "s", model=MODEL, shards=3)
    m3search.build_index(tmp_path / "p", _docs(5), model=MODEL).close()
    with pytest.raises(ConfigError, match="not sharded"):
        m3search.build_index(tmp_path / "p", model=MODEL, shards=2)


@pytest.mark.parametrize("content", ["[1, 2]", "{\"format\": \"m3search.sharded_index\", \"version\": true}", "{"])
def test_damaged_sharded_header_is_one_clear_error(tmp_path, content):
    from m3search.errors import IndexFormatError
    from m3search.sharding.layout import HEADER, read_header

    (tmp_path / HEADER).write_text(content)
    with pytest.raises(IndexFormatError, match=HEADER):
        read_header(tmp_path)
