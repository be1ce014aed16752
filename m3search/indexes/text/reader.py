"""BM25 over a snapshot's text segments, with collection statistics of its live documents.

    score(q, d) = sum over distinct query terms t in d of
                  qtf(t) * idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * len(d) / avglen))
    idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

(Lucene's and tantivy's BM25, with exact document lengths where tantivy stores a one-byte norm.)
N, avglen and df(t) count the live documents of the snapshot: deleted documents still in a segment don't
count, so a score is the same before and after a merge and whatever the segmentation. qtf(t) is how often
t occurs in the query. A metadata filter narrows what is returned, not the statistics (as in Lucene).

`search` is exact: term-at-a-time accumulation over every posting of the query's terms, per segment, then
the per-segment top-k merged (ties to the smaller internal id, as every other source). `score_pairs`
gives the same score for any (query, document), found by this source or another.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from m3search.errors import InputError
from m3search.indexes.segments import SegmentSet, merge_topk
from m3search.indexes.text.analysis import Analyzer, query_terms


class TextQueries:
    """Analysed queries with the idf of each term under one snapshot's statistics."""

    def __init__(self, terms: list[np.ndarray], qtf: list[np.ndarray], idf: list[np.ndarray]):
        self.terms, self.qtf, self.idf = terms, qtf, idf

    def __len__(self) -> int:
        return len(self.terms)


