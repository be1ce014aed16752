"""`m3search train`: fine-tune M3 models (unified loss + self-knowledge distillation), mine hard negatives, plot."""
from __future__ import annotations

import json
from pathlib import Path

import click

from m3search.cli.common import apply_quiet, show_progress, status

DATA_HELP = 'JSON lines {"query", "pos": [...], "neg": [...]} (FlagEmbedding\'s format; .gz ok).'


def _ints(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def _bar(enabled: bool, total: int | None, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="it", leave=False)


class _ProgressCallback:
    """tqdm over steps plus one summary line per log record."""

    def __init__(self, enabled: bool, quiet: bool):
        self.enabled, self.quiet, self.bar = enabled, quiet, None

    def on_start(self, total_steps: int, first_step: int) -> None:
        self.bar = _bar(self.enabled, total_steps, "training")
        if self.bar is not None:
            self.bar.update(first_step)

    def on_step(self, step: int, losses: dict) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{losses['total']:.3f}")

    def on_log(self, record: dict) -> None:
        if not self.quiet and self.bar is None:
            terms = " ".join(f"{k}={record[k]:.4f}" for k in ("total", "dense", "lexical", "multivec", "inter", "distill")
                             if k in record)
            click.echo(f"step {record['step']}: {terms}", err=True)

    def on_save(self, path: Path) -> None:
        if self.bar is not None:
            self.bar.write(f"saved {path}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@click.group(name="train")
def train() -> None:
    """Fine-tune M3 models with BGE-M3's unified loss and self-knowledge distillation.

    \b
    Typical run (heads only, frozen backbone, hidden states cached once):
      m3search train mine-negatives --data pairs.jsonl.gz --out mined.jsonl.gz --cache-dir cache/
      m3search train fit --data mined.jsonl.gz --out runs/heads --mode heads --cache-dir cache/
      m3search train plot runs/heads
    Distributed: torchrun --nproc_per_node N -m m3search.cli train fit ...
    """


@train.command("fit")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help=DATA_HELP)
@click.option("--model", "-m", default="m3search-small", show_default=True,
              help="'m3search-small' or a folder in BGE-M3's layout.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: log, checkpoints, final model, heads.safetensors.")
@click.option("--mode", type=click.Choice(["heads", "full"]), default="heads", show_default=True,
              help="heads: frozen backbone, train the sparse and multi-vector heads; full: everything.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A train_config.json to start from; options given here override it.")
@click.option("--resume", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Continue from a checkpoint-* folder of this run (its saved config is used).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Heads mode: cache the frozen backbone's hidden states here (built once, reused).")
@click.option("--reset-heads", is_flag=True,
              help="Start from m3search-small's untrained heads instead of the model's own (how the shipped "
                   "default heads are reproduced).")
@click.option("--name", "run_name", default=None, help="Model name recorded in the saved model (default: --out's name).")
@click.option("--where", multiple=True, metavar="FIELD=V1,V2", help="Keep examples whose metadata field has one of the values.")
@click.option("--max-examples", type=click.IntRange(min=1), default=None, help="A seeded random subset of the data.")
@click.option("--group-size", type=click.IntRange(min=1), default=None, help="1 positive + N-1 negatives [8].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Queries per step and process [32].")
@click.option("--bucket-edges", default=None, help="Length bucket edges in tokens, e.g. 64,128,256,512.")
@click.option("--bucket-batch-sizes", default=None, help="One batch size per bucket (edges + 1 values).")
@click.option("--group-batches-by", default=None, metavar="FIELD", help="Never mix values of this metadata field in a batch.")
@click.option("--query-max-length", type=click.IntRange(min=3), default=None, help="[64]")
@click.option("--passage-max-length", type=click.IntRange(min=3), default=None, help="[512]")
@click.option("--lr", "learning_rate", type=float, default=None, help="Peak learning rate [1e-5].")
@click.option("--weight-decay", type=float, default=None)
@click.option("--warmup-ratio", type=float, default=None)
@click.option("--epochs", type=click.IntRange(min=1), default=None)
@click.option("--max-steps", type=click.IntRange(min=1), default=None)
@click.option("--temperature", type=float, default=None, help="[0.02]")
@click.option("--self-distill/--no-self-distill", default=None, help="Add L' (self-knowledge distillation) [on].")
@click.option("--self-distill-start", "self_distill_start_step", type=click.IntRange(min=0), default=None,
              help="First step with self-distillation [0].")
@click.option("--teacher-scores", is_flag=True, default=None, help="Distil from the data's pos_scores/neg_scores.")
@click.option("--cross-device/--no-cross-device", "negatives_cross_device", default=None,
              help="Dense negatives from all processes when distributed [on].")
@click.option("--sub-batch-size", type=click.IntRange(min=1), default=None,
              help="Full mode: encode this many texts at a time (exact gradients, less memory).")
@click.option("--gradient-checkpointing", is_flag=True, default=None)
@click.option("--amp", type=click.Choice(["none", "bf16", "fp16"]), default=None)
@click.option("--seed", type=int, default=None)
@click.option("--log-every", type=click.IntRange(min=1), default=None)
@click.option("--save-every", type=click.IntRange(min=1), default=None)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA if available).")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def fit_command(data, model, out_dir, mode, config_file, resume, cache_dir, reset_heads, run_name, where,
                max_examples, device, quiet, **options):
    """Train; writes OUT/log.jsonl, OUT/checkpoint-*/, OUT/model/ (BGE-M3 layout), OUT/heads.safetensors."""
    from m3search.trainer.config import TrainConfig
    from m3search.trainer.pipeline import fit, parse_where

    apply_quiet(quiet)
    base = TrainConfig.load(config_file).to_dict() if config_file else {}
    base["mode"] = mode
    for key in ("bucket_edges", "bucket_batch_sizes"):
        if options.get(key) is not None:
            options[key] = _ints(options[key])
    base.update({k: v for k, v in options.items() if v is not None})
    config = TrainConfig.from_dict(base, source="command line")
    progress = show_progress(quiet)
    callback = _ProgressCallback(progress, quiet)
    cache_bar = _bar(progress, None, "caching hidden states")
    try:
        result = fit(data, model, out_dir, config, cache_dir=cache_dir, reset_heads=reset_heads, resume=resume,
                     device=device, run_name=run_name, where=parse_where(where), max_examples=max_examples,
                     callback=callback, cache_progress=cache_bar.update if cache_bar is not None else None)
    finally:
        callback.close()
        if cache_bar is not None:
            cache_bar.close()
    if result.model_dir is not None:
        from m3search.trainer.curves import plot_run

        try:
            plot_run(out_dir)
        except ImportError:
            pass  # matplotlib is optional: `m3search train plot` says how to install it
        status(f"trained {result.steps} steps: model in {result.model_dir}, heads in {result.heads_file}", quiet)


