"""Corpus -> ENCODED folder (locally), and ENCODED folder -> index without loading a model.

The Ray version of `encode_corpus` lives in `m3search.distributed.encode_job`; both cut the corpus into the
same parts and encode each part with `encode_part`, so they write identical bytes.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from m3search.document import Document
from m3search.encoded import DEFAULT_PART_SIZE, EncodedCorpus, check_part_ids, plan_parts
from m3search.encoder import Encoder
from m3search.errors import ConfigError, EncoderMismatchError
from m3search.types import EncodedBatch

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EncodeResult:
    parts_written: int
    parts_skipped: int  # already complete (a resumed run)
    documents: int  # documents in the parts written


def encode_part(encoder: Encoder, docs: Sequence[Document], max_length: int | None = None) -> EncodedBatch:
    """One part's representations: the same call for the local and the Ray path (bit-identical output), and
    the same text as `m3search index` embeds (`m3search.ingest.passage_text`: title and text)."""
    from m3search.ingest import encode_documents

    return encode_documents(encoder, docs, max_length)


def open_output(out: str | Path, encoder: Encoder, model: Any, part_size: int) -> EncodedCorpus:
    from m3search.api import _model_reference

    return EncodedCorpus.create_or_open(out, encoder.identity, _model_reference(model, encoder), part_size)


def encode_corpus(docs: Iterable[Any], out: str | Path, model: str | Path | Encoder | None = None, *,
                  part_size: int = DEFAULT_PART_SIZE, max_length: int | None = None, device: str | None = None,
                  encoder_options: Mapping[str, Any] | None = None, progress: bool = False) -> EncodeResult:
    """Encode `docs` (as `build_index` takes them) into the ENCODED folder `out`, one part at a time.

    Parts already complete are skipped after checking they hold the same documents, so rerunning an
    interrupted command resumes it.
    """
    from m3search.api import _load_encoder
    from m3search.ingest import DocumentStream

    encoder = model if isinstance(model, Encoder) else _load_encoder(model, device, encoder_options)
    enc = open_output(out, encoder, model, part_size)
    done = enc.done_parts()
    written = skipped = n_docs = 0
    bar = _bar(progress, "encoding")
    try:
        for index, chunk in plan_parts(DocumentStream(docs), part_size):
            ids = [d.id for d in chunk]
            if index in done:
                check_part_ids(enc, index, ids)
                skipped += 1
            else:
                batch = encode_part(encoder, chunk, max_length)
                if enc.write_part(index, ids, chunk, batch):
                    written += 1
                    n_docs += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return EncodeResult(parts_written=written, parts_skipped=skipped, documents=n_docs)


@dataclasses.dataclass(frozen=True)
class IndexEncodedResult:
    added: int
    skipped: int
    replaced: int


def index_encoded(encoded: str | Path, index_path: str | Path, *, shards: int | None = None, replace: bool = False,
                  components: Mapping[str, dict] | None = None, progress: bool = False) -> IndexEncodedResult:
    """Add every part of the ENCODED folder to the index at `index_path` (created if missing, sharded when
    `shards` is given), committing after each part. No model is loaded: the encoder identity recorded with
    the parts is checked against the index's. Ids already indexed are skipped (or replaced), so a rerun resumes."""
    from m3search.api import _components, _is_index
    from m3search.sharding import ShardedIndex, is_sharded

    enc = EncodedCorpus.open(encoded)
    path = Path(index_path)
    if is_sharded(path):
        target: Any = ShardedIndex.open(path)
        if shards and shards != target.n_shards:
            target.close()
            raise ConfigError(f"the index at {path} has {target.n_shards} shards, not {shards}")
    elif _is_index(path):
        if shards:
            raise ConfigError(f"the index at {path} is not sharded: split it with `m3search shard {path} -o NEW "
                              f"--shards {shards}`")
        from m3search.indexes.index import Index

        target = _PlainTarget(Index.open(path, writable=True, identity=enc.identity))
    elif shards:
        target = ShardedIndex.create(path, enc.identity, enc.model, shards, _components(components))
    else:
        from m3search.indexes.index import Index

        Index.create(path, enc.identity, enc.model, _components(components)).close()
        target = _PlainTarget(Index.open(path, writable=True, identity=enc.identity))
    problems = enc.identity.mismatches(target.identity)
    if problems:
        target.close()
        raise EncoderMismatchError(f"{encoded} was encoded with another encoder than the index at {path} "
                                   f"({'; '.join(problems)}): index it into a new folder")
    added = skipped = replaced = 0
    bar = _bar(progress, "indexing")
    try:
        for i in enc.parts():
            part = enc.read_part(i)
            a, s, r = target.add_encoded(part.ids, part.batch, part.docs, replace=replace)
            added, skipped, replaced = added + a, skipped + s, replaced + r
            if bar is not None:
                bar.update(len(part.ids))
    finally:
        target.close()
        if bar is not None:
            bar.close()
    return IndexEncodedResult(added=added, skipped=skipped, replaced=replaced)


class _PlainTarget:
    """An unsharded index open for writing, with the add_encoded call ShardedIndex also has."""

    def __init__(self, index):
        self.index = index
        self.identity = index.identity

    def add_encoded(self, ids: list[str], batch: EncodedBatch, docs: list[dict], replace: bool = False):
        present = self.index.contains(ids)
        n_present = int(present.sum())
        if replace:
            self.index.upsert(ids, batch, docs)
            out = (len(ids) - n_present, 0, n_present)
        else:
            keep = np.flatnonzero(~present)
            if len(keep):
                self.index.add([ids[j] for j in keep], batch.select(keep), [docs[j] for j in keep])
            out = (len(keep), n_present, 0)
        self.index.commit()
        return out

    def close(self) -> None:
        self.index.close()


def _bar(enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(unit=" docs", desc=desc, dynamic_ncols=True)
