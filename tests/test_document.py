"""One document type, from input to the document store and back."""
from __future__ import annotations

import pytest

import m3search
from m3search.data import SAMPLE_CORPUS, CorpusReader
from m3search.document import Document
from m3search.errors import InputError
from m3search.indexes.docstore import DocRecord
from m3search.indexes.index import Index


def test_the_store_gives_back_the_document_type_that_went_in(tmp_path, hashing_encoder):
    doc = Document("a", "some text", title="T", metadata={"lang": "de"})
    index = Index.create(tmp_path / "idx", hashing_encoder.identity, "hashing")
    index.add(["a"], hashing_encoder.encode([doc.text], kind="passage"), [doc])
    index.commit()
    with index.snapshot() as snap:
        (back,) = snap.docs(snap.internal_ids(["a"]))
    index.close()
    assert type(back) is Document and back == doc
    assert DocRecord is Document  # the old name is an alias


def test_readers_and_benchmark_loaders_yield_documents(eval_like_corpus):
    reader_doc = next(iter(CorpusReader([SAMPLE_CORPUS])))
    assert type(reader_doc) is Document and reader_doc.source.endswith(":1")
    assert type(eval_like_corpus) is Document and eval_like_corpus.docid == eval_like_corpus.id
    assert m3search.Document is Document


def test_a_document_with_another_id_than_its_slot_is_refused(tmp_path, hashing_encoder):
    index = Index.create(tmp_path / "idx", hashing_encoder.identity, "hashing")
    try:
        with pytest.raises(InputError, match="different id"):
            index.add(["a"], hashing_encoder.encode(["x"], kind="passage"), [Document("b", "x")])
    finally:
        index.close()


@pytest.fixture
def eval_like_corpus(tmp_path):
    from m3search.evaluation.datasets.task import Corpus

    path = tmp_path / "corpus.jsonl"
    path.write_text('{"docid": "1#0", "title": "T", "text": "body"}\n', encoding="utf-8")
    return next(iter(Corpus([path])))