@train.command("mine-negatives")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help=DATA_HELP)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the data with mined 'neg' lists (.gz to compress).")
@click.option("--model", "-m", default="m3search-small", show_default=True, help="Encoder of queries and passages.")
@click.option("--index", "index_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Mine from this existing m3search index instead of indexing the data's passages.")
@click.option("--corpus", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON lines with a 'text' field to index as candidates (default: the data's passages).")
@click.option("--index-out", type=click.Path(file_okay=False, path_type=Path), help="Keep the index built for mining here.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Take dense vectors from hidden-state caches here (built if missing; `fit --cache-dir` reuses them).")
@click.option("--partition-by", default=None, metavar="FIELD",
              help="Mine each example's negatives only among positives of examples with the same value of this "
                   "metadata field (e.g. lang), one index per value.")
@click.option("--negatives", "n_negatives", type=click.IntRange(min=1), default=7, show_default=True)
@click.option("--range", "rank_range", default="2:200", show_default=True,
              help="Sample negatives from these ranks (0-based, end exclusive) after removing the positives.")
@click.option("--where", multiple=True, metavar="FIELD=V1,V2")
@click.option("--max-examples", type=click.IntRange(min=1), default=None)
@click.option("--query-max-length", type=click.IntRange(min=3), default=64, show_default=True)
@click.option("--passage-max-length", type=click.IntRange(min=3), default=512, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None)
@click.option("--quiet", "-q", is_flag=True)
def mine_command(data, out, model, index_dir, corpus, index_out, cache_dir, partition_by, n_negatives, rank_range, where,
                 max_examples, query_max_length, passage_max_length, seed, device, quiet):
    """Mine hard negatives with m3search's own index (dense retrieval, positives excluded)."""
    from m3search.trainer.mining import MiningConfig, parse_range
    from m3search.trainer.pipeline import mine, parse_where

    apply_quiet(quiet)
    start, end = parse_range(rank_range)
    config = MiningConfig(n_negatives=n_negatives, rank_start=start, rank_end=end, seed=seed)
    texts = _corpus_texts(corpus) if corpus else None
    progress = show_progress(quiet)
    bar = _bar(progress, None, "mining")
    cache_bar = _bar(progress, None, "caching hidden states")
    try:
        mined = mine(data, out, model, config, corpus=texts, index=index_dir, index_out=index_out,
                     cache_dir=cache_dir, partition_by=partition_by, query_max_length=query_max_length,
                     passage_max_length=passage_max_length,
                     device=device, where=parse_where(where), max_examples=max_examples,
                     progress=bar.update if bar is not None else None,
                     cache_progress=cache_bar.update if cache_bar is not None else None)
    finally:
        for b in (bar, cache_bar):
            if b is not None:
                b.close()
    status(f"wrote {len(mined)} examples to {out}", quiet)


def _corpus_texts(path: Path) -> list[str]:
    from m3search.trainer.data import _open_text
    from m3search.errors import InputError

    texts = []
    with _open_text(path, "r") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise InputError(f"{path}:{line_no}: field 'text' (a string) is missing")
            title = record.get("title")
            texts.append(f"{title} {record['text']}" if isinstance(title, str) and title else record["text"])
    return texts


@train.command("plot")
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="PNG file (default: RUN/loss_curves.png).")
def plot_command(run, out):
    """Plot every loss term of a run's log.jsonl (RUN is the run folder or the log file)."""
    from m3search.trainer.curves import plot_run

    path = plot_run(run, out)
    click.echo(str(path))
