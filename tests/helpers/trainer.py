"""Tiny models, tokenizers and examples for the trainer tests (a plain module, not conftest.py, because
`from conftest import ...` picks another folder's conftest when folders run together)."""
from __future__ import annotations

import numpy as np
import torch

from m3search.encoder.checkpoint import ModelSpec, save_m3_model
from m3search.encoder.model import M3Model
from m3search.encoder.tokenizer import M3Tokenizer
from m3search.trainer.data import TrainExample

N_WORDS = 120
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def make_tokenizer() -> M3Tokenizer:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    vocab.update({f"w{i}": len(SPECIALS) + i for i in range(N_WORDS)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return M3Tokenizer(backend, model_max_length=64)


def make_model(seed: int = 0, pooling: str = "cls", dropout: float = 0.0) -> M3Model:
    from transformers import XLMRobertaConfig, XLMRobertaModel

    config = XLMRobertaConfig(
        vocab_size=len(SPECIALS) + N_WORDS, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=66, pad_token_id=1, type_vocab_size=1,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(seed)
    backbone = XLMRobertaModel(config, add_pooling_layer=False)
    return M3Model(backbone, pooling=pooling, colbert_dim=16)


def make_spec(name: str = "tiny") -> ModelSpec:
    return ModelSpec(name=name, pooling="cls", query_prefix="", passage_prefix="", max_positions=64,
                     heads_trained=False)


def make_examples(n: int, n_neg: int = 3, seed: int = 0, max_len: int = 20) -> list[TrainExample]:
    """Queries of 3 words; the positive contains them among other words; negatives share fewer words."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words = rng.choice(N_WORDS, size=3, replace=False)
        q = " ".join(f"w{w}" for w in words)
        length = int(rng.integers(4, max_len))
        pos = " ".join(f"w{w}" for w in [*words, *rng.choice(N_WORDS, size=length, replace=True)])
        negs = tuple(" ".join(f"w{w}" for w in rng.choice(N_WORDS, size=int(rng.integers(4, max_len))))
                     for _ in range(n_neg))
        out.append(TrainExample(q, (pos,), negs, meta={"task": "a" if i % 2 else "b"}))
    return out
