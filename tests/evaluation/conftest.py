"""Fixtures of the evaluation tests: the shared data folders and tiny benchmark folders in each format."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers.evaluation import make_passages, write_jsonl


@pytest.fixture(scope="session")
def miracl_fixtures(shared_dir) -> Path:
    return shared_dir / "data" / "format_fixtures" / "miracl"


@pytest.fixture(scope="session")
def eval_dir(shared_dir) -> Path:
    return shared_dir / "data" / "eval"


@pytest.fixture(scope="session")
def tiny_miracl(tmp_path_factory) -> Path:
    """MIRACL's offline layout, two languages, 40 passages and 6 queries each; queries name a passage's
    unique word plus a common one, so every retriever can find the answer."""
    root = tmp_path_factory.mktemp("tiny_miracl")
    for lang, seed in (("de", 1), ("en", 2)):
        folder = root / lang
        folder.mkdir()
        passages = make_passages(lang, 40, seed)
        write_jsonl(folder / "corpus.jsonl.gz", passages, gz=True)
        topics, qrels = [], []
        for q in range(6):
            target = passages[q * 5]
            topics.append(f"{q}\tunique{lang}{q * 5} {target['text'].split()[0]}")
            qrels.append(f"{q}\tQ0\t{target['docid']}\t1")
            qrels.append(f"{q}\tQ0\t{passages[q * 5 + 1]['docid']}\t0")
        (folder / "topics.dev.tsv").write_text("\n".join(topics) + "\n", encoding="utf-8")
        (folder / "qrels.dev.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    return root
