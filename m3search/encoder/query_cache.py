"""The query-encoder cache: what a cold query needs from a model folder, in the form that loads fastest.

A cold `m3search query` must not pay `import torch` (~1.1 s, ~220 MB) or tokenizers' load of a 250k-piece
Unigram (~1-1.4 s, ~300 MB). Both are needed only to read the head files (torch.save state dicts) and to
build the vocabulary, so the first use of a model folder (with torch, by the full encoder) writes this
artifact, and later processes read it with numpy alone:

    <cache>/query-encoders/v<VERSION>-<key>/
        manifest.json      format, version, key, the encoder's identity, spec, special ids, sha256 of the files
        query.safetensors  the vocabulary (UTF-8 pieces in code-point order with their ids, f64 scores by id)
                           and the two heads (fp32)
        pipeline.json      the tokenizer.json without its vocabulary (normalizer and pre-tokenizer, ~0.3 MB)

The backbone is not copied: `numpy_backbone.py` maps the folder's own fp32 model.safetensors.

key = sha256 over the artifact version, the tokenizers version and the folder's files: content sha256 of
every small file (config, spec, tokenizer files and both heads, so new heads give a new artifact) and
(size, mtime) of model.safetensors (hashing 0.5-2 GB at every query would cost more than it saves).
Each file's sha256 is checked at every load; a damaged or foreign artifact is reported (a warning) and the
query goes through torch instead. Written to a temporary folder and renamed into place, never pickle.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m3search.encoder.layout import COLBERT_FILE, SPARSE_FILE, SPEC_FILE, file_sha256, publish_cache_folder
from m3search.types import EncoderIdentity

logger = logging.getLogger(__name__)

FORMAT = "m3search.query-encoder"
VERSION = 2
MANIFEST, TENSORS, PIPELINE = "manifest.json", "query.safetensors", "pipeline.json"
_HASHED = ("config.json", SPEC_FILE, "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
           COLBERT_FILE, SPARSE_FILE)
_WEIGHTS = "model.safetensors"


class CacheUnavailable(Exception):
    """This folder can't use the numpy query path (the message says why); the torch encoder serves it."""


class Unsupported(CacheUnavailable):
    """The folder's layout is not one the numpy path runs (not damage: nothing to report)."""


@dataclass
class QueryArtifact:
    folder: Path
    manifest: dict
    tensors: dict[str, np.ndarray]
    pipeline_json: str

    @property
    def identity(self) -> EncoderIdentity:
        return EncoderIdentity.from_dict(self.manifest["identity"])


def artifact_key(model_folder: Path) -> str:
    """Digest of everything the artifact is derived from (see module doc); raises CacheUnavailable."""
    import tokenizers

    weights = model_folder / _WEIGHTS
    if not weights.is_file() or not (model_folder / "tokenizer.json").is_file():
        raise Unsupported(f"{model_folder} has no {_WEIGHTS} or no tokenizer.json")
    st = weights.stat()
    parts = {"format": FORMAT, "version": VERSION, "tokenizers": tokenizers.__version__,
             _WEIGHTS: [st.st_size, st.st_mtime_ns]}
    for name in _HASHED:
        path = model_folder / name
        parts[name] = file_sha256(path) if path.is_file() else None
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def artifact_path(model_folder: Path, key: str, cache_dir: str | Path | None = None) -> Path:
    from m3search.encoder.default_model import cache_root

    return cache_root(cache_dir) / "query-encoders" / f"v{VERSION}-{key[:32]}"


def load_artifact(model_folder: Path, cache_dir: str | Path | None = None) -> QueryArtifact | None:
    """The folder's artifact, checked; None when it was never built. Raises CacheUnavailable when it
    can't be used (damaged, foreign)."""
    from m3search.encoder.numpy_backbone import map_safetensors

    key = artifact_key(model_folder)
    path = artifact_path(model_folder, key, cache_dir)
    if not (path / MANIFEST).is_file():
        return None
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION or manifest.get("key") != key:
            raise CacheUnavailable(f"{path} is not a version-{VERSION} query-encoder artifact of {model_folder}")
        for name in (TENSORS, PIPELINE):
            if file_sha256(path / name) != manifest["files"][name]:
                raise CacheUnavailable(f"{path / name} is damaged (sha256 differs from its manifest)")
        pipeline_json = (path / PIPELINE).read_text(encoding="utf-8")
        tensors = {k: np.array(v) for k, v in map_safetensors(path / TENSORS).items()}  # small: copy, unmap
    except CacheUnavailable:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CacheUnavailable(f"can't read the query-encoder artifact {path}: {e}") from e
    return QueryArtifact(path, manifest, tensors, pipeline_json)


