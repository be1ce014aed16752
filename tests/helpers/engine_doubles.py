"""Small exact components for testing the index engine on its own.

They store the representations as plain .npy files and score them exactly with m3search.scoring's
definitions, so an engine test can compare index-level results with brute force over the documents it
expects to be live. They honour the ComponentType contract (fsync'd files, `shared` written once and
atomically, IndexFormatError on unreadable files) but make no effort to be fast.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from m3search.errors import ConfigError, IndexFormatError
from m3search.indexes.base import ComponentType, DenseReader, MultivecReader, SparseReader
from m3search.scoring import maxsim
from m3search.types import EncodedBatch


def _save(path: Path, name: str, arr: np.ndarray) -> None:
    with open(path / name, "wb") as f:
        np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _load(path: Path, name: str, shape0: int | None = None) -> np.ndarray:
    try:
        arr = np.load(path / name, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise IndexFormatError(f"{path / name} is unreadable ({e})") from e
    if shape0 is not None and arr.shape[0] != shape0:
        raise IndexFormatError(f"{path / name} has {arr.shape[0]} rows, expected {shape0}")
    return arr


def _check_keys(config: dict, allowed: dict) -> dict:
    unknown = set(config) - set(allowed)
    if unknown:
        raise ConfigError(f"unknown config keys {sorted(unknown)}; valid: {sorted(allowed)}")
    return {**allowed, **config}


def topk(scores: np.ndarray, k: int, deleted: np.ndarray | None, drop_zero: bool = False):
    """Exact top-k with ties going to the smaller id; (-inf, -1) padding."""
    scores = np.array(scores, dtype=np.float32)
    m, n = scores.shape
    if deleted is not None:
        scores[:, np.asarray(deleted, dtype=bool)] = -np.inf
    if drop_zero:
        scores[scores == 0] = -np.inf
    ids = np.broadcast_to(np.arange(n), scores.shape)
    order = np.lexsort((ids, -scores), axis=1)[:, :k]
    D = np.take_along_axis(scores, order, axis=1)
    I = np.where(np.isfinite(D), order, -1).astype(np.int64)
    if D.shape[1] < k:
        D = np.concatenate([D, np.full((m, k - D.shape[1]), -np.inf, dtype=np.float32)], axis=1)
        I = np.concatenate([I, np.full((m, k - I.shape[1]), -1, dtype=np.int64)], axis=1)
    return D.astype(np.float32), I


# -- dense --------------------------------------------------------------------------------------------


class DoubleDenseReader(DenseReader):
    def __init__(self, path: Path, xb: np.ndarray):
        self.path, self.xb = path, xb

    @property
    def n_docs(self) -> int:
        return self.xb.shape[0]

    def nbytes(self) -> int:
        return os.path.getsize(self.path / "vectors.npy")

    def search(self, xq, k, deleted=None, **params):
        return topk(np.asarray(xq, dtype=np.float32) @ np.asarray(self.xb).T, k, deleted)

    def score_pairs(self, xq, q_index, ids):
        return np.einsum("ij,ij->i", np.asarray(xq)[q_index], np.asarray(self.xb)[ids]).astype(np.float32)

    def vectors(self, ids):
        return np.array(self.xb[np.asarray(ids, dtype=np.int64)], dtype=np.float32)


class DoubleDense(ComponentType):
    kind = "dense"

    @classmethod
    def validate_config(cls, config: dict) -> dict:
        return _check_keys(config, {"metric": "ip"})

    def _write_shared(self, shared: Path, dim: int) -> None:
        marker = shared / "dim.json"
        if not marker.exists():  # index-wide state, written once and atomically
            tmp = shared / "dim.json.tmp"
            tmp.write_text(json.dumps({"dim": dim}))
            os.replace(tmp, marker)

    def build(self, path: Path, batch: EncodedBatch, shared: Path) -> dict:
        self._write_shared(shared, batch.dense.shape[1])
        _save(path, "vectors.npy", batch.dense)
        return {"n": len(batch), "dim": int(batch.dense.shape[1])}

    def open(self, path: Path, meta: dict, shared: Path) -> DoubleDenseReader:
        if not (shared / "dim.json").is_file():
            raise IndexFormatError(f"{shared / 'dim.json'} is missing")
        return DoubleDenseReader(path, _load(path, "vectors.npy", meta["n"]))

    def merge(self, path, sources: Sequence[DoubleDenseReader], keep, shared) -> dict:
        xb = np.concatenate([s.vectors(k) for s, k in zip(sources, keep)])
        _save(path, "vectors.npy", xb)
        return {"n": len(xb), "dim": int(xb.shape[1])}


# -- sparse -------------------------------------------------------------------------------------------


class DoubleSparseReader(SparseReader):
    def __init__(self, path: Path, matrix: sp.csr_matrix):
        self.path, self.matrix = path, matrix

    @property
    def n_docs(self) -> int:
        return self.matrix.shape[0]

    def nbytes(self) -> int:
        return sum(os.path.getsize(self.path / f) for f in ("data.npy", "indices.npy", "indptr.npy"))

    def search(self, q, k, deleted=None, **params):
        return topk((q @ self.matrix.T).toarray(), k, deleted, drop_zero=True)

    def score_pairs(self, q, q_index, ids):
        a = q[np.asarray(q_index)]
        b = self.matrix[np.asarray(ids)]
        return np.asarray(a.multiply(b).sum(axis=1)).ravel().astype(np.float32)

    def doc_weights(self, ids):
        return self.matrix[np.asarray(ids, dtype=np.int64)].astype(np.float32)


class DoubleSparse(ComponentType):
    kind = "sparse"

    @classmethod
    def validate_config(cls, config: dict) -> dict:
        return _check_keys(config, {})

    def _write(self, path: Path, m: sp.csr_matrix) -> dict:
        _save(path, "data.npy", m.data.astype(np.float32))
        _save(path, "indices.npy", m.indices.astype(np.int32))
        _save(path, "indptr.npy", m.indptr.astype(np.int64))
        return {"n": int(m.shape[0]), "vocab": int(m.shape[1])}

    def build(self, path, batch, shared):
        return self._write(path, batch.sparse)

    def open(self, path, meta, shared):
        indptr = _load(path, "indptr.npy", meta["n"] + 1)
        data, indices = _load(path, "data.npy"), _load(path, "indices.npy")
        if len(data) != indptr[-1] or len(indices) != indptr[-1]:
            raise IndexFormatError(f"{path}: arrays disagree with indptr")
        arrays = (np.asarray(data), np.asarray(indices), np.asarray(indptr))
        matrix = sp.csr_matrix(arrays, shape=(meta["n"], meta["vocab"]))
        return DoubleSparseReader(path, matrix)

    def merge(self, path, sources, keep, shared):
        return self._write(path, sp.vstack([s.doc_weights(k) for s, k in zip(sources, keep)], format="csr"))


# -- multivec -----------------------------------------------------------------------------------------


class DoubleMultivecReader(MultivecReader):
    def __init__(self, path: Path, vecs: np.ndarray, lengths: np.ndarray):
        self.path, self.vecs, self.lengths = path, vecs, np.asarray(lengths)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])

    @property
    def n_docs(self) -> int:
        return len(self.lengths)

    def nbytes(self) -> int:
        return os.path.getsize(self.path / "vecs.npy") + os.path.getsize(self.path / "lengths.npy")

    def _doc(self, i: int) -> np.ndarray:
        return np.asarray(self.vecs[self.offsets[i] : self.offsets[i + 1]])

    def score_pairs(self, q_vecs, q_lengths, q_index, ids):
        q_off = np.concatenate([[0], np.cumsum(q_lengths)])
        return np.asarray(
            [maxsim(q_vecs[q_off[q] : q_off[q + 1]], self._doc(d)) for q, d in zip(q_index, ids)], dtype=np.float32
        )

    def token_vectors(self, ids):
        ids = np.asarray(ids, dtype=np.int64)
        parts = [self._doc(i) for i in ids]
        vecs = np.concatenate(parts) if parts else np.zeros((0, self.vecs.shape[1]), dtype=np.float32)
        return vecs.astype(np.float32), self.lengths[ids].astype(np.int64)

    def fidelity(self) -> dict:
        return {"mean_cosine": 1.0, "codec": "none"}


class DoubleMultivec(ComponentType):
    kind = "multivec"

    @classmethod
    def validate_config(cls, config: dict) -> dict:
        return _check_keys(config, {})

    def _write(self, path, vecs, lengths) -> dict:
        _save(path, "vecs.npy", vecs.astype(np.float32))
        _save(path, "lengths.npy", lengths.astype(np.int64))
        return {"n": int(len(lengths)), "dim": int(vecs.shape[1])}

    def build(self, path, batch, shared):
        return self._write(path, batch.multivec, batch.multivec_lengths)

    def open(self, path, meta, shared):
        lengths = _load(path, "lengths.npy", meta["n"])
        vecs = _load(path, "vecs.npy", int(np.sum(lengths)))
        return DoubleMultivecReader(path, vecs, lengths)

    def merge(self, path, sources, keep, shared):
        parts = [s.token_vectors(k) for s, k in zip(sources, keep)]
        return self._write(path, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


DOUBLES: dict[str, Any] = {"dense": DoubleDense, "sparse": DoubleSparse, "multivec": DoubleMultivec}


# -- corpora and checks shared by the engine tests ----------------------------------------------------

WORDS = (
    "alpha beta gamma delta river mountain forest ocean city village market bridge tower garden winter summer "
    "music theory engine index search vector token matrix planet star comet orbit light shadow stone paper "
    "glass metal silver golden ancient modern quiet rapid north south east west harbor castle meadow desert"
).split()


def make_text(key: str, n_words: int = 8) -> str:
    """A deterministic pseudo-random text for a key (same key -> same text in every process)."""
    seed = int.from_bytes(key.encode()[:16].ljust(16, b"\0"), "little") ^ len(key) ^ sum(key.encode())
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, size=n_words))


def workload_step(j: int) -> tuple[list[tuple[str, str]], list[str], list[tuple[str, str]]]:
    """(adds, deletes, upserts) of step j of the crash-test workload; each step is one commit.

    Every step upserts the marker document "__step__" whose text names the step, so the committed step
    can be read back from the index itself, atomically with the rest of the commit.
    """
    adds = [(f"s{j}-{i}", make_text(f"s{j}-{i}")) for i in range(12)]
    deletes = [f"s{j - 2}-{i}" for i in range(4)] if j % 3 == 2 else []
    upserts = [(f"s{j - 1}-{i}", make_text(f"s{j - 1}-{i}-v{j}")) for i in (5, 6)] if j % 4 == 3 else []
    return adds, deletes, upserts + [("__step__", f"step {j}")]


def replay(last_step: int) -> dict[str, str]:
    """The live documents (id -> text) after steps 0..last_step."""
    live: dict[str, str] = {}
    for j in range(last_step + 1):
        adds, deletes, upserts = workload_step(j)
        live.update(adds)
        for d in deletes:
            live.pop(d, None)
        live.update(upserts)
    return live


def apply_step(index, encoder, j: int) -> None:
    adds, deletes, upserts = workload_step(j)
    index.add([i for i, _ in adds], encoder.encode([t for _, t in adds]), [{"text": t} for _, t in adds])
    index.delete(deletes)
    index.upsert([i for i, _ in upserts], encoder.encode([t for _, t in upserts]), [{"text": t} for _, t in upserts])


def _expected_topk(scores: np.ndarray, k: int, drop_zero: bool) -> list[np.ndarray]:
    out = []
    for row in scores:
        row = row[row != 0] if drop_zero else row
        out.append(np.sort(row)[::-1][:k])
    return out


def assert_matches_brute_force(
    snap, encoder, live: dict[str, str], queries: list[str], k: int = 8, atol: float = 1e-5, rtol: float = 1e-6
) -> None:
    """Index-level dense/sparse search and multivec scoring equal exact scoring over `live`, ties allowed.

    atol/rtol: how far scores may be from exact (loosen for lossy components, e.g. quantized impacts)."""
    from m3search.scoring import all_scores

    assert snap.n_docs == len(live)
    ext = sorted(live)
    docs = encoder.encode([live[e] for e in ext])
    q = encoder.encode(queries, kind="query")
    exact = all_scores(q, docs)
    internal = snap.internal_ids(ext)
    assert (internal >= 0).all(), "every live document must be found by its id"
    for kind, query in (("dense", q.dense), ("sparse", q.sparse)):
        reader = getattr(snap, kind)
        if reader is None:
            continue
        D, I = reader.search(query, k)
        expected = _expected_topk(exact[kind], k, drop_zero=kind == "sparse")
        for qi in range(len(queries)):
            valid = I[qi] >= 0
            np.testing.assert_allclose(
                D[qi][valid], expected[qi], atol=atol, rtol=rtol, err_msg=f"{kind} scores, query {qi}"
            )
            # ids: every hit scores what brute force says for that document
            pos = {int(i): p for p, i in enumerate(internal)}
            got_scores = exact[kind][qi, [pos[int(i)] for i in I[qi][valid]]]
            np.testing.assert_allclose(
                D[qi][valid], got_scores, atol=atol, rtol=rtol, err_msg=f"{kind} ids, query {qi}"
            )
    if snap.multivec is not None and len(ext):
        qi = np.repeat(np.arange(len(queries)), len(ext))
        ids = np.tile(internal, len(queries))
        got = snap.multivec.score_pairs(q.multivec, q.multivec_lengths, qi, ids)
        np.testing.assert_allclose(got, exact["multivec"].ravel(), atol=atol, rtol=rtol)
    records = snap.docs(internal)
    assert [r.id for r in records] == ext
    assert [r.text for r in records] == [live[e] for e in ext]


# -- the real components, set up as exactly as they go ------------------------------------------------

# Score tolerance for the real components: the sparse search scores 8-bit quantized impacts and the dense
# store is fp16, so their scores are within ~1% of exact.
LOSSY = {"atol": 2e-3, "rtol": 1e-2}
EXACT_REAL_CONFIGS = {
    "dense": {"index": "flat", "gpu": False},
    "sparse": {"forward_dtype": "float32"},
    "multivec": {"compression": "fp16"},
}


def real_components(registry=None) -> dict[str, dict]:
    """kind -> exact config of each real component. All three are part of m3search: one that can't be
    loaded (a broken import) is an error here, never a reason to skip its tests."""
    from m3search.indexes.registry import component_type

    for kind in EXACT_REAL_CONFIGS:
        component_type(kind, registry)  # raises ConfigError naming the import that failed
    return dict(EXACT_REAL_CONFIGS)