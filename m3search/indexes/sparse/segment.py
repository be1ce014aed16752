"""Opening a segment folder: header checks, memory-mapped arrays, structural checks.

Everything the query kernels index with is checked here once (pointer arrays monotone and within
their streams, ids within range), so a damaged file gives IndexFormatError at open instead of wrong
results or a crash later.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from m3search.errors import IndexFormatError
from m3search.indexes.sparse import packed as packed_mod
from m3search.indexes.sparse.encode import GROUP_BLOCKS
from m3search.indexes.segment_files import CheckedArray, open_checked

SEGMENT_FORMAT = "m3search.sparse.segment"
# 4: version 3 with Rice-coded block gaps and count exceptions in the non-dense tokens' chunks (packed.py);
# 3: bit-packed postings, forward token ids and forward weights; 2: byte-aligned varint postings, varint
# forward ids, plain weights (both still read); 1 (<name>.bin, edge-checked) is no longer read
SEGMENT_VERSION = 4
READABLE_VERSIONS = (2, 3, 4)
# Read whole by the structure checks at open (or tiny), so verified then; the big streams are verified
# block by block as searches and re-scoring reach them (`Segment.verified`), or whole on attribute access.
EAGER = ("term_ids", "term_ptr", "term_dense", "term_entries", "term_max", "group_ptr", "fwd_wptr", "fwd_bptr",
         "fwd_width", "fwd_wbase", "fwd_wwidth")
HEADER_FILE = "sparse.json"
ARRAYS_BY_VERSION = {
    2: ("term_ids", "term_ptr", "term_dense", "term_entries", "term_max", "postings", "dense_max", "group_ptr",
        "fwd_wptr", "fwd_bptr", "fwd_ids", "fwd_weights"),
    3: ("term_ids", "term_ptr", "term_dense", "term_entries", "term_max", "postings", "dense_max", "group_ptr",
        "fwd_wptr", "fwd_width", "fwd_ids", "fwd_wbase", "fwd_wwidth", "fwd_weights"),
}
ARRAYS_BY_VERSION[4] = ARRAYS_BY_VERSION[3]
ARRAYS = ARRAYS_BY_VERSION[SEGMENT_VERSION]
# the parts of the index, for sizes: the inverted index (what a search reads) and the forward index
INVERTED_ARRAYS = ("term_ids", "term_ptr", "term_dense", "term_entries", "term_max", "postings", "dense_max",
                   "group_ptr")
_HEADER_INTS = ("n_docs", "vocab_size", "n_postings", "n_terms", "n_dense_terms", "block_docs", "group_blocks",
                "n_blocks")


@dataclasses.dataclass(eq=False)
class Segment:
    path: Path
    header: dict
    arrays: dict[str, np.ndarray]
    unverified: dict[str, CheckedArray] = dataclasses.field(default_factory=dict)

    def __getattr__(self, name: str):
        arrays = self.__dict__["arrays"]
        if name not in arrays:
            checked = self.__dict__["unverified"].pop(name, None)
            if checked is None:
                raise AttributeError(name)
            arrays[name] = checked.verify_all().raw  # first touch: check every block once
        return arrays[name]

    def verified(self, name: str, starts, ends) -> np.ndarray:
        """Array `name` for a kernel that will read elements [starts[i], ends[i]) only, after checking the
        blocks that hold them."""
        arrays = self.__dict__["arrays"]
        if name in arrays:
            return arrays[name]
        checked = self.__dict__["unverified"][name]
        checked.verify_spans(starts, ends)
        return checked.raw

    @property
    def n_docs(self) -> int:
        return self.header["n_docs"]

    @property
    def max_weight(self) -> float | None:
        return self.header["max_weight"]

    @property
    def version(self) -> int:
        return self.header["version"]

    @property
    def packed(self) -> bool:
        """Version 3 and later: bit-packed postings and forward ids (packed.py)."""
        return self.header["version"] >= 3

    @property
    def shift(self) -> int:
        return self.header["block_docs"].bit_length() - 1

    @property
    def nbytes(self) -> int:
        return sum(r["bytes"] for r in self.header["arrays"].values()) + (self.path / HEADER_FILE).stat().st_size


def group_blocks(version: int) -> int:
    """Blocks per group pointer of a dense token in this segment version."""
    return packed_mod.GROUP_BLOCKS if version >= 3 else GROUP_BLOCKS


def _fail(path: Path, what: str) -> IndexFormatError:
    return IndexFormatError(f"{path}: {what}; the segment is corrupt: rebuild it or restore it from a backup")


def _read_header(path: Path) -> dict:
    file = path / HEADER_FILE
    if not file.is_file():
        raise IndexFormatError(f"{file} is missing: {path} is not a sparse segment, or it was not completely written")
    try:
        header = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise _fail(file, f"unreadable header ({e})") from e
    if not isinstance(header, dict) or header.get("format") != SEGMENT_FORMAT:
        raise IndexFormatError(f"{file}: format {header.get('format') if isinstance(header, dict) else None!r} "
                               f"is not {SEGMENT_FORMAT!r}")
    version = header.get("version")
    if not isinstance(version, int) or version < 1:
        raise _fail(file, f"version {version!r} is not a positive integer")
    if version < READABLE_VERSIONS[0]:
        raise IndexFormatError(
            f"{file}: sparse segment version {version} was written by an older m3search (its arrays carry no "
            f"full checksums); this one reads version {SEGMENT_VERSION}: rebuild the index"
        )
    if version > SEGMENT_VERSION:
        raise IndexFormatError(
            f"{file}: sparse segment version {version} is newer than this m3search reads ({SEGMENT_VERSION}); "
            "upgrade m3search"
        )
    for key in _HEADER_INTS:
        if not isinstance(header.get(key), int) or header[key] < 0:
            raise _fail(file, f"header field {key!r} is {header.get(key)!r}, not a non-negative integer")
    if header["block_docs"] not in (16, 32, 64, 128) or header["group_blocks"] != group_blocks(version):
        raise _fail(file, f"block_docs {header['block_docs']} / group_blocks {header['group_blocks']} unsupported")
    if header.get("forward_dtype") not in ("float16", "float32"):
        raise _fail(file, f"forward_dtype {header.get('forward_dtype')!r} is not float16 or float32")
    mw = header.get("max_weight")
    if mw is not None and (not isinstance(mw, (int, float)) or not mw > 0):
        raise _fail(file, f"max_weight {mw!r} is not a positive number")
    if not isinstance(header.get("arrays"), dict) or set(header["arrays"]) != set(ARRAYS_BY_VERSION[version]):
        raise _fail(file, "the array list differs from this version's")
    return header


def _check_structure(path: Path, h: dict, a: dict[str, np.ndarray]) -> None:
    n_terms, n_dense, n_blocks, n_docs = h["n_terms"], h["n_dense_terms"], h["n_blocks"], h["n_docs"]
    G = group_blocks(h["version"])
    n_groups1 = (n_blocks + G - 1) // G + 1
    packed = h["version"] >= 3
    stream = np.uint32 if packed else np.uint8
    expect = {
        "term_ids": (n_terms, np.int32), "term_ptr": (n_terms + 1, np.int64), "term_dense": (n_terms, np.int32),
        "term_entries": (n_terms, np.int32 if packed else np.int64), "term_max": (n_terms, np.uint8),
        "postings": (None, stream), "dense_max": (n_dense * n_blocks, np.uint8),
        "group_ptr": (n_dense * n_groups1, np.uint32), "fwd_wptr": (n_docs + 1, np.int64),
        "fwd_ids": (None, stream),
        **({"fwd_width": (n_docs, np.uint8), "fwd_weights": (None, np.uint32), "fwd_wwidth": (n_docs, np.uint8),
            "fwd_wbase": (n_docs, np.uint16 if h["forward_dtype"] == "float16" else np.uint32)} if packed else
           {"fwd_bptr": (n_docs + 1, np.int64), "fwd_weights": (h["n_postings"], np.dtype(h["forward_dtype"]))}),
    }
    for name, (length, dtype) in expect.items():
        arr = a[name]
        if arr.dtype != dtype or (length is not None and len(arr) != length):
            raise _fail(path, f"array {name} is {arr.dtype}[{len(arr)}], expected {np.dtype(dtype)}[{length}]")
    if n_blocks != (n_docs + h["block_docs"] - 1) // h["block_docs"]:
        raise _fail(path, f"n_blocks {n_blocks} does not fit n_docs {n_docs}")

    def pointers(name: str, total: int) -> None:
        p = a[name]
        if len(p) and (p[0] != 0 or p[-1] != total or (np.diff(p) < 0).any()):
            raise _fail(path, f"pointer array {name} is not monotone from 0 to {total}")

    if packed:
        # bit pointers: the streams end with packed.PAD_WORDS zero words after their last bit
        n_bits = int(a["term_ptr"][-1]) if len(a["term_ptr"]) else 0
        if len(a["postings"]) != packed_mod.stream_words(n_bits):
            raise _fail(path, f"postings hold {len(a['postings'])} words, {n_bits} bits need "
                              f"{packed_mod.stream_words(n_bits)}")
        pointers("term_ptr", n_bits)
        pointers("fwd_wptr", h["n_postings"])
        if len(a["fwd_width"]) and a["fwd_width"].max() > 32:
            raise _fail(path, "forward id widths exceed 32 bits")
        fwd_bits = int(packed_mod.forward_bit_pointers(a["fwd_wptr"], a["fwd_width"])[-1])
        if len(a["fwd_ids"]) != packed_mod.stream_words(fwd_bits):
            raise _fail(path, f"forward ids hold {len(a['fwd_ids'])} words, {fwd_bits} bits need "
                              f"{packed_mod.stream_words(fwd_bits)}")
        if len(a["fwd_wwidth"]) and a["fwd_wwidth"].max() > 8 * a["fwd_wbase"].dtype.itemsize:
            raise _fail(path, "forward weight widths exceed the stored float's bits")
        w_bits = int(packed_mod.forward_bit_pointers(a["fwd_wptr"], a["fwd_wwidth"])[-1])
        if len(a["fwd_weights"]) != packed_mod.stream_words(w_bits):
            raise _fail(path, f"forward weights hold {len(a['fwd_weights'])} words, {w_bits} bits need "
                              f"{packed_mod.stream_words(w_bits)}")
    else:
        pointers("term_ptr", len(a["postings"]))
        pointers("fwd_wptr", h["n_postings"])
        pointers("fwd_bptr", len(a["fwd_ids"]))
    ids = a["term_ids"]
    if n_terms and (ids[0] < 0 or ids[-1] >= h["vocab_size"] or (np.diff(ids) <= 0).any()):
        raise _fail(path, "token ids are not sorted, unique and within the vocabulary")
    dense = a["term_dense"]
    dense_ids = dense[dense >= 0]
    if len(dense_ids) != n_dense or (n_dense and not np.array_equal(dense_ids, np.arange(n_dense, dtype=np.int32))):
        raise _fail(path, "dense token numbering is inconsistent")
    if (a["term_entries"] < 0).any() or (a["term_entries"] > n_blocks).any():
        raise _fail(path, "per-token block counts are out of range")
    if n_dense:
        spans = np.diff(a["term_ptr"])[dense >= 0]
        gp = a["group_ptr"].reshape(n_dense, n_groups1)
        if (np.diff(gp.astype(np.int64), axis=1) < 0).any() or (gp[:, 0] != 0).any() or (gp[:, -1] != spans).any():
            raise _fail(path, "group pointers of dense tokens are inconsistent with their spans")


def load_segment(path: Path, verify: str = "fast") -> Segment:
    """verify: "fast" checks the small arrays now and each big one on first use; "full" checks all now."""
    header = _read_header(path)
    checked = {}
    for name in ARRAYS_BY_VERSION[header["version"]]:
        entry = header["arrays"][name]
        if not isinstance(entry, dict):
            raise _fail(path / HEADER_FILE, f"the entry of array {name!r} is malformed")
        checked[name] = open_checked(path, f"{name}.arr", entry)
    arrays = {name: c.verify_all().raw for name, c in checked.items() if name in EAGER or verify == "full"}
    _check_structure(path, header, {**checked, **arrays})
    if header["version"] >= 3:  # bit offsets of each document's forward ids, from widths and lengths
        arrays["fwd_bptr"] = packed_mod.forward_bit_pointers(arrays["fwd_wptr"], arrays["fwd_width"])
        arrays["fwd_wbptr"] = packed_mod.forward_bit_pointers(arrays["fwd_wptr"], arrays["fwd_wwidth"])
    return Segment(path=path, header=header, arrays=arrays,
                   unverified={n: c for n, c in checked.items() if n not in arrays})
