"""Issue #10 item 7: the smaller integrity fixes at the command line and in the API."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import m3search
from m3search.errors import InputError

MODEL = "hashing:dim=16,vocab_size=3000"


def _cli(*args, env=None, **kw):
    full_env = {**os.environ, **(env or {})}
    full_env.pop("M3SEARCH_INDEX", None)
    return subprocess.run([sys.executable, "-m", "m3search", *map(str, args)], capture_output=True, text=True,
                          env=full_env, **kw)


def test_env_model_does_not_break_queries_on_existing_indexes(run, built, tmp_path):
    """run() sets M3SEARCH_MODEL to another encoder than `other` was built with: queries must still work."""
    other = tmp_path / "other"
    m3search.build_index(other, [("a", "alpha text"), ("b", "beta text")], model="hashing:dim=8").close()
    result = run(["query", other, "alpha text", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["hits"][0]["docid"] == "a"
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"id": "c", "text": "gamma text"}) + "\n")
    assert run(["index", more, "-o", other, "-q"]).exit_code == 0  # adding to it too


def test_empty_texts_are_skipped_and_counted_in_cli_and_api(run, tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in [
        {"id": "a", "text": "alpha text"}, {"id": "e1", "text": ""}, {"id": "e2", "text": "   "},
        {"id": "b", "text": "beta text"}]))
    result = run(["index", corpus, "-o", tmp_path / "cli"])
    assert result.exit_code == 0, result.output
    assert "Skipped 2 records (no text: missing, empty or only whitespace; the first at" in result.stderr
    api = m3search.build_index(tmp_path / "api", model=MODEL)
    added = api.add([("a", "alpha text"), ("e1", ""), ("e2", "   "), ("b", "beta text")])
    assert (added.added, added.skipped_empty) == (2, 2) and len(api) == 2
    api.close()
    with m3search.open_index(tmp_path / "cli") as index:
        assert len(index) == 2


def test_lone_surrogate_and_deep_json_are_clear_errors(run, tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "bad\\ud800id", "text": "x"}\n')
    result = run(["index", corpus, "-o", tmp_path / "i"])
    assert result.exit_code != 0 and "c.jsonl:1: the id holds a lone surrogate" in result.stderr
    assert "Traceback" not in result.output
    with pytest.raises(InputError, match="lone surrogate"):
        m3search.build_index(tmp_path / "api", [("x\udc80", "text")], model=MODEL)
    corpus.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    result = run(["index", corpus, "-o", tmp_path / "i", "--format", "jsonl"])
    assert result.exit_code != 0 and "nested too deeply" in result.stderr and "Traceback" not in result.output
    corpus.write_text('{"id": "a", "text": "unterminated}\n')
    result = run(["index", corpus, "-o", tmp_path / "i"])
    assert "at at" not in result.stderr and "Unterminated string starting at: column" in result.stderr


def test_usage_errors_are_one_line(built):
    result = _cli("query", built)  # no TEXT
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "give a query TEXT" in result.stderr and "--help" in result.stderr


def test_query_text_without_index_says_what_is_missing(tmp_path):
    result = _cli("query", "how do I split cells?", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "'how do I split cells?' is not an index folder: give the INDEX to search" in result.stderr


def test_ctrl_c_exits_130(tmp_path):
    corpus = tmp_path / "c.tsv"
    corpus.write_text("".join(f"d{i}\ttext number {i} " + "word " * 50 + "\n" for i in range(200000)))
    # Ctrl-C as a terminal delivers it: to a process with Python's own SIGINT handler. A test run started in
    # the background by a non-interactive shell inherits SIGINT ignored, and Python keeps an ignored SIGINT.
    start = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "sys.argv = ['m3search'] + sys.argv[1:]; runpy.run_module('m3search', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", start, "index", str(corpus), "-o", str(tmp_path / "i"),
                             "--model", MODEL, "-q"], stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
