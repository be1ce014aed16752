"""The BM25 baseline: tantivy (k1 = 1.2, b = 0.75) over text we tokenise ourselves.

Tokenising in Python keeps the analysis the same for every language and testable: NFKC, case-folded,
words are runs of letters, digits and combining marks, no stemming, no stopwords; scripts written without
spaces (CJK, Hangul, Thai, Lao, Khmer, Myanmar) become overlapping character bigrams (a lone character stays
a unigram), as Lucene's CJK analyser does. Tibetan (Dzongkha) splits at its syllable mark. tantivy then only
splits on whitespace.
"""
from __future__ import annotations

import functools
import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Sequence

from m3search.errors import InputError, missing_dependency
from m3search.evaluation._unicode import UNSPACED_CLASS, word_char_class

BM25_FORMAT = "m3search.bench_bm25"
BM25_VERSION = 1


@functools.lru_cache(maxsize=1)
def _patterns() -> tuple[re.Pattern, re.Pattern]:
    return re.compile(f"[{word_char_class()}]+"), re.compile(f"[{UNSPACED_CLASS}]+")


def _characters(run: str) -> list[str]:
    """Base characters with their combining marks attached, so Thai or Khmer vowel signs stay with their
    consonant in a bigram."""
    out: list[str] = []
    for ch in run:
        if out and unicodedata.category(ch)[0] == "M":
            out[-1] += ch
        else:
            out.append(ch)
    return out


def analyze(text: str) -> list[str]:
    """Text -> BM25 terms.

    >>> analyze("Ganze Spalte(n) löschen")
    ['ganze', 'spalte', 'n', 'löschen']
    >>> analyze("列全体を削除")
    ['列全', '全体', '体を', 'を削', '削除']
    """
    word, unspaced = _patterns()
    out: list[str] = []
    for w in word.findall(unicodedata.normalize("NFKC", text).casefold()):
        pos = 0
        for m in unspaced.finditer(w):
            if m.start() > pos:
                out.append(w[pos : m.start()])
            chars = _characters(m.group())
            out.extend(chars if len(chars) == 1 else [a + b for a, b in zip(chars, chars[1:])])
            pos = m.end()
        if pos < len(w):
            out.append(w[pos:])
    return out


def _tantivy():
    try:
        import tantivy
    except ImportError:
        raise missing_dependency("tantivy", "the BM25 baseline") from None
    return tantivy


class BM25Index:
    """A BM25 index of one corpus in a folder of its own; `search` returns docids and scores."""

    FIELD = "body"

    def __init__(self, path: Path, index, docids: list[str]):
        self.path = path
        self._index = index
        self._docids = docids
        self._searcher = index.searcher()

    @classmethod
    def build(cls, path: str | Path, docids: Sequence[str], texts: Sequence[str], heap_bytes: int = 200_000_000) -> "BM25Index":
        tantivy = _tantivy()
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise InputError(f"{path}: BM25 index folder is not empty; give a new folder")
        if len(docids) != len(texts):
            raise InputError(f"BM25Index.build: {len(docids)} docids but {len(texts)} texts")
        path.mkdir(parents=True, exist_ok=True)
        builder = tantivy.SchemaBuilder()
        builder.add_text_field(cls.FIELD, stored=False, tokenizer_name="whitespace", index_option="freq")
        builder.add_unsigned_field("row", stored=True, indexed=False)
        index = tantivy.Index(builder.build(), path=str(path))
        writer = index.writer(heap_size=heap_bytes, num_threads=1)  # one thread: the cores are shared
        for row, text in enumerate(texts):
            doc = tantivy.Document()
            doc.add_text(cls.FIELD, " ".join(analyze(text)))
            doc.add_unsigned("row", row)
            writer.add_document(doc)
        writer.commit()
        writer.wait_merging_threads()
        index.reload()
        tmp = path / "docids.json.tmp"
        tmp.write_text(json.dumps({"format": BM25_FORMAT, "version": BM25_VERSION, "docids": list(docids)}))
        os.replace(tmp, path / "docids.json")
        return cls(path, index, list(docids))

    def _query(self, text: str):
        tantivy = _tantivy()
        counts: dict[str, int] = {}
        for term in analyze(text):
            counts[term] = counts.get(term, 0) + 1
        schema = self._index.schema
        clauses = []
        for term, n in counts.items():
            q = tantivy.Query.term_query(schema, self.FIELD, term)
            # a repeated query term weighs as often as it occurs (Anserini's bag-of-words query)
            clauses.append((tantivy.Occur.Should, q if n == 1 else tantivy.Query.boost_query(q, float(n))))
        return tantivy.Query.boolean_query(clauses)

    def search_many(self, queries: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
        """Top-k (docid, score) per query; a query with no term in the corpus gets an empty list."""
        out = []
        for text in queries:
            hits = self._searcher.search(self._query(text), k, count=False).hits
            out.append([(self._docids[self._searcher.doc(addr)["row"][0]], float(score)) for score, addr in hits])
        return out

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file() and not f.name.startswith("."))
