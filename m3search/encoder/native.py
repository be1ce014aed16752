"""A plain-torch inference backbone for BERT-family encoders (XLM-RoBERTa, BERT), loaded without transformers.

Why: importing transformers and building its model costs 2-3 s and ~100 MB before the first query can be
encoded; a query needs none of its machinery. This module runs the same arithmetic (post-LN transformer,
exact-erf GELU, PyTorch SDPA attention) over the same checkpoint tensors, which it maps straight from
`model.safetensors` (copy-on-write mmap; torch's own mmap for a zip-format pytorch_model.bin), so the
250k-row word table costs only the rows a batch touches.
`tests/encoder/test_native.py` checks it against transformers' model to 1e-5.

Only the configurations below are handled (`supports(config)`); anything else, and training, use
transformers (`checkpoint._load_backbone`).
"""
from __future__ import annotations

import json
import logging
import mmap
import os
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from m3search.encoder.numpy_backbone import read_rows, tensor_offsets

_MODEL_TYPES = {"xlm-roberta": True, "roberta": True, "bert": False}  # -> positions start after padding_idx
_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}


def read_config(path: Path) -> types.SimpleNamespace | None:
    try:
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return types.SimpleNamespace(**data) if isinstance(data, dict) else None


def supports(config) -> bool:
    """True for the BERT-family layouts this module reproduces exactly."""
    return (
        getattr(config, "model_type", None) in _MODEL_TYPES
        and getattr(config, "hidden_act", None) == "gelu"
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
        and not getattr(config, "is_decoder", False)
        and not getattr(config, "add_cross_attention", False)
    )


