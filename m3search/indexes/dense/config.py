"""Dense component configuration and the per-segment choice of FAISS structure."""
from __future__ import annotations

import dataclasses
import math

from m3search.errors import ConfigError

STRUCTURES = ("auto", "flat", "hnsw", "ivfpqfs", "ivfpq", "ivfflat")

# A segment of n x d is searched exactly (flat over the fp16 store) while n * d is below this, under
# flat_threshold "auto". Measured per segment, one thread, depth 100 (bench/results/dense_structure_crossover.md):
# a flat scan costs ~n * d, HNSW32 over fp16 (efSearch 256) grows slowly with n; they cost the same near
# 5k-10k docs at 384-d and 1k-2.5k docs at 1024-d, i.e. n * d ~ 2.5M-4M. At 2^22 (10,922 docs at 384-d,
# 4,096 at 1024-d) HNSW is 1.3x-1.6x faster than flat just above it and flat ~1.2x faster just below it, at
# R@10 >= 0.999 / R@100 >= 0.995 vs exact.
FLAT_WORK = 1 << 22

DEFAULTS = {
    # Segments with fewer documents are searched exactly (flat over the fp16 store); "auto": flat while
    # n * d < FLAT_WORK. Indexes created before "auto" keep the number they recorded (100,000).
    "flat_threshold": "auto",
    # auto: flat below flat_threshold, HNSW over fp16 from there to hnsw_max_docs, IVF + 4-bit fast-scan PQ
    # above; the others force a structure (ivfflat is exact within the probed lists, mostly for tests and
    # comparisons). HNSW keeps graph + fp16 vectors in memory (2d + 8M bytes/doc), IVF-PQ only d/8 bytes
    # (its fp16 store is read from the memory map for the re-rank): that is where IVF-PQ is needed.
    "index": "auto",
    "hnsw_max_docs": 2_000_000,  # ~4.6 GB in memory at 1024-d with M 32
    "hnsw_m": 32,  # graph neighbours per node
    "ef_construction": 80,
    # candidate list of a search (at least the depth asked for); a search call may override. 100k x 1024
    # (bench/results/dense_n100000.md): 128 gives recall@10/@100 0.995/0.984, 256 gives 0.997/0.995.
    "ef_search": 256,
    "nlist": "auto",  # auto: the power of two nearest to sqrt(N), clipped to [16, 65536]
    # sub-quantizers; auto: d/4 for 4-bit fast-scan (d/8 bytes per vector), d/8 for 8-bit PQ. Measured at
    # 60k x 1024 (bench/synthetic.py): PQ256x4fs + refine 200 reaches recall@10 0.998 while scanning ~5x
    # faster than 8-bit PQ128 of the same size; PQ128x4fs tops out at 0.957.
    "pq_m": "auto",
    "nprobe": 32,  # lists visited per query; a search call may override
    "refine": 200,  # re-rank depth against the fp16 store (0: off); the effective depth is max(refine, 4 * k)
    "train_sample": "auto",  # vectors used to train IVF/PQ; auto: min(N, max(65536, 64 * nlist))
    "gpu": "auto",  # auto: use GPU FAISS when faiss sees a GPU; True: require one; False: never
    "seed": 1234,
    "threads": None,  # FAISS threads for builds, merges and (by default) searches; None: FAISS's default
}


def _check_int(config: dict, key: str, low: int, allow_auto: bool = False) -> None:
    v = config[key]
    if allow_auto and v == "auto":
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        choices = f"an integer >= {low}" + (' or "auto"' if allow_auto else "")
        raise ConfigError(f"dense config {key!r} is {v!r}; valid: {choices}")


