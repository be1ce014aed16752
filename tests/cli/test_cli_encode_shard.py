"""`m3search encode`, `index ENCODED`, `index --shards`, `shard`, and `query` on a sharded index."""
from __future__ import annotations

import json


from m3search.encoded import EncodedCorpus


def _hits(run, index, *args):
    result = run(["query", index, "delete a column", "open the navigator", "--json", "-k", "5", *args])
    assert result.exit_code == 0, result.output
    return [[(h["docid"], round(h["score"], 5)) for h in json.loads(line)["hits"]] for line in result.output.splitlines()]


def test_encode_then_index_without_a_model_matches_direct_indexing(run, jsonl, tmp_path, monkeypatch):
    enc, idx, direct = tmp_path / "enc", tmp_path / "idx", tmp_path / "direct"
    r = run(["encode", jsonl, "-o", enc, "--part-size", "3", "-q"])
    assert r.exit_code == 0, r.output
    corpus = EncodedCorpus.open(enc)
    assert corpus.parts() == [0, 1, 2] and len(corpus) == 8
    # resumed: nothing re-encoded
    r = run(["encode", jsonl, "-o", enc, "--part-size", "3"])
    assert "Skipped 3 parts already encoded" in r.output
    # indexing precomputed parts loads no model: an unloadable model name in the env must not matter
    monkeypatch.delenv("M3SEARCH_MODEL")
    r = run(["index", enc, "-o", idx])
    assert r.exit_code == 0 and "Indexed 8 precomputed documents" in r.output, r.output
    r = run(["index", enc, "-o", idx])  # again: every id is already there
    assert "Skipped 8 documents" in r.output
    r = run(["index", jsonl, "-o", direct, "--model", corpus.model])
    assert r.exit_code == 0, r.output
    assert _hits(run, idx) == _hits(run, direct)


def test_encode_refuses_another_part_size_and_detects_damage(run, jsonl, tmp_path):
    enc = tmp_path / "enc"
    assert run(["encode", jsonl, "-o", enc, "--part-size", "4", "-q"]).exit_code == 0
    r = run(["encode", jsonl, "-o", enc, "--part-size", "3"])
    assert r.exit_code != 0 and "--part-size 4" in r.output
    dense = enc / "part-000001" / "dense.npy"
    data = bytearray(dense.read_bytes())
    data[-1] ^= 0xFF
    dense.write_bytes(bytes(data))
    r = run(["index", enc, "-o", tmp_path / "idx"])
    assert r.exit_code != 0 and "checksum mismatch" in r.output and "dense.npy" in r.output


def test_sharded_index_and_shard_command_answer_like_the_plain_index(run, jsonl, tmp_path):
    plain, sharded, copy = tmp_path / "plain", tmp_path / "sharded", tmp_path / "copy"
    assert run(["index", jsonl, "-o", plain, "-q"]).exit_code == 0
    r = run(["index", jsonl, "-o", sharded, "--shards", "3"])
    assert r.exit_code == 0 and "Indexed 8 documents" in r.output, r.output
    r = run(["shard", plain, "-o", copy, "--shards", "2"])
    assert r.exit_code == 0 and "Copied 8 documents" in r.output, r.output
    for fusion in ("weighted", "rrf"):
        want = _hits(run, plain, "--fusion", fusion)
        assert _hits(run, sharded, "--fusion", fusion) == want
        assert _hits(run, copy, "--fusion", fusion) == want
    r = run(["info", sharded])
    assert r.exit_code == 0 and "m3search.sharded_index" in r.output and "documents   8" in r.output
    info = json.loads(run(["info", copy, "--json"]).output)
    assert info["n_shards"] == 2 and [s["n_docs"] for s in info["shards"]] and info["n_docs"] == 8


def test_single_machine_path_never_imports_ray(tmp_path):
    import subprocess
    import sys

    code = f"""
import sys, m3search, m3search.cli, m3search.sharding, m3search.encoding
idx = m3search.build_index({str(tmp_path / 'i')!r}, [("a", "one text"), ("b", "another text")], model="hashing:dim=8")
assert idx.search("text", k=1)
s = m3search.build_index({str(tmp_path / 's')!r}, [("a", "one text"), ("b", "another text")], model="hashing:dim=8", shards=2)
assert s.search("text", k=1)
bad = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
assert not bad, bad
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
