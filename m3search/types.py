"""Typed, always batch-shaped objects passed between the pipeline stages.

text -> encoder -> `EncodedBatch` -> index writers -> on-disk index -> planner -> hits.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from m3search.errors import InputError, IndexFormatError

BATCH_FORMAT = "m3search.encoded_batch"
BATCH_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class EncoderIdentity:
    """What an index records about the encoder it was built with.

    Two encoders whose identities are equal produce interchangeable representations.
    """

    name: str
    dense_dim: int
    multivec_dim: int
    vocab_size: int
    tokenizer_hash: str
    # Digest of the sparse and multi-vector heads ("" for encoders without learned heads).
    heads_hash: str = ""
    # How per-position lexical weights become sparse terms (`m3search.encoder.terms`), and the width of the
    # sparse rows that gives (0: the vocabulary size). Indexes older than the field read as "pieces".
    sparse_terms: str = "pieces"
    sparse_width: int = 0

    def __post_init__(self) -> None:
        if not self.sparse_width:
            object.__setattr__(self, "sparse_width", int(self.vocab_size))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderIdentity":
        fields = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        missing = required - set(d)
        if missing:
            raise IndexFormatError(f"encoder identity lacks fields {sorted(missing)}: {d}")
        return cls(**{k: d[k] for k in fields if k in d})

    def mismatches(self, other: "EncoderIdentity") -> list[str]:
        """Names of the fields that differ, with both values."""
        out = []
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a != b:
                out.append(f"{f.name}: {a!r} != {b!r}")
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedBatch:
    """The three M3 representations of n texts.

    dense:            (n, d) float32, L2-normalised rows.
    sparse:           (n, vocab) float32 CSR; row i holds the lexical weights of text i (token id -> weight),
                      sorted indices, no explicit zeros.
    multivec:         (T, d') float32, the token vectors of all texts stacked in order.
    multivec_lengths: (n,) int64, how many rows of `multivec` belong to each text.
    """

    dense: np.ndarray
    sparse: sp.csr_matrix
    multivec: np.ndarray
    multivec_lengths: np.ndarray

    def __post_init__(self) -> None:
        n = self.dense.shape[0]
        problems = []
        if self.dense.ndim != 2:
            problems.append(f"dense must be 2-d (n, d), got shape {self.dense.shape}")
        if self.dense.dtype != np.float32:
            problems.append(f"dense must be float32, got {self.dense.dtype}")
        if not sp.isspmatrix_csr(self.sparse) and not isinstance(self.sparse, sp.csr_array):
            problems.append(f"sparse must be a scipy CSR matrix, got {type(self.sparse).__name__}")
        elif self.sparse.shape[0] != n:
            problems.append(f"sparse has {self.sparse.shape[0]} rows but dense has {n}")
        elif self.sparse.dtype != np.float32:
            problems.append(f"sparse must be float32, got {self.sparse.dtype}")
        if self.multivec.ndim != 2 or self.multivec.dtype != np.float32:
            problems.append(f"multivec must be float32 (T, d'), got {self.multivec.dtype} {self.multivec.shape}")
        lengths = np.asarray(self.multivec_lengths)
        if lengths.shape != (n,):
            problems.append(f"multivec_lengths must have shape ({n},), got {lengths.shape}")
        elif int(lengths.sum()) != self.multivec.shape[0]:
            problems.append(
                f"multivec_lengths sum to {int(lengths.sum())} but multivec has {self.multivec.shape[0]} rows"
            )
        elif n and lengths.min() < 0:
            problems.append("multivec_lengths has negative entries")
        if problems:
            raise InputError("invalid EncodedBatch: " + "; ".join(problems))
        object.__setattr__(self, "multivec_lengths", lengths.astype(np.int64, copy=False))

    def __len__(self) -> int:
        return self.dense.shape[0]

    @property
    def offsets(self) -> np.ndarray:
        """(n + 1,) int64 row offsets of each text's token vectors in `multivec`."""
        out = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(self.multivec_lengths, out=out[1:])
        return out

    def token_vectors(self, i: int) -> np.ndarray:
        off = self.offsets
        return self.multivec[off[i] : off[i + 1]]

    def lexical_weights(self, i: int) -> dict[int, float]:
        row = self.sparse[i]
        return dict(zip(row.indices.tolist(), row.data.tolist()))

    def select(self, idx: Sequence[int] | np.ndarray) -> "EncodedBatch":
        """The texts at positions `idx`, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        off = self.offsets
        if len(idx):
            rows = np.concatenate([np.arange(off[i], off[i + 1]) for i in idx])
        else:
            rows = np.zeros(0, dtype=np.int64)
        return EncodedBatch(
            dense=np.ascontiguousarray(self.dense[idx]),
            sparse=self.sparse[idx],
            multivec=np.ascontiguousarray(self.multivec[rows]),
            multivec_lengths=self.multivec_lengths[idx],
        )

    @staticmethod
    def concat(batches: Sequence["EncodedBatch"]) -> "EncodedBatch":
        if not batches:
            raise InputError("EncodedBatch.concat needs at least one batch")
        return EncodedBatch(
            dense=np.concatenate([b.dense for b in batches]),
            sparse=sp.vstack([b.sparse for b in batches], format="csr", dtype=np.float32),
            multivec=np.concatenate([b.multivec for b in batches]),
            multivec_lengths=np.concatenate([b.multivec_lengths for b in batches]),
        )

    # -- precomputed representations on disk ---------------------------------------------------
    # A folder of .npy files plus a small JSON header, so corpora encoded elsewhere can be indexed here.

    _ARRAYS = ("dense", "sparse_data", "sparse_indices", "sparse_indptr", "multivec", "multivec_lengths")

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {
            "dense": self.dense,
            "sparse_data": self.sparse.data.astype(np.float32, copy=False),
            "sparse_indices": self.sparse.indices.astype(np.int32, copy=False),
            "sparse_indptr": self.sparse.indptr.astype(np.int64, copy=False),
            "multivec": self.multivec,
            "multivec_lengths": self.multivec_lengths,
        }
        for name, arr in arrays.items():
            np.save(path / f"{name}.npy", arr, allow_pickle=False)
        header = {
            "format": BATCH_FORMAT,
            "version": BATCH_FORMAT_VERSION,
            "n": len(self),
            "vocab_size": int(self.sparse.shape[1]),
        }
        (path / "batch.json").write_text(json.dumps(header, indent=1))

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> "EncodedBatch":
        path = Path(path)
        header_file = path / "batch.json"
        if not header_file.is_file():
            raise InputError(f"{path} is not a saved EncodedBatch: {header_file.name} is missing")
        header = json.loads(header_file.read_text())
        if header.get("format") != BATCH_FORMAT:
            raise IndexFormatError(f"{header_file}: format {header.get('format')!r} is not {BATCH_FORMAT!r}")
        if header.get("version", 0) > BATCH_FORMAT_VERSION:
            raise IndexFormatError(
                f"{header_file}: version {header.get('version')} is newer than this m3search reads "
                f"({BATCH_FORMAT_VERSION}); upgrade m3search"
            )
        mode = "r" if mmap else None
        try:
            a = {name: np.load(path / f"{name}.npy", mmap_mode=mode, allow_pickle=False) for name in cls._ARRAYS}
        except (OSError, ValueError) as e:
            raise IndexFormatError(f"{path}: can't read the batch arrays ({e})") from e
        n = int(header["n"])
        sparse = sp.csr_matrix(
            (np.asarray(a["sparse_data"]), np.asarray(a["sparse_indices"]), np.asarray(a["sparse_indptr"])),
            shape=(n, int(header["vocab_size"])),
        )
        return cls(dense=a["dense"], sparse=sparse, multivec=a["multivec"], multivec_lengths=a["multivec_lengths"])
