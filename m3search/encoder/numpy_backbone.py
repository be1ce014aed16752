"""A numpy forward pass of BERT-family encoders (XLM-RoBERTa, BERT) for the cold query path, without torch.

Why: `import torch` alone costs ~1.1 s and ~220 MB, more than the whole budget of a cold `m3search query`
(bench/cold_start.py); a query is a few dozen tokens, for which numpy's BLAS is as fast as torch. The
arithmetic is `native.py`'s (post-LN transformer, exact-erf GELU, softmax attention with pads masked) in
fp32 over the checkpoint's own tensors, mapped read-only from model.safetensors: nothing is read until
used, and the 250k-row word table costs only the rows a query touches.
`tests/encoder/test_query_numpy.py` checks it against the torch encoder to 1e-4 (measured: ~1e-6).

Handles what `native.supports` handles, with fp32 safetensors weights; anything else returns None from
`load` and the query goes through torch.
"""
from __future__ import annotations

import json
import math
import mmap
import os
from pathlib import Path

import numpy as np

_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U32": np.uint32,
           "U8": np.uint8}
_ROBERTA_POSITIONS = {"xlm-roberta": True, "roberta": True, "bert": False}


def map_safetensors(file: Path) -> dict[str, np.ndarray]:
    """Tensors of a .safetensors file as read-only views of one mmap (dtypes in `_DTYPES` only).

    Format: 8-byte little-endian header length, JSON header {name: {dtype, shape, data_offsets}}, raw data.
    Raises ValueError for a file that does not follow it.
    """
    with open(file, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    buf = np.frombuffer(mm, dtype=np.uint8)
    if len(buf) < 8:
        raise ValueError(f"{file}: too short for a safetensors file")
    n = int.from_bytes(bytes(buf[:8]), "little")
    if n <= 0 or 8 + n > len(buf):
        raise ValueError(f"{file}: bad safetensors header length {n}")
    header = json.loads(bytes(buf[8 : 8 + n]))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise ValueError(f"{file}: tensor {name} has dtype {info.get('dtype')}, not one the numpy path reads")
        start, end = info["data_offsets"]
        shape = tuple(int(s) for s in info["shape"])
        if not 0 <= start <= end <= len(buf) - base or end - start != math.prod(shape) * np.dtype(dtype).itemsize:
            raise ValueError(f"{file}: tensor {name} has bad data offsets {start}..{end}")
        out[name] = buf[base + start : base + end].view(dtype).reshape(shape)
        if name.endswith("word_embeddings.weight"):
            advise_random(mm, base + start, end - start)
    return out


def tensor_offsets(file: Path, name_suffix: str) -> list[tuple[int, str, tuple[int, ...]]]:
    """(byte offset in the file, safetensors dtype, shape) of every tensor whose name ends with `name_suffix`,
    read from the header alone (for `read_rows`)."""
    with open(file, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return [(8 + n + int(info["data_offsets"][0]), info.get("dtype"), tuple(int(s) for s in info["shape"]))
            for name, info in header.items() if name != "__metadata__" and name.endswith(name_suffix)]


def read_rows(fd: int, file: Path, offset: int, n_rows: int, row_bytes: int, rows: list[int]) -> bytearray:
    """Rows `rows` (sorted, unique) of the table of `n_rows` rows at `offset` of the open `file`, read with
    pread: a read fault on a mapping would map its neighbouring cached pages too (fault-around), and after a
    few hundred passages most of a 250k-row word table would count in RSS. The torch and numpy word-row
    readers (native.WordRows, ort_passages.FileRows) both read through this."""
    if rows and (rows[0] < 0 or rows[-1] >= n_rows):
        raise IndexError(f"token id {rows[-1] if rows[-1] >= n_rows else rows[0]} is outside the word table of "
                         f"{n_rows} rows")
    buf = bytearray(len(rows) * row_bytes)
    view = memoryview(buf)
    for j, i in enumerate(rows):
        if os.preadv(fd, [view[j * row_bytes : (j + 1) * row_bytes]], offset + i * row_bytes) != row_bytes:
            raise OSError(f"{file}: short read of word-table row {i}")
    return buf


def advise_random(mm: mmap.mmap, start: int, length: int) -> None:
    """No readahead over this range of a mapping: a text touches a few rows of the 250k-row word table,
    and readahead would page in (and count in RSS) most of its 384 MB (m3search-small). Best effort."""
    advice = getattr(mmap, "MADV_RANDOM", None)
    if advice is None or length <= 0:
        return
    aligned = start - start % mmap.PAGESIZE
    try:
        mm.madvise(advice, aligned, length + (start - aligned))
    except (OSError, ValueError):
        pass


def supports(config: dict) -> bool:
    return (
        config.get("model_type") in _ROBERTA_POSITIONS
        and config.get("hidden_act") == "gelu"
        and config.get("position_embedding_type", "absolute") == "absolute"
        and not config.get("is_decoder", False)
        and not config.get("add_cross_attention", False)
    )


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = np.mean(centered * centered, axis=-1, keepdims=True)
    return centered / np.sqrt(var + np.float32(eps)) * w + b


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float32 arithmetic to within ~1.5e-7 (Abramowitz & Stegun 7.1.26), without importing
    scipy.special (~0.15 s of a cold start); the GELU it feeds then differs from torch's by < 1e-6."""
    a = np.abs(x)
    t = np.float32(1.0) / (np.float32(1.0) + np.float32(0.3275911) * a)
    poly = t * (np.float32(0.254829592) + t * (np.float32(-0.284496736) + t * (
        np.float32(1.421413741) + t * (np.float32(-1.453152027) + t * np.float32(1.061405429)))))
    return np.copysign(np.float32(1.0) - poly * np.exp(-a * a), x)


def _gelu(x: np.ndarray) -> np.ndarray:
    return np.float32(0.5) * x * (np.float32(1.0) + _erf(x * np.float32(1.0 / math.sqrt(2.0))))


class NumpyBackbone:
    """last hidden states of one unpadded token sequence: `forward(ids) -> (len, hidden)` fp32."""

    def __init__(self, config: dict, state: dict[str, np.ndarray]):
        for prefix in ("roberta.", "bert.", "model."):
            if not any(k.startswith("embeddings.") for k in state) and any(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        self.eps = float(config["layer_norm_eps"])
        self.heads = int(config["num_attention_heads"])
        self.hidden = int(config["hidden_size"])
        self.padding_idx = int(config.get("pad_token_id", 1) or 0)
        self.roberta_positions = _ROBERTA_POSITIONS[config["model_type"]]
        self.word = state["embeddings.word_embeddings.weight"]
        self.position = state["embeddings.position_embeddings.weight"]
        self.token_type = state["embeddings.token_type_embeddings.weight"][0]
        self.emb_norm = (state["embeddings.LayerNorm.weight"], state["embeddings.LayerNorm.bias"])
        expected = (int(config["vocab_size"]), self.hidden)
        if tuple(self.word.shape) != expected:
            raise ValueError(f"word embeddings have shape {tuple(self.word.shape)}, config says {expected}")
        if any(t.dtype != np.float32 for t in state.values()):
            raise ValueError("the numpy path reads fp32 weights only")
        self.layers = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            g = lambda n: state[p + n]  # noqa: E731
            self.layers.append((
                # transposed views: x @ W.T without a copy
                [g(f"attention.self.{n}.weight").T for n in ("query", "key", "value")],
                [g(f"attention.self.{n}.bias") for n in ("query", "key", "value")],
                (g("attention.output.dense.weight").T, g("attention.output.dense.bias")),
                (g("attention.output.LayerNorm.weight"), g("attention.output.LayerNorm.bias")),
                (g("intermediate.dense.weight").T, g("intermediate.dense.bias")),
                (g("output.dense.weight").T, g("output.dense.bias")),
                (g("output.LayerNorm.weight"), g("output.LayerNorm.bias")),
            ))

    def position_ids(self, n: int) -> np.ndarray:
        # RoBERTa: real tokens at padding_idx + 1, + 2, ... (an unpadded sequence has no pads)
        return np.arange(n) + (self.padding_idx + 1 if self.roberta_positions else 0)

    def forward(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        n = len(ids)
        x = self.word[ids] + self.position[self.position_ids(n)] + self.token_type
        x = _layer_norm(x, *self.emb_norm, self.eps)
        h, d = self.heads, self.hidden // self.heads
        scale = np.float32(1.0 / math.sqrt(d))
        for (wq, wk, wv), (bq, bk, bv), (wo, bo), ln1, (wi, bi), (wf, bf), ln2 in self.layers:
            q = (x @ wq + bq).reshape(n, h, d).transpose(1, 0, 2)
            k = (x @ wk + bk).reshape(n, h, d).transpose(1, 0, 2)
            v = (x @ wv + bv).reshape(n, h, d).transpose(1, 0, 2)
            s = (q @ k.transpose(0, 2, 1)) * scale
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            a = (s @ v).transpose(1, 0, 2).reshape(n, self.hidden)
            x = _layer_norm(x + (a @ wo + bo), *ln1, self.eps)
            x = _layer_norm(x + (_gelu(x @ wi + bi) @ wf + bf), *ln2, self.eps)
        return x


def load(folder: Path, config: dict) -> NumpyBackbone | None:
    """The backbone of a folder with one fp32 model.safetensors, mapped; None when the numpy path can't run it."""
    if not supports(config) or not (folder / "model.safetensors").is_file():
        return None
    try:
        return NumpyBackbone(config, map_safetensors(folder / "model.safetensors"))
    except (KeyError, ValueError, OSError):
        return None
