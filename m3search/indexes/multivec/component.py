"""Building, merging and opening multi-vector segments, and the index-wide codec.

Segment folder:
  multivec.json   header: format, version, counts, codec name and id, file sizes and checksums, fidelity
  offsets.arr     (n + 1,) int64 token offsets per document
  codes.arr       (T, code_size) uint8 token codes (memory-mapped; blocks checked on first read)
  lists_offsets.arr, lists_docs.arr   residual codecs only: per coarse centroid, the documents with a token
                  there (the candidate generator's inverted lists, m3search.indexes.multivec.generator)
  means.arr, means_scale.arr   version 4 on: per document its mean token vector, unit length as int8, and
                  (scale, norm) float32 (the mean-vector candidate stage, m3search.indexes.multivec.means)
All arrays are checked arrays (segment_files.py).
Shared folder (index-wide, written once, atomically, never changed):
  codec/codec.json + codec/*.arr   the trained codec every later segment is encoded with
Segments written before a codec exists (too few tokens to train one) store fp16 codes; merges re-encode
them with the codec, and copy the codes of segments that already use it.
"""
from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from m3search.errors import IndexFormatError, InputError
from m3search.indexes import segment_files as sf
from m3search.indexes.base import ComponentType, SegmentReader
from m3search.indexes.faiss_support import faiss_threads
from m3search.indexes.fsutil import fsync_dir, write_json
from m3search.indexes.heap import release_free_memory
from m3search.indexes.inputs import check_ids, check_tokens
from m3search.indexes.multivec.codecs import Codec, coarse_ids
from m3search.indexes.multivec.generator import LISTS_DOCS, LISTS_OFFSETS, build_lists
from m3search.indexes.multivec.means import MEANS, MEANS_SCALE, MeanBuilder, doc_means
from m3search.indexes.multivec.config import coarse_k_for, resolve_compression, validate_config
from m3search.indexes.multivec.reader import MultivecSegmentReader
from m3search.types import EncodedBatch

logger = logging.getLogger(__name__)

FORMAT = "m3search.multivec"
VERSION = 4  # 4: per-document mean vectors; 3: the candidate generator's inverted lists (residual codecs), read
# as without means; 2: checked arrays, read as without lists
CODEC_FORMAT = "m3search.multivec.codec"
CODEC_VERSION = 2
HEADER, OFFSETS, CODES, CODEC_DIR = "multivec.json", "offsets.arr", "codes.arr", "codec"
_CHUNK_TOKENS = 65536
_FIDELITY_TOKENS = 2048


