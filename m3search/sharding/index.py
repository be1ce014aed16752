"""ShardedIndex: N complete indexes behind the SearchIndex surface (search, search_many, add, upsert,
delete, info, len, close), documents assigned by a stable hash of their id.

Writes route each document to its shard; each shard commits on its own, so an interrupted write leaves
every shard at a commit of its own and rerunning it resumes (ids already present are skipped).
"""
from __future__ import annotations

import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from m3search.errors import EncoderMismatchError, InputError, ModelError
from m3search.indexes.fsutil import write_json_atomic
from m3search.planner.hits import Hit
from m3search.sharding import router
from m3search.sharding.layout import FORMAT, HASH, HEADER, VERSION, read_header, shard_name
from m3search.sharding.shard import ShardSearcher
from m3search.sharding.writers import ShardWriters
from m3search.types import EncodedBatch, EncoderIdentity

log = logging.getLogger(__name__)


class ShardedIndex:
    """A sharded index on disk with its encoder. Use as a context manager or call close()."""

    def __init__(self, path: str | Path, encoder=None, device: str | None = None,
                 encoder_options: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.header = read_header(self.path)
        self.n_shards = int(self.header["n_shards"])
        self.shard_names: list[str] = list(self.header["shards"])
        self._identity = EncoderIdentity.from_dict(self.header["encoder"])
        self.model: str | None = self.header.get("model")
        self._device, self._encoder_options = device, encoder_options
        self._encoder = None
        if encoder is not None:
            self._check_identity(encoder)
            self._encoder = encoder
        self._searchers: list[ShardSearcher] | None = None
        self._warned_untrained = False

    # -- creation -------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, identity: EncoderIdentity, model: str | None, n_shards: int,
               components: Mapping[str, dict]) -> "ShardedIndex":
        """Create N empty shards in a temporary folder and publish it with one rename."""
        from m3search import __version__
        from m3search.indexes.index import Index

        if isinstance(n_shards, bool) or not isinstance(n_shards, int) or n_shards < 1:
            raise InputError(f"shards must be a positive integer, got {n_shards!r}")
        path = Path(path)
        if path.exists():
            raise InputError(f"{path} exists: give a new folder for the sharded index")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.creating-{secrets.token_hex(4)}")
        tmp.mkdir()
        try:
            names = [shard_name(i) for i in range(n_shards)]
            for name in names:
                Index.create(tmp / name, identity, model, {k: dict(v) for k, v in components.items()}).close()
            write_json_atomic(tmp / HEADER, {"format": FORMAT, "version": VERSION, "n_shards": n_shards, "hash": HASH,
                                             "shards": names, "encoder": identity.to_dict(), "model": model,
                                             "m3search_version": __version__})
            os.rename(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)  # the temporary folder this call made
        return cls(path)

    @classmethod
    def open(cls, path: str | Path, encoder=None, **options: Any) -> "ShardedIndex":
        return cls(path, encoder=encoder, **options)

    @property
    def identity(self) -> EncoderIdentity:
        return self._identity

    # -- encoder (as SearchIndex) ---------------------------------------------------------------

    @property
    def encoder(self):
        if self._encoder is None:
            if self.model is None:
                raise ModelError(f"the sharded index at {self.path} records no model: open it with model=...")
            from m3search.api import _load_encoder, _with_terms

            encoder = _load_encoder(self.model, self._device, _with_terms(self._encoder_options,
                                                                          self._identity.sparse_terms))
            self._check_identity(encoder)
            self._encoder = encoder
        return self._encoder

    def _check_identity(self, encoder) -> None:
        from m3search.encoder.terms import require_same_terms

        require_same_terms(self.path, self._identity, encoder.identity)
        problems = encoder.identity.mismatches(self._identity)
        if problems:
            raise EncoderMismatchError(f"the encoder {encoder.identity.name!r} does not match the one the index at "
                                       f"{self.path} was built with ({'; '.join(problems)})")

    @property
    def default_mode(self) -> str:
        from m3search.planner import DEFAULT_MODE

        if getattr(self.encoder, "heads_trained", True):
            return DEFAULT_MODE
        if not self._warned_untrained:
            log.warning("the model's sparse and multi-vector heads are untrained: searching in 'dense' mode")
            self._warned_untrained = True
        return "dense"

    # -- reading --------------------------------------------------------------------------------

    def searchers(self) -> list[ShardSearcher]:
        if self._searchers is None:
            strings = self._token_strings
            self._searchers = [ShardSearcher(self.path, name, i, strings) for i, name in enumerate(self.shard_names)]
        return self._searchers

    def _token_strings(self, ids: Sequence[int]) -> list[str]:
        return self.encoder.token_strings(ids)

    def __len__(self) -> int:
        return sum(s.n_docs() for s in self.searchers())

    def search(self, query, **options: Any):
        """As SearchIndex.search: a string gives list[Hit], a list of strings one list per query."""
        if isinstance(query, str):
            return self.search_many([query], **options)[0]
        return self.search_many(query, **options)

    def search_many(self, queries: Sequence[str], *, max_length: int | None = None, **options: Any) -> list[list[Hit]]:
        from m3search.api import _query_list

        texts = _query_list(queries)
        if not texts:
            return []
        batch = self.encoder.encode(texts, kind="query", max_length=max_length)
        if options.get("mode") is None and options.get("weights") is None:
            options["mode"] = self.default_mode
        return self.search_encoded(batch, **options)

    def search_encoded(self, queries: EncodedBatch, **options: Any) -> list[list[Hit]]:
        shards = self.searchers()
        return router.search_encoded(router.local_fan(shards), self.n_shards, shards[0].components(), len(self),
                                     queries, **options)

    def info(self) -> dict[str, Any]:
        from m3search.indexes.index import Index

        infos = []
        for name in self.shard_names:
            with Index.open(self.path / name, writable=False) as idx:
                infos.append(idx.info())
        components = {kind: {"config": c["config"], "bytes": sum(i["components"][kind]["bytes"] for i in infos)}
                      for kind, c in infos[0]["components"].items()}
        return {"path": str(self.path), "format": FORMAT, "format_version": VERSION, "sharded": True,
                "n_shards": self.n_shards, "hash": HASH, "encoder": self._identity.to_dict(), "model": self.model,
                "m3search_version": self.header.get("m3search_version"),
                "n_docs": sum(i["n_docs"] for i in infos), "n_deleted": sum(i["n_deleted"] for i in infos),
                "n_segments": sum(i["n_segments"] for i in infos), "components": components,
                "docstore_bytes": sum(i["docstore_bytes"] for i in infos),
                "total_bytes": sum(i["total_bytes"] for i in infos), "shards": infos}

    # -- writing --------------------------------------------------------------------------------

    def add(self, docs: Iterable[Any], *, batch_size: int = 128, max_length: int | None = None,
            commit_interval: float = 120.0, progress: bool = False):
        """As SearchIndex.add: ids already indexed are skipped; every shard commits every `commit_interval`
        seconds and at the end."""
        return self._write(docs, replace=False, batch_size=batch_size, max_length=max_length,
                           commit_interval=commit_interval, progress=progress)

    def upsert(self, docs: Iterable[Any], *, batch_size: int = 128, max_length: int | None = None,
               commit_interval: float = 120.0, progress: bool = False):
        return self._write(docs, replace=True, batch_size=batch_size, max_length=max_length,
                           commit_interval=commit_interval, progress=progress)

    def _write(self, docs, *, replace: bool, batch_size: int, max_length: int | None, commit_interval: float,
               progress: bool):
        from m3search.ingest import encode_documents, ingest

        encoder = self.encoder
        try:
            with ShardWriters(self) as writers:
                return ingest(writers, docs, lambda chunk: encode_documents(encoder, chunk, max_length),
                              replace=replace, batch_size=batch_size, commit_interval=commit_interval,
                              progress=progress)
        finally:
            self._refresh()

    def add_encoded(self, ids: Sequence[str], batch: EncodedBatch, docs: Sequence[dict], replace: bool = False,
                    keys: np.ndarray | None = None):
        """Add precomputed representations (an ENCODED part); returns (added, skipped, replaced).
        keys: the documents' insertion numbers (default: the next ones), e.g. a source index's internal ids."""
        ids = list(ids)
        if keys is not None:
            keys = np.asarray(keys, dtype=np.int64)
        try:
            with ShardWriters(self) as writers:
                present = writers.contains(ids)
                n_present = int(present.sum())
                if replace:
                    writers.write(ids, batch, list(docs), True, keys)
                    writers.commit()
                    return len(ids) - n_present, 0, n_present
                keep = np.flatnonzero(~present)
                if len(keep):
                    writers.write([ids[j] for j in keep], batch.select(keep), [docs[j] for j in keep], False,
                                  None if keys is None else keys[keep])
                    writers.commit()
                return len(keep), n_present, 0
        finally:
            self._refresh()

    def delete(self, ids: Iterable[str]) -> int:
        ids = [str(i) for i in ([ids] if isinstance(ids, str) else ids)]
        try:
            with ShardWriters(self) as writers:
                n = writers.delete(ids)
                writers.commit()
                return n
        finally:
            self._refresh()

    def _refresh(self) -> None:
        for s in self._searchers or []:
            s.refresh()

    # -- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        for s in self._searchers or []:
            s.close()
        self._searchers = None

    def __enter__(self) -> "ShardedIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ShardedIndex({str(self.path)!r}, shards={self.n_shards}, model={self.model!r})"
