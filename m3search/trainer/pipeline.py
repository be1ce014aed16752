"""The whole of a training or mining run behind one call each, as `m3search train fit / mine-negatives` use.

    from m3search.trainer import TrainConfig, fit
    fit("pairs.jsonl.gz", model="m3search-small", out_dir="runs/heads", config=TrainConfig(mode="heads"),
        cache_dir="runs/cache")
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from m3search.encoder.checkpoint import LoadedModel, load_m3_model, resolve_device
from m3search.errors import InputError
from m3search.trainer import distributed as D
from m3search.trainer.config import TrainConfig
from m3search.trainer.data import TrainExample, read_examples, write_examples
from m3search.trainer.mining import (
    MiningConfig, PrecomputedDenseEncoder, corpus_of, index_search, mine_from_ranked, mine_with_new_index,
)
from m3search.trainer.state import load_state
from m3search.trainer.state_cache import StateCache, cache_identity, onnx_backbone, open_or_build
from m3search.trainer.trainer import TrainCallback, Trainer, TrainResult
from m3search.types import EncoderIdentity

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "m3search-small"


def resolve_model_path(model: str | Path | None) -> Path:
    """'m3search-small' (or None) -> the converted default folder; anything else is a folder path."""
    if model is None or str(model) == DEFAULT_MODEL:
        from m3search.encoder.default_model import default_model_path

        return default_model_path()
    return Path(model).expanduser()


def load_for_training(model: str | Path | None, device: str | None = None, reset_heads: bool = False) -> LoadedModel:
    """Load in float32 (training keeps fp32 master weights; AMP casts per operation).

    reset_heads: start the sparse and multi-vector heads from m3search-small's deterministic untrained
    heads (identity token projection when the sizes allow, fixed-seed sparse projection), whatever the
    folder holds; this is how the shipped default heads are reproduced.
    """
    loaded = load_m3_model(resolve_model_path(model), device=device, dtype=torch.float32)
    if reset_heads:
        from m3search.encoder.default_model import untrained_heads

        m = loaded.model
        heads = untrained_heads(m.hidden_size)
        with torch.no_grad():
            m.sparse_linear.weight.copy_(torch.from_numpy(heads["sparse_linear.weight"]))
            m.sparse_linear.bias.copy_(torch.from_numpy(heads["sparse_linear.bias"]))
            if m.colbert_dim == m.hidden_size:
                m.colbert_linear.weight.copy_(torch.from_numpy(heads["colbert_linear.weight"]))
                m.colbert_linear.bias.copy_(torch.from_numpy(heads["colbert_linear.bias"]))
            else:
                g = torch.Generator().manual_seed(0)
                bound = m.hidden_size ** -0.5
                m.colbert_linear.weight.copy_(torch.empty_like(m.colbert_linear.weight).uniform_(-bound, bound, generator=g))
                m.colbert_linear.bias.zero_()
        loaded.spec = dataclasses.replace(loaded.spec, heads_trained=False)
    return loaded


def parse_where(items: Sequence[str]) -> dict[str, set[str]]:
    """['task=miracl_like,mkqa_like'] -> {'task': {'miracl_like', 'mkqa_like'}}."""
    out: dict[str, set[str]] = {}
    for item in items:
        field, sep, values = item.partition("=")
        if not sep or not field or not values:
            raise InputError(f"a filter looks like FIELD=VALUE[,VALUE...] (e.g. task=miracl_like), got {item!r}")
        out.setdefault(field.strip(), set()).update(v.strip() for v in values.split(","))
    return out


def select_examples(
    examples: Sequence[TrainExample],
    where: Mapping[str, set[str]] | None = None,
    max_examples: int | None = None,
    seed: int = 0,
) -> list[TrainExample]:
    """Keep examples whose metadata match every filter, then a seeded random subset (in file order)."""
    kept = [ex for ex in examples if all(str(ex.meta.get(f)) in vals for f, vals in (where or {}).items())]
    if not kept:
        raise InputError(f"no training example matches the filters {dict(where or {})}")
    if max_examples is not None and max_examples < len(kept):
        idx = np.sort(np.random.default_rng(seed).choice(len(kept), size=max_examples, replace=False))
        kept = [kept[i] for i in idx]
    return kept


def training_caches(
    cache_dir: str | Path,
    loaded: LoadedModel,
    queries: Sequence[str],
    passages: Sequence[str],
    query_max_length: int,
    passage_max_length: int,
    progress: Callable[[int], None] | None = None,
    model_path: str | Path | None = None,
) -> tuple[StateCache, StateCache]:
    """Open (or build) `cache_dir/queries` and `cache_dir/passages` for the frozen backbone.

    model_path: the model's folder; given, and with the model on CPU, a cache to build runs the backbone as
    inference does (ONNX Runtime layers, `state_cache.onnx_backbone`) where that is installed: the same states
    to ~1e-6, several times faster on CPU."""
    cache_dir = Path(cache_dir)
    model, tok, spec = loaded.model, loaded.tokenizer, loaded.spec
    fast = None
    out = []
    for kind, folder, texts, max_length in (("query", "queries", queries, query_max_length),
                                            ("passage", "passages", passages, passage_max_length)):
        ident = cache_identity(model, tok, spec.name, kind, spec.prefix(kind), max_length, spec.max_positions)
        if (fast is None and model_path is not None and next(model.parameters()).device.type == "cpu"
                and not (cache_dir / folder / "cache.json").is_file()):
            fast = onnx_backbone(model_path) or False
        out.append(open_or_build(cache_dir / folder, texts, model, tok, ident, progress=progress,
                                 backbone=fast or None))
    return out[0], out[1]


def _prepare_caches(cache_dir, loaded, examples, config, progress, model_path=None):
    """Rank 0 builds the caches; the other processes wait, then open them."""
    info = D.current()
    queries = [ex.query for ex in examples]
    passages = corpus_of(examples)
    if info.enabled and not info.is_main:
        torch.distributed.barrier()
    caches = training_caches(cache_dir, loaded, queries, passages, config.query_max_length,
                             config.passage_max_length, progress, model_path=model_path)
    if info.enabled and info.is_main:
        torch.distributed.barrier()
    return caches


def fit(
    data: str | Path,
    model: str | Path | None,
    out_dir: str | Path,
    config: TrainConfig,
    *,
    cache_dir: str | Path | None = None,
    reset_heads: bool = False,
    resume: str | Path | None = None,
    device: str | None = None,
    run_name: str | None = None,
    where: Mapping[str, set[str]] | None = None,
    max_examples: int | None = None,
    callback: TrainCallback | None = None,
    cache_progress: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train on a JSON-lines file; see `TrainConfig` for the knobs and `Trainer` for the output folder.

    resume: a checkpoint folder of an earlier run into the same `out_dir`: the model, optimizer and data
    position are restored from it (its saved config is used; `config` is ignored).
    """
    if resume is not None:
        config = TrainConfig.from_dict(load_state(resume).config, source=f"{resume}/trainer_state")
        model, reset_heads = resume, False
    dev = resolve_device(device)
    if dev.type == "cuda" and device is None and "LOCAL_RANK" in os.environ:
        dev = torch.device(f"cuda:{int(os.environ['LOCAL_RANK'])}")  # one GPU per torchrun process
    started_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    info = D.init_from_env(dev)
    try:
        return _fit(data, model, out_dir, config, dev, cache_dir=cache_dir, reset_heads=reset_heads, resume=resume,
                    run_name=run_name, where=where, max_examples=max_examples, callback=callback,
                    cache_progress=cache_progress)
    finally:
        if info.enabled and started_group:
            torch.distributed.destroy_process_group()  # only the group this call created


