"""SparseComponent: builds, merges and opens learned-sparse segment folders (kind "sparse")."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from m3search.errors import ConfigError, IndexFormatError, InputError
from m3search.indexes.base import ComponentType, SegmentReader
from m3search.indexes.fsutil import fsync_file, write_json
from m3search.indexes.sparse import encode, packed
from m3search.indexes.sparse.quantize import Quantizer, read_quantizer, shared_quantizer
from m3search.indexes.sparse.reader import SparseSegmentReader
from m3search.indexes.sparse.segment import (
    HEADER_FILE,
    SEGMENT_FORMAT,
    SEGMENT_VERSION,
    load_segment,
)
from m3search.indexes.inputs import check_lexical
from m3search.indexes.segment_files import write_array
from m3search.types import EncodedBatch

logger = logging.getLogger(__name__)

DEFAULTS: dict = {
    # "auto": the first non-empty batch's largest weight x 1.25, then fixed for the index; or a number
    "max_weight": "auto",
    # documents per block: the unit of block-max bounds and of scoring (16, 32, 64 or 128)
    "block_docs": 64,
    # tokens present in at least this fraction of a segment's blocks get dense block-max rows
    "dense_fraction": 0.25,
    # stored (forward) weights, used by score_pairs, doc_weights and merges; impacts derive from them
    "forward_dtype": "float16",
    # "fast": sizes, structure and the small arrays' checksums at open, each big array's on first use;
    # "full": every byte's checksum at open
    "verify": "fast",
}
_CHOICES = {"block_docs": (16, 32, 64, 128), "forward_dtype": ("float16", "float32"), "verify": ("fast", "full")}


class SparseComponent(ComponentType):
    """Inverted index over token ids with 8-bit block-max impacts, plus a forward index.

    >>> SparseComponent({"block_docs": 32}).config["block_docs"]
    32
    """

    kind = "sparse"

    @classmethod
    def validate_config(cls, config: dict) -> dict:
        unknown = sorted(set(config) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown sparse component option(s) {unknown}; valid options: {sorted(DEFAULTS)}")
        out = {**DEFAULTS, **config}
        for key, choices in _CHOICES.items():
            if out[key] not in choices or isinstance(out[key], bool):
                raise ConfigError(f"sparse option {key}={out[key]!r} is not one of {list(choices)}")
        mw = out["max_weight"]
        if mw != "auto":
            if isinstance(mw, bool) or not isinstance(mw, (int, float)) or not np.isfinite(mw) or mw <= 0:
                raise ConfigError(f"sparse option max_weight={mw!r} must be 'auto' or a positive number")
            out["max_weight"] = float(mw)
        df = out["dense_fraction"]
        if isinstance(df, bool) or not isinstance(df, (int, float)) or not 0.0 <= df <= 1.0:
            raise ConfigError(f"sparse option dense_fraction={df!r} must be a number in [0, 1]")
        out["dense_fraction"] = float(df)
        return out

    # -- writing -------------------------------------------------------------------------------------

    def build(self, path: Path, batch: EncodedBatch, shared: Path) -> dict:
        x = _canonical_weights(batch.sparse)
        stored = x.data.astype(self.config["forward_dtype"])
        return self._write(Path(path), x.indptr.astype(np.int64), x.indices.astype(np.int32), stored,
                           x.shape, Path(shared))

    def merge(self, path: Path, sources: Sequence[SegmentReader], keep: Sequence[np.ndarray], shared: Path) -> dict:
        if len(sources) != len(keep):
            raise InputError(f"merge got {len(sources)} sources but {len(keep)} keep arrays; pass one per source")
        vocab = None
        parts = []
        for i, (src, kept) in enumerate(zip(sources, keep)):
            if not isinstance(src, SparseSegmentReader):
                raise InputError(f"merge source {i} is a {type(src).__name__}, not a sparse segment reader")
            if vocab is not None and src.vocab_size != vocab:
                raise InputError(f"merge source {i} has vocabulary size {src.vocab_size}, the others {vocab}")
            vocab = src.vocab_size
            parts.append(src.doc_weights(_kept_ids(kept, src.n_docs, i)))
        if vocab is None:
            raise InputError("merge needs at least one source segment")
        x = sp.vstack(parts, format="csr", dtype=np.float32) if parts else sp.csr_matrix((0, vocab), np.float32)
        stored = x.data.astype(self.config["forward_dtype"])
        return self._write(Path(path), x.indptr.astype(np.int64), x.indices.astype(np.int32), stored,
                           (x.shape[0], vocab), Path(shared))

    def _write(self, path: Path, indptr, indices, stored, shape, shared: Path, version: int = SEGMENT_VERSION) -> dict:
        """version: the segment format to write (SEGMENT_VERSION; the older 3 and 2 for tests and benchmarks)."""
        n_docs, vocab_size = int(shape[0]), int(shape[1])
        # a weight can round to 0 in float16: such a token is not stored at all
        nz = stored != 0
        if not nz.all():
            rows = np.repeat(np.arange(n_docs), np.diff(indptr))
            indptr = np.zeros(n_docs + 1, np.int64)
            np.cumsum(np.bincount(rows[nz], minlength=n_docs), out=indptr[1:])
            indices, stored = indices[nz], stored[nz]
        w32 = stored.astype(np.float32)
        batch_max = float(w32.max()) if len(w32) else 0.0
        quantizer = shared_quantizer(shared, self.config["max_weight"], batch_max)
        if quantizer is None:
            quantizer = Quantizer(1.0)  # nothing to quantize yet; an empty segment scores nothing
            scale_known = False
        else:
            scale_known = True
        codes, n_clipped = quantizer.codes(w32)
        if n_clipped:
            logger.warning(
                "%d of %d sparse weights exceed the index's max_weight %.4g and were saturated; set the sparse "
                "option max_weight when creating the index to keep them", n_clipped, len(w32), quantizer.max_weight)
        shift = int(self.config["block_docs"]).bit_length() - 1
        n_blocks = (n_docs + (1 << shift) - 1) >> shift
        if vocab_size > len(indices):
            # a wide term space (whole-word columns, encoder/terms.py): number the terms present first, so the
            # inversion's per-term arrays are sized by the postings, not by 2**22 columns
            present, local = np.unique(indices, return_inverse=True)
            local_ids, term_start, post_doc, post_code = encode.invert(indptr, local.astype(np.int32), codes,
                                                                        len(present))
            term_ids = present[local_ids].astype(np.int32)
        else:
            term_ids, term_start, post_doc, post_code = encode.invert(indptr, indices, codes, vocab_size)
        entries = encode.count_blocks(term_start, post_doc, shift)
        is_dense = entries >= max(1.0, self.config["dense_fraction"] * n_blocks)
        if version >= 3:
            term_ptr, stream, term_dense, dense_max, gptr = packed.encode_postings(
                term_start, post_doc, post_code, entries, shift, is_dense, n_blocks, version)
            entries = entries.astype(np.int32)
        elif version == 2:
            term_ptr, stream, term_dense, dense_max, gptr = encode.encode_postings(
                term_start, post_doc, post_code, shift, is_dense, n_blocks)
        else:
            raise ValueError(f"cannot write sparse segment version {version}")
        term_max = encode.term_max_codes(term_start, post_code)
        del post_doc, post_code
        if version >= 3:
            fwd_width, fwd_ids = packed.encode_forward_ids(indptr, indices)
            pattern = stored.view(np.uint16 if stored.dtype == np.float16 else np.uint32)
            wbase, wwidth, fwd_weights = packed.encode_forward_weights(indptr, pattern.astype(np.int64))
            fwd_pointers = {"fwd_width": fwd_width, "fwd_wbase": wbase.astype(pattern.dtype), "fwd_wwidth": wwidth}
        else:
            fwd_bptr, fwd_ids = encode.encode_forward_ids(indptr, indices)
            fwd_pointers = {"fwd_bptr": fwd_bptr}
            fwd_weights = stored
        arrays = {
            "term_ids": term_ids,
            "term_ptr": term_ptr,
            "term_dense": term_dense,
            "term_entries": entries,
            "term_max": term_max,
            "postings": stream,
            "dense_max": dense_max,
            "group_ptr": gptr,
            "fwd_wptr": indptr,
            **fwd_pointers,
            "fwd_ids": fwd_ids,
            "fwd_weights": fwd_weights,
        }
        path.mkdir(parents=True, exist_ok=True)
        records = {name: write_array(path, f"{name}.arr", arr) for name, arr in arrays.items()}
        header = {
            "format": SEGMENT_FORMAT,
            "version": version,
            "n_docs": n_docs,
            "vocab_size": vocab_size,
            "n_postings": int(len(stored)),
            "n_terms": int(len(term_ids)),
            "n_dense_terms": int(is_dense.sum()),
            "block_docs": 1 << shift,
            "group_blocks": packed.GROUP_BLOCKS if version >= 3 else encode.GROUP_BLOCKS,
            "n_blocks": n_blocks,
            "max_weight": quantizer.max_weight if scale_known else None,
            "forward_dtype": self.config["forward_dtype"],
            "n_clipped": n_clipped,
            "arrays": records,
        }
        write_json(path / HEADER_FILE, header)
        fsync_file(path)
        nbytes = sum(r["bytes"] for r in records.values()) + (path / HEADER_FILE).stat().st_size
        return {
            "format": SEGMENT_FORMAT,
            "version": version,
            "n_docs": n_docs,
            "n_postings": int(len(stored)),
            "max_weight": header["max_weight"],
            "nbytes": int(nbytes),
        }

    # -- reading -------------------------------------------------------------------------------------

    def open(self, path: Path, meta: dict, shared: Path) -> SparseSegmentReader:
        seg = load_segment(Path(path), verify=self.config["verify"])
        if meta and meta.get("n_docs") is not None and int(meta["n_docs"]) != seg.n_docs:
            raise IndexFormatError(
                f"{path}: the segment holds {seg.n_docs} documents but the index records {meta['n_docs']}; "
                "the folder belongs to another segment or was replaced"
            )
        q = read_quantizer(Path(shared))
        if seg.max_weight is not None and (q is None or not np.isclose(q.max_weight, seg.max_weight, rtol=0, atol=0)):
            found = None if q is None else q.max_weight
            raise IndexFormatError(
                f"{path}: the segment was quantized with max_weight {seg.max_weight} but the index's shared "
                f"quantizer in {shared} says {found}; the segment belongs to another index"
            )
        return SparseSegmentReader(seg)


def _canonical_weights(x) -> sp.csr_matrix:
    """float32 CSR with sorted, unique indices and no explicit zeros; refuses negative or non-finite weights."""
    x = sp.csr_matrix(x, dtype=np.float32)
    check_lexical(x, what="sparse segment")
    if not x.has_canonical_format or (len(x.data) and (x.data == 0).any()):
        x = x.copy()
        x.sum_duplicates()
        x.eliminate_zeros()
    return x


def _kept_ids(kept, n_docs: int, i: int) -> np.ndarray:
    kept = np.asarray(kept)
    if kept.dtype == np.bool_:
        if kept.shape != (n_docs,):
            raise InputError(f"keep mask {i} has shape {kept.shape}; the source has {n_docs} documents")
        return np.flatnonzero(kept)
    kept = kept.astype(np.int64, copy=False).reshape(-1)
    if len(kept) and (kept.min() < 0 or kept.max() >= n_docs):
        raise InputError(f"keep[{i}] has ids outside 0..{n_docs - 1}")
    return kept