def mmap_safetensors(file: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file as views of a private (copy-on-write) mmap: nothing is read until used.

    The format is an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
    then the raw little-endian data. safetensors' own loader copies every tensor into memory.
    """
    with open(file, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    n = int.from_bytes(buf[:8], "little")
    header = json.loads(buf[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{file}: tensor {name} has dtype {info['dtype']}, not one m3search maps")
        start, end = info["data_offsets"]
        count = (end - start) // torch.empty((), dtype=dtype).element_size()
        flat = torch.frombuffer(buf, dtype=dtype, count=count, offset=base + start) if count else torch.empty(0, dtype=dtype)
        out[name] = flat.reshape(info["shape"])
        if name.endswith("word_embeddings.weight"):  # rows are touched sparsely: no readahead (RSS)
            from m3search.encoder.numpy_backbone import advise_random

            advise_random(buf, base + start, end - start)
    return out


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """An nn.Linear around existing tensors (no init, no meta device: its first use imports ~0.4 s of torch)."""
    m = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(m)
    m.out_features, m.in_features = weight.shape
    m.weight = nn.Parameter(weight, requires_grad=False)
    m.bias = nn.Parameter(bias, requires_grad=False)
    return m


def _norm(weight: torch.Tensor, bias: torch.Tensor, eps: float) -> nn.LayerNorm:
    m = nn.LayerNorm.__new__(nn.LayerNorm)
    nn.Module.__init__(m)
    m.normalized_shape, m.eps, m.elementwise_affine = tuple(weight.shape), eps, True
    m.weight = nn.Parameter(weight, requires_grad=False)
    m.bias = nn.Parameter(bias, requires_grad=False)
    return m


class _Layer(nn.Module):
    """One post-LN transformer layer over a checkpoint's tensors (`p` = "encoder.layer.<i>.")."""

    def __init__(self, state: dict[str, torch.Tensor], p: str, heads: int, eps: float):
        super().__init__()
        self.heads = heads
        self.qkv = _linear(  # q, k and v in one matmul
            torch.cat([state[f"{p}attention.self.{n}.weight"] for n in ("query", "key", "value")]),
            torch.cat([state[f"{p}attention.self.{n}.bias"] for n in ("query", "key", "value")]),
        )
        self.attn_out = _linear(state[f"{p}attention.output.dense.weight"], state[f"{p}attention.output.dense.bias"])
        self.attn_norm = _norm(state[f"{p}attention.output.LayerNorm.weight"], state[f"{p}attention.output.LayerNorm.bias"], eps)
        self.ffn_in = _linear(state[f"{p}intermediate.dense.weight"], state[f"{p}intermediate.dense.bias"])
        self.ffn_out = _linear(state[f"{p}output.dense.weight"], state[f"{p}output.dense.bias"])
        self.ffn_norm = _norm(state[f"{p}output.LayerNorm.weight"], state[f"{p}output.LayerNorm.bias"], eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, n, h = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = self.attn_norm(x + self.attn_out(a.transpose(1, 2).reshape(b, n, h)))
        return self.ffn_norm(x + self.ffn_out(F.gelu(self.ffn_in(x))))


class NativeEncoder(nn.Module):
    """`backbone(input_ids, attention_mask).last_hidden_state`, like a transformers encoder model.

    Built from transformers' tensor names (with or without the `roberta.`/`bert.` prefix); holds views of
    the given tensors, not copies (except q/k/v, concatenated into one matrix).
    """

    def __init__(self, config, state: dict[str, torch.Tensor]):
        super().__init__()
        for prefix in ("roberta.", "bert.", "model."):
            if not any(k.startswith("embeddings.") for k in state) and any(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        self.config = config
        eps = float(config.layer_norm_eps)
        self.word = nn.Parameter(state["embeddings.word_embeddings.weight"], requires_grad=False)
        self.position = nn.Parameter(state["embeddings.position_embeddings.weight"], requires_grad=False)
        self.token_type = nn.Parameter(state["embeddings.token_type_embeddings.weight"][0], requires_grad=False)
        self.emb_norm = _norm(state["embeddings.LayerNorm.weight"], state["embeddings.LayerNorm.bias"], eps)
        self.layers = nn.ModuleList(
            _Layer(state, f"encoder.layer.{i}.", config.num_attention_heads, eps) for i in range(config.num_hidden_layers)
        )
        self.padding_idx = int(getattr(config, "pad_token_id", 1) or 0)
        self.roberta_positions = _MODEL_TYPES[config.model_type]
        expected = (config.vocab_size, config.hidden_size)
        if tuple(self.word.shape) != expected:
            raise ValueError(f"word embeddings have shape {tuple(self.word.shape)}, config says {expected}")

    word_rows: "WordRows | None" = None

    def _reads_word_rows(self) -> bool:
        """Rows come from the file while the word table is still the mapped one (not moved or converted)."""
        rows = self.word_rows
        return rows is not None and self.word.data_ptr() == rows.mapped_ptr and self.word.dtype == rows.dtype

    def position_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.roberta_positions:  # RoBERTa: padding_idx + 1, +2, ... for real tokens, padding_idx for pads
            mask = input_ids.ne(self.padding_idx).to(torch.int64)
            return torch.cumsum(mask, dim=1) * mask + self.padding_idx
        return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)

    def enable_onnx(self) -> None:
        """Run the layers with ONNX Runtime (`ort_backbone.py`) from the next CPU fp32 inference call on, when
        the caller passes onnx=True; the session is built on first use. Raises ImportError without it."""
        from m3search.encoder import ort_backbone

        if not ort_backbone.available():
            raise ImportError("onnxruntime and onnx are not installed (pip install 'm3search[onnx]')")
        self._onnx_enabled = True

    def disable_onnx(self) -> None:
        """Back to the torch layers (e.g. after the layers were changed in place, as int8 quantization does)."""
        self._onnx_enabled, self._onnx_layers = False, None

    _onnx_enabled = False
    _onnx_layers = None

    def _onnx_runs(self, x: torch.Tensor) -> bool:
        return (self._onnx_enabled and x.device.type == "cpu" and x.dtype == torch.float32
                and not torch.is_grad_enabled())

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The embedding layer: word + position + token-type rows, LayerNorm."""
        words = self.word_rows(input_ids) if self._reads_word_rows() else F.embedding(input_ids, self.word)
        x = words + F.embedding(self.position_ids(input_ids), self.position) + self.token_type
        return self.emb_norm(x)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, onnx: bool = False):
        """onnx=True runs the layers in ONNX Runtime where `enable_onnx` was called (CPU, fp32, no grad)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.embed(input_ids)
        if onnx and self._onnx_runs(x) and self._onnx_layers is None:
            try:
                from m3search.encoder.ort_backbone import OrtLayers

                self._onnx_layers = OrtLayers(self.layers, self.config.hidden_size, self.config.num_attention_heads,
                                              float(self.config.layer_norm_eps), threads=torch.get_num_threads())
            except Exception as e:  # an install that finds but can't load or run it: torch, said once
                logging.getLogger(__name__).warning("ONNX Runtime layers unavailable (%s: %s); encoding with torch",
                                                    type(e).__name__, e)
                self._onnx_enabled = False
        if onnx and self._onnx_runs(x):
            out = self._onnx_layers(x.numpy(), attention_mask.numpy())
            return types.SimpleNamespace(last_hidden_state=torch.from_numpy(out))
        bias = None
        if not bool(attention_mask.all()):
            bias = torch.zeros(attention_mask.shape, dtype=x.dtype, device=x.device)
            bias.masked_fill_(attention_mask == 0, torch.finfo(x.dtype).min)
            bias = bias[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        return types.SimpleNamespace(last_hidden_state=x)


def load_native(path: Path, config) -> NativeEncoder | None:
    """The backbone of a folder with one model.safetensors (or one pytorch_model.bin in torch's zip format,
    as BAAI/bge-m3 ships), mapped rather than read; None when this module can't run it (then transformers
    loads it)."""
    if not supports(config):
        return None
    try:
        if (path / "model.safetensors").is_file():
            state = mmap_safetensors(path / "model.safetensors")
        elif (path / "pytorch_model.bin").is_file():
            state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True, mmap=True)
        else:
            return None
        model = NativeEncoder(config, state)
        if (path / "model.safetensors").is_file():
            model.word_rows = WordRows.of(path / "model.safetensors", model.word)
    except (KeyError, ValueError, RuntimeError, OSError):
        return None
    return model.eval().requires_grad_(False)


class WordRows:
    """Word-table rows read from the file with pread instead of through the mapping.

    Why: a read fault on a mapped file maps its neighbouring cached pages too (fault-around), so a batch
    touching ~1,000 rows of the 250k-row table left ~280 MB of it resident (and counted in RSS) after 100
    short passages; pread copies only the rows asked for. Same bytes, same values as F.embedding.
    """

    def __init__(self, file: Path, offset: int, rows: int, width: int, dtype: torch.dtype, mapped_ptr: int):
        self.file, self.offset, self.rows, self.width, self.dtype = file, offset, rows, width, dtype
        self.row_bytes = width * torch.empty((), dtype=dtype).element_size()
        self.mapped_ptr = mapped_ptr
        self._fd: int | None = None

    @classmethod
    def of(cls, file: Path, word: torch.Tensor) -> "WordRows | None":
        """The reader for the mapped tensor `word` of the safetensors `file` (found by its name)."""
        for offset, dtype, (rows, width) in tensor_offsets(file, "word_embeddings.weight"):
            if _DTYPES.get(dtype) == word.dtype and (rows, width) == tuple(word.shape):
                return cls(file, offset, rows, width, word.dtype, word.data_ptr())
        return None

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        unique, inverse = torch.unique(ids, return_inverse=True)
        wanted = unique.tolist()
        if self._fd is None:
            self._fd = os.open(self.file, os.O_RDONLY)
        buf = read_rows(self._fd, self.file, self.offset, self.rows, self.row_bytes, wanted)
        table = torch.frombuffer(buf, dtype=self.dtype).view(len(wanted), self.width) if wanted else torch.empty(
            0, self.width, dtype=self.dtype)
        return table[inverse]

    def __del__(self):
        if self._fd is not None:
            try:
                os.close(self._fd)
            except Exception:  # OSError; or `os` already torn down at interpreter exit
                pass
