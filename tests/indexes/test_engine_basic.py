"""Index engine: creation, opening, format and encoder checks, add/commit/reopen, info, input checks."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from helpers.engine_doubles import assert_matches_brute_force, make_text

from m3search.errors import ConfigError, EncoderMismatchError, IndexFormatError, IndexLockedError, InputError
from m3search.indexes.index import Index
from m3search.indexes.manifest import FORMAT_VERSION, MANIFEST_NAME

QUERIES = ["alpha river", "music theory engine", "golden castle harbor", "nothing matches zzzz"]


def add_docs(index, encoder, ids, version=""):
    texts = [make_text(i + version) for i in ids]
    docs = [{"text": t, "title": i.upper(), "metadata": {"n": k}} for k, (i, t) in enumerate(zip(ids, texts))]
    index.add(ids, encoder.encode(texts), docs)
    return dict(zip(ids, texts))


def test_create_add_commit_reopen(make_index, hashing_encoder, engine_registry, tmp_path):
    index = make_index()
    assert index.generation == 0
    live = add_docs(index, hashing_encoder, [f"a{i}" for i in range(30)])
    with index.snapshot() as snap:
        assert snap.n_docs == 0, "uncommitted adds must be invisible"
    assert index.commit() == 1
    live.update(add_docs(index, hashing_encoder, [f"b{i}" for i in range(25)]))
    assert index.commit() == 2
    assert index.commit() == 2, "a commit with nothing to commit keeps the generation"
    index.close()

    reopened = Index.open(tmp_path / "ix", registry=engine_registry, identity=hashing_encoder.identity)
    with reopened.snapshot() as snap:
        assert snap.generation == 2 and len(snap.segments) == 2
        assert_matches_brute_force(snap, hashing_encoder, live, QUERIES)
        rec = snap.docs(snap.internal_ids(["a3"]))[0]
        assert (rec.id, rec.title, rec.metadata) == ("a3", "A3", {"n": 3})
        assert [e for e, _ in snap.iter_ids()] == [f"a{i}" for i in range(30)] + [f"b{i}" for i in range(25)]
    assert reopened.contains(["a1", "zz", "b24"]).tolist() == [True, False, True]
    reopened.close()


def test_iter_ids_spans_chunks(make_index, hashing_encoder, monkeypatch):
    import m3search.indexes.snapshot as snapshot_module

    monkeypatch.setattr(snapshot_module, "_ITER_CHUNK", 7)
    index = make_index()
    add_docs(index, hashing_encoder, [f"d{i:02d}" for i in range(20)])
    index.delete(["d07", "d13"])
    index.commit()
    with index.snapshot() as snap:
        pairs = list(snap.iter_ids())
    assert [e for e, _ in pairs] == [f"d{i:02d}" for i in range(20) if i not in (7, 13)]
    assert [i for _, i in pairs] == sorted(i for _, i in pairs)


def test_manifest_records_identity_model_and_configs(make_index, tmp_path):
    make_index()
    manifest = json.loads((tmp_path / "ix" / MANIFEST_NAME).read_text())
    assert manifest["format"] == "m3search.index" and manifest["format_version"] == FORMAT_VERSION
    assert manifest["encoder"]["dense_dim"] == 32 and manifest["model"].startswith("hashing")
    assert manifest["components"]["dense"] == {"metric": "ip"}, "configs are stored with defaults filled in"


def test_open_refuses_newer_or_unknown_format(make_index, tmp_path, engine_registry):
    make_index().close()
    path = tmp_path / "ix" / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(IndexFormatError, match="newer than this m3search reads"):
        Index.open(tmp_path / "ix", registry=engine_registry)
    path.write_text(json.dumps({**manifest, "format": "something.else"}))
    with pytest.raises(IndexFormatError, match="is not 'm3search.index'"):
        Index.open(tmp_path / "ix", registry=engine_registry)
    path.write_text(json.dumps({**manifest, "components": {"bogus": {}}}))
    with pytest.raises(IndexFormatError, match="unknown index component 'bogus'"):
        Index.open(tmp_path / "ix", registry=engine_registry)


def test_open_refuses_newer_docstore_version(make_index, tmp_path, engine_registry):
    from m3search.indexes import docstore

    make_index().close()
    env = docstore.open_env(tmp_path / "ix")
    store = docstore.DocStore(env, tmp_path / "ix" / docstore.DOCS_DIR)
    with env.begin(write=True) as txn:
        txn.put(docstore.KEY_FORMAT, docstore.pack({"format": docstore.DOCSTORE_FORMAT, "version": 99}), db=store.meta)
    docstore.release_env(env)
    with pytest.raises(IndexFormatError, match="document store version 99 is newer"):
        Index.open(tmp_path / "ix", registry=engine_registry)


def test_open_refuses_folder_without_manifest(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexFormatError, match="manifest.json is missing"):
        Index.open(tmp_path / "empty")
    with pytest.raises(IndexFormatError, match="no such folder"):
        Index.open(tmp_path / "absent")


def test_encoder_mismatch_lists_the_differing_fields(make_index, tmp_path, hashing_encoder, engine_registry):
    make_index().close()
    other = dataclasses.replace(hashing_encoder.identity, dense_dim=64, tokenizer_hash="other")
    with pytest.raises(EncoderMismatchError) as err:
        Index.open(tmp_path / "ix", identity=other, registry=engine_registry)
    assert "dense_dim: 32 != 64" in str(err.value) and "tokenizer_hash" in str(err.value)
    assert "vocab_size:" not in str(err.value) and "multivec_dim:" not in str(err.value)


def test_create_refuses_existing_index_and_foreign_folder(make_index, tmp_path, hashing_encoder, engine_registry):
    make_index().close()
    with pytest.raises(InputError, match="already an index"):
        Index.create(tmp_path / "ix", hashing_encoder.identity, registry=engine_registry)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="notes.txt"):
        Index.create(foreign, hashing_encoder.identity, registry=engine_registry)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_create_validates_component_configs_before_touching_disk(tmp_path, hashing_encoder, engine_registry):
    with pytest.raises(ConfigError, match="unknown config keys"):
        Index.create(
            tmp_path / "ix", hashing_encoder.identity, components={"dense": {"nlist": 3}}, registry=engine_registry
        )
    with pytest.raises(ConfigError, match="valid kinds"):
        Index.create(tmp_path / "ix", hashing_encoder.identity, components={"colbert": {}}, registry=engine_registry)
    assert not (tmp_path / "ix").exists()


def test_subset_of_components(make_index, hashing_encoder):
    index = make_index(components={"sparse": {}})
    live = add_docs(index, hashing_encoder, [f"x{i}" for i in range(10)])
    index.commit()
    with index.snapshot() as snap:
        assert snap.dense is None and snap.multivec is None
        assert_matches_brute_force(snap, hashing_encoder, live, QUERIES)
    assert set(index.info()["components"]) == {"sparse"}


def test_second_writer_is_refused(make_index, tmp_path, engine_registry):
    index = make_index()
    with pytest.raises(IndexLockedError, match="writer.lock"):
        Index.open(tmp_path / "ix", writable=True, registry=engine_registry)
    reader = Index.open(tmp_path / "ix", registry=engine_registry)  # readers need no lock
    reader.close()
    index.close()
    Index.open(tmp_path / "ix", writable=True, registry=engine_registry).close()


def test_read_only_index_refuses_writes(make_index, tmp_path, hashing_encoder, engine_registry):
    make_index().close()
    with Index.open(tmp_path / "ix", registry=engine_registry) as reader:
        with pytest.raises(InputError, match="read-only"):
            reader.add(["a"], hashing_encoder.encode(["x"]))


def test_info_reports_counts_sizes_and_versions(make_index, hashing_encoder):
    index = make_index()
    add_docs(index, hashing_encoder, [f"a{i}" for i in range(12)])
    index.commit()
    index.delete(["a0", "a1"])
    index.commit()
    info = index.info()
    assert info["format_version"] == FORMAT_VERSION and info["m3search_version"]
    assert info["encoder"]["name"] == "hashing" and info["model"].startswith("hashing")
    assert (info["generation"], info["n_docs"], info["n_deleted"], info["n_segments"]) == (2, 10, 2, 1)
    assert info["segments"][0]["n_docs"] == 12 and info["segments"][0]["n_deleted"] == 2
    for kind in ("dense", "sparse", "multivec"):
        assert info["components"][kind]["bytes"] > 0
    assert info["components"]["dense"]["bytes"] >= 12 * 32 * 4
    assert info["components"]["multivec"]["fidelity"]["mean_cosine"] == 1.0
    assert info["total_bytes"] > info["docstore_bytes"] > 0


@pytest.mark.parametrize(
    "ids, message",
    [
        (["a", "a", "b"], r"occur more than once"),
        (["a", ""], r"position 1 .*non-empty strings"),
        ("abc", r"not one string"),
        (["a", 3, "c"], r"position 1"),
    ],
)
def test_bad_ids_are_refused(make_index, hashing_encoder, ids, message):
    index = make_index()
    with pytest.raises(InputError, match=message):
        index.add(ids, hashing_encoder.encode(["x"] * len(ids)))
    assert not index.has_uncommitted_changes


def test_bad_batches_and_docs_are_refused(make_index, hashing_encoder):
    from m3search.encoder import HashingEncoder

    index = make_index()
    with pytest.raises(InputError, match="2 ids but the batch encodes 1"):
        index.add(["a", "b"], hashing_encoder.encode(["x"]))
    with pytest.raises(InputError, match="dense dimension is 16 but the index's encoder 'hashing' has 32"):
        index.add(["a"], HashingEncoder(dim=16, vocab_size=5000).encode(["x"]))
    with pytest.raises(InputError, match="unknown fields \\['body'\\]"):
        index.add(["a"], hashing_encoder.encode(["x"]), [{"body": "x"}])
    with pytest.raises(InputError, match="metadata must be JSON-like"):
        index.add(["a"], hashing_encoder.encode(["x"]), [{"text": "x", "metadata": {"f": object()}}])
    batch = hashing_encoder.encode(["x", "y z", "w"])
    batch.dense[2, 0] = np.nan
    with pytest.raises(InputError, match="dense vector of document 'c' .row 2. holds NaN"):
        index.add(["a", "b", "c"], batch)
    batch = hashing_encoder.encode(["x", "y z", "w"])
    batch.multivec[batch.offsets[1] + 1, 3] = np.inf
    with pytest.raises(InputError, match="token vector 1 of document 'b'"):
        index.add(["a", "b", "c"], batch)
    batch = hashing_encoder.encode(["x", "y z", "w"])
    batch.sparse.data[-1] = np.nan
    with pytest.raises(InputError, match="lexical weight of token .* in document 'c'"):
        index.add(["a", "b", "c"], batch)
    assert not index.has_uncommitted_changes


def test_add_of_existing_id_is_refused_with_the_fix(make_index, hashing_encoder):
    index = make_index()
    add_docs(index, hashing_encoder, ["a", "b"])
    with pytest.raises(InputError, match=r"\['b'\] are already in the index; use upsert"):
        add_docs(index, hashing_encoder, ["c", "b"])  # pending (uncommitted) ids count too
    index.commit()
    with pytest.raises(InputError, match=r"\['a'\] are already in the index"):
        add_docs(index, hashing_encoder, ["a"])


def test_precomputed_batches_from_disk(make_index, hashing_encoder, tmp_path):
    """Representations encoded elsewhere (EncodedBatch.save) index like fresh ones (memory-mapped input)."""
    from m3search.types import EncodedBatch

    texts = {f"p{i}": make_text(f"p{i}") for i in range(15)}
    hashing_encoder.encode(list(texts.values())).save(tmp_path / "batch")
    index = make_index()
    index.add(list(texts), EncodedBatch.load(tmp_path / "batch", mmap=True), [{"text": t} for t in texts.values()])
    index.commit()
    with index.snapshot() as snap:
        assert_matches_brute_force(snap, hashing_encoder, texts, QUERIES)


def test_long_and_unicode_ids(make_index, hashing_encoder):
    index = make_index()
    long_id = "https://example.org/" + "x" * 1000
    ids = [long_id, "日本語-ид-🙂", "plain"]
    add_docs(index, hashing_encoder, ids)
    index.commit()
    with index.snapshot() as snap:
        internal = snap.internal_ids(ids + [long_id + "y"])
        assert (internal[:3] >= 0).all() and internal[3] == -1
        assert [r.id for r in snap.docs(internal[:3])] == ids
        assert sorted(e for e, _ in snap.iter_ids()) == sorted(ids)
    assert index.delete([long_id]) == 1
    index.commit()
    assert index.contains(ids).tolist() == [False, True, True]


def test_an_index_dropped_without_close_releases_the_writer_lock(make_index, tmp_path, engine_registry):
    import gc

    make_index().close()
    writer = Index.open(tmp_path / "ix", writable=True, registry=engine_registry)
    snap = writer.snapshot()
    del writer
    gc.collect()
    assert snap.n_docs == 0 and snap.internal_ids(["x"]).tolist() == [-1], "a snapshot keeps its Index alive"
    with pytest.raises(IndexLockedError):
        Index.open(tmp_path / "ix", writable=True, registry=engine_registry)
    del snap
    gc.collect()
    Index.open(tmp_path / "ix", writable=True, registry=engine_registry).close()