class IndexTextReader:
    """The text component over global internal ids (like the other index-level readers)."""

    kind = "text"

    def __init__(self, segset: SegmentSet, config: dict):
        self.segset = segset
        self.config = dict(config)
        self.k1, self.b = float(config["k1"]), float(config["b"])
        self.analyzer = Analyzer(config["language"])
        self._stats: tuple[int, float] | None = None

    @property
    def n_docs(self) -> int:
        return self.segset.id_space

    def nbytes(self) -> int:
        return sum(v.readers[self.kind].nbytes() for v in self.segset.views)

    def fidelity(self) -> dict:
        return {}

    def close(self) -> None:
        pass

    # -- statistics -------------------------------------------------------------------------------
    def stats(self) -> tuple[int, float]:
        """(live documents N, their average length in terms)."""
        if self._stats is None:
            n, total = 0, 0
            for v in self.segset.views:
                lens = v.readers[self.kind].doc_len
                live = ~v.deleted if v.info.n_deleted else slice(None)
                n += v.info.n_live
                total += int(np.asarray(lens[live], dtype=np.int64).sum())
            self._stats = (n, total / n if n else 0.0)
        return self._stats

    def doc_freq(self, term_ids: np.ndarray) -> np.ndarray:
        """Live documents holding each term."""
        df = np.zeros(len(term_ids), dtype=np.int64)
        for v in self.segset.views:
            r = v.readers[self.kind]
            for j, pos in enumerate(r.lookup(term_ids).tolist()):
                if pos < 0:
                    continue
                docs, _ = r.postings(pos)
                df[j] += len(docs) - (int(v.deleted[docs].sum()) if v.info.n_deleted else 0)
        return df

    def prepare(self, texts: Sequence[str]) -> TextQueries:
        """Analyse the query texts and weigh their terms with this snapshot's idf."""
        n, _ = self.stats()
        terms, qtf, idf = [], [], []
        for text in texts:
            ids, counts = query_terms(self.analyzer, text)
            df = self.doc_freq(ids).astype(np.float64)
            w = np.log1p((n - df + 0.5) / (df + 0.5))
            present = df > 0  # a term no live document holds scores nothing anywhere
            terms.append(ids[present])
            qtf.append(counts[present].astype(np.float64))
            idf.append(w[present])
        return TextQueries(terms, qtf, idf)

    # -- scoring ----------------------------------------------------------------------------------
    def _term_scores(self, tf: np.ndarray, dl: np.ndarray, avgdl: float) -> np.ndarray:
        tf = tf.astype(np.float64)
        norm = self.k1 * (1.0 - self.b + self.b * dl.astype(np.float64) / (avgdl or 1.0))
        return tf * (self.k1 + 1.0) / (tf + norm)

    def search(self, queries: TextQueries, k: int, deleted: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact BM25 top-k per query: (D, I) (m, k), padded with (-inf, -1); only documents that hold at
        least one query term are returned. `deleted`: bool mask over internal ids never to return."""
        if k < 0:
            raise InputError(f"k must be >= 0, got {k}")
        m = len(queries)
        _, avgdl = self.stats()
        Ds, Is = [], []
        for view, (mask, n_live) in zip(self.segset.views, self.segset.segment_masks(deleted)):
            if n_live == 0 or k == 0:
                continue
            r = view.readers[self.kind]
            kk = min(k, n_live)
            D = np.full((m, kk), -np.inf, dtype=np.float32)
            I = np.full((m, kk), -1, dtype=np.int64)
            for qi in range(m):
                score = np.zeros(r.n_docs, dtype=np.float64)
                for pos, q, w in zip(r.lookup(queries.terms[qi]).tolist(), queries.qtf[qi], queries.idf[qi]):
                    if pos < 0:
                        continue
                    docs, tf = r.postings(pos)
                    score[docs] += q * w * self._term_scores(tf, r.doc_len[docs], avgdl)
                hit = score > 0
                if mask is not None:
                    hit &= ~mask
                cand = np.flatnonzero(hit)
                if len(cand) > kk:
                    # keep every document tied with the k-th score, then order by (score desc, id asc)
                    kth = np.partition(score[cand], len(cand) - kk)[len(cand) - kk]
                    cand = cand[score[cand] >= kth]
                order = np.lexsort((cand, -score[cand]))[:kk]
                D[qi, : len(order)] = score[cand[order]]
                I[qi, : len(order)] = view.global_ids(cand[order])
            Ds.append(D)
            Is.append(I)
        return merge_topk(Ds, Is, m, k)

    def score_pairs(self, queries: TextQueries, q_index: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """(P,) float32 BM25 of query q_index[p] for internal id ids[p] (0 where no query term matches)."""
        q_index = np.asarray(q_index, dtype=np.int64).ravel()
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if q_index.shape != ids.shape:
            raise InputError(f"q_index and ids must have the same length, got {len(q_index)} and {len(ids)}")
        _, avgdl = self.stats()
        out = np.zeros(len(ids), dtype=np.float64)
        for view, pos, local in self.segset.locate(ids):
            r = view.readers[self.kind]
            qs = q_index[pos]
            for qi in np.unique(qs).tolist():
                sel = qs == qi
                docs = local[sel]
                acc = np.zeros(len(docs), dtype=np.float64)
                for tpos, q, w in zip(r.lookup(queries.terms[qi]).tolist(), queries.qtf[qi], queries.idf[qi]):
                    if tpos < 0:
                        continue
                    pdocs, ptf = r.postings(tpos)
                    at = np.searchsorted(pdocs, docs)
                    at = np.minimum(at, len(pdocs) - 1)
                    has = pdocs[at] == docs
                    if has.any():
                        acc[has] += q * w * self._term_scores(ptf[at[has]], r.doc_len[docs[has]], avgdl)
                out[pos[sel]] = acc
        return out.astype(np.float32)


def bm25_reference(doc_terms: Sequence[Sequence[str]], query: Sequence[str], k1: float = 1.2, b: float = 0.75) -> list[float]:
    """BM25 of every document (a list of terms) for one query (a list of terms), straight from the formula
    in this module's docstring, for tests and benchmarks.

    >>> [round(s, 4) for s in bm25_reference([["a", "b"], ["b", "b", "c"]], ["b", "c"])]
    [0.1986, 0.8781]
    """
    n = len(doc_terms)
    avgdl = sum(len(d) for d in doc_terms) / n if n else 0.0
    out = []
    for d in doc_terms:
        s = 0.0
        for t in sorted(set(query)):
            tf = d.count(t)
            df = sum(1 for e in doc_terms if t in e)
            if tf == 0 or df == 0:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            s += query.count(t) * idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avgdl))
        out.append(s)
    return out
