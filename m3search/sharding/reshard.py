"""`m3search shard`: split an existing index into N shards, copying its stored representations.

No model is loaded and nothing is re-encoded: dense vectors, lexical weights and token vectors are read
back from the source's stores (`vectors`, `doc_weights`, `token_vectors`) and written into the shards, whose
components get the source's configs and its lexical quantization scale. The source's internal ids become
the shards' insertion numbers, so the sharded index returns the source's hits, internal ids included.
Re-storing is exact for the lossless stores (fp16 dense and lexical, uncompressed token vectors); with a
lossy token-vector codec the shards re-encode decoded vectors and multi-vector scores can move slightly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import scipy.sparse as sp

from m3search.indexes.sparse.quantize import read_quantizer
from m3search.indexes.writer import COMPONENTS_DIR
from m3search.sharding.index import ShardedIndex
from m3search.types import EncodedBatch

EXPORT_BATCH = 1024


def shard_index(source: str | Path, out: str | Path, n_shards: int, *, progress: bool = False) -> int:
    """Write the sharded copy of `source` to `out` (a new folder); returns the documents copied."""
    from m3search.indexes.index import Index

    with Index.open(Path(source), writable=False) as src:
        components = {k: dict(v) for k, v in src.components.items()}
        quantizer = read_quantizer(Path(source) / COMPONENTS_DIR / "sparse")
        if quantizer is not None and "sparse" in components:
            components["sparse"]["max_weight"] = quantizer.max_weight  # the same 8-bit scale in every shard
        with src.snapshot() as snap:
            sharded = ShardedIndex.create(out, src.identity, src.model, n_shards, components)
            _copy_codec(Path(source), sharded)
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=int(snap.n_docs), unit=" docs", desc="sharding", dynamic_ncols=True)
            n = 0
            try:
                for ids, batch, docs, keys in _export(snap, src.identity):
                    sharded.add_encoded(ids, batch, docs, keys=keys)
                    n += len(ids)
                    if bar is not None:
                        bar.update(len(ids))
            finally:
                sharded.close()
                if bar is not None:
                    bar.close()
    return n


def _export(snap, identity) -> Iterator[tuple[list[str], EncodedBatch, list[dict], np.ndarray]]:
    pairs = list(snap.iter_ids())
    for start in range(0, len(pairs), EXPORT_BATCH):
        chunk = pairs[start : start + EXPORT_BATCH]
        internal = np.array([i for _, i in chunk], dtype=np.int64)
        records = snap.docs(internal)
        n = len(chunk)
        dense = (np.asarray(snap.dense.vectors(internal), dtype=np.float32) if snap.dense is not None
                 else np.zeros((n, identity.dense_dim), np.float32))
        if snap.sparse is not None:
            weights = sp.csr_matrix(snap.sparse.doc_weights(internal), dtype=np.float32)
            weights.sort_indices()
        else:
            weights = sp.csr_matrix((n, identity.sparse_width), dtype=np.float32)
        if snap.multivec is not None:
            vecs, lengths = snap.multivec.token_vectors(internal)
            vecs = np.asarray(vecs, dtype=np.float32)
        else:
            vecs, lengths = np.zeros((0, identity.multivec_dim), np.float32), np.zeros(n, np.int64)
        batch = EncodedBatch(dense=np.ascontiguousarray(dense), sparse=weights, multivec=np.ascontiguousarray(vecs),
                             multivec_lengths=np.asarray(lengths, dtype=np.int64))
        docs = [{k: v for k, v in (("text", r.text), ("title", r.title), ("metadata", r.metadata)) if v is not None}
                for r in records]
        yield [e for e, _ in chunk], batch, docs, internal


def _copy_codec(source: Path, sharded: ShardedIndex) -> None:
    """The source's trained token-vector codec goes into every shard: decoded vectors re-encode to the
    same codes, and the shards score exactly as the source does."""
    from m3search.indexes.multivec.component import CODEC_DIR
    from m3search.sharding.writers import copy_codec

    codec = source / COMPONENTS_DIR / "multivec" / CODEC_DIR
    if not codec.is_dir():
        return
    for name in sharded.shard_names:
        copy_codec(codec, sharded.path / name / COMPONENTS_DIR / "multivec")
