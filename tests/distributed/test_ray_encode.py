"""Encoding on a real local Ray cluster (head + worker node) writes the same bytes as local encoding;
a worker killed mid-part loses and duplicates nothing; a rerun resumes."""
from __future__ import annotations

import filecmp

import pytest

from m3search.data import SAMPLE_CORPUS, CorpusReader
from m3search.encoded import EncodedCorpus
from m3search.encoding import encode_corpus

pytestmark = pytest.mark.slow

MODEL = "hashing:dim=32,vocab_size=5000"
PART = 64


def _docs(n=None):
    docs = [{"id": d.id, "text": d.text, "title": d.title, "metadata": {"n": i}}
            for i, d in enumerate(CorpusReader([str(SAMPLE_CORPUS)]))]
    return docs[:n] if n else docs


def _same_folders(a, b):
    parts_a = sorted(p.name for p in a.iterdir() if p.name.startswith("part-"))
    parts_b = sorted(p.name for p in b.iterdir() if p.name.startswith("part-"))
    assert parts_a == parts_b and parts_a
    for name in parts_a:
        files = sorted(f.name for f in (a / name).iterdir())
        assert files == sorted(f.name for f in (b / name).iterdir())
        match, mismatch, errors = filecmp.cmpfiles(a / name, b / name, files, shallow=False)
        assert not mismatch and not errors, (name, mismatch, errors)


def test_ray_encoding_equals_local_bit_for_bit_despite_a_killed_worker_and_resumes(ray_cluster, tmp_path):
    """One Ray run covers the three promises: it resumes a folder a first (interrupted) run left with 2
    of 5 parts, one of its worker processes dies mid-part, and the result equals local encoding byte for
    byte, every document once, in corpus order."""
    from m3search.distributed.encode_job import encode_corpus_ray

    docs = _docs()
    first = encode_corpus(docs[: 2 * PART], tmp_path / "ray", MODEL, part_size=PART)  # the interrupted run
    assert first.parts_written == 2
    marker = tmp_path / "crashed-once"
    # window=2: the 3 remaining parts go in two Ray Data runs (bounded driver memory)
    result = encode_corpus_ray(docs, tmp_path / "ray", MODEL, workers=2, part_size=PART, crash_marker=str(marker),
                               window=2)
    assert marker.exists()  # a worker process did die mid-part
    assert (result.parts_skipped, result.parts_written, result.documents) == (2, 3, 300 - 2 * PART)
    local = encode_corpus(docs, tmp_path / "local", MODEL, part_size=PART)
    assert local.parts_written == 5
    _same_folders(tmp_path / "local", tmp_path / "ray")
    enc = EncodedCorpus.open(tmp_path / "ray")
    assert len(enc) == 300
    assert [i for p in enc for i in p.ids] == [d["id"] for d in docs]
    assert enc.read_part(4).docs[0].metadata == {"n": 256}
    # a complete rerun has nothing left to do
    again = encode_corpus_ray(docs, tmp_path / "ray", MODEL, part_size=PART)
    assert (again.parts_skipped, again.parts_written) == (5, 0)


def test_encode_command_with_ray(ray_cluster, tmp_path):
    """`m3search encode --ray` on the cluster this process is connected to, then `index ENCODED`."""
    from click.testing import CliRunner

    from m3search.cli import main
    from m3search.data import SAMPLE_CORPUS

    runner = CliRunner()
    r = runner.invoke(main, ["encode", str(SAMPLE_CORPUS), "-o", str(tmp_path / "enc"), "--model", MODEL,
                             "--part-size", "100", "--ray", "auto", "--workers", "1"], catch_exceptions=False)
    assert r.exit_code == 0 and "Encoded 300 documents into 3 parts" in r.output, r.output
    r = runner.invoke(main, ["index", str(tmp_path / "enc"), "-o", str(tmp_path / "idx"), "--shards", "2"],
                      catch_exceptions=False)
    assert r.exit_code == 0 and "Indexed 300 precomputed documents" in r.output, r.output
