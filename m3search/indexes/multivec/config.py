"""Multi-vector component configuration."""
from __future__ import annotations

import numpy as np

from m3search.errors import ConfigError
from m3search.indexes.multivec.codecs import parse_name

DEFAULTS = {
    # auto | fp16 | sq8 | sq4 | pq<M> | opq<M> | rpq<M> | ropq<M>; see m3search.indexes.multivec.codecs.
    # auto = residual PQ at a byte per 8 dimensions but at least 96 bytes (and at most a byte per 4
    # dimensions): rpq96 at m3search-small's 384-d (99 B/token with the centroid id and the norm byte, 1/7.8
    # of fp16), rpq128 at 1024-d. Residual codes carry the coarse centroid ids the candidate generator's lists
    # are built on, so only residual codecs give `multivec` a searchable index (others are scored
    # exhaustively). rpq48 lost 1.6 points of nDCG@10 on mldr_like's long documents against fp16 (rpq96:
    # 0.5); bench/results/multivec_fidelity_s4.md. Was sq4 (192 B/token at 384-d) before session 3.
    "compression": "auto",
    # coarse centroids of the residual codecs (2-byte ids, at most 65536) = the candidate generator's lists.
    # "auto": scaled with the tokens the codec is trained for, as PLAID does (2^floor(log2(16 sqrt(T)))),
    # capped so k-means keeps >= 48 sample tokens per centroid (4096 at train_tokens=200k); see coarse_k_for.
    "coarse_k": "auto",
    # The codec is trained once per index, on the first segment (or merge) with at least this many tokens;
    # smaller segments before that store fp16 and are re-encoded when merged.
    "min_train_tokens": 50_000,
    "train_tokens": 200_000,  # tokens sampled to train the codec
    # Rescale PQ-reconstructed tokens to unit norm when the inputs were unit-norm (BGE-M3's are): costs no
    # bytes; cuts PQ's MaxSim error 5-8x on bench/synthetic.py tokens (top-10 agreement +0.003-0.05).
    # Residual codecs trained with it store a norm byte per token instead (codecs.py).
    "rescale": True,
    "scorer": "auto",  # auto | lut | decode: lookup tables (PQ family) or decompress + matrix product
    "seed": 1234,
    "threads": None,  # FAISS / numba threads for training, encoding and scoring; None: their defaults
}
SCORERS = ("auto", "lut", "decode")


def resolve_compression(name: str, dim: int) -> str:
    """'auto' -> residual PQ with M = a byte per 8 dimensions, at least AUTO_MIN_BYTES, at most a byte per 4
    dimensions (rpq96 at 384-d, rpq128 at 1024-d), the largest M dividing dim; other names as they are."""
    if name != "auto":
        return name
    most = max(1, min(dim // 4, max(dim // 8, AUTO_MIN_BYTES)))
    m = max(d for d in range(1, most + 1) if dim % d == 0)
    return f"rpq{m}"


AUTO_MIN_BYTES = 96


def validate_config(config: dict) -> dict:
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"multivec config has unknown keys {sorted(unknown)}; valid keys: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **config}
    if out["compression"] != "auto":
        parse_name(out["compression"])
    checks = [("min_train_tokens", 1, None), ("train_tokens", 1, None), ("seed", 0, None)]
    if out["coarse_k"] != "auto":
        checks.append(("coarse_k", 1, 65536))
    for key, low, high in checks:
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
            valid = f"an integer in [{low}, {high}]" if high else f"an integer >= {low}"
            valid += " or 'auto'" if key == "coarse_k" else ""
            raise ConfigError(f"multivec config {key!r} is {v!r}; valid: {valid}")
    if not isinstance(out["rescale"], bool):
        raise ConfigError(f"multivec config 'rescale' is {out['rescale']!r}; valid: true, false")
    t = out["threads"]
    if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
        raise ConfigError(f"multivec config 'threads' is {t!r}; valid: null or an integer >= 1")
    if out["scorer"] not in SCORERS:
        raise ConfigError(f"multivec config 'scorer' is {out['scorer']!r}; valid: {list(SCORERS)}")
    return out


def coarse_k_for(config_value, n_tokens: int, train_tokens: int) -> int:
    """The number of coarse centroids for a codec trained when the index holds n_tokens tokens: PLAID's
    2^floor(log2(16 sqrt(T))), at least 256, at most a power of two leaving >= 48 training tokens per
    centroid (k-means on fewer gives noisy centroids) and at most 65536 (2-byte ids). An integer config
    value is taken as it is."""
    if config_value != "auto":
        return int(config_value)
    want = 2 ** int(np.floor(np.log2(max(1.0, 16 * np.sqrt(max(1, n_tokens))))))
    cap = 2 ** int(np.floor(np.log2(max(1, train_tokens // 48))))
    return int(max(1, min(want, cap, 65536), min(256, cap)))