class MultivecComponent(ComponentType):
    """Compressed token vectors for ColBERT MaxSim re-scoring. Config keys: see
    `m3search.indexes.multivec.config.DEFAULTS`."""

    kind = "multivec"

    def __init__(self, config: dict | None = None):
        super().__init__(config)
        self._codecs: dict[tuple[str, str], Codec] = {}

    @classmethod
    def validate_config(cls, config: dict) -> dict:
        return validate_config(config)

    # -- ComponentType ----------------------------------------------------------------------------
    def build(self, path: Path, batch: EncodedBatch, shared: Path) -> dict:
        with faiss_threads(self.config["threads"]):
            return self._build(path, batch, shared)

    def merge(self, path: Path, sources: Sequence[SegmentReader], keep: Sequence[np.ndarray], shared: Path) -> dict:
        with faiss_threads(self.config["threads"]):
            return self._merge(path, sources, keep, shared)

    def _build(self, path: Path, batch: EncodedBatch, shared: Path) -> dict:
        x, lengths = batch.multivec, batch.multivec_lengths
        # x may be the writer's buffered tokens, a file mapping (token_spill.MappedRows): each pass over it
        # drops the pages it read, so they don't stack on the codec's training sample and the encoder
        drop = getattr(x, "drop_pages", lambda: None)
        check_tokens(x, lengths, what="multivec segment", after_block=drop)
        rng = np.random.default_rng(self.config["seed"])

        def sample() -> np.ndarray:  # a copy of our own: Codec.train may shuffle it in place
            return _gather(x, rng.choice(len(x), size=min(len(x), self.config["train_tokens"]), replace=False), drop)

        codec = self.codec(Path(shared), x.shape[1], len(x), sample)
        probe = _gather(x, rng.choice(len(x), size=min(len(x), _FIDELITY_TOKENS), replace=False), drop)
        unit = all(_unit_norm(c) for c in _token_chunks(x, drop))
        means = MeanBuilder(lengths, x.shape[1])

        def encoded() -> Iterable[np.ndarray]:  # the means come from the pass that encodes, chunk by chunk
            for c in _token_chunks(x, drop):
                means.add(c)
                yield codec.encode(c)

        return self._write(Path(path), codec, lengths, encoded(), probe, unit, means.result)

    def _merge(self, path: Path, sources: Sequence[SegmentReader], keep: Sequence[np.ndarray], shared: Path) -> dict:
        if len(sources) != len(keep) or not sources:
            raise InputError(f"merge needs one keep array per source, got {len(sources)} sources, {len(keep)} keeps")
        for s in sources:
            if not isinstance(s, MultivecSegmentReader):
                raise InputError(f"multivec merge takes segments opened by MultivecComponent, got {type(s).__name__}")
        dims = {s.dim for s in sources}
        if len(dims) != 1:
            raise InputError(f"multivec segments to merge have different dimensions {sorted(dims)}")
        dim = dims.pop()
        keep = [check_ids(k, s.n_docs, "keep") for s, k in zip(sources, keep)]
        lengths = np.concatenate([s.doc_lengths(k) for s, k in zip(sources, keep)]) if keep else np.zeros(0)
        rng = np.random.default_rng(self.config["seed"])

        def sample() -> np.ndarray:
            # whole documents drawn at random until the token budget is met, decoded a chunk at a time into
            # one array (a list of per-source parts and their concatenation held the sample twice, while the
            # writer's encoder is still loaded when a commit merges)
            owner = np.repeat(np.arange(len(keep)), [len(k) for k in keep])
            order = rng.permutation(len(lengths))
            n_take = int(np.searchsorted(np.cumsum(lengths[order]), self.config["train_tokens"])) + 1
            chosen = np.sort(order[:n_take])
            flat_keep = np.concatenate(keep)
            out = np.empty((int(lengths[chosen].sum()), dim), np.float32)
            at = 0
            for i, src in enumerate(sources):
                ids = flat_keep[chosen[owner[chosen] == i]]
                for part in _doc_chunks(src.doc_lengths(ids)):
                    vecs = src.token_vectors(ids[part])[0]
                    out[at : at + len(vecs)] = vecs
                    at += len(vecs)
                src.drop_pages()  # read once here: its pages would stack on the sample and k-means
            return out

        codec = self.codec(Path(shared), dim, int(lengths.sum()), sample)
        probe = []
        # the merged segment's mean rows, filled in place as the chunks go by (a list of parts and their
        # concatenation would hold them twice: 384 MB each at 1M documents x 384-d)
        mean_codes = np.zeros((len(lengths), dim), np.int8)
        mean_scales = np.zeros((len(lengths), 2), np.float32)
        filled = [0]

        def chunks() -> Iterable[np.ndarray]:
            for src, ids in zip(sources, keep):
                same = src.codec.codec_id == codec.codec_id
                for part in _doc_chunks(src.doc_lengths(ids)):
                    vecs = None if same and src.means is not None else src.token_vectors(ids[part])[0]
                    # the surviving documents' mean rows as stored; sources without (format 3 and older) get
                    # them from their decoded tokens
                    rows, scales = (src.mean_rows(ids[part]) if src.means is not None
                                    else doc_means(vecs, src.doc_lengths(ids[part])))
                    at = filled[0]
                    mean_codes[at : at + len(rows)], mean_scales[at : at + len(rows)] = rows, scales
                    filled[0] = at + len(rows)
                    if same:
                        yield src.token_codes(ids[part])[0]
                    else:
                        if sum(len(p) for p in probe) < _FIDELITY_TOKENS:
                            probe.append(vecs[:_FIDELITY_TOKENS])
                        yield codec.encode(vecs)
                    src.drop_pages()  # each source is read once, front to back

        def merged_means() -> tuple[np.ndarray, np.ndarray]:
            if filled[0] != len(lengths):
                raise InputError(f"merge: mean vectors for {filled[0]} of {len(lengths)} documents")
            return mean_codes, mean_scales

        unit = all(s.header.get("unit_norm", False) for s in sources)
        header = self._write(Path(path), codec, lengths, chunks(), None, unit, merged_means)
        if probe:  # re-encoded sources: measure what this encoding lost
            header["fidelity"] = codec.measure(np.concatenate(probe)[:_FIDELITY_TOKENS], rng)
            _write_header(Path(path), header)
        elif codec.is_builtin:  # fp16 codes copied as they are: as faithful as their sources
            header["fidelity"] = sources[0].header.get("fidelity", {})
            _write_header(Path(path), header)
        return header

    def trains_on_write(self, shared: Path) -> bool:
        """No codec yet (and the config asks for one): the next segment written with enough tokens trains it."""
        return self.config["compression"] != "fp16" and self.shared_codec(Path(shared)) is None

    def stale(self, meta: dict, shared: Path) -> bool:
        """An fp16 segment (written before the codec was trained) once the index has its codec."""
        if meta.get("codec") != "fp16" or self.config["compression"] == "fp16":
            return False
        codec = self.shared_codec(Path(shared))
        return codec is not None and codec.codec_id != meta.get("codec_id")

    def open(self, path: Path, meta: dict, shared: Path) -> MultivecSegmentReader:
        path = Path(path)
        header = sf.read_header(path / HEADER, FORMAT, VERSION, min_version=2)
        if meta and any(meta.get(key) != header.get(key) for key in ("n", "n_tokens", "codec_id", "files")):
            raise IndexFormatError(f"{path / HEADER} does not match the segment metadata recorded by the index")
        codec = self._segment_codec(Path(shared), header)
        files = header["files"]
        offsets = np.array(sf.open_array(path, OFFSETS, files[OFFSETS]))
        codes = sf.open_checked(path, CODES, files[CODES])
        n, t = header["n"], header["n_tokens"]
        if (offsets.shape != (n + 1,) or offsets[0] != 0 or offsets[-1] != t or np.any(np.diff(offsets) < 0)
                or codes.shape != (t, codec.code_size)):
            raise IndexFormatError(f"{path}: offsets or codes disagree with the header (n={n}, tokens={t})")
        lists = None
        if LISTS_OFFSETS in files:
            lists = (np.array(sf.open_array(path, LISTS_OFFSETS, files[LISTS_OFFSETS])),
                     sf.open_array(path, LISTS_DOCS, files[LISTS_DOCS]))
            k = len(codec.arrays.get("coarse", ()))
            if lists[0].shape != (k + 1,) or lists[0][0] != 0 or lists[0][-1] != len(lists[1]):
                raise IndexFormatError(f"{path}: the candidate generator's lists disagree with the codec ({k} centroids)")
        means = None
        if MEANS in files:  # format 4 on; the rows are checked when the stage first reads them
            means = (sf.open_checked(path, MEANS, files[MEANS]),
                     np.array(sf.open_array(path, MEANS_SCALE, files[MEANS_SCALE])))
            if means[0].shape != (n, codec.dim) or means[1].shape != (n, 2):
                raise IndexFormatError(f"{path}: the mean vectors disagree with the header (n={n}, dim={codec.dim})")
        header = {**header, "nbytes": header["nbytes"] + (path / HEADER).stat().st_size}
        return MultivecSegmentReader(path, header, codec, codes, offsets, self.config, lists, means)

    # -- the codec --------------------------------------------------------------------------------
    def codec(self, shared: Path, dim: int, n_tokens: int, sample) -> Codec:
        """The index's codec; trained now from sample() if there is none yet and n_tokens suffice,
        else the fp16 fallback."""
        existing = self.shared_codec(shared)
        if existing is not None:
            if existing.dim != dim:
                raise InputError(f"token vectors have dimension {dim} but the index's codec expects {existing.dim}")
            if existing.name != resolve_compression(self.config["compression"], dim):
                logger.warning("the index's codec is %s; config asks %s, which applies to new indexes only",
                               existing.name, self.config["compression"])
            return existing
        name = resolve_compression(self.config["compression"], dim)
        if name == "fp16":
            return Codec("fp16", dim)
        if n_tokens < self.config["min_train_tokens"]:
            logger.info("%d tokens: too few to train the %s codec (min_train_tokens=%d); storing fp16",
                        n_tokens, name, self.config["min_train_tokens"])
            return Codec("fp16", dim)
        x = sample()
        k = coarse_k_for(self.config["coarse_k"], n_tokens, min(len(x), self.config["train_tokens"]))
        # a sample of our own (not the caller's tokens) is shuffled in place rather than copied
        consume = x.base is None and x.flags.writeable
        codec = Codec.train(name, x, coarse_k=k, seed=self.config["seed"], store_norm=self.config["rescale"],
                            consume=consume)
        del x
        release_free_memory()  # k-means' and the PQ's freed buffers, before the segment's codes are encoded
        return self._publish(shared, codec)

    def shared_codec(self, shared: Path) -> Codec | None:
        folder = shared / CODEC_DIR
        if not folder.is_dir():
            return None
        header = sf.read_header(folder / "codec.json", CODEC_FORMAT, CODEC_VERSION, min_version=2)
        key = (str(folder.resolve()), header["codec_id"])
        if key not in self._codecs:
            self._codecs[key] = Codec.load(folder, header)
        return self._codecs[key]

    def _publish(self, shared: Path, codec: Codec) -> Codec:
        shared.mkdir(parents=True, exist_ok=True)
        tmp = shared / f".codec-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            header = codec.save(tmp)
            write_json(tmp / "codec.json", {"format": CODEC_FORMAT, "version": CODEC_VERSION, **header})
            published = sf.publish_dir(tmp, shared / CODEC_DIR)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)  # ours: a temporary folder we created
        if not published:
            logger.info("another writer published the codec first; using theirs")
            return self.shared_codec(shared)
        logger.info("trained the %s codec: %s", codec.name, codec.fidelity)
        return codec

    def _segment_codec(self, shared: Path, header: dict) -> Codec:
        if header["codec"] == "fp16":
            return Codec("fp16", int(header["dim"]))
        codec = self.shared_codec(shared)
        if codec is None or codec.codec_id != header["codec_id"]:
            raise IndexFormatError(
                f"segment codes were written with codec {header['codec_id']} but {shared / CODEC_DIR} holds "
                f"{codec.codec_id if codec else 'none'}: the index is incomplete or mixed"
            )
        return codec

    # -- writing ----------------------------------------------------------------------------------
    def _write(self, path: Path, codec: Codec, lengths: np.ndarray, code_chunks: Iterable[np.ndarray],
               probe: np.ndarray | None, unit_norm: bool, means) -> dict:
        """means(): the documents' (int8 unit means, (scale, norm)), called once code_chunks is consumed
        (the means are gathered as the chunks go by)."""
        path.mkdir(parents=True, exist_ok=True)
        lengths = np.asarray(lengths, np.int64)
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        t = int(offsets[-1])
        residual = codec.spec["residual"]
        cids: list[np.ndarray] = []

        def keep_cids(chunks: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
            for chunk in chunks:
                if residual:
                    cids.append(coarse_ids(chunk).astype(np.int32))
                yield chunk

        files = {OFFSETS: sf.write_array(path, OFFSETS, offsets),
                 CODES: sf.write_array_chunks(path, CODES, (t, codec.code_size), np.uint8, keep_cids(code_chunks))}
        if residual:  # the candidate generator's inverted lists over the codec's coarse centroids
            all_cids = np.concatenate(cids) if cids else np.zeros(0, np.int32)
            lists_offsets, lists_docs = build_lists(all_cids, lengths, len(codec.arrays["coarse"]))
            files[LISTS_OFFSETS] = sf.write_array(path, LISTS_OFFSETS, lists_offsets)
            files[LISTS_DOCS] = sf.write_array(path, LISTS_DOCS, lists_docs)
        mean_codes, mean_scales = means()
        files[MEANS] = sf.write_array(path, MEANS, mean_codes)
        files[MEANS_SCALE] = sf.write_array(path, MEANS_SCALE, mean_scales)
        header = {
            "format": FORMAT, "version": VERSION, "n": len(lengths), "n_tokens": t, "dim": codec.dim,
            "codec": codec.name, "codec_id": codec.codec_id, "code_size": codec.code_size, "files": files,
            "unit_norm": bool(unit_norm),
            "nbytes": sum(f["bytes"] for f in files.values()),
            "fidelity": codec.fidelity if not codec.is_builtin or probe is None or not len(probe)
            else codec.measure(probe, np.random.default_rng(self.config["seed"])),
        }
        _write_header(path, header)
        logger.info("multivec segment %s: %d docs, %d tokens as %s", path, len(lengths), t, codec.name)
        return header


def _gather(x: np.ndarray, rows: np.ndarray, drop) -> np.ndarray:
    """x[rows] as a float32 array of our own, in x's order, read a chunk of x at a time with drop() after each:
    scattered rows of a file mapping fault in whole neighbourhoods of pages (2,048 probe rows of a 256 MiB
    buffer made ~300 MB resident at once)."""
    take = np.sort(rows)
    out = np.empty((len(take), x.shape[1]), np.float32)
    cuts = np.searchsorted(take, np.arange(0, len(x) + _CHUNK_TOKENS, _CHUNK_TOKENS))
    for a, b in zip(cuts[:-1], cuts[1:]):
        if b > a:
            out[a:b] = x[take[a:b]]
            drop()
    return out


def _token_chunks(x: np.ndarray, drop) -> Iterable[np.ndarray]:
    """x in chunks of _CHUNK_TOKENS rows; drop() after each chunk is used."""
    for lo in range(0, len(x), _CHUNK_TOKENS):
        yield x[lo : lo + _CHUNK_TOKENS]
        drop()


def _unit_norm(x: np.ndarray) -> bool:
    return bool(np.all(np.abs(np.einsum("td,td->t", x, x) - 1.0) < 2e-3))


def _write_header(path: Path, header: dict) -> None:
    write_json(path / HEADER, header)
    fsync_dir(path)


def _doc_chunks(lengths: np.ndarray) -> list[np.ndarray]:
    """Consecutive groups of documents holding about _CHUNK_TOKENS tokens each."""
    if not len(lengths):
        return []
    bounds = np.searchsorted(np.cumsum(lengths), np.arange(_CHUNK_TOKENS, lengths.sum(), _CHUNK_TOKENS))
    return [p for p in np.split(np.arange(len(lengths)), np.unique(bounds)) if len(p)]