def build_artifact(model_folder: Path, loaded, cache_dir: str | Path | None = None) -> QueryArtifact:
    """Write the artifact of `loaded` (a checkpoint.LoadedModel of model_folder, on CPU) and return it.

    Raises CacheUnavailable when the folder's tokenizer or weights are not what the numpy path handles."""
    from safetensors.numpy import save_file

    from m3search.encoder.numpy_backbone import load as load_backbone

    key = artifact_key(model_folder)
    config = json.loads((model_folder / "config.json").read_text(encoding="utf-8"))
    if load_backbone(model_folder, config) is None:
        raise CacheUnavailable(f"{model_folder}: the numpy path runs fp32 BERT/XLM-R safetensors backbones only")
    tokenizer, model, spec = loaded.tokenizer, loaded.model, loaded.spec
    data = json.loads(tokenizer.backend.to_str())
    unigram = data.get("model") or {}
    if unigram.get("type") != "Unigram" or unigram.get("byte_fallback") or unigram.get("unk_id") is None:
        raise CacheUnavailable(f"{model_folder}: the numpy path reads Unigram tokenizers without byte fallback")
    pieces = [p for p, _ in unigram["vocab"]]
    if len(set(pieces)) != len(pieces):
        raise CacheUnavailable(f"{model_folder}: the vocabulary repeats a piece")
    order = sorted(range(len(pieces)), key=pieces.__getitem__)  # code-point order, as Python compares str
    encoded = [pieces[i].encode("utf-8") for i in order]
    tensors = {
        "vocab_sorted": np.frombuffer(b"".join(encoded), dtype=np.uint8),
        "vocab_offsets": np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64),
        "vocab_order": np.asarray(order, dtype=np.int64),
        "vocab_scores": np.asarray([s for _, s in unigram["vocab"]], dtype=np.float64),
    }
    for head in ("colbert_linear", "sparse_linear"):
        for part, value in getattr(model, head).state_dict().items():
            tensors[f"{head}.{part}"] = value.detach().to("cpu").float().contiguous().numpy()
    added = [t["content"] for t in data.get("added_tokens") or []]
    pipeline = {**data, "added_tokens": [], "post_processor": None, "decoder": None, "truncation": None,
                "padding": None, "model": {**unigram, "vocab": [["<unk>", 0.0]], "unk_id": 0}}
    identity = EncoderIdentity(
        name=spec.name, dense_dim=int(model.hidden_size), multivec_dim=int(model.colbert_dim),
        vocab_size=int(config["vocab_size"]), tokenizer_hash=tokenizer.sha256, heads_hash=model.heads_hash(),
    )
    manifest = {
        "format": FORMAT, "version": VERSION, "key": key, "source": str(model_folder),
        "identity": identity.to_dict(), "spec": spec.to_dict(), "config": config,
        "special_ids": {"cls": tokenizer.cls_id, "eos": tokenizer.eos_id, "pad": tokenizer.pad_id,
                        "unk": tokenizer.unk_id, "unused": sorted(tokenizer.unused_ids)},
        "unigram_unk_id": int(unigram["unk_id"]), "added_tokens": added,
        "max_piece_chars": max((len(p) for p in pieces), default=1),
    }
    target = artifact_path(model_folder, key, cache_dir)

    def build(tmp: Path) -> None:
        save_file(tensors, str(tmp / TENSORS), metadata={"format": FORMAT})
        (tmp / PIPELINE).write_text(json.dumps(pipeline, ensure_ascii=False), encoding="utf-8")
        manifest["files"] = {name: file_sha256(tmp / name) for name in (TENSORS, PIPELINE)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")

    publish_cache_folder(target, build, MANIFEST)
    artifact = load_artifact(model_folder, cache_dir)
    if artifact is None:
        raise CacheUnavailable(f"{target} vanished right after it was written")
    return artifact
