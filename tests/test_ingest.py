"""One ingestion path: the API, the CLI and the benchmark runner embed the same text for a document."""
from __future__ import annotations

import json

import numpy as np
import pytest

import m3search
from m3search.document import Document
from m3search.evaluation.config import BenchConfig
from m3search.ingest import DocumentStream, passage_text


def test_title_is_encoded_as_flagembedding_does(hashing_encoder):
    doc = Document("1", "Press F5 to open it.", title="Navigator")
    assert passage_text(doc) == "Navigator Press F5 to open it."
    assert passage_text(Document("2", "text", title="  ")) == "text"


def test_api_and_bench_embed_the_same_text_for_a_titled_document(tmp_path, hashing_encoder):
    from m3search.evaluation import runner

    docs = [Document("a", "Press F5 to open the Navigator.", title="Navigator"),
            Document("b", "Sort the cells of a column.", title="Sorting")]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"docid": d.id, "title": d.title, "text": d.text}) + "\n" for d in docs))
    from m3search.evaluation.datasets.task import Corpus

    config = BenchConfig(task="miracl", data_dir=tmp_path, batch_size=8)
    bench_docs, bench_batch, _ = runner._encode_corpus(config, Corpus([corpus]), hashing_encoder, {}, None,
                                                        lambda items, desc, total: items, "test")
    reference = hashing_encoder.encode([passage_text(d) for d in bench_docs], kind="passage")
    np.testing.assert_array_equal(bench_batch.dense, reference.dense)
    with m3search.build_index(tmp_path / "idx", docs, model=hashing_encoder) as index:
        q = hashing_encoder.encode(["Navigator"], kind="query")
        hits = index.search_encoded(q, k=2, mode="dense", all_scores=True)[0]
    for hit in hits:
        row = [d.id for d in bench_docs].index(hit.docid)
        # the index scored the document's stored vector; the bench encoded the same text
        assert hit.scores["dense"] == pytest.approx(float(q.dense[0] @ bench_batch.dense[row]), abs=2e-3)
        text_only = hashing_encoder.encode([next(d.text for d in docs if d.id == hit.docid)], kind="passage")
        assert abs(float(q.dense[0] @ text_only.dense[0]) - hit.scores["dense"]) > 1e-3  # title counted


def test_stream_refuses_duplicates_and_counts_empty_texts():
    stream = DocumentStream([("a", "x"), {"id": "b", "text": None}, ("c", "   ")])
    assert [d.id for d in stream] == ["a"] and stream.skipped_empty == 2
    with pytest.raises(m3search.errors.InputError, match=r"docs\[1\]: duplicate id 'a'"):
        list(DocumentStream([("a", "x"), ("a", "y")]))


def test_after_encoding_runs_once_before_the_final_commit_and_can_release_the_encoder(tmp_path):
    docs = [(f"d{i}", f"text {i} words w{i % 5}") for i in range(30)]
    calls = []
    with m3search.build_index(tmp_path / "idx", model="hashing:dim=16") as index:
        def after() -> None:
            calls.append(len(m3search.open_index(tmp_path / "idx")))  # documents committed at this point
            index.release_encoder()
            assert index._encoder is None

        result = index.add(docs, batch_size=7, after_encoding=after)
        assert calls == [0] and result.added == 30  # once, after every batch, before the final commit
        assert len(index) == 30
        hits = index.search("text 3 words", k=3)  # the encoder is loaded again for the query
        assert hits[0].docid == "d3" and index._encoder is not None
        index.model = None  # as for an index built with an encoder object it records no model for
        encoder = index.encoder
        index.release_encoder()  # nothing to load it again from: kept
        assert index._encoder is encoder
