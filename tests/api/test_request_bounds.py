"""Unbounded requests are bounded: k is capped at the live documents and refused above a hard limit;
a text above the token limit is refused with the way out (issue #10 item 5)."""
from __future__ import annotations

import json
import tracemalloc

import pytest

import m3search
from m3search.errors import ConfigError, InputError

MODEL = "hashing:dim=16,vocab_size=3000"
DOCS = [(f"d{i}", f"doc {i} text w{i % 4}") for i in range(50)]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    ix = m3search.build_index(tmp_path_factory.mktemp("bounds") / "idx", DOCS, model=MODEL)
    yield ix
    ix.close()


def test_huge_k_is_capped_at_the_live_documents(index):
    tracemalloc.start()
    hits = index.search("doc 3 text", k=10_000, depths=100_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(hits) == 50 and len({h.docid for h in hits}) == 50
    assert peak < 50 << 20, peak  # k=1e9 allocated 22 GB


def test_k_and_depth_above_the_hard_limit_are_refused(index):
    with pytest.raises(ConfigError, match="k=1000000000 is above the limit"):
        index.search("doc", k=1_000_000_000)
    with pytest.raises(ConfigError, match="above the limit of 100000 candidates"):
        index.search("doc", depths=10**9)


def test_cli_huge_k_is_one_line(tmp_path, index):
    from click.testing import CliRunner

    from m3search.cli import main

    result = CliRunner().invoke(main, ["query", str(index.path), "doc 1", "-k", "1000000000", "--json"])
    assert result.exit_code != 0 and "above the limit" in result.output and "Traceback" not in result.output


def test_text_over_the_token_limit_is_refused_with_a_setting_to_raise_it(tmp_path):
    long_text = "word " * 9000
    with pytest.raises(InputError, match=r"docs.1.: document 'big' has 9002 tokens, more than the limit of 8192.*--max-doc-tokens"):
        m3search.build_index(tmp_path / "a", [("ok", "short"), ("big", long_text)], model=MODEL)
    ix = m3search.build_index(tmp_path / "b", [("big", long_text)], model=MODEL,
                              encoder_options={"max_doc_tokens": 10_000})
    assert len(ix) == 1
    ix.close()


def test_cli_token_limit(tmp_path):
    from click.testing import CliRunner

    from m3search.cli import main

    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "big", "text": "w " * 50}) + "\n")
    runner = CliRunner()
    result = runner.invoke(main, ["index", str(corpus), "-o", str(tmp_path / "i"), "--model", MODEL,
                                  "--max-doc-tokens", "20"])
    assert result.exit_code != 0 and "c.jsonl:1: document 'big' has 52 tokens" in result.output
    ok = runner.invoke(main, ["index", str(corpus), "-o", str(tmp_path / "i"), "--model", MODEL, "-q",
                              "--max-doc-tokens", "100"])
    assert ok.exit_code == 0, ok.output
