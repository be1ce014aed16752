"""Load and save M3 models in BGE-M3's folder layout.

A model folder holds:
- the Hugging Face backbone (config.json + model.safetensors or pytorch_model.bin),
- the tokenizer files (tokenizer.json, tokenizer_config.json, special_tokens_map.json),
- `colbert_linear.pt` and `sparse_linear.pt`: the heads as plain torch state dicts {"weight", "bias"},
- `m3search_model.json` (ours, optional): the `ModelSpec` below. A real BAAI/bge-m3 folder has none, so its
  absence means BGE-M3's conventions: CLS pooling, no prefixes, trained heads.

A folder without the two head files is refused: FlagEmbedding silently random-initialises missing heads, which
makes sparse and multi-vector output noise. Head files are read with torch.load(weights_only=True) (no pickle
execution) and written with torch.save of plain state dicts so FlagEmbedding can read our folders.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Literal

import torch

from m3search.encoder.layout import COLBERT_FILE, SPARSE_FILE, SPEC_FILE, SPEC_FORMAT, SPEC_VERSION  # noqa: F401
from m3search.encoder.model import M3Model
from m3search.encoder.tokenizer import M3Tokenizer
from m3search.errors import ModelError

logger = logging.getLogger(__name__)

BACKBONE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# Position-embedding tables of RoBERTa-family models start after the padding index (XLM-R: 8194 rows -> 8192 tokens).
_ROBERTA_LIKE = ("xlm-roberta", "roberta", "camembert", "xlm-roberta-xl")


@dataclasses.dataclass
class ModelSpec:
    """What m3search needs to know about a model beyond its weights."""

    name: str
    pooling: Literal["cls", "mean"] = "cls"
    query_prefix: str = ""
    passage_prefix: str = ""
    max_positions: int = 8192  # longest input, special tokens included
    heads_trained: bool = True
    format_version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        if self.pooling not in ("cls", "mean"):
            raise ModelError(f"{SPEC_FILE}: pooling must be 'cls' or 'mean', got {self.pooling!r}")
        if not isinstance(self.max_positions, int) or self.max_positions < 3:
            raise ModelError(f"{SPEC_FILE}: max_positions must be an int >= 3, got {self.max_positions!r}")

    def prefix(self, kind: str) -> str:
        return self.query_prefix if kind == "query" else self.passage_prefix

    def to_dict(self) -> dict:
        return {"format": SPEC_FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict, source: str = SPEC_FILE) -> "ModelSpec":
        if d.get("format", SPEC_FORMAT) != SPEC_FORMAT:
            raise ModelError(f"{source}: format {d.get('format')!r} is not {SPEC_FORMAT!r}")
        version = d.get("format_version", SPEC_VERSION)
        if not isinstance(version, int) or version > SPEC_VERSION:
            raise ModelError(
                f"{source}: format_version {version!r} is newer than this m3search reads ({SPEC_VERSION}); "
                "upgrade m3search"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields - {"format"}
        if unknown:
            logger.warning("%s: ignoring unknown fields %s", source, sorted(unknown))
        if "name" not in d:
            raise ModelError(f"{source}: the field 'name' is missing")
        return cls(**{k: v for k, v in d.items() if k in fields})


@dataclasses.dataclass
class LoadedModel:
    model: M3Model
    tokenizer: M3Tokenizer
    spec: ModelSpec


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU (exact); bf16 on CUDA where supported, else fp16."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ModelError(f"device {device!r} is not a torch device name (e.g. 'cpu', 'cuda', 'cuda:1')") from e
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but this torch build sees no CUDA GPU: use device='cpu'")
    return resolved


def backbone_max_positions(config) -> int:
    """Usable input length of a backbone: RoBERTa-family tables reserve padding_idx + 1 leading rows."""
    n = int(config.max_position_embeddings)
    if getattr(config, "model_type", "") in _ROBERTA_LIKE:
        n -= int(getattr(config, "pad_token_id", 1) or 1) + 1
    return n


def check_model_folder(path: Path) -> None:
    """Raise a ModelError naming every missing piece of the BGE-M3 layout."""
    if not path.is_dir():
        raise ModelError(f"model folder {path} does not exist or is not a folder")
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} has no config.json: it is not a Hugging Face model folder in BGE-M3's layout")
    if not any((path / f).is_file() for f in BACKBONE_WEIGHTS):
        raise ModelError(f"{path} has no backbone weights: expected one of {', '.join(BACKBONE_WEIGHTS)}")
    missing = [f for f in (COLBERT_FILE, SPARSE_FILE) if not (path / f).is_file()]
    if missing:
        raise ModelError(
            f"{path} lacks the M3 head file(s) {', '.join(missing)}: without them the sparse and multi-vector "
            "outputs would be random (FlagEmbedding silently random-initialises them; m3search refuses). "
            "Copy colbert_linear.pt and sparse_linear.pt from the BGE-M3 checkpoint the backbone comes from, "
            "or train heads with `m3search train` and save the model with m3search.encoder.checkpoint.save_m3_model"
        )


def _load_head(path: Path, expected_in: int) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds (UnpicklingError, RuntimeError, EOFError)
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ModelError(f"can't read the head file {path} (m3search never runs pickled code; {first}); re-save "
                         "it with torch.save(linear.state_dict())") from None
    if not isinstance(state, dict) or not {"weight", "bias"} <= set(state):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ModelError(f"{path} must be a state dict with 'weight' and 'bias', got {keys}")
    weight = state["weight"]
    if weight.ndim != 2 or weight.shape[1] != expected_in:
        raise ModelError(
            f"{path}: weight has shape {tuple(weight.shape)}, expected (out, {expected_in}) for this backbone's "
            "hidden size; the heads belong to another model"
        )
    return state


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The backbone's tensors from safetensors (preferred) or pytorch_model.bin, sharded or not."""
    from safetensors.torch import load_file

    def load_one(file: Path) -> dict[str, torch.Tensor]:
        try:
            if file.suffix == ".safetensors":
                return load_file(str(file))
            return torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise ModelError(
                f"{file} is a pickle that holds more than tensors, and m3search never runs pickled code "
                f"(torch.load(weights_only=True) refused it: {str(e).splitlines()[0][:200]}); convert the "
                "weights to model.safetensors with a tool you trust, or use a folder that has one"
            ) from None
        except Exception as e:  # torch/safetensors raise many kinds on a damaged file
            raise ModelError(f"can't read the weights file {file} ({type(e).__name__}: {str(e)[:200]}); the "
                             "model folder is damaged: copy it again") from None

    for single, index in (("model.safetensors", "model.safetensors.index.json"), ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (path / single).is_file():
            return load_one(path / single)
        if (path / index).is_file():
            shards = sorted(set(json.loads((path / index).read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(load_one(path / shard))
            return state
    raise ModelError(f"{path} has no backbone weights: expected one of {', '.join(BACKBONE_WEIGHTS)}")


def _restore_buffers(backbone) -> bool:
    """Refill the non-persistent buffers left empty by meta-device construction; False if one is unknown."""
    for module in backbone.modules():
        for name in getattr(module, "_non_persistent_buffers_set", ()):
            buf = module._buffers.get(name)
            if buf is None:
                continue
            if name == "position_ids":
                module._buffers[name] = torch.arange(buf.shape[-1], dtype=buf.dtype).expand(buf.shape).clone()
            elif name == "token_type_ids":
                module._buffers[name] = torch.zeros(buf.shape, dtype=buf.dtype)
            else:
                return False
    return True


def _load_backbone(path: Path):
    """Build the backbone on the meta device and assign the checkpoint's tensors.

    Unlike transformers' from_pretrained this neither re-initialises weights nor shows a progress bar.
    Architectures with buffers we don't know how to rebuild fall back to from_pretrained.
    """
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise ModelError(f"can't read {path / 'config.json'}: {e}") from e
    state = _read_state_dict(path)
    with torch.device("meta"):
        try:
            # SDPA attention: fused kernels on CUDA, and no slower than eager on CPU.
            backbone = AutoModel.from_config(config, attn_implementation="sdpa")
        except (ValueError, ImportError):
            logger.info("%s: backbone has no SDPA attention, using its default", path)
            backbone = AutoModel.from_config(config)
    expected = set(backbone.state_dict())
    prefix = f"{backbone.base_model_prefix}."
    if not expected & set(state) and any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    missing = sorted(expected - set(state))
    if any(not k.startswith("pooler.") for k in missing):
        raise ModelError(
            f"{path}: the backbone weights lack {len(missing)} tensors of a {type(backbone).__name__}, "
            f"e.g. {missing[:3]}; the folder's config.json does not match its weights"
        )
    unexpected = sorted(set(state) - expected)
    if unexpected:
        logger.debug("%s: ignoring %d checkpoint tensors the backbone does not use, e.g. %s", path, len(unexpected), unexpected[:3])
    backbone.to_empty(device="cpu")
    backbone.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False, assign=True)
    if missing:  # no pooler weights saved: we never use the pooler, so drop it rather than keep garbage
        backbone.pooler = None
    if not _restore_buffers(backbone):
        logger.debug("%s: unknown buffers, loading with transformers' from_pretrained", path)
        return AutoModel.from_pretrained(str(path))
    return backbone.eval()


def read_spec_file(path: Path) -> ModelSpec | None:
    """The folder's m3search_model.json, or None when it has none."""
    spec_file = path / SPEC_FILE
    if not spec_file.is_file():
        return None
    try:
        data = json.loads(spec_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"can't read {spec_file}: {e}") from e
    if not isinstance(data, dict):
        raise ModelError(f"{spec_file} must hold a JSON object")
    return ModelSpec.from_dict(data, source=str(spec_file))


def read_spec(path: Path, backbone_config=None, tokenizer: M3Tokenizer | None = None) -> ModelSpec:
    """The folder's m3search_model.json, or BGE-M3's conventions when it has none."""
    spec = read_spec_file(path)
    if spec is not None:
        return spec
    max_positions = 8192
    if backbone_config is not None:
        max_positions = backbone_max_positions(backbone_config)
    if tokenizer is not None:
        max_positions = min(max_positions, tokenizer.model_max_length)
    return ModelSpec(name=path.name, pooling="cls", max_positions=max_positions, heads_trained=True)


def load_m3_model(
    path: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
    native: bool = False,
) -> LoadedModel:
    """Load a BGE-M3-layout folder onto `device` (default: CUDA if available, else CPU) in eval mode.

    dtype defaults to fp32 on CPU and bf16 (or fp16) on CUDA. Raises ModelError for an incomplete folder.
    native=True (inference only) runs BERT-family backbones with `native.py` instead of transformers, with
    the weights mapped from model.safetensors; other architectures still load through transformers.
    """
    path = Path(path).expanduser()
    check_model_folder(path)
    read_spec_file(path)  # a bad spec fails before the (slow) weights load
    device = resolve_device(device)
    dtype = dtype or default_dtype(device)
    tokenizer = M3Tokenizer.from_folder(path)
    backbone = None
    if native:
        from m3search.encoder.native import load_native, read_config

        config = read_config(path)
        backbone = load_native(path, config) if config is not None else None
    if backbone is None:
        backbone = _load_backbone(path)
    spec = read_spec(path, backbone.config, tokenizer)
    hidden = backbone.config.hidden_size
    colbert_state = _load_head(path / COLBERT_FILE, hidden)
    sparse_state = _load_head(path / SPARSE_FILE, hidden)
    if sparse_state["weight"].shape[0] != 1:
        raise ModelError(f"{path / SPARSE_FILE}: weight must have 1 output row, got {sparse_state['weight'].shape[0]}")
    model = M3Model(backbone, pooling=spec.pooling, colbert_dim=colbert_state["weight"].shape[0])
    model.colbert_linear.load_state_dict(colbert_state)
    model.sparse_linear.load_state_dict(sparse_state)
    model.to(device=device, dtype=dtype).eval()
    if spec.max_positions > backbone_max_positions(backbone.config):
        raise ModelError(
            f"{path / SPEC_FILE}: max_positions {spec.max_positions} exceeds the backbone's position table "
            f"({backbone_max_positions(backbone.config)} tokens)"
        )
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec)


def save_m3_model(model: M3Model, tokenizer: M3Tokenizer, path: str | Path, spec: ModelSpec) -> Path:
    """Write the model in BGE-M3's layout plus m3search_model.json, atomically.

    The folder is built beside `path` and renamed into place, so a crash never leaves a half-written model.
    `path` must not exist or be an empty folder (m3search never deletes what it did not create).
    """
    path = Path(path).expanduser()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ModelError(f"{path} already exists and is not an empty folder: save to a new folder or remove it first")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        model.backbone.save_pretrained(str(tmp))
        tokenizer.save(tmp)
        for head, filename in ((model.colbert_linear, COLBERT_FILE), (model.sparse_linear, SPARSE_FILE)):
            state = {k: v.detach().to("cpu").clone() for k, v in head.state_dict().items()}
            torch.save(state, tmp / filename)
        (tmp / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=2, ensure_ascii=False))
        os.replace(tmp, path)
    except BaseException:
        _remove_tree(tmp)  # only our own temporary folder
        raise
    return path


def _remove_tree(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
