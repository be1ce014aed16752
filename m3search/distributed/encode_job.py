"""`m3search encode --ray`: a corpus -> an ENCODED folder on a Ray cluster.

The driver cuts the corpus into the same parts as the local path (`m3search.encoded.plan_parts`) and
leaves out the parts already written (resume). Ray Data maps the remaining parts through a pool of
`PartEncoder` actors (a callable class: the model is loaded once per actor, a GPU per actor when asked),
each part with the same `encode_part` call as the local path, so the bytes are identical. Results stream
back to the driver, the only writer, which stores each part atomically (`EncodedCorpus.write_part`).

A worker that dies mid-part is restarted by Ray and the part is redone; a part returned twice is stored
once (write_part skips complete parts), and a part is never split, so nothing is lost or duplicated.
"""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import msgpack
import numpy as np

from m3search.distributed import require_ray
from m3search.encoded import DEFAULT_PART_SIZE, EncodedCorpus, check_part_ids, plan_parts
from m3search.document import Document
from m3search.encoding import EncodeResult, encode_part
from m3search.types import EncodedBatch

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 256  # parts whose text the driver holds at once (one Ray Data run each)
_ARRAYS = ("dense", "sparse_data", "sparse_indices", "sparse_indptr", "multivec", "multivec_lengths")


class PartEncoder:
    """Ray Data callable class: a batch of parts (rows: part, docs) in, their encodings out."""

    def __init__(self, model: str | None, encoder_options: Mapping[str, Any] | None = None,
                 max_length: int | None = None, crash_marker: str | None = None):
        from m3search.api import _load_encoder

        device = "cuda" if _has_gpu() else None
        self.encoder = _load_encoder(model, device, encoder_options)
        self.max_length = max_length
        self.crash_marker = crash_marker  # tests: die once, hard, in the middle of a part

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        payloads = []
        for docs in batch["docs"]:
            rows = msgpack.unpackb(docs, raw=False)
            if self.crash_marker and not os.path.exists(self.crash_marker):
                Path(self.crash_marker).touch()
                os._exit(1)  # a killed worker process
            encoded = encode_part(self.encoder, [Document(*r) for r in rows], self.max_length)
            payloads.append(_pack_batch(encoded))
        return {"part": np.asarray(batch["part"]), "docs": batch["docs"],
                "encoded": np.array(payloads, dtype=object)}


def encode_corpus_ray(docs: Iterable[Any], out: str | Path, model: str | None = None, *, address: str | None = None,
                      workers: int = 1, gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0,
                      part_size: int = DEFAULT_PART_SIZE, max_length: int | None = None,
                      encoder_options: Mapping[str, Any] | None = None, progress: bool = False,
                      window: int = DEFAULT_WINDOW, crash_marker: str | None = None) -> EncodeResult:
    """Encode `docs` into the ENCODED folder `out` on the Ray cluster at `address` (or the one this process
    is already connected to). Same parts, same bytes as `m3search.encoding.encode_corpus`.

    The driver reads the corpus and holds the text of at most `window` parts at a time: each window is one
    Ray Data run (its actors load the model once per window), so memory stays bounded on any corpus size."""
    ray = require_ray()
    from m3search.ingest import DocumentStream

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        identity, reference = ray.get(_identity.remote(model, encoder_options))
        enc = EncodedCorpus.create_or_open(out, identity, reference, part_size)
        done = enc.done_parts()
        options = {"model": model, "encoder_options": dict(encoder_options or {}) or None, "max_length": max_length,
                   "crash_marker": crash_marker}
        resources = {"workers": workers, "num_cpus": cpus_per_worker, "num_gpus": gpus_per_worker or None}
        todo, skipped, written, n_docs = [], 0, 0, 0
        bar = _bar(progress)
        try:
            for index, chunk in plan_parts(DocumentStream(docs), part_size):
                if index in done:
                    check_part_ids(enc, index, [d.id for d in chunk])
                    skipped += 1
                    continue
                rows = [[d.id, d.text, d.title, d.metadata] for d in chunk]
                todo.append({"part": index, "docs": msgpack.packb(rows, use_bin_type=True)})
                if len(todo) == window:
                    w, n = _run_window(enc, todo, options, resources, bar)
                    written, n_docs, todo = written + w, n_docs + n, []
            if todo:
                w, n = _run_window(enc, todo, options, resources, bar)
                written, n_docs = written + w, n_docs + n
        finally:
            if bar is not None:
                bar.close()
        return EncodeResult(parts_written=written, parts_skipped=skipped, documents=n_docs)
    finally:
        if started_here:
            ray.shutdown()


def _run_window(enc: EncodedCorpus, todo: list[dict], options: dict, resources: dict, bar) -> tuple[int, int]:
    """One Ray Data run over `todo` parts; the driver writes each part as it streams back."""
    import ray.data

    ds = ray.data.from_items(todo, override_num_blocks=len(todo))
    ds = ds.map_batches(PartEncoder, batch_size=1, batch_format="numpy", fn_constructor_kwargs=options,
                        compute=ray.data.ActorPoolStrategy(size=resources["workers"]),
                        num_cpus=resources["num_cpus"], num_gpus=resources["num_gpus"])
    written = n_docs = 0
    for row in ds.iter_rows():
        rows = msgpack.unpackb(row["docs"], raw=False)
        ids = [r[0] for r in rows]
        if enc.write_part(int(row["part"]), ids, [Document(*r) for r in rows], _unpack_batch(row["encoded"])):
            written += 1
            n_docs += len(ids)
        if bar is not None:
            bar.update(len(ids))
    return written, n_docs


def _identity_fn(model, encoder_options):
    from m3search.api import _load_encoder, _model_reference

    encoder = _load_encoder(model, None, encoder_options)
    return encoder.identity, _model_reference(model, encoder)


def _remote_identity():
    ray = require_ray()
    return ray.remote(num_cpus=0)(_identity_fn)


class _LazyRemote:
    def __init__(self, make):
        self._make, self._fn = make, None

    def remote(self, *args):
        if self._fn is None:
            self._fn = self._make()
        return self._fn.remote(*args)


_identity = _LazyRemote(_remote_identity)


def _pack_batch(batch: EncodedBatch) -> bytes:
    """The six arrays as .npy bytes in one msgpack map (no pickle on the wire either)."""
    arrays = {"dense": batch.dense, "sparse_data": batch.sparse.data.astype(np.float32, copy=False),
              "sparse_indices": batch.sparse.indices.astype(np.int32, copy=False),
              "sparse_indptr": batch.sparse.indptr.astype(np.int64, copy=False), "multivec": batch.multivec,
              "multivec_lengths": batch.multivec_lengths}
    out = {}
    for name, arr in arrays.items():
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
        out[name] = buf.getvalue()
    out["vocab_size"] = int(batch.sparse.shape[1])
    return msgpack.packb(out, use_bin_type=True)


def _unpack_batch(data: bytes) -> EncodedBatch:
    import scipy.sparse as sp

    d = msgpack.unpackb(data, raw=False)
    a = {name: np.load(io.BytesIO(d[name]), allow_pickle=False) for name in _ARRAYS}
    n = len(a["dense"])
    sparse = sp.csr_matrix((a["sparse_data"], a["sparse_indices"], a["sparse_indptr"]), shape=(n, d["vocab_size"]))
    return EncodedBatch(dense=a["dense"], sparse=sparse, multivec=a["multivec"], multivec_lengths=a["multivec_lengths"])


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


def _bar(enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(unit=" docs", desc="encoding on Ray", dynamic_ncols=True)
