"""The tokenizer of an M3 model: a `tokenizers.Tokenizer` plus the special tokens BGE-M3's post-processing needs.

We use the `tokenizers` library directly (loads in ~1 s; transformers' AutoTokenizer takes ~3.5 s) and add the
special tokens ourselves: a text is `[cls] + content ids + [eos]`, which is exactly what XLM-R's template
post-processor produces, so ids equal what FlagEmbedding's AutoTokenizer gives.

Whitespace: sentencepiece, which XLM-R and BGE-M3 were trained with, strips and collapses whitespace, and
transformers >= 5 rebuilds XLM-R's pre-tokenizer as WhitespaceSplit + Metaspace to do the same. Older
tokenizer.json files (a lone Metaspace) instead emit a stray "▁" token for whitespace-only text and next to
special tokens. `sentencepiece_whitespace` applies the sentencepiece behaviour to such files, so we match
FlagEmbedding on transformers 5 (and sentencepiece) on every input, not only on ordinary text. The folder files we write
(tokenizer.json, tokenizer_config.json, special_tokens_map.json) are the ones AutoTokenizer reads, so a saved
model also loads in transformers and FlagEmbedding.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from m3search.errors import ModelError

logger = logging.getLogger(__name__)

# XLM-RoBERTa's names, the defaults when a folder does not say otherwise.
XLMR_SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "cls_token": "<s>",
    "sep_token": "</s>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "mask_token": "<mask>",
}
# The ones whose lexical weights BGE-M3 drops (FlagEmbedding's `unused_tokens`).
UNUSED_FOR_SPARSE = ("cls_token", "eos_token", "pad_token", "unk_token")
# Above this a tokenizer_config's model_max_length is transformers' "no limit" sentinel.
_NO_LIMIT = 10**8


def sentencepiece_whitespace(backend) -> None:
    """Split on whitespace before Metaspace, as sentencepiece and transformers >= 5 do (see module doc)."""
    from tokenizers import models, pre_tokenizers

    # Cheap type checks first: parsing the JSON of a 250k-entry vocabulary takes ~0.5 s.
    if not isinstance(backend.model, models.Unigram) or not isinstance(backend.pre_tokenizer, pre_tokenizers.Metaspace):
        return
    data = json.loads(backend.to_str())
    pre = data.get("pre_tokenizer") or {}
    if data.get("model", {}).get("type") != "Unigram" or pre.get("type") != "Metaspace":
        return
    prepend = pre.get("prepend_scheme") or ("always" if pre.get("add_prefix_space", True) else "never")
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement=pre.get("replacement", "\u2581"), prepend_scheme=prepend),
        ]
    )


def _token_content(value) -> str | None:
    """special_tokens_map values are either strings or {"content": ...} dicts."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


