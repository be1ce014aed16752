"""The full-text BM25 component (kind "text"): scores against the formula over the same terms, candidate
search against exhaustive BM25, and both kept true through appends, deletes, upserts, merges, filters,
a kill at commit and damaged files; fusion with the text weight as the weighted sum says."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import m3search
from m3search.errors import ConfigError
from m3search.indexes.check import check_index
from m3search.indexes.text.analysis import Analyzer
from m3search.indexes.text.reader import bm25_reference

MODEL = "hashing:dim=16,vocab_size=500"
ROOT = Path(__file__).resolve().parent.parent.parent
VOCAB = [f"w{i}" for i in range(30)] + ["Häuser", "Haus", "running", "runs", "列全体を削除"]
QUERIES = ["w1 w2 w2 w3", "w7", "haus running", "全体 w4 w5 w6", "w29 w0 w11"]


def _docs(n: int, seed: int, prefix: str = "d") -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.choices(VOCAB, k=rng.randint(1, 14))
        out.append({"id": f"{prefix}{i}", "text": " ".join(words), "title": rng.choice(["", "w3 title"]),
                    "metadata": {"group": i % 3}})
    return out


def _text(doc: dict) -> str:
    return f"{doc['title']} {doc['text']}" if doc.get("title") else doc["text"]


def _reference(live: dict[str, dict], query: str, language: str = "multilingual") -> dict[str, float]:
    """BM25 from the formula (reader.bm25_reference) over the live documents' terms."""
    an = Analyzer(language)
    ids = sorted(live)
    scores = bm25_reference([an.terms(_text(live[i])) for i in ids], an.terms(query))
    return {i: s for i, s in zip(ids, scores) if s > 0}


def _check(index, live: dict[str, dict], language: str = "multilingual") -> None:
    """Every query: the text source's hits are the exhaustive BM25 ranking (score desc, then internal id),
    with the formula's scores; score_pairs of documents it did not return (found elsewhere) are exact too."""
    for q in QUERIES:
        ref = _reference(live, q, language)
        hits = index.search(q, mode="text", k=max(1, len(live)), with_text=False)
        got = {h.docid: h.score for h in hits}
        assert set(got) == set(ref), q
        for d, s in ref.items():
            assert got[d] == pytest.approx(s, rel=1e-5), (q, d)
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        # top-3 of the text source is the exhaustive top-3 (ties broken by internal id, the engine's rule)
        top3 = index.search(q, mode="text", k=3, with_text=False)
        assert [h.docid for h in top3] == [h.docid for h in hits[:3]]
        # exact re-scoring: documents the dense source found get their BM25 too (0 where no term matches)
        fused = index.search(q, weights={"dense": 1.0, "text": 1e-9}, k=len(live), depths={"dense": len(live), "text": 0},
                             with_text=False)
        assert len(fused) == len(live)
        for h in fused:
            assert h.scores["text"] == pytest.approx(ref.get(h.docid, 0.0), rel=1e-5, abs=1e-6), (q, h.docid)


@pytest.fixture
def text_index(tmp_path):
    index = m3search.build_index(tmp_path / "ix", model=MODEL, components={"dense": {}, "sparse": {}, "text": {}})
    yield index
    index.close()


