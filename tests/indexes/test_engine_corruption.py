"""Index engine: damaged files give a clear IndexFormatError naming the file, never garbage results."""
from __future__ import annotations

import os

import pytest
from helpers.engine_doubles import make_text

from m3search.errors import IndexFormatError
from m3search.indexes.index import Index


@pytest.fixture
def built(make_index, hashing_encoder, tmp_path):
    """An index of two committed segments, one of them merged with an id map; returns its path."""
    index = make_index(auto_merge=False)
    for b in range(3):
        ids = [f"b{b}-{i}" for i in range(20)]
        texts = [make_text(i) for i in ids]
        index.add(ids, hashing_encoder.encode(texts), [{"text": t} for t in texts])
        index.commit()
    index.delete(["b0-3"])
    index.optimize()
    ids = [f"c{i}" for i in range(5)]
    index.add(ids, hashing_encoder.encode(ids), [{"text": t} for t in ids])
    index.commit()
    index.close()
    return tmp_path / "ix"


def segment_dirs(path):
    return sorted((path / "segments").iterdir())


def open_and_search(path, registry):
    with Index.open(path, registry=registry) as index, index.snapshot() as snap:
        return snap.n_docs


def test_intact_index_opens(built, engine_registry):
    assert open_and_search(built, engine_registry) == 59 + 5


@pytest.mark.parametrize("name", ["dense/vectors.npy", "multivec/vecs.npy", "sparse/indptr.npy", "ids.arr"])
def test_truncated_segment_file(built, engine_registry, name):
    target = segment_dirs(built)[0] / name
    with open(target, "r+b") as f:
        f.truncate(os.path.getsize(target) - 8)
    expected = rf"segment {target.parent.name if name == 'ids.arr' else ''}.*{name}.* bytes but .* were committed"
    with pytest.raises(IndexFormatError, match=expected):
        open_and_search(built, engine_registry)


def test_missing_segment_file_and_folder(built, engine_registry):
    first, second = segment_dirs(built)
    (second / "dense" / "vectors.npy").unlink()
    with pytest.raises(IndexFormatError, match=r"vectors.npy is missing"):
        open_and_search(built, engine_registry)
    import shutil

    shutil.rmtree(second)
    with pytest.raises(IndexFormatError, match=rf"segment folder .*{second.name} is missing .*lists it"):
        open_and_search(built, engine_registry)


def test_corrupt_component_file_of_the_right_size(built, engine_registry):
    """Garbage of the committed size gets past the size check; the component's own check names it."""
    seg = segment_dirs(built)[0]
    target = seg / "dense" / "vectors.npy"
    size = os.path.getsize(target)
    target.write_bytes(b"\x00" * size)
    with pytest.raises(IndexFormatError, match=rf"segment {seg.name}, component 'dense'.*vectors.npy"):
        open_and_search(built, engine_registry)


def test_truncated_docstore(built, engine_registry):
    data = built / "docs.lmdb" / "data.mdb"
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    with pytest.raises(IndexFormatError, match="data.mdb .*truncated"):
        Index.open(built, registry=engine_registry)


def test_garbage_docstore(built, engine_registry):
    data = built / "docs.lmdb" / "data.mdb"
    data.write_bytes(os.urandom(4096 * 4))
    with pytest.raises(IndexFormatError, match="docs.lmdb"):
        Index.open(built, registry=engine_registry)


def test_missing_docstore(built, engine_registry):
    import shutil

    shutil.rmtree(built / "docs.lmdb")
    with pytest.raises(IndexFormatError, match="docs.lmdb is missing"):
        Index.open(built, registry=engine_registry)


def test_unreadable_manifest(built, engine_registry):
    (built / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="manifest.json is not readable JSON"):
        Index.open(built, registry=engine_registry)
    (built / "manifest.json").write_text('{"format": "m3search.index", "format_version": 2}')
    with pytest.raises(IndexFormatError, match="lacks the fields"):
        Index.open(built, registry=engine_registry)
