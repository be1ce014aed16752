"""TextComponent (kind "text"): a full-text BM25 index of each segment's passages.

A segment holds an inverted index over 64-bit term ids (`analysis.py`): the sorted term ids, for each term
its postings (local document ids ascending, term frequencies), and every document's length in terms. All
arrays are checked arrays (`m3search.indexes.segment_files`), described by `text.json`, so `m3search check`
verifies every byte and a damaged file is an IndexFormatError, never a wrong score. Collection statistics
(document count, average length, document frequencies) are NOT stored: the index-level reader
(`reader.IndexTextReader`) computes them over the live documents of a snapshot, so BM25 scores do not
depend on how documents are split into segments, nor on deleted documents waiting for a merge.

The component needs the documents' text (title + text, as the encoder sees it: `m3search.ingest.
passage_text`); the writer hands it over because `uses_text` is set. A merge rebuilds from the postings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from m3search.errors import ConfigError, IndexFormatError, InputError
from m3search.indexes.base import ComponentType, SegmentReader
from m3search.indexes.fsutil import fsync_file, write_json
from m3search.indexes.segment_files import open_array, read_header, write_array
from m3search.indexes.text.analysis import Analyzer, check_language
from m3search.types import EncodedBatch

SEGMENT_FORMAT = "m3search.text.segment"
SEGMENT_VERSION = 1
HEADER_FILE = "text.json"
ARRAYS = ("terms", "post_ptr", "post_docs", "post_tf", "doc_len")
DEFAULTS: dict = {"language": "multilingual", "k1": 1.2, "b": 0.75}


class TextComponent(ComponentType):
    """BM25 over the passages' words (per-language analysis: `analysis.Analyzer`).

    >>> TextComponent({"language": "de"}).config
    {'language': 'de', 'k1': 1.2, 'b': 0.75}
    """

    kind = "text"
    uses_text = True  # the writer passes the documents' texts to build()

    @classmethod
    def validate_config(cls, config: dict) -> dict:
        unknown = sorted(set(config) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown text component option(s) {unknown}; valid options: {sorted(DEFAULTS)}")
        out = {**DEFAULTS, **config}
        out["language"] = check_language(out["language"])
        for key, lo, hi in (("k1", 0.0, 100.0), ("b", 0.0, 1.0)):
            v = out[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ConfigError(f"text option {key}={v!r} must be a number in [{lo}, {hi}]")
            out[key] = float(v)
        return out

    @property
    def analyzer(self) -> Analyzer:
        return Analyzer(self.config["language"])

    # -- writing ----------------------------------------------------------------------------------
    def build(self, path: Path, batch: EncodedBatch, shared: Path, texts: Sequence[str] | None = None) -> dict:
        n = len(batch)
        if texts is None:
            raise InputError("the text component needs the documents' texts: add documents with their text")
        if len(texts) != n:
            raise InputError(f"text component: {n} encoded documents but {len(texts)} texts")
        analyzer = self.analyzer
        docs, terms, tfs = [], [], []
        doc_len = np.zeros(n, dtype=np.uint32)
        for i, text in enumerate(texts):
            ids, counts, length = analyzer.term_counts(text or "")
            docs.append(np.full(len(ids), i, dtype=np.int32))
            terms.append(ids)
            tfs.append(counts)
            doc_len[i] = length
        return self._write(Path(path), _cat(docs, np.int32), _cat(terms, np.uint64), _cat(tfs, np.uint32), doc_len)

    def merge(self, path: Path, sources: Sequence[SegmentReader], keep: Sequence[np.ndarray], shared: Path) -> dict:
        if len(sources) != len(keep):
            raise InputError(f"merge got {len(sources)} sources but {len(keep)} keep arrays; pass one per source")
        docs, terms, tfs, lens = [], [], [], []
        offset = 0
        for i, (src, kept) in enumerate(zip(sources, keep)):
            if not isinstance(src, TextSegmentReader):
                raise InputError(f"merge source {i} is a {type(src).__name__}, not a text segment reader")
            kept = np.asarray(kept)
            kept = np.flatnonzero(kept) if kept.dtype == np.bool_ else kept.astype(np.int64).ravel()
            new_id = np.full(src.n_docs, -1, dtype=np.int64)
            new_id[kept] = offset + np.arange(len(kept))
            d, t, f = src.triples()
            live = new_id[d] >= 0
            docs.append(new_id[d[live]].astype(np.int32))
            terms.append(t[live])
            tfs.append(f[live])
            lens.append(src.doc_len[kept])
            offset += len(kept)
        return self._write(Path(path), _cat(docs, np.int32), _cat(terms, np.uint64), _cat(tfs, np.uint32),
                           _cat(lens, np.uint32))

    def _write(self, path: Path, docs: np.ndarray, terms: np.ndarray, tfs: np.ndarray, doc_len: np.ndarray) -> dict:
        """(doc, term, tf) triples -> postings sorted by term, then document."""
        order = np.lexsort((docs, terms))
        docs, terms, tfs = docs[order], terms[order], tfs[order]
        uniq, starts = np.unique(terms, return_index=True)
        post_ptr = np.append(starts, len(terms)).astype(np.int64)
        arrays = {"terms": uniq.astype(np.uint64), "post_ptr": post_ptr, "post_docs": docs.astype(np.int32),
                  "post_tf": tfs.astype(np.uint32), "doc_len": doc_len.astype(np.uint32)}
        path.mkdir(parents=True, exist_ok=True)
        records = {name: write_array(path, f"{name}.arr", arr) for name, arr in arrays.items()}
        header = {"format": SEGMENT_FORMAT, "version": SEGMENT_VERSION, "n_docs": int(len(doc_len)),
                  "n_terms": int(len(uniq)), "n_postings": int(len(docs)), "language": self.config["language"],
                  "arrays": records}
        write_json(path / HEADER_FILE, header)
        fsync_file(path)
        nbytes = sum(r["bytes"] for r in records.values()) + (path / HEADER_FILE).stat().st_size
        return {"format": SEGMENT_FORMAT, "version": SEGMENT_VERSION, "n_docs": int(len(doc_len)),
                "n_postings": int(len(docs)), "nbytes": int(nbytes)}

    # -- reading ----------------------------------------------------------------------------------
    def open(self, path: Path, meta: dict, shared: Path) -> "TextSegmentReader":
        path = Path(path)
        header = read_header(path / HEADER_FILE, SEGMENT_FORMAT, SEGMENT_VERSION)
        try:
            arrays = {name: open_array(path, f"{name}.arr", header["arrays"][name]) for name in ARRAYS}
            n_docs = int(header["n_docs"])
        except (KeyError, TypeError, ValueError) as e:
            raise IndexFormatError(f"{path / HEADER_FILE}: malformed header ({e!r}); rebuild the index") from e
        if header.get("language") != self.config["language"]:
            raise IndexFormatError(f"{path}: segment analysed as {header.get('language')!r} but the index's text "
                                   f"language is {self.config['language']!r}; the folder belongs to another index")
        if meta and meta.get("n_docs") is not None and int(meta["n_docs"]) != n_docs:
            raise IndexFormatError(f"{path}: the segment holds {n_docs} documents but the index records "
                                   f"{meta['n_docs']}; the folder belongs to another segment or was replaced")
        _check_structure(path, arrays, n_docs)
        return TextSegmentReader(path, arrays, n_docs, int(sum(r["bytes"] for r in header["arrays"].values())))


class TextSegmentReader(SegmentReader):
    """One segment's postings (local document ids) and document lengths."""

    def __init__(self, path: Path, arrays: dict[str, np.ndarray], n_docs: int, nbytes: int):
        self.path = path
        self.terms = arrays["terms"]
        self.post_ptr = arrays["post_ptr"]
        self.post_docs = arrays["post_docs"]
        self.post_tf = arrays["post_tf"]
        self.doc_len = arrays["doc_len"]
        self._n_docs = n_docs
        self._nbytes = nbytes

    @property
    def n_docs(self) -> int:
        return self._n_docs

    def nbytes(self) -> int:
        return self._nbytes

    def lookup(self, term_ids: np.ndarray) -> np.ndarray:
        """Position of each term id in this segment's term list, -1 where absent."""
        pos = np.searchsorted(self.terms, term_ids)
        pos = np.minimum(pos, max(len(self.terms) - 1, 0))
        found = (self.terms[pos] == term_ids) if len(self.terms) else np.zeros(len(term_ids), bool)
        return np.where(found, pos, -1)

    def postings(self, pos: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.post_ptr[pos], self.post_ptr[pos + 1]
        return self.post_docs[lo:hi], self.post_tf[lo:hi]

    def triples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (local doc, term id, tf) stored (for merges)."""
        terms = np.repeat(self.terms, np.diff(self.post_ptr))
        return np.asarray(self.post_docs), terms, np.asarray(self.post_tf)


def _check_structure(path: Path, a: dict[str, np.ndarray], n_docs: int) -> None:
    """What the scoring code indexes with, checked once at open: a damaged file fails here, not later."""
    problems = []
    if len(a["doc_len"]) != n_docs:
        problems.append(f"doc_len has {len(a['doc_len'])} entries for {n_docs} documents")
    ptr, n_post = a["post_ptr"], len(a["post_docs"])
    if len(ptr) != len(a["terms"]) + 1 or (len(ptr) and (ptr[0] != 0 or ptr[-1] != n_post)) or (np.diff(ptr) < 0).any():
        problems.append("post_ptr is not a monotone pointer array over the postings")
    if len(a["post_tf"]) != n_post:
        problems.append("post_tf and post_docs differ in length")
    if n_post and (a["post_docs"].min() < 0 or a["post_docs"].max() >= n_docs):
        problems.append("a posting names a document outside the segment")
    if len(a["terms"]) > 1 and not (a["terms"][1:] > a["terms"][:-1]).all():
        problems.append("terms are not sorted and unique")
    if problems:
        raise IndexFormatError(f"{path}: {'; '.join(problems)}; the segment is corrupt: rebuild it or restore it")


def _cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)
