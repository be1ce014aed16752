"""A deterministic hashing encoder: no model, no training, same output on every machine.

Words are hashed into a fixed vocabulary; each word id has a fixed random vector. It gives all three M3
representations with the right shapes and semantics (lexical overlap drives every score), so it serves
tests of everything downstream of the encoder and smoke runs where no model is wanted. It has no notion
of meaning: never use it for quality numbers.
"""
from __future__ import annotations

import hashlib
import re
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from m3search.encoder.base import Encoder, Kind, check_kind, validate_texts
from m3search.encoder.limits import DEFAULT_MAX_DOC_TOKENS, check_limit, check_token_counts
from m3search.errors import ConfigError
from m3search.types import EncodedBatch, EncoderIdentity

# CJK and similar scripts have no spaces: take their characters one by one.
_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W_]+", re.UNICODE)
_END_ID = 0  # the id of the end-of-text token every text carries, like </s>


class HashingEncoder(Encoder):
    def __init__(self, dim: int = 64, multivec_dim: int | None = None, vocab_size: int = 30000, seed: int = 0,
                 max_doc_tokens: int = DEFAULT_MAX_DOC_TOKENS, sparse_terms: str = "pieces"):
        if sparse_terms != "pieces":
            # its terms are hashed whole words already: there are no pieces to join or to drop
            raise ConfigError(f"the hashing encoder takes sparse_terms='pieces' only, not {sparse_terms!r}: use an "
                              "M3 model for other sparse term schemes")
        self.max_doc_tokens = check_limit(max_doc_tokens)
        self.dim = dim
        self.multivec_dim = multivec_dim or dim
        self.vocab_size = vocab_size
        self.seed = seed
        rng = np.random.default_rng(seed)
        self._word_vecs = rng.standard_normal((vocab_size, dim)).astype(np.float32)
        tok = rng.standard_normal((vocab_size, self.multivec_dim)).astype(np.float32)
        self._token_vecs = tok / np.linalg.norm(tok, axis=1, keepdims=True)
        self._names: dict[int, str] = {_END_ID: "</s>"}

    @property
    def identity(self) -> EncoderIdentity:
        return EncoderIdentity(
            name="hashing",
            dense_dim=self.dim,
            multivec_dim=self.multivec_dim,
            vocab_size=self.vocab_size,
            tokenizer_hash=f"hashing-v1-seed{self.seed}",
        )

    def tokenize(self, text: str) -> list[int]:
        ids = []
        for word in _TOKEN.findall(text.lower()):
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            tid = 1 + h % (self.vocab_size - 1)
            self._names.setdefault(tid, word)
            ids.append(tid)
        return ids

    def encode(
        self, texts: Sequence[str] | str, kind: Kind = "passage", max_length: int | None = None
    ) -> EncodedBatch:
        check_kind(kind)
        texts = validate_texts(texts)
        dense = np.zeros((len(texts), self.dim), dtype=np.float32)
        rows, cols, vals, token_ids, lengths = [], [], [], [], []
        for i, text in enumerate(texts):
            ids = self.tokenize(text)
            if max_length is not None:
                ids = ids[: max(max_length - 2, 0)]
            if len(ids) + 2 > self.max_doc_tokens:
                check_token_counts([0] * i + [len(ids) + 2], self.max_doc_tokens)
            uniq, counts = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
            # weight: 1 + log(tf), scaled by a fixed per-id factor in [0.5, 1.5) (an "idf" stand-in)
            w = (1.0 + np.log(counts)) * (0.5 + (uniq * 2654435761 % 1000) / 1000.0)
            rows.extend([i] * len(uniq))
            cols.extend(uniq.tolist())
            vals.extend(w.tolist())
            v = (w[:, None] * self._word_vecs[uniq]).sum(axis=0) if len(uniq) else self._word_vecs[_END_ID]
            dense[i] = v / np.linalg.norm(v)
            token_ids.extend(ids + [_END_ID])
            lengths.append(len(ids) + 1)
        sparse = sp.csr_matrix(
            (np.asarray(vals, dtype=np.float32), (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64))),
            shape=(len(texts), self.vocab_size),
            dtype=np.float32,
        )
        sparse.sort_indices()
        multivec = self._token_vecs[np.asarray(token_ids, dtype=np.int64)] if token_ids else np.zeros(
            (0, self.multivec_dim), dtype=np.float32
        )
        return EncodedBatch(dense, sparse, np.ascontiguousarray(multivec), np.asarray(lengths, dtype=np.int64))

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        return [self._names.get(int(t), f"#{int(t)}") for t in token_ids]