def test_scores_and_search_match_the_formula_through_appends_deletes_upserts_merges(text_index):
    live: dict[str, dict] = {}
    for seed in range(3):  # three commits: three segments
        docs = _docs(25, seed, prefix=f"s{seed}-")
        text_index.add(docs)
        live.update({d["id"]: d for d in docs})
    assert len(text_index.info()["segments"]) >= 2
    _check(text_index, live)

    # deletes: the statistics (N, average length, df) count live documents only
    gone = [f"s0-{i}" for i in range(0, 25, 2)] + ["s2-3"]
    text_index.delete(gone)
    for g in gone:
        live.pop(g)
    _check(text_index, live)

    # upserts replace the text (and so the terms) of existing ids
    new = [{"id": "s1-4", "text": "w7 w7 w7 haus", "title": "", "metadata": {}},
           {"id": "s2-5", "text": "列全体を削除 running", "title": "", "metadata": {}}]
    text_index.upsert(new)
    live.update({d["id"]: d for d in new})
    _check(text_index, live)

    # a merge into one segment changes no score: statistics never depended on the segmentation
    before = {q: [(h.docid, h.score) for h in text_index.search(q, mode="text", k=100)] for q in QUERIES}
    writer = text_index._writer()
    try:
        writer.optimize()
    finally:
        writer.close()
    text_index._refresh()
    assert len(text_index.info()["segments"]) == 1
    after = {q: [(h.docid, h.score) for h in text_index.search(q, mode="text", k=100)] for q in QUERIES}
    assert after == before
    _check(text_index, live)


def test_stemmed_language_and_cjk_bigrams(tmp_path):
    docs = [{"id": "a", "text": "Die Häuser am See"}, {"id": "b", "text": "Ein Haus"},
            {"id": "c", "text": "列全体を削除します"}, {"id": "d", "text": "nichts davon"}]
    with m3search.build_index(tmp_path / "de", docs, model=MODEL, components={"dense": {}, "text": {"language": "de"}}) as ix:
        # the German stemmer maps Häuser and Haus to one term: both match either form
        assert {h.docid for h in ix.search("Häuser", mode="text")} == {"a", "b"}
        assert {h.docid for h in ix.search("全体", mode="text")} == {"c"}  # a CJK bigram inside the run
        live = {d["id"]: {**d, "title": ""} for d in docs}
        for q in ("Häuser Haus", "削除"):
            ref = _reference(live, q, "de")
            got = {h.docid: h.score for h in ix.search(q, mode="text", k=4)}
            assert got == pytest.approx(ref, rel=1e-5)
    with m3search.build_index(tmp_path / "ml", docs, model=MODEL, components={"dense": {}, "text": {}}) as ix:
        assert {h.docid for h in ix.search("Häuser", mode="text")} == {"a"}  # multilingual: no stemming


def test_filters_narrow_results_not_statistics(text_index):
    docs = _docs(40, 11)
    text_index.add(docs)
    live = {d["id"]: d for d in docs}
    for q in QUERIES:
        ref = _reference(live, q)
        hits = text_index.search(q, mode="text", k=40, filter={"group": 1})
        assert {h.docid for h in hits} == {d for d in ref if live[d]["metadata"]["group"] == 1}
        for h in hits:
            assert h.score == pytest.approx(ref[h.docid], rel=1e-5)


def test_fused_text_weight_is_the_weighted_sum(text_index):
    docs = _docs(40, 5)
    text_index.add(docs)
    n = len(docs)
    for w in (0.01, 0.3, 10.0):
        for q in QUERIES:
            hits = text_index.search(q, weights={"dense": 1.0, "text": w}, k=n, depths=n, with_text=False)
            fused = [h.scores["dense"] + w * h.scores["text"] for h in hits]
            for h, f in zip(hits, fused):
                assert h.score == pytest.approx(f, rel=1e-5, abs=1e-6)
            assert fused == sorted(fused, reverse=True)
    # a large text weight makes the ranking of documents with a match the text ranking
    q = QUERIES[0]
    by_text = text_index.search(q, mode="text", k=n)
    heavy = text_index.search(q, weights={"dense": 1.0, "text": 1e6}, k=len(by_text), depths=n)
    assert {h.docid for h in heavy} == {h.docid for h in by_text}
    # the same order of text scores (documents tied on BM25 are ordered by dense instead of id)
    assert [h.scores["text"] for h in heavy] == pytest.approx([h.score for h in by_text], rel=1e-6)
    # all+text is All's weights plus the text weight
    from m3search.planner.weights import TEXT_WEIGHT, mode_weights

    assert mode_weights("all+text") == {"dense": 1.0, "sparse": 0.3, "multivec": 1.0, "text": TEXT_WEIGHT}
    # an index with all three M3 components and text searches all+text when no mode is given
    with m3search.build_index(text_index.path.parent / "full", docs, model=MODEL,
                              components={"dense": {}, "sparse": {}, "multivec": {}, "text": {}}) as full:
        assert full.default_mode == "all+text"
        assert [h.docid for h in full.search(q, k=5)] == [h.docid for h in full.search(q, mode="all+text", k=5)]
    assert text_index.default_mode == "all"  # no multivec: the usual default