def _fit(data, model, out_dir, config, dev, *, cache_dir, reset_heads, resume, run_name, where, max_examples,
         callback, cache_progress) -> TrainResult:
    loaded = load_for_training(model, device=str(dev), reset_heads=reset_heads)
    examples = select_examples(read_examples(data), where, max_examples, config.seed)
    caches = None
    if cache_dir is not None:
        if config.mode != "heads":
            raise InputError("--cache-dir serves heads mode only (full fine-tuning changes the backbone)")
        caches = _prepare_caches(cache_dir, loaded, examples, config, cache_progress,
                                  model_path=None if resume is not None else resolve_model_path(model))
    trainer = Trainer(loaded.model, loaded.tokenizer, loaded.spec, config, examples, out_dir,
                      run_name=run_name, caches=caches, callback=callback, data_source=str(data))
    if caches is None:
        _check_fits_backbone(loaded, examples, config)
    return trainer.fit(resume_from=resume)


def _check_fits_backbone(loaded, examples, config: TrainConfig) -> None:
    """Without a hidden-state cache texts go to the backbone whole (cut at the max lengths): refuse one the
    backbone can't take, with the way to train on it (windows come from the cache)."""
    limit = loaded.spec.max_positions
    for kind, texts, max_length in (("query", [ex.query for ex in examples], config.query_max_length),
                                    ("passage", corpus_of(examples), config.passage_max_length)):
        if max_length <= limit:
            continue
        prefix = loaded.spec.prefix(kind)
        longest = max((len(ids) for ids in loaded.tokenizer.encode([prefix + t for t in texts], max_length)), default=0)
        if longest > limit:
            raise InputError(f"a {kind} of {longest} tokens exceeds the model's {limit} positions (--{kind}-max-length "
                             f"{max_length}): train in heads mode with --cache-dir (it cuts long texts into the "
                             f"encoder's windows) or lower --{kind}-max-length to {limit}")


