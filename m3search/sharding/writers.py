"""Writes to a sharded index: every shard's writer for one operation, routing by id, insertion numbers,
and the state the shards must share to score as one index (the lexical scale, the token-vector codec)."""
from __future__ import annotations

import logging
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from m3search.sharding.layout import read_order, shards_of, write_order
from m3search.types import EncodedBatch

if TYPE_CHECKING:
    from m3search.sharding.index import ShardedIndex

log = logging.getLogger(__name__)


class ShardWriters:
    """Every shard open for writing for one operation. Writes are buffered by each shard's writer until
    `commit()`, which commits every shard and then records the insertion numbers of what it wrote; closing
    without a commit discards the uncommitted writes (each shard stays at its last commit)."""

    def __init__(self, sharded: "ShardedIndex"):
        self.s = sharded
        self.pending: list[list[tuple[list[str], np.ndarray]]] = [[] for _ in sharded.shard_names]
        self.written_keys = 0  # insertion numbers handed out since the last commit

    def __enter__(self) -> "ShardWriters":
        from m3search.indexes.index import Index

        self.indexes = []
        try:
            for name in self.s.shard_names:
                self.indexes.append(Index.open(self.s.path / name, writable=True, identity=self.s.identity))
            self.orders = [np.array(read_order(self.s.path, n)) for n in self.s.shard_names]
            self._repair_orders()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for idx in self.indexes:
            idx.close()

    def _next_key(self) -> int:
        return max((int(o.max()) + 1 for o in self.orders if len(o)), default=0) + self.written_keys

    def _repair_orders(self) -> None:
        """Documents a crash left without an insertion number get the next ones, by shard and local id."""
        for s, (idx, name) in enumerate(zip(self.indexes, self.s.shard_names)):
            with idx.snapshot() as snap:
                space = int(snap.id_space)
                if len(self.orders[s]) >= space:
                    continue
                order = np.concatenate([self.orders[s], np.full(space - len(self.orders[s]), -1, np.int64)])
                live = sorted(i for _, i in snap.iter_ids() if order[i] < 0)
            nxt = self._next_key()
            for j, i in enumerate(live):
                order[i] = nxt + j
            log.warning("shard %s: %d documents had no insertion number (an interrupted write); numbered now",
                        name, len(live))
            write_order(self.s.path, name, order)
            self.orders[s] = order

    def contains(self, ids: Sequence[str]) -> np.ndarray:
        owner = shards_of(ids, self.s.n_shards)
        out = np.zeros(len(ids), dtype=bool)
        for s, idx in enumerate(self.indexes):
            p = np.flatnonzero(owner == s)
            if len(p):
                out[p] = idx.contains([ids[j] for j in p])
        return out

    def write(self, ids: list[str], batch: EncodedBatch, docs: list[dict], replace: bool,
              keys: np.ndarray | None = None) -> None:
        """Route rows to their shards (buffered until `commit`), with their insertion numbers (default: the
        next ones, in input order)."""
        self._fix_quantizer(batch)
        self._share_codec(batch)
        owner = shards_of(ids, self.s.n_shards)
        if keys is None:
            keys = self._next_key() + np.arange(len(ids), dtype=np.int64)
            self.written_keys += len(ids)
        for s, idx in enumerate(self.indexes):
            p = np.flatnonzero(owner == s)
            if not len(p):
                continue
            sub_ids = [ids[j] for j in p]
            (idx.upsert if replace else idx.add)(sub_ids, batch.select(p), [docs[j] for j in p])
            self.pending[s].append((sub_ids, keys[p]))

    # the writer surface `m3search.ingest.ingest` drives
    def add(self, ids: list[str], batch: EncodedBatch, docs: list) -> None:
        self.write(list(ids), batch, list(docs), False)

    def upsert(self, ids: list[str], batch: EncodedBatch, docs: list) -> None:
        self.write(list(ids), batch, list(docs), True)

    def rollback(self) -> None:
        """Drop what was written since the last commit: every shard stays at its last commit."""
        for idx in self.indexes:
            idx.rollback()
        self.pending = [[] for _ in self.s.shard_names]
        self.written_keys = 0

    def commit(self) -> int:
        """Commit every shard, then save the insertion numbers of the documents each commit added; returns
        the newest shard generation."""
        generation = 0
        for s, (idx, name) in enumerate(zip(self.indexes, self.s.shard_names)):
            generation = max(generation, int(idx.commit()))
            if not self.pending[s]:
                continue
            with idx.snapshot() as snap:
                space = int(snap.id_space)
                order = self.orders[s]
                if len(order) < space:
                    order = np.concatenate([order, np.full(space - len(order), -1, np.int64)])
                for sub_ids, keys in self.pending[s]:
                    order[snap.internal_ids(sub_ids)] = keys
            write_order(self.s.path, name, order)
            self.orders[s], self.pending[s] = order, []
        self.written_keys = 0
        return generation

    def delete(self, ids: list[str]) -> int:
        owner = shards_of(ids, self.s.n_shards)
        n = 0
        for s, idx in enumerate(self.indexes):
            sub = [ids[j] for j in np.flatnonzero(owner == s)]
            if sub:
                n += int(idx.delete(sub))
        return n

    def _fix_quantizer(self, batch: EncodedBatch) -> None:
        """Every shard quantizes lexical weights on one scale (as one index would), chosen at the first write."""
        from m3search.indexes.sparse.quantize import read_quantizer, shared_quantizer
        from m3search.indexes.writer import COMPONENTS_DIR

        if "sparse" not in self.indexes[0].components:
            return
        shared = [self.s.path / n / COMPONENTS_DIR / "sparse" for n in self.s.shard_names]
        found = [read_quantizer(p) for p in shared]
        if all(q is not None for q in found):
            return
        known = next((q for q in found if q is not None), None)
        if known is not None:
            value = known.max_weight
        else:
            config = self.indexes[0].components["sparse"]
            configured = config.get("max_weight", "auto")
            # as the component does: the largest weight as stored (forward_dtype), in float32
            stored = batch.sparse.data.astype(config.get("forward_dtype", "float16")).astype("float32")
            batch_max = float(stored.max()) if len(stored) else 0.0
            q = shared_quantizer(shared[0], configured, batch_max)
            if q is None:
                return
            value = q.max_weight
        for p in shared:
            shared_quantizer(p, value, 0.0)

    def _share_codec(self, batch: EncodedBatch) -> None:
        """Every shard compresses token vectors with one codec, trained as one index would train it: from
        the first write's token vectors, with the component's own sampling and seed."""
        from m3search.indexes.multivec.component import CODEC_DIR, MultivecComponent
        from m3search.indexes.writer import COMPONENTS_DIR

        if "multivec" not in self.indexes[0].components:
            return
        config = self.indexes[0].components["multivec"]
        if config.get("compression", "fp16") == "fp16":
            return
        component = MultivecComponent(config)
        shared = [self.s.path / n / COMPONENTS_DIR / "multivec" for n in self.s.shard_names]
        have = [component.shared_codec(p) is not None for p in shared]
        if all(have):
            return
        if not any(have):
            x = batch.multivec
            rng = np.random.default_rng(component.config["seed"])

            def sample() -> np.ndarray:  # as MultivecComponent.build samples a segment's tokens
                take = np.sort(rng.choice(len(x), size=min(len(x), component.config["train_tokens"]), replace=False))
                return x[take]

            component.codec(shared[0], x.shape[1], len(x), sample)  # publishes it once there are enough tokens
            have[0] = component.shared_codec(shared[0]) is not None
            if not have[0]:
                return
        source = shared[have.index(True)] / CODEC_DIR
        for p, ok in zip(shared, have):
            if not ok:
                copy_codec(source, p)


def copy_codec(codec: Path, shared: Path) -> None:
    """Publish a copy of the token-vector codec folder `codec` as `shared`/codec (a no-op where another
    writer published one first: codecs are written once and never changed)."""
    from m3search.indexes.multivec.component import CODEC_DIR
    from m3search.indexes.segment_files import publish_dir

    shared.mkdir(parents=True, exist_ok=True)
    tmp = shared / f".codec-copy-{secrets.token_hex(4)}"
    try:
        shutil.copytree(codec, tmp)
        publish_dir(tmp, shared / CODEC_DIR)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)  # our own copy, when another writer published first
