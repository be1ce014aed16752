"""A cache of corpus encodings, so a re-run of a benchmark does not re-encode.

An entry is keyed by sha256 over: the encoder's full fingerprint (identity plus a hash of its weights, so
new heads re-encode), the corpus content hash, and the encoding options (max_length, passage kind). It is an
`EncodedBatch.save` folder plus `entry.json` (format, version, key inputs, docids), written into a temporary
folder beside it and published with `os.replace`, so a crash never leaves a half entry under the real name.
No pickle anywhere.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from m3search.errors import IndexFormatError
from m3search.types import EncodedBatch

logger = logging.getLogger(__name__)

CACHE_FORMAT = "m3search.encoding_cache"
CACHE_VERSION = 1


def encoder_fingerprint(encoder: Any) -> dict:
    """What determines an encoder's outputs: its identity and, where it has weights, a hash of them.

    Uses `encoder.fingerprint` (a string or a method returning one) when the encoder offers it; otherwise
    hashes the parameters and buffers of any torch module the encoder holds (`model`, `module`), heads
    included; an encoder with neither (the hashing encoder) is identified by its identity alone.
    """
    out = {"identity": encoder.identity.to_dict(), "class": type(encoder).__qualname__}
    fp = getattr(encoder, "fingerprint", None)
    if callable(fp):
        fp = fp()
    if isinstance(fp, str):
        out["weights"] = fp
        return out
    for attr in ("model", "module", "_model"):
        module = getattr(encoder, attr, None)
        if hasattr(module, "state_dict"):
            out["weights"] = _state_dict_hash(module.state_dict())
            break
    # encoding options that change the output (the M3 encoder's windowing, pooling of long texts, quantization)
    for attr in ("spec", "window_tokens", "window_overlap", "long_dense", "mcls_every", "quantize", "max_length"):
        if hasattr(encoder, attr):
            out[attr] = repr(getattr(encoder, attr))
    return out


def _state_dict_hash(state: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name]
        if not hasattr(tensor, "detach"):  # quantized modules keep dtypes and tuples in their state
            h.update(f"{name}:{tensor!r}".encode())
            continue
        tensor = tensor.detach().cpu().contiguous()
        if tensor.is_quantized:
            tensor = tensor.dequantize()
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(tensor.view(-1).view(dtype=_byte_dtype()).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()


def _byte_dtype():
    import torch

    return torch.uint8


def cache_key(fingerprint: dict, corpus_hash: str, options: dict) -> str:
    blob = json.dumps({"encoder": fingerprint, "corpus": corpus_hash, "options": options}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class EncodingCache:
    """Folder of cached encodings: `<root>/v1/<key>/` holding an EncodedBatch and entry.json."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    def _entry(self, key: str) -> Path:
        return self.root / f"v{CACHE_VERSION}" / key

    def get(self, key: str) -> tuple[list[str], EncodedBatch, dict] | None:
        """(docids, encodings, the info stored with them), or None when the key has no entry."""
        folder = self._entry(key)
        meta_file = folder / "entry.json"
        if not meta_file.is_file():
            return None
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as e:
            raise IndexFormatError(f"{meta_file}: corrupt cache entry ({e.msg}); delete the folder {folder}") from None
        if meta.get("format") != CACHE_FORMAT or meta.get("version", 0) > CACHE_VERSION:
            raise IndexFormatError(
                f"{meta_file}: cache entry of format {meta.get('format')!r} version {meta.get('version')}, this "
                f"m3search reads {CACHE_FORMAT!r} up to version {CACHE_VERSION}; upgrade or use another cache dir"
            )
        batch = EncodedBatch.load(folder / "batch", mmap=True)
        docids = meta["docids"]
        if len(docids) != len(batch):
            raise IndexFormatError(f"{folder}: {len(docids)} docids but {len(batch)} encodings; delete this entry")
        return docids, batch, {k: v for k, v in meta.items() if k != "docids"}

    def put(self, key: str, docids: Sequence[str], batch: EncodedBatch, info: dict) -> None:
        folder = self._entry(key)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=folder.parent))
        try:
            batch.save(tmp / "batch")
            meta = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "key": key, **info, "docids": list(docids)}
            (tmp / "entry.json").write_text(json.dumps(meta, ensure_ascii=False))
            try:
                os.replace(tmp, folder)
            except OSError:
                # another run published the same entry first: same key, same content; keep theirs
                if not (folder / "entry.json").is_file():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)  # our own temporary folder only