def validate_config(config: dict) -> dict:
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"dense config has unknown keys {sorted(unknown)}; valid keys: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **config}
    _check_int(out, "flat_threshold", 0, allow_auto=True)
    if out["index"] not in STRUCTURES:
        raise ConfigError(f"dense config 'index' is {out['index']!r}; valid: {list(STRUCTURES)}")
    _check_int(out, "nlist", 1, allow_auto=True)
    _check_int(out, "pq_m", 1, allow_auto=True)
    _check_int(out, "nprobe", 1)
    _check_int(out, "hnsw_max_docs", 0)
    _check_int(out, "hnsw_m", 2)
    _check_int(out, "ef_construction", 1)
    _check_int(out, "ef_search", 1)
    _check_int(out, "refine", 0)
    _check_int(out, "train_sample", 1, allow_auto=True)
    _check_int(out, "seed", 0)
    if out["threads"] is not None:
        _check_int(out, "threads", 1)
    if out["gpu"] not in ("auto", True, False):
        raise ConfigError(f"dense config 'gpu' is {out['gpu']!r}; valid: 'auto', true, false")
    return out


@dataclasses.dataclass(frozen=True)
class Structure:
    """What one segment is built as."""

    kind: str  # "flat" | "hnsw" | "ivfpqfs" | "ivfpq" | "ivfflat"
    nlist: int = 0
    pq_m: int = 0
    train_sample: int = 0
    hnsw_m: int = 0

    @property
    def exact_scores(self) -> bool:
        """Whether the searcher's scores are the fp16 store's inner products (no re-rank needed)."""
        return self.kind in ("flat", "hnsw")

    @property
    def factory(self) -> str:
        """The faiss.index_factory string (flat segments are searched as SQfp16 over the fp16 store)."""
        return {
            "flat": "SQfp16",
            "hnsw": f"HNSW{self.hnsw_m}_SQfp16",
            "ivfflat": f"IVF{self.nlist},Flat",
            "ivfpq": f"IVF{self.nlist},PQ{self.pq_m}",
            "ivfpqfs": f"IVF{self.nlist},PQ{self.pq_m}x4fs",
        }[self.kind]


def _auto_pq_m(d: int, fast_scan: bool) -> int:
    target = d // 4 if fast_scan else d // 8
    # the largest divisor of d not above the target (fast-scan also needs an even M)
    for m in range(max(1, target), 0, -1):
        if d % m == 0 and (not fast_scan or m % 2 == 0):
            return m
    return 2 if fast_scan else 1


def flat_threshold(d: int, config: dict) -> int:
    """Segments of dimension d with fewer documents than this are flat (under index "auto")."""
    t = config["flat_threshold"]
    return -(-FLAT_WORK // max(1, d)) if t == "auto" else int(t)


def choose_structure(n: int, d: int, config: dict) -> Structure:
    """The structure for a segment of n vectors of dimension d. Falls back to flat when n is too small
    to train the requested quantizers."""
    kind = config["index"]
    if kind == "auto":
        kind = "flat" if n < flat_threshold(d, config) else "hnsw" if n < config["hnsw_max_docs"] else "ivfpqfs"
    if kind == "flat" or n == 0:
        return Structure("flat")
    if kind == "hnsw":
        return Structure("hnsw", hnsw_m=config["hnsw_m"])
    if config["nlist"] == "auto":
        nlist = 2 ** round(math.log2(max(1.0, math.sqrt(n))))
        nlist = min(max(nlist, 16), 65536, max(1, n // 39))
    else:
        nlist = config["nlist"]
    pq_m = 0
    if kind in ("ivfpq", "ivfpqfs"):
        pq_m = _auto_pq_m(d, kind == "ivfpqfs") if config["pq_m"] == "auto" else config["pq_m"]
        if d % pq_m:
            raise ConfigError(f"dense config 'pq_m' is {pq_m}, which does not divide the dimension {d}")
        if kind == "ivfpqfs" and pq_m % 2:
            raise ConfigError(f"dense config 'pq_m' is {pq_m}; fast-scan PQ needs an even number")
    ts = config["train_sample"]
    ts = min(n, max(65536, 64 * nlist)) if ts == "auto" else min(n, ts)
    ksub = {"ivfpq": 256, "ivfpqfs": 16}.get(kind, 1)
    if ts < max(nlist, ksub):
        return Structure("flat")
    return Structure(kind, nlist=nlist, pq_m=pq_m, train_sample=ts)