class M3Tokenizer:
    """Text -> token ids with BGE-M3's special-token conventions.

    backend:          the `tokenizers.Tokenizer` (truncation and padding switched off: we do both ourselves).
    special_tokens:   role -> token string (bos_token, eos_token, cls_token, pad_token, unk_token, ...).
    model_max_length: the longest input, special tokens included, that the model accepts.
    """

    def __init__(self, backend, special_tokens: dict[str, str] | None = None, model_max_length: int = 512):
        backend.no_truncation()
        backend.no_padding()
        sentencepiece_whitespace(backend)
        self.backend = backend
        self.special_tokens = {**XLMR_SPECIAL_TOKENS, **(special_tokens or {})}
        self.model_max_length = int(model_max_length)
        ids = {}
        for role in ("cls_token", "eos_token", "pad_token", "unk_token"):
            token = self.special_tokens[role]
            tid = backend.token_to_id(token)
            if tid is None:
                raise ModelError(
                    f"the tokenizer has no id for its {role} {token!r}: fix special_tokens_map.json / "
                    "tokenizer_config.json in the model folder"
                )
            ids[role] = tid
        self.cls_id, self.eos_id, self.pad_id, self.unk_id = (
            ids["cls_token"], ids["eos_token"], ids["pad_token"], ids["unk_token"],
        )
        self.unused_ids = frozenset(ids[r] for r in UNUSED_FOR_SPARSE)
        self._hash: str | None = None

    # -- loading and saving ----------------------------------------------------------------------

    @classmethod
    def from_file(
        cls, tokenizer_json: str | Path, special_tokens: dict[str, str] | None = None, model_max_length: int = 512
    ) -> "M3Tokenizer":
        from tokenizers import Tokenizer

        try:
            backend = Tokenizer.from_file(str(tokenizer_json))
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON
            raise ModelError(f"can't read the tokenizer {tokenizer_json}: {e}") from e
        return cls(backend, special_tokens, model_max_length)

    @classmethod
    def from_folder(cls, folder: str | Path) -> "M3Tokenizer":
        """Read tokenizer.json (or a sentencepiece model, via transformers) and the special-token files."""
        folder = Path(folder)
        config = _read_json(folder / "tokenizer_config.json")
        special = {k: _token_content(v) for k, v in _read_json(folder / "special_tokens_map.json").items()}
        for role in XLMR_SPECIAL_TOKENS:
            if _token_content(config.get(role)) and not special.get(role):
                special[role] = _token_content(config[role])
        special = {k: v for k, v in special.items() if v}
        max_len = config.get("model_max_length")
        max_len = int(max_len) if isinstance(max_len, (int, float)) and max_len < _NO_LIMIT else _NO_LIMIT
        if (folder / "tokenizer.json").is_file():
            return cls.from_file(folder / "tokenizer.json", special, max_len)
        if (folder / "sentencepiece.bpe.model").is_file():
            # Old-style folder: let transformers convert the sentencepiece model to a fast tokenizer once.
            from transformers import AutoTokenizer

            hf = AutoTokenizer.from_pretrained(str(folder))
            return cls(hf.backend_tokenizer, special, max_len)
        raise ModelError(
            f"{folder} has no tokenizer: expected tokenizer.json (or sentencepiece.bpe.model); copy the "
            "tokenizer files of the model into the folder"
        )

    def save(self, folder: str | Path) -> None:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (AutoTokenizer-readable)."""
        folder = Path(folder)
        self.backend.save(str(folder / "tokenizer.json"))
        config = {
            "tokenizer_class": "XLMRobertaTokenizer",
            "model_max_length": self.model_max_length,
            "clean_up_tokenization_spaces": True,
            **self.special_tokens,
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
        (folder / "special_tokens_map.json").write_text(json.dumps(self.special_tokens, indent=2, ensure_ascii=False))

    # -- identity --------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def canonical_json(self) -> str:
        """The tokenizer's JSON with sorted keys and no truncation/padding settings."""
        data = json.loads(self.backend.to_str())
        data["truncation"] = None
        data["padding"] = None
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @property
    def sha256(self) -> str:
        """sha256 of `canonical_json()`, remembered in the m3search cache under a digest of the serialized
        tokenizer (canonicalising a 250k vocabulary takes ~1 s; the digest ~50 ms), so a cold query skips it."""
        if self._hash is None:
            raw = hashlib.sha256(self.backend.to_str().encode("utf-8")).hexdigest()
            self._hash = _memo_get(raw)
            if self._hash is None:
                self._hash = hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()
                _memo_put(raw, self._hash)
        return self._hash

    # -- encoding --------------------------------------------------------------------------------

    def content_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text without special tokens and without truncation (tokenizers' parallel batch)."""
        if not texts:
            return []
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
        """`[cls] + ids + [eos]` per text, truncated to max_length tokens like transformers' truncation=True."""
        keep = None if max_length is None else max(max_length - 2, 0)
        return [[self.cls_id, *ids[:keep], self.eos_id] for ids in self.content_ids(texts)]

    def pad(self, sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded (input_ids, attention_mask) int64 arrays."""
        width = max((len(s) for s in sequences), default=0)
        input_ids = np.full((len(sequences), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(sequences), width), dtype=np.int64)
        for i, s in enumerate(sequences):
            input_ids[i, : len(s)] = s
            mask[i, : len(s)] = 1
        return input_ids, mask

    def __call__(self, texts: Sequence[str] | str, max_length: int | None = None) -> dict:
        """Padded torch tensors {"input_ids", "attention_mask"}, truncated to max_length (default: the model's)."""
        import torch

        if isinstance(texts, str):
            texts = [texts]
        input_ids, mask = self.pad(self.encode(texts, max_length or self.model_max_length))
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        out = []
        for t in token_ids:
            token = self.backend.id_to_token(int(t))
            out.append(token if token is not None else f"#{int(t)}")
        return out


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"can't read {path}: {e}; fix or remove the file") from e
    if not isinstance(data, dict):
        raise ModelError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


_MEMO_DIR = "tokenizer-hashes"


def _memo_path(raw_digest: str) -> Path:
    from m3search.encoder.default_model import cache_root

    return cache_root() / _MEMO_DIR / f"{raw_digest}.sha256"


def _memo_get(raw_digest: str) -> str | None:
    try:
        value = _memo_path(raw_digest).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return value if len(value) == 64 and all(c in "0123456789abcdef" for c in value) else None


def _memo_put(raw_digest: str, value: str) -> None:
    """Best effort: a read-only cache only costs the next process the slow path."""
    import os
    import tempfile

    try:
        path = _memo_path(raw_digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(value)
        os.replace(tmp, path)
    except OSError:
        pass
