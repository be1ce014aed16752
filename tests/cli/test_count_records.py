"""Counting a corpus's records for the progress bar's total."""
from __future__ import annotations

import gzip

from m3search.data.count import count_records


def test_counts_lines_of_plain_and_gzip_files_and_text_files_of_folders(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": 1, "text": "x"}\n{"id": 2, "text": "y"}\n{"id": 3, "text": "z"}')
    with gzip.open(tmp_path / "b.tsv.gz", "wt") as f:
        f.write("".join(f"d{i}\ttext {i}\n" for i in range(1000)))
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    for name in ("x.txt", "sub/y.md", "z.bin"):
        (folder / name).write_text("hello")
    assert count_records([tmp_path / "a.jsonl"]) == 3  # the last line has no newline
    assert count_records([tmp_path / "b.tsv.gz"]) == 1000
    assert count_records([folder]) == 2
    assert count_records([tmp_path / "a.jsonl", tmp_path / "b.tsv.gz", folder]) == 1005


def test_unknown_sizes_give_none(tmp_path):
    with gzip.open(tmp_path / "big.jsonl.gz", "wt") as f:
        f.write("x\n" * 10)
    assert count_records(["-"]) is None
    assert count_records([tmp_path / "big.jsonl.gz"], max_gz_bytes=1) is None
    assert count_records([tmp_path / "missing.jsonl"]) is None


def test_index_progress_bar_has_the_corpus_total(tmp_path):
    from m3search.cli.index import _with_bar

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(f'{{"id": "d{i}", "text": "t"}}\n' for i in range(7)))
    stream, bar = _with_bar(iter(range(7)), [str(corpus)])
    assert bar.total == 7
    assert list(stream) == list(range(7)) and bar.n == 7
    bar.close()