def mine(
    data: str | Path,
    out: str | Path,
    model: str | Path | None,
    config: MiningConfig,
    *,
    corpus: Sequence[str] | None = None,
    index: str | Path | None = None,
    index_out: str | Path | None = None,
    cache_dir: str | Path | None = None,
    partition_by: str | None = None,
    query_max_length: int = 64,
    passage_max_length: int = 512,
    device: str | None = None,
    where: Mapping[str, set[str]] | None = None,
    max_examples: int | None = None,
    progress: Callable[[int], None] | None = None,
    cache_progress: Callable[[int], None] | None = None,
) -> list[TrainExample]:
    """Mine hard negatives for `data` with m3search's index and write the result to `out`.

    index: an existing m3search index to mine from (its hits' texts become negatives). Otherwise an index
    of `corpus` (default: the data's own passages) is built, in `index_out` if given (kept) or a temporary
    folder. cache_dir: take dense vectors from hidden-state caches (built if missing, reusable by
    `fit --cache-dir` with the same max lengths) instead of running the encoder.
    partition_by: a metadata field (e.g. "lang"); each example's negatives then come only from the
    positives of examples with the same value, one index per value. With multilingual data this keeps a
    query's translations of its own positive (true matches in another language) out of its negatives.
    """
    from m3search.api import open_index

    examples = select_examples(read_examples(data), where, max_examples, config.seed)
    if index is not None:
        if partition_by:
            raise InputError("--partition-by builds its own indexes; it can't be combined with --index")
        with open_index(index, model, device=device) as idx:
            mined = mine_from_ranked(examples, index_search(idx), corpus or corpus_of(examples), config, progress)
    else:
        texts = list(dict.fromkeys(corpus if corpus is not None else corpus_of(examples)))
        queries = [ex.query for ex in examples]
        if cache_dir is not None:
            loaded = load_for_training(model, device=device)
            qc, pc = training_caches(cache_dir, loaded, queries, texts, query_max_length, passage_max_length,
                                     cache_progress, model_path=resolve_model_path(model))
            encoder = PrecomputedDenseEncoder(_identity(loaded), {"query": _dense_lookup(qc), "passage": _dense_lookup(pc)},
                                              reference=_reference(model))
        else:
            encoder = _precompute_dense(model, device, queries, texts, query_max_length, passage_max_length,
                                        cache_progress)
        if partition_by is None:
            mined = mine_with_new_index(examples, encoder, config, texts, index_out, progress)
        else:
            if corpus is not None:
                raise InputError("--partition-by mines among the data's own positives; drop --corpus")
            mined = _mine_partitions(examples, encoder, config, partition_by, index_out, progress)
    write_examples(out, mined)
    logger.info("wrote %d examples with %d mined negatives each to %s", len(mined), config.n_negatives, out)
    return mined


def _mine_partitions(examples, encoder, config: MiningConfig, field: str, index_out, progress) -> list[TrainExample]:
    missing = [i for i, ex in enumerate(examples) if field not in ex.meta]
    if missing:
        raise InputError(f"example {missing[0] + 1} has no field {field!r} to partition the mining by")
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(str(ex.meta[field]), []).append(i)
    mined: list[TrainExample | None] = [None] * len(examples)
    for n, value in enumerate(sorted(groups)):
        members = [examples[i] for i in groups[value]]
        part_config = dataclasses.replace(config, seed=config.seed + n)
        folder = None if index_out is None else Path(index_out) / f"{n:03d}"
        for i, ex in zip(groups[value], mine_with_new_index(members, encoder, part_config, None, folder, progress)):
            mined[i] = ex
    return mined


def _precompute_dense(model, device, queries, passages, query_max_length, passage_max_length, progress,
                      chunk: int = 512) -> PrecomputedDenseEncoder:
    """Encode every query and passage once, keeping only dense vectors, so indexes can be built repeatedly."""
    from m3search.encoder import load_encoder

    encoder = load_encoder(model, device=device)
    vectors = {}
    for kind, texts, max_length in (("query", queries, query_max_length), ("passage", passages, passage_max_length)):
        texts = list(dict.fromkeys(texts))
        table = {}
        for start in range(0, len(texts), chunk):
            part = texts[start : start + chunk]
            table.update(zip(part, encoder.encode(part, kind=kind, max_length=max_length).dense))
            if progress is not None:
                progress(len(part))
        vectors[kind] = table.get
    return PrecomputedDenseEncoder(encoder.identity, vectors, reference=_reference(model))


def _identity(loaded: LoadedModel) -> EncoderIdentity:
    m = loaded.model
    return EncoderIdentity(name=loaded.spec.name, dense_dim=m.hidden_size, multivec_dim=m.colbert_dim,
                           vocab_size=int(m.backbone.config.vocab_size), tokenizer_hash=loaded.tokenizer.sha256,
                           heads_hash=m.heads_hash())


def _dense_lookup(cache: StateCache):
    def lookup(text: str):
        row = cache.row_of.get(text)
        return None if row is None else cache.dense[row]

    return lookup


def _reference(model: str | Path | None) -> str:
    if model is None or str(model) == DEFAULT_MODEL:
        return DEFAULT_MODEL
    return str(Path(model).expanduser().resolve())
