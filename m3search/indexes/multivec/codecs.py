"""Token-vector codecs: float vectors <-> fixed-size byte codes, one row of `code_size` bytes per token.

- fp16            2 bytes/dim, the near-exact reference (and the store of segments built before a codec exists)
- sq8, sq4        per-dimension scalar quantization (FAISS ScalarQuantizer), 1 and 1/2 byte/dim
- pq{M}           product quantization, M sub-quantizers of 256 centroids: M bytes
- opq{M}          PQ after a learned rotation (OPQ)
- rpq{M}          residual PQ: a coarse k-means centroid (2-byte id) plus PQ of the residual: M + 2 bytes,
                  + 1 byte where the codec stores a norm per token (see below)
- ropq{M}         residual PQ after a learned rotation of the residuals

A residual codec trained with `store_norm` ends every code with one byte: the ratio of the token's norm to
its reconstruction's, log-quantized over the range seen in training (array `norm_range`). Decoding and the
lookup-table scorer multiply by it. PQ shrinks vectors unevenly; MaxSim's max turns that into ranking noise
that grows with a document's length. On mldr_like zh (long documents) it took nDCG@10 from 71.0 to 73.6
(fp32: 77.2) for one byte (bench/results/multivec_norm_byte.md). Plain PQ gets the same for free from its
sub-centroid norms (`rescales`); residual codes can't, their norm has a centroid x residual cross term.

PQ-family codecs also score without decompressing (`lut_tables`): a query token's inner product with a
code is the sum of M table lookups (plus its product with the coarse centroid), as in FAISS's ADC.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import faiss
import numpy as np

from m3search.errors import ConfigError, IndexFormatError
from m3search.indexes import segment_files as sf

_NAME = re.compile(r"^(fp16|sq8|sq4|(r?)(o?)pq(\d+))$")
_ENCODE_ROWS = 16384  # rows encoded at a time: bounds the float temporaries (assignment, residuals)
_HNSW_ASSIGN_K = 4096  # coarse centroids from which tokens are assigned through an HNSW graph (see _assign)
COARSE_NITER = 4  # k-means iterations of the coarse quantizer (was 10; bench/results/codec_train_check_de.md)
MAX_PQ_POINTS = 65_536  # residuals the PQ trains on: FAISS keeps at most 256 per sub-centroid (256 x 256) anyway


def parse_name(name: str, dim: int | None = None) -> dict:
    """{"family", "m", "residual", "rotation"} of a compression name; ConfigError if it is not one."""
    match = _NAME.match(name) if isinstance(name, str) else None
    if not match:
        raise ConfigError(
            f"multivec config 'compression' is {name!r}; valid: 'auto', 'fp16', 'sq8', 'sq4', 'pq<M>', 'opq<M>', "
            "'rpq<M>', 'ropq<M>' (M sub-quantizers dividing the dimension, e.g. 'rpq64')"
        )
    if match.group(4) is None:
        return {"family": name, "m": 0, "residual": False, "rotation": False}
    m = int(match.group(4))
    if m < 1 or (dim is not None and dim % m):
        raise ConfigError(f"multivec compression {name!r}: M={m} must divide the token dimension {dim}")
    return {"family": "pq", "m": m, "residual": bool(match.group(2)), "rotation": bool(match.group(3))}


def code_size(name: str, dim: int, norm_byte: bool = False) -> int:
    p = parse_name(name, dim)
    base = {"fp16": 2 * dim, "sq8": dim, "sq4": (dim + 1) // 2}.get(p["family"], p["m"] + 2 * p["residual"])
    return base + int(bool(norm_byte) and p["residual"])


NORM_LEVELS = 255  # a norm byte holds 0..255: exp(lo + b * (hi - lo) / NORM_LEVELS)


@dataclasses.dataclass
class Codec:
    """A trained codec. `arrays` holds its learned parameters (saved as .npy files)."""

    name: str
    dim: int
    arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    fidelity: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.spec = parse_name(self.name, self.dim)
        self._sq = self._pq = self._assigner = None
        self._id_memo: tuple | None = None  # (which arrays, their hash): see codec_id
        self._lut_memo: tuple | None = None  # (query key, tables) of the last lut_tables call
        fam = self.spec["family"]
        if fam in ("sq8", "sq4"):
            qtype = faiss.ScalarQuantizer.QT_8bit if fam == "sq8" else faiss.ScalarQuantizer.QT_4bit
            self._sq = faiss.ScalarQuantizer(self.dim, qtype)
            if "sq_trained" in self.arrays:
                faiss.copy_array_to_vector(np.asarray(self.arrays["sq_trained"], np.float32).ravel(), self._sq.trained)
        elif fam == "pq":
            self._pq = faiss.ProductQuantizer(self.dim, self.spec["m"], 8)
            if "pq_centroids" in self.arrays:
                centroids = np.asarray(self.arrays["pq_centroids"], np.float32).ravel()
                faiss.copy_array_to_vector(centroids, self._pq.centroids)

    @property
    def is_builtin(self) -> bool:
        return self.name == "fp16"

    @property
    def code_size(self) -> int:
        """Bytes per token: follows from the name, the dimension and whether the codec has a norm byte."""
        return code_size(self.name, self.dim, self.has_norm_byte)

    @property
    def has_norm_byte(self) -> bool:
        """Whether every code ends with a byte scaling its reconstruction to the token's norm."""
        return "norm_range" in self.arrays

    def norm_scales(self) -> np.ndarray:
        """(256,) float32: the factor each norm byte value stands for."""
        lo, hi = (float(v) for v in self.arrays["norm_range"])
        return np.exp(lo + np.arange(256) * (hi - lo) / NORM_LEVELS).astype(np.float32)

    @property
    def supports_lut(self) -> bool:
        return self.spec["family"] == "pq"

    @property
    def rescales(self) -> bool:
        """Whether reconstructions of unit-norm tokens are rescaled to unit norm when scoring. PQ shrinks
        vectors unevenly towards its centroids, which MaxSim's max turns into ranking noise; rescaling
        removes it for free where the norm follows from the code. Not for residual codes (their norm has a
        cross term) nor scalar quantization (unbiased: measured, rescaling only added noise)."""
        return self.spec["family"] == "pq" and not self.spec["residual"]

    def sub_sq_norms(self) -> np.ndarray:
        """(M, 256) squared norms of the PQ sub-centroids: a code's squared norm is the sum of its M entries
        (a rotation keeps norms)."""
        return np.ascontiguousarray((self.arrays["pq_centroids"] ** 2).sum(axis=2), dtype=np.float32)

    @property
    def codec_id(self) -> str:
        """Content hash: segments record it, so they are never decoded with another codec. Kept while the
        same array objects are in place: hashing the 6 MB of a 4,096 x 384 codec took 3.4 ms, and a search
        asks for it once per query (training replaces arrays, it never writes into them)."""
        arrays = tuple((key, id(a)) for key, a in sorted(self.arrays.items()))
        if self._id_memo is None or self._id_memo[0] != arrays:
            h = hashlib.sha256(f"{self.name}/{self.dim}".encode())
            for key in sorted(self.arrays):
                h.update(key.encode())
                h.update(np.ascontiguousarray(self.arrays[key]).tobytes())
            self._id_memo = (arrays, h.hexdigest()[:16])
        return self._id_memo[1]

    # -- training ---------------------------------------------------------------------------------
    @classmethod
    def train(cls, name: str, x: np.ndarray, coarse_k: int = 1024, seed: int = 1234, *,
              coarse_niter: int = COARSE_NITER, max_pq_points: int | None = MAX_PQ_POINTS,
              store_norm: bool = False, consume: bool = False) -> "Codec":
        """Train on sample tokens x (n, d) float32; a tenth (at most 10k) is held out for `fidelity`.
        coarse_niter: k-means iterations of the coarse quantizer; max_pq_points: residuals the PQ is trained
        on (None: every fit token; FAISS samples at most 256 per centroid, i.e. 65,536, anyway).
        store_norm: residual codes get a norm byte (module docstring); ignored by other codecs.
        consume: x is a float32 sample the caller no longer needs: its rows are shuffled in place instead
        of into a copy (the same codec either way; at 200k x 384-d the copy is 307 MB)."""
        drop_pages = getattr(x, "drop_pages", None)  # a read-only file mapping (the writer's buffered tokens)
        consume = consume and isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.writeable \
            and x.flags.c_contiguous
        x = np.ascontiguousarray(x, dtype=np.float32)
        n, dim = x.shape
        codec = cls(name, dim)
        rng = np.random.default_rng(seed)
        if consume:
            rng.shuffle(x)  # row i becomes x[perm[i]], perm = what rng.permutation(n) draws from this state
        else:
            x = x[rng.permutation(n)]
        n_held = min(10_000, n // 10)
        held, fit = x[:n_held], x[n_held:]
        if drop_pages is not None:
            drop_pages()  # copied: its pages need not stay resident while k-means runs
        fam = codec.spec["family"]
        if fam in ("sq8", "sq4"):
            codec._sq.train(fit)
            codec.arrays["sq_trained"] = faiss.vector_to_array(codec._sq.trained).astype(np.float32)
        elif fam == "pq":
            codec._train_pq(fit, coarse_k, seed, coarse_niter, max_pq_points)
            if store_norm and codec.spec["residual"]:
                codec._train_norm_range(fit[:_ENCODE_ROWS])
        codec.fidelity = codec.measure(held if n_held else fit[:1000], rng)
        return codec

    def _train_pq(self, fit: np.ndarray, coarse_k: int, seed: int, coarse_niter: int = COARSE_NITER,
                  max_pq_points: int | None = MAX_PQ_POINTS) -> None:
        dim = self.dim
        if self.spec["residual"]:
            k = int(min(coarse_k, 65536, max(1, len(fit) // 16)))
            km = faiss.Kmeans(dim, k, niter=coarse_niter, seed=seed, min_points_per_centroid=1,
                              max_points_per_centroid=256)
            km.train(fit)
            self.arrays["coarse"] = km.centroids.astype(np.float32)
            # the PQ learns from the residuals of a sample (fit is already in random order), computed in
            # place a block at a time: no T x d temporaries
            fit = np.array(fit[: max_pq_points or len(fit)])
            for lo in range(0, len(fit), _ENCODE_ROWS):
                block = fit[lo : lo + _ENCODE_ROWS]
                block -= self.arrays["coarse"][self._assign(block)]
        if self.spec["rotation"]:
            opq = faiss.OPQMatrix(dim, self.spec["m"])
            opq.niter = 8
            opq.pq = faiss.ProductQuantizer(dim, self.spec["m"], 8)
            _min_points(opq.pq)
            opq.train(fit)
            self.arrays["rotation"] = faiss.vector_to_array(opq.A).reshape(dim, dim).astype(np.float32)
            fit = fit @ self.arrays["rotation"].T
        pq = faiss.ProductQuantizer(dim, self.spec["m"], 8)
        _min_points(pq)
        pq.cp.seed = seed
        pq.train(np.ascontiguousarray(fit))
        self._pq = pq
        self.arrays["pq_centroids"] = faiss.vector_to_array(pq.centroids).reshape(self.spec["m"], 256, -1)

    def _train_norm_range(self, fit: np.ndarray) -> None:
        """The range of log(|x| / |reconstruction|) the norm byte covers: the sample's, widened by a tenth
        (values beyond it are clamped)."""
        ratio = np.log(_norm_ratio(fit, self._decode_base(self._encode(fit))))
        lo, hi = float(ratio.min()), float(ratio.max())
        pad = max(0.1 * (hi - lo), 1e-3)
        self.arrays["norm_range"] = np.array([lo - pad, hi + pad], np.float32)

    def measure(self, x: np.ndarray, rng: np.random.Generator) -> dict:
        """Reconstruction quality on held-out tokens: cosines, and the error it puts on inner products with
        other tokens (the noise MaxSim sees)."""
        y = self.decode(self.encode(x))
        cos = np.sum(x * y, 1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-12)
        partners = x[rng.permutation(len(x))]
        ip_err = np.sum((x - y) * partners, 1)
        return {
            "mean_cosine": float(cos.mean()),
            "p05_cosine": float(np.quantile(cos, 0.05)),
            "ip_error_std": float(ip_err.std()),
            "bytes_per_token": self.code_size,
            "fp16_ratio": self.code_size / (2 * self.dim),
            "measured_on": int(len(x)),
        }

    # -- encode / decode --------------------------------------------------------------------------
    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, d) float32 -> (n, code_size) uint8."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) vectors, got {x.shape}")
        out = np.empty((len(x), self.code_size), np.uint8)
        for lo in range(0, len(x), _ENCODE_ROWS):
            out[lo : lo + _ENCODE_ROWS] = self._encode(x[lo : lo + _ENCODE_ROWS])
        return out

    def _encode(self, x: np.ndarray) -> np.ndarray:
        fam = self.spec["family"]
        if fam == "fp16":
            return x.astype(np.float16).view(np.uint8)
        if fam in ("sq8", "sq4"):
            return self._sq.compute_codes(x)
        parts, x_in = [], x
        if self.spec["residual"]:
            ids = self._assign(x)
            parts.append(ids.astype("<u2").view(np.uint8).reshape(-1, 2))
            x = x - self.arrays["coarse"][ids]
        if self.spec["rotation"]:
            x = x @ self.arrays["rotation"].T
        parts.append(self._pq.compute_codes(np.ascontiguousarray(x)))
        codes = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        if not self.has_norm_byte:
            return codes
        lo, hi = (float(v) for v in self.arrays["norm_range"])
        ratio = np.log(_norm_ratio(x_in, self._decode_base(codes)))
        level = np.clip(np.rint((ratio - lo) / (hi - lo) * NORM_LEVELS), 0, NORM_LEVELS).astype(np.uint8)
        return np.concatenate([codes, level[:, None]], axis=1)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(n, code_size) uint8 -> (n, d) float32."""
        codes = np.ascontiguousarray(codes)
        fam = self.spec["family"]
        if fam == "fp16":
            return codes.view(np.float16).astype(np.float32)
        if fam in ("sq8", "sq4"):
            return self._sq.decode(codes)
        y = self._decode_base(codes)
        if self.has_norm_byte:
            y *= self.norm_scales()[codes[:, -1]][:, None]
        return y

    def _decode_base(self, codes: np.ndarray) -> np.ndarray:
        """PQ-family reconstruction without the norm byte's scaling."""
        off = 2 if self.spec["residual"] else 0
        m = self.spec["m"]
        y = self._pq.decode(np.ascontiguousarray(codes[:, off : off + m]))
        if self.spec["rotation"]:
            y = y @ self.arrays["rotation"]
        if off:
            y += self.arrays["coarse"][coarse_ids(codes)]
        return y

    def lut_tables(self, q: np.ndarray, coarse_sims: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """For query tokens q (lq, d): (tables (M, 256, lq), coarse (K, lq)) with <q_i, decode(c)> =
        coarse[id(c), i] + sum_m tables[m, c_m, i]; coarse is (0, lq) without a coarse quantizer.
        coarse_sims: q's products with the coarse centroids (lq, K) where the caller has them already.
        The last query's tables are kept: `all` builds them in the generator's search and again to re-score
        the other sources' candidates (~1 ms at 96 sub-quantizers and 4,096 centroids)."""
        q = np.ascontiguousarray(q, dtype=np.float32)
        key = (self.codec_id, q.shape, hashlib.blake2b(q.tobytes(), digest_size=16).digest())
        memo = self._lut_memo
        if memo is not None and memo[0] == key:
            return memo[1]
        out = self._lut_tables(q, coarse_sims)
        self._lut_memo = (key, out)
        return out

    def _lut_tables(self, q: np.ndarray, coarse_sims: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        cent = self.arrays["pq_centroids"]  # (M, 256, dsub)
        qr = q @ self.arrays["rotation"].T if self.spec["rotation"] else q
        qs = qr.reshape(len(q), self.spec["m"], -1)  # (lq, M, dsub)
        tables = np.matmul(cent, np.ascontiguousarray(qs.transpose(1, 2, 0)))  # (M, 256, lq): one GEMM per m
        if not self.spec["residual"]:
            coarse = np.zeros((0, len(q)), np.float32)
        else:
            coarse = np.dot(self.arrays["coarse"], q.T) if coarse_sims is None else coarse_sims.T
        return np.ascontiguousarray(tables), np.ascontiguousarray(coarse, dtype=np.float32)

    def _assign(self, x: np.ndarray) -> np.ndarray:
        """Nearest coarse centroid of every row. From _HNSW_ASSIGN_K centroids on, through an HNSW graph
        over the centroids (built once per codec, single-threaded so it is the same every time): a flat
        search costs T x K x d (10M tokens x 4096 x 384: minutes on 2 cores); an occasional second-nearest
        centroid only makes that token's residual a little larger (its code records the centroid used).
        Below it the flat search is exact and faster: 155k real tokens x 2,048 centroids took 1.5 s flat
        (one GEMM a block) vs 3.4 s through the graph (efSearch 96), which agreed on 99.76% of them."""
        if self._assigner is None:
            coarse = np.ascontiguousarray(self.arrays["coarse"], dtype=np.float32)
            if len(coarse) >= _HNSW_ASSIGN_K:
                index = faiss.IndexHNSWFlat(self.dim, 32)
                index.hnsw.efConstruction = 80
                before = faiss.omp_get_max_threads()
                faiss.omp_set_num_threads(1)
                try:
                    index.add(coarse)
                finally:
                    faiss.omp_set_num_threads(before)
                index.hnsw.efSearch = 96
            else:
                index = faiss.IndexFlatL2(self.dim)
                index.add(coarse)
            self._assigner = index
        return self._assigner.search(np.ascontiguousarray(x, dtype=np.float32), 1)[1][:, 0]

    # -- persistence ------------------------------------------------------------------------------
    def save(self, folder: Path) -> dict:
        """Write the arrays into folder; return the header describing them."""
        files = {f"{key}.arr": sf.write_array(folder, f"{key}.arr", arr) for key, arr in self.arrays.items()}
        return {"name": self.name, "dim": self.dim, "codec_id": self.codec_id, "fidelity": self.fidelity,
                "files": files}

    @classmethod
    def load(cls, folder: Path, header: dict) -> "Codec":
        arrays = {name[: -len(".arr")]: np.array(sf.open_array(folder, name, entry))
                  for name, entry in header["files"].items()}
        codec = cls(header["name"], int(header["dim"]), arrays, header.get("fidelity", {}))
        if codec.codec_id != header["codec_id"]:
            raise IndexFormatError(f"{folder}: codec arrays don't match the recorded codec id; the codec is corrupt")
        return codec


def coarse_ids(codes: np.ndarray) -> np.ndarray:
    """The 2-byte little-endian coarse centroid ids leading residual codes."""
    return codes[:, 0].astype(np.int64) | (codes[:, 1].astype(np.int64) << 8)


def _norm_ratio(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|x| / |y| per row, guarded against zero rows (a zero reconstruction stays zero whatever it is scaled by)."""
    nx = np.sqrt(np.einsum("td,td->t", x, x))
    ny = np.sqrt(np.einsum("td,td->t", y, y))
    return np.maximum(nx, 1e-6) / np.maximum(ny, 1e-6)


def _min_points(pq: faiss.ProductQuantizer) -> None:
    pq.cp.min_points_per_centroid = 1  # no FAISS warnings on small training samples
    pq.cp.max_points_per_centroid = 256
    pq.cp.niter = 12  # FAISS's 25 costs twice as much for a negligible gain in distortion
