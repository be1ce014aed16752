"""The sparse term scheme through the engine: chosen when an index is created, recorded in its encoder identity,
applied to its queries by itself, refused when an encoder with another scheme meets the index.

The model is the tiny random checkpoint with a flat sparse head (every position weighs exactly 1), so a sparse
score counts shared pieces, plus, with whole words, the squared piece count of each shared word of 2+ pieces."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from helpers import tiny_checkpoint

import m3search
from m3search.cli import main
from m3search.errors import ConfigError, EncoderMismatchError

VOCAB = tiny_checkpoint.VOCAB
QUERY = "Kubernetes cluster"  # ▁Kub erne tes ▁cluster
DOCS = [
    {"id": "word", "text": "Kubernetes"},  # the query's word: 3 shared pieces, and the word itself (3 pieces)
    {"id": "pieces", "text": "Kubrick Filerne Bytes cluster"},  # ▁Kub rick ▁Fil erne ▁By tes ▁cluster: 4 pieces
    {"id": "other", "text": "Sort the cells of a column"},
]


@pytest.fixture(scope="module")
def flat_model(tmp_path_factory):
    folder = tiny_checkpoint.build_tiny_checkpoint(tmp_path_factory.mktemp("flat") / "tiny-flat")
    torch.save({"weight": torch.zeros((1, tiny_checkpoint.HIDDEN)), "bias": torch.ones(1)}, folder / "sparse_linear.pt")
    return str(folder)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """The query-encoder cache of the tiny model goes to a temporary folder, shared by this module's tests."""
    monkeypatch.setenv("M3SEARCH_CACHE", str(tmp_path_factory.getbasetemp() / "m3search-cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: threads only add waiting on 2 shared cores
    yield
    torch.set_num_threads(before)


def sparse_hits(index, query=QUERY):
    return [(h.docid, h.scores["sparse"]) for h in index.search(query, k=2, mode="sparse")]


def test_a_whole_word_outranks_scattered_pieces_only_with_words(flat_model, tmp_path):
    with m3search.build_index(tmp_path / "pieces", DOCS, model=flat_model) as pieces:
        got = sparse_hits(pieces)
        assert [d for d, _ in got] == ["pieces", "word"]  # more shared pieces wins
        assert [s for _, s in got] == pytest.approx([4.0, 3.0], rel=0.02)
    with m3search.build_index(tmp_path / "words", DOCS, model=flat_model, sparse_terms="pieces+words") as words:
        got = sparse_hits(words)
        assert [d for d, _ in got] == ["word", "pieces"]  # the exact word wins: 3 pieces + 3 * 3 for the word
        assert [s for _, s in got] == pytest.approx([12.0, 4.0], rel=0.02)


def test_scheme_is_recorded_and_used_for_queries_on_reopen(flat_model, tmp_path):
    m3search.build_index(tmp_path / "idx", DOCS, model=flat_model, sparse_terms="pieces+words").close()
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["encoder"]["sparse_terms"] == "pieces+words"
    assert manifest["encoder"]["sparse_width"] == VOCAB + 2**22
    with m3search.open_index(tmp_path / "idx") as index:  # nothing said about the scheme
        assert index.encoder.identity.sparse_terms == "pieces+words"
        assert [d for d, _ in sparse_hits(index)] == ["word", "pieces"]
        assert index.info()["encoder"]["sparse_terms"] == "pieces+words"
        # kinds of query pieces dropped: over the vocabulary, the word columns after it kept
        assert index.search(QUERY, k=1, mode="sparse", drop_pieces="single")[0].docid == "word"
    with m3search.open_index(tmp_path / "idx", model=flat_model) as index:  # a model named: the index's scheme too
        assert [d for d, _ in sparse_hits(index)] == ["word", "pieces"]
    # adding to it goes through the recorded scheme as well
    with m3search.build_index(tmp_path / "idx", [{"id": "w2", "text": "Kubernetes cluster"}], model=flat_model) as index:
        assert sparse_hits(index)[0][0] == "w2"


def test_another_scheme_is_refused_with_both_values_and_the_fix(flat_model, tmp_path):
    from m3search.encoder import load_encoder

    m3search.build_index(tmp_path / "idx", DOCS[:1], model=flat_model, sparse_terms="pieces+words").close()
    pieces_encoder = load_encoder(flat_model, device="cpu")
    with pytest.raises(EncoderMismatchError) as e:
        m3search.open_index(tmp_path / "idx", model=pieces_encoder)
    message = str(e.value)
    assert "\n" not in message
    assert "sparse_terms='pieces+words'" in message and "sparse_terms='pieces'" in message
    assert "load the encoder with sparse_terms='pieces+words'" in message
    with pytest.raises(EncoderMismatchError, match="built with sparse_terms='pieces\\+words' but the encoder given "
                                                   "uses sparse_terms='pieces-nopunct'"):
        m3search.build_index(tmp_path / "idx", DOCS, model=flat_model, sparse_terms="pieces-nopunct")
    with pytest.raises(ConfigError, match="uses sparse_terms='pieces', not 'pieces\\+words'"):
        m3search.build_index(tmp_path / "new", DOCS, model=pieces_encoder, sparse_terms="pieces+words")
    with pytest.raises(ConfigError, match="sparse_terms 'words' is not one of"):
        m3search.build_index(tmp_path / "new", DOCS, model=flat_model, sparse_terms="words")
    assert not (tmp_path / "new").exists()


def test_an_index_without_the_field_reads_as_pieces(tmp_path, docs, model):
    m3search.build_index(tmp_path / "old", docs, model=model).close()
    path = tmp_path / "old" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["encoder"]["sparse_terms"], manifest["encoder"]["sparse_width"]  # as written before the field
    path.write_text(json.dumps(manifest))
    with m3search.open_index(tmp_path / "old") as index:
        assert index.info()["encoder"]["sparse_terms"] == "pieces"
        assert index.info()["encoder"]["sparse_width"] == 5000
        assert index.search("delete an entire column", k=1, mode="sparse")[0].docid == "en-3"
    with m3search.build_index(tmp_path / "old", [{"id": "n", "text": "new text"}], model=model,
                              sparse_terms="pieces") as index:
        assert len(index) == len(docs) + 1
    with pytest.raises(ConfigError, match="hashing encoder takes sparse_terms='pieces' only"):
        m3search.build_index(tmp_path / "h", docs, model=model, sparse_terms="pieces+words")


def test_cli_index_encode_and_info(flat_model, tmp_path, monkeypatch):
    monkeypatch.delenv("M3SEARCH_MODEL", raising=False)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"docid": d["id"], "text": d["text"]}) + "\n" for d in DOCS))
    runner = CliRunner()

    def run(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    built = run("index", corpus, "-o", tmp_path / "idx", "--model", flat_model, "--sparse-terms", "pieces+words", "-q")
    assert built.exit_code == 0, built.output
    info = run("info", tmp_path / "idx")
    assert f"sparse      terms pieces+words, {VOCAB + 2**22} columns" in info.output
    encoded = run("encode", corpus, "-o", tmp_path / "enc", "--model", flat_model, "--sparse-terms", "pieces+words", "-q")
    assert encoded.exit_code == 0, encoded.output
    refused = run("index", tmp_path / "enc", "-o", tmp_path / "idx2", "--sparse-terms", "pieces")
    assert refused.exit_code != 0 and "was encoded with --sparse-terms pieces+words" in refused.output
    assert run("index", tmp_path / "enc", "-o", tmp_path / "idx2", "-q").exit_code == 0
    with m3search.open_index(tmp_path / "idx2") as index:
        assert [d for d, _ in sparse_hits(index)] == ["word", "pieces"]
    bad = run("index", corpus, "-o", tmp_path / "idx3", "--sparse-terms", "words")
    assert bad.exit_code == 2 and "'words' is not one of" in bad.output
