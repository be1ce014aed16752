"""Scoring one multi-vector segment: MaxSim over memory-mapped token codes, grouped by query."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np

from m3search.errors import InputError
from m3search.indexes.base import MultivecReader
from m3search.indexes import query_pool
from m3search.indexes.blas_threads import one_blas_thread
from m3search.indexes.faiss_support import SMALL_WORK, faiss_threads, threads_for
from m3search.indexes.inputs import check_ids
from m3search.indexes.multivec.codecs import Codec
from m3search.indexes.multivec import generator as gen
from m3search.indexes.multivec import means as mv
from m3search.indexes.multivec.maxsim import maxsim_decoded, maxsim_lut, token_rows

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def search_threads(configured: int | None):
    """Threads of a generator search: one unless configured, and the query's small products on one BLAS
    thread (a query's stages are a few ms of work; waking a team for each kernel costs more than it saves).
    Unconfigured, the stages' kernels may hand chunks to idle helper threads (m3search.indexes.query_pool)."""
    with faiss_threads(1 if configured is None else configured), one_blas_thread(), \
            query_pool.allow_split(configured is None):
        yield


@contextlib.contextmanager
def scoring_threads(work: float, configured: int | None, lut: bool = False):
    """Threads of a re-scoring call of `work` (tokens x queries x dims): sized by the work, and one BLAS
    thread when the work is small (the query's lookup tables and products). Lookup-table scoring, unless
    configured, runs as a search does whatever its size: one-thread kernels per query, split into chunks
    for idle helper threads. With an OpenMP team instead, a query's re-score of 200 candidates took 16 ms
    where one thread took 5, and batches of 32 queries of `all` ran at 12 q/s against 51 this way (100k x
    384, 2 cores: the team's threads spin after each kernel, on the core the next kernel's helper needs)."""
    if configured is None and lut:
        with search_threads(None):
            yield
        return
    with faiss_threads(threads_for(work, configured)):
        if work > SMALL_WORK:
            yield
        else:
            with one_blas_thread():
                yield


class MultivecSegmentReader(MultivecReader):
    """One segment: `codes` (T, code_size) uint8 memory-mapped, `offsets` (n + 1,) int64 token offsets."""

    def __init__(self, path: Path, header: dict, codec: Codec, codes: np.ndarray, offsets: np.ndarray,
                 config: dict, lists: tuple[np.ndarray, np.ndarray] | None = None,
                 means: tuple[np.ndarray, np.ndarray] | None = None):
        self.path = path
        self.lists = lists  # the candidate generator's (offsets, docs) per coarse centroid, or None
        self.means = means  # (int8 unit means (n, d), (scale, norm) (n, 2)) per document, or None (format < 4)
        self._doc_cents = None  # the lists transposed (per document its centroids), built on first search
        self.header = header
        self.codec = codec
        self.codes = codes
        self.offsets = offsets
        self.config = config
        # unit-norm inputs (BGE-M3's are) get unit-norm reconstructions, where the codec can do it for free
        self.rescale = bool(header.get("unit_norm")) and config.get("rescale", True) and codec.rescales
        self._sq_norms = codec.sub_sq_norms() if self.rescale and codec.supports_lut else None
        self._byte_scales = codec.norm_scales() if codec.has_norm_byte else None

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def dim(self) -> int:
        return self.codec.dim

    def nbytes(self) -> int:
        return int(self.header["nbytes"])

    def close(self) -> None:
        self.codes = None

    def doc_lengths(self, ids: np.ndarray) -> np.ndarray:
        ids = check_ids(ids, self.n_docs, "ids")
        return self.offsets[ids + 1] - self.offsets[ids]

    def fidelity(self) -> dict:
        """Compression, bytes per token on disk, and the codec's reconstruction quality on held-out tokens."""
        return {
            "compression": self.codec.name,
            "codec_id": self.codec.codec_id,
            "bytes_per_token": self.codec.code_size,
            "disk_bytes_per_token": self.nbytes() / max(1, self.n_tokens),
            "rescaled_to_unit_norm": self.rescale,
            "norm_byte": self.codec.has_norm_byte,  # residual codes scaled to each token's stored norm
            **{k: v for k, v in self.header.get("fidelity", {}).items() if k != "bytes_per_token"},
            **self.generator_settings(),
        }

    def generator_settings(self, k: int = 10) -> dict:
        """What `search` does on this segment by default (reported by `info`)."""
        if self.lists is None:
            return {"generator": "exhaustive"}
        n_centroids = len(self.lists[0]) - 1
        cands = gen.default_candidates(k, self.n_docs)
        pool = gen.default_pool(cands, self.n_docs)
        return {"generator": "centroid-lists", "generator_centroids": n_centroids,
                "generator_nprobe": gen.default_nprobe(n_centroids, self.n_docs), "generator_candidates": cands,
                "generator_pool": pool, "generator_refine": gen.default_refine(cands, pool),
                "generator_refine_subcodes": gen.partial_subquantizers(self.codec.spec["m"]),
                "generator_mean_candidates": mv.default_mean_candidates(self.n_docs, self.dim) if self.means is not None else 0}

    def search(self, q_vecs, q_lengths, k, deleted=None, nprobe=None, candidates=None, pool=None,
               scorer=None, threads=None, scored=None, mean_candidates=None):
        """Top-k documents by MaxSim from the stored codes, per query: (D, I) of shape (m, k), padded with
        (-inf, -1). With the centroid lists (residual codecs): probe `nprobe` centroids per query token,
        centroid interaction on the best `pool`, full-code MaxSim on the best `candidates` (see
        m3search.indexes.multivec.generator) joined by the best `mean_candidates` by mean vector (0: none;
        m3search.indexes.multivec.means); otherwise every live document is scored from its codes.
        scored: a list that receives (query, local ids, scores) of every document scored from its full codes."""
        q_vecs, q_lengths = self._check_queries(q_vecs, q_lengths)
        m = len(q_lengths)
        k = int(k)
        if k < 0:
            raise InputError(f"k must be >= 0, got {k}")
        if deleted is not None:
            deleted = np.asarray(deleted, dtype=bool)
            if deleted.shape != (self.n_docs,):
                raise InputError(f"deleted mask must have shape ({self.n_docs},), got {deleted.shape}")
        for name, v in (("nprobe", nprobe), ("candidates", candidates), ("pool", pool)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
                raise InputError(f"multivec search parameter {name} must be an integer >= 1, got {v!r}")
        n_means = (mv.default_mean_candidates(self.n_docs, self.dim) if mean_candidates is None
                   else mv.check_mean_candidates(mean_candidates))
        D = np.full((m, k), -np.inf, np.float32)
        I = np.full((m, k), -1, np.int64)
        live = np.arange(self.n_docs, dtype=np.int64)
        if deleted is not None:
            live = live[~deleted]
        n_live = len(live)
        if k == 0 or n_live == 0:
            return D, I
        q_off = np.zeros(m + 1, np.int64)
        np.cumsum(q_lengths, out=q_off[1:])
        cands = min(n_live, max(k, candidates or gen.default_candidates(k, n_live)))
        # one thread per query unless configured: a query's stages are a few ms of work, and waking a team
        # for each kernel cost 2.7x the CPU and 2.3x the wall time on the shared 2 cores (5,000 x 384-d,
        # K=4096: 26 vs 9.7 ms CPU, 44 vs 19 ms p50; bench/results/multivec_generator_profile.md)
        with search_threads(self.config.get("threads") if threads is None else threads):
            for qi in range(m):
                q = q_vecs[q_off[qi] : q_off[qi + 1]]
                if not len(q):
                    continue  # a query without tokens matches nothing
                use_lut = self._use_lut(scorer)
                if self.lists is None or cands >= n_live:
                    ids = live
                    scores = self._score(q_vecs, q_lengths, np.full(len(ids), qi, np.int64), ids, use_lut)
                else:
                    ids, sims = self._generate(q, deleted, nprobe, cands, pool, n_live)
                    if n_means and self.means is not None:  # union: both sources' documents are re-scored
                        ids = np.union1d(ids, gen.top_positions(self.mean_estimates(q, deleted), n_means))
                    # stage 3; the coarse centroids' table is stage 1's query x centroid products
                    scores = self.full_scores(q, ids, self.codec.lut_tables(q, sims) if use_lut else None)
                if scored is not None:
                    scored.append((qi, ids, scores))
                top = gen.top_ids(scores, ids, k)  # ids are sorted: positions by binary search
                I[qi, : len(top)] = top
                D[qi, : len(top)] = scores[np.searchsorted(ids, top)]
        return D, I

    def _generate(self, q, deleted, nprobe, cands, pool, n_live) -> tuple[np.ndarray, np.ndarray]:
        """(sorted local ids of the `cands` documents to score from their full codes, the query tokens'
        products with the coarse centroids (lq, K))."""
        sims = gen.centroid_sims(q, self.codec.arrays["coarse"])  # (lq, K)
        n_centroids = sims.shape[1]
        est = gen.probe_scores(self.lists[0], self.lists[1], sims,
                               nprobe or gen.default_nprobe(n_centroids, self.n_docs), deleted, self.n_docs)
        pool = min(n_live, max(cands, pool or gen.default_pool(cands, n_live)))
        pooled = gen.top_positions(est, pool)
        if len(pooled) < pool:  # too few reached: fill up with unreached live documents, by id
            unreached = np.isinf(est)
            if deleted is not None:
                unreached &= ~deleted
            pooled = np.concatenate([pooled, np.nonzero(unreached)[0][: pool - len(pooled)]])
        if len(pooled) <= cands:
            return np.sort(pooled), sims
        pooled = np.sort(pooled)
        ci = gen.centroid_maxsim(self.doc_centroids(), pooled, sims)
        kept = np.sort(gen.top_ids(ci, pooled, gen.default_refine(cands, len(pooled))))
        if len(kept) <= cands:
            return kept, sims
        partial = self.partial_scores(kept, gen.partial_tables(self.codec, q, sims))
        return np.sort(gen.top_ids(partial, kept, cands)), sims

    def mean_estimates(self, q: np.ndarray, skip: np.ndarray | None) -> np.ndarray:
        """(n_docs,) q_sum . unit mean vector of every document (q: one query's tokens), -inf where skip is
        set; a segment without mean vectors (format < 4) gives -inf everywhere."""
        if self.means is None:
            return np.full(self.n_docs, -np.inf, np.float32)
        codes = self.means[0].verify_all().raw  # every block checked (once) before the kernel reads the rows
        return mv.mean_scores(codes, self.means[1], q.sum(axis=0), skip)

    def mean_rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(int8 unit means, (scale, norm)) of local ids as stored, for merges."""
        ids = check_ids(ids, self.n_docs, "ids")
        return np.asarray(self.means[0][ids]), np.asarray(self.means[1][ids])

    def doc_centroids(self) -> tuple[np.ndarray, np.ndarray]:
        """Per document the distinct coarse centroids of its tokens (the lists transposed; derived, kept in
        memory: about 4 bytes per (document, centroid) pair)."""
        if self._doc_cents is None:
            self._doc_cents = gen.doc_centroids(self.lists[0], self.lists[1], self.n_docs)
        return self._doc_cents

    def _check_queries(self, q_vecs, q_lengths):
        q_vecs = np.asarray(q_vecs)
        if q_vecs.ndim != 2 or q_vecs.shape[1] != self.dim:
            raise InputError(f"q_vecs must have shape (T, {self.dim}), got {q_vecs.shape}")
        q_lengths = np.asarray(q_lengths, dtype=np.int64)
        if q_lengths.ndim != 1 or q_lengths.sum() != len(q_vecs) or (q_lengths.size and q_lengths.min() < 0):
            raise InputError(f"q_lengths must be (m,) non-negative counts summing to {len(q_vecs)}")
        return np.ascontiguousarray(q_vecs, dtype=np.float32), q_lengths

    def _use_lut(self, scorer) -> bool:
        scorer = scorer or self.config.get("scorer", "auto")
        if scorer not in ("auto", "lut", "decode"):
            raise InputError(f"scorer must be 'auto', 'lut' or 'decode', got {scorer!r}")
        if scorer == "lut" and not self.codec.supports_lut:
            raise InputError(f"scorer 'lut' needs a PQ-family compression, this segment stores {self.codec.name}")
        return self.codec.supports_lut and scorer != "decode"

    def score_pairs(self, q_vecs, q_lengths, q_index, ids, scorer=None, threads=None):
        """MaxSim per (query, document) pair; all pairs of one query are scored in one pass over their
        documents' codes (lookup tables for PQ codes, else one decompression + one matrix product)."""
        q_vecs, q_lengths = self._check_queries(q_vecs, q_lengths)
        q_index = check_ids(q_index, len(q_lengths), "q_index")
        ids = check_ids(ids, self.n_docs, "ids")
        if len(q_index) != len(ids):
            raise InputError(f"q_index has {len(q_index)} entries but ids has {len(ids)}")
        use_lut = self._use_lut(scorer)
        work = float(self.doc_lengths(ids).sum()) * max(1.0, len(q_vecs) / max(1, len(q_lengths))) * self.dim
        with scoring_threads(work, self.config.get("threads") if threads is None else threads, use_lut):
            return self._score(q_vecs, q_lengths, q_index, ids, use_lut)

    def _score(self, q_vecs, q_lengths, q_index, ids, use_lut):
        codes = self._verified_codes(ids)
        q_off = np.zeros(len(q_lengths) + 1, np.int64)
        np.cumsum(q_lengths, out=q_off[1:])
        out = np.zeros(len(ids), np.float32)
        order = np.argsort(q_index, kind="stable")
        bounds = np.searchsorted(q_index[order], np.arange(len(q_lengths) + 1))
        for qi in np.nonzero(np.diff(bounds))[0]:
            pairs = order[bounds[qi] : bounds[qi + 1]]
            q = q_vecs[q_off[qi] : q_off[qi + 1]]
            if not len(q):
                continue  # a query without tokens scores 0, as in m3search.scoring.maxsim
            if use_lut:
                tables, coarse = self.codec.lut_tables(q)
                out[pairs] = maxsim_lut(tables, coarse, codes, self.offsets, ids[pairs],
                                        self.codec.spec["residual"], self._sq_norms,
                                        self._byte_scales)
            else:
                out[pairs] = maxsim_decoded(q, codes, self.offsets, ids[pairs], self._decode)
        return out

    def _verified_codes(self, ids: np.ndarray) -> np.ndarray:
        """The codes array for a compiled kernel, after checking the blocks that hold these documents'
        tokens (a checked array, see segment_files.py; a plain array passes as it is)."""
        verify = getattr(self.codes, "verify_spans", None)
        if verify is None:
            return self.codes
        verify(self.offsets[ids], self.offsets[ids + 1])
        return self.codes.raw

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        x = self.codec.decode(codes)
        if self.rescale:
            x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)
        return x

    def token_vectors(self, ids):
        """Decoded token vectors (rescaled like the scores are: the best estimate of the originals)."""
        ids = check_ids(ids, self.n_docs, "ids")
        rows, lengths = token_rows(self.offsets, ids)
        return self._decode(np.asarray(self.codes[rows])), lengths

    # -- the generator's stages, for a search over several segments at once (multiseg.py) ------------
    def probe_estimates(self, sims: np.ndarray, deleted: np.ndarray | None, nprobe: int) -> np.ndarray:
        """Stage 1 of `_generate` on this segment's lists: (n_docs,) estimates, -inf where not reached."""
        return gen.probe_scores(self.lists[0], self.lists[1], sims, nprobe, deleted, self.n_docs)

    def centroid_scores(self, ids: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """Stage 2 of `_generate`: MaxSim with every token replaced by its centroid, for sorted local ids."""
        return gen.centroid_maxsim(self.doc_centroids(), ids, sims)

    def partial_scores(self, ids: np.ndarray, tables) -> np.ndarray:
        """Stage 2.5: MaxSim from the coarse centroid and the first few sub-codes of every token (tables from
        `generator.partial_tables`), for sorted local ids: a ranking estimate at a tenth of stage 3's cost."""
        return maxsim_lut(tables[0], tables[1], self._verified_codes(ids), self.offsets, ids, True, None)

    def full_scores(self, q: np.ndarray, ids: np.ndarray, tables=None) -> np.ndarray:
        """Stage 3 (and re-scoring): MaxSim of one query's tokens q against local ids from their full codes;
        tables: `codec.lut_tables(q)`, built once by the caller for all segments, or None to decompress."""
        codes = self._verified_codes(ids)
        if tables is not None:
            return maxsim_lut(tables[0], tables[1], codes, self.offsets, ids, self.codec.spec["residual"],
                              self._sq_norms, self._byte_scales)
        return maxsim_decoded(q, codes, self.offsets, ids, self._decode)

    def drop_pages(self) -> None:
        """Take the codes' mapped pages out of the resident set (a merge reads each source once)."""
        drop = getattr(self.codes, "drop_pages", None)
        if drop is not None:
            drop()

    def token_codes(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(codes of the documents' tokens, lengths) as stored, for merges that keep the codec."""
        ids = check_ids(ids, self.n_docs, "ids")
        rows, lengths = token_rows(self.offsets, ids)
        return np.asarray(self.codes[rows]), lengths