def test_text_is_optional_and_refused_where_absent(tmp_path):
    with m3search.build_index(tmp_path / "plain", _docs(5, 1), model=MODEL, components={"dense": {}}) as ix:
        assert "text" not in ix.info()["components"]
        with pytest.raises(ConfigError, match="no text component"):
            ix.search("w1", mode="text")
    with m3search.build_index(tmp_path / "t", _docs(5, 1), model=MODEL, components={"dense": {}, "text": {}}) as ix:
        info = ix.info()["components"]["text"]
        assert info["config"]["language"] == "multilingual" and info["bytes"] > 0
        assert ix.search("w1 w2", mode="dense")  # other modes don't need it
        from m3search.planner import Planner

        with ix._index.snapshot() as snap, pytest.raises(ConfigError, match="query texts|queries' texts"):
            Planner(snap).search(ix.encoder.encode(["w1"], kind="query"), mode="text")
    with pytest.raises(ConfigError, match="text language"):
        m3search.build_index(tmp_path / "bad", model=MODEL, components={"dense": {}, "text": {"language": "xx"}})


def test_check_finds_a_damaged_text_file(tmp_path):
    path = tmp_path / "ix"
    with m3search.build_index(path, _docs(30, 3), model=MODEL, components={"dense": {}, "text": {}}):
        pass
    assert check_index(path).ok
    target = next(path.glob("segments/*/text/post_tf.arr"))
    data = bytearray(target.read_bytes())
    data[0] ^= 0xFF
    target.write_bytes(bytes(data))
    report = check_index(path)
    assert not report.ok and any("post_tf.arr" in p for p in report.problems)


CHILD = r"""
import os, signal, sys, json
sys.path[:0] = [sys.argv[1]]
from pathlib import Path
from m3search.encoder import HashingEncoder
from m3search.indexes.index import Index

path, point, docs = Path(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
enc = HashingEncoder(dim=16, vocab_size=500)
def hook(p):
    if p == point:
        os.kill(os.getpid(), signal.SIGKILL)
index = Index.open(path, writable=True, identity=enc.identity, crash_hook=hook, buffer_bytes=2000)
from m3search.document import Document
ds = [Document(d["id"], d["text"], d.get("title") or None) for d in docs]
index.add([d.id for d in ds], enc.encode([d.text if not d.title else d.title + " " + d.text for d in ds], kind="passage"), ds)
index.delete(["d0", "d1"])
index.commit()
index.optimize()
sys.exit(3)
"""


@pytest.mark.parametrize("point", ["flush:segment-built", "commit:before-txn", "commit:after-txn", "merge:built"])
def test_a_kill_at_commit_leaves_the_last_commit(tmp_path, point):
    path = tmp_path / "ix"
    first = _docs(20, 21)
    with m3search.build_index(path, first, model=MODEL, components={"dense": {}, "text": {}}):
        pass
    second = _docs(20, 22, prefix="e")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(path), point, json.dumps(second)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    committed = point in ("commit:after-txn", "merge:built")
    live = {d["id"]: d for d in first}
    if committed:
        live.update({d["id"]: d for d in second})
        live.pop("d0"), live.pop("d1")
    with m3search.open_index(path) as ix:
        assert len(ix) == len(live)
        _check(ix, live)
        ix.add(_docs(5, 23, prefix="f"))  # the next writer removes the dead segment folders and goes on
        live.update({d["id"]: d for d in _docs(5, 23, prefix="f")})
        _check(ix, live)
    assert check_index(path).ok
