"""Corpora and queries: streaming readers for the formats m3search indexes, and the bundled sample.

The sample (`sample.jsonl.gz`, with `sample_queries.tsv`) is a few hundred LibreOffice help passages in
several languages plus English ones for cross-lingual queries; see `m3search/data/NOTICE.md`.
"""
from __future__ import annotations

from pathlib import Path

from m3search.data.corpus import FORMATS, CorpusReader, Document, document_from_mapping
from m3search.data.queries import Query, read_queries

SAMPLE_CORPUS = Path(__file__).resolve().parent / "sample.jsonl.gz"
SAMPLE_QUERIES = Path(__file__).resolve().parent / "sample_queries.tsv"

__all__ = [
    "FORMATS",
    "SAMPLE_CORPUS",
    "SAMPLE_QUERIES",
    "CorpusReader",
    "Document",
    "Query",
    "document_from_mapping",
    "read_queries",
]
