"""`m3search encode`: turn a corpus into precomputed representations (an ENCODED folder), locally or on Ray."""
from __future__ import annotations

import time

import click

from m3search.cli.common import (apply_quiet, max_length_option, model_option, quiet_option, show_progress,
                                 sparse_terms_option, status)
from m3search.encoded import DEFAULT_PART_SIZE


@click.command("encode")
@click.argument("corpus", nargs=-1, required=True, type=click.Path(allow_dash=True, path_type=str))
@click.option("--output", "-o", "out", required=True, metavar="ENCODED",
              help="The folder to write the encoded parts to (resumed if it exists).")
@click.option("--format", "corpus_format", type=click.Choice(["auto", "jsonl", "tsv"]), default="auto",
              show_default=True, help="Corpus format; 'auto' goes by the file suffix, else by the first line.")
@model_option
@click.option("--batch-tokens", type=click.IntRange(min=1), default=None, metavar="TOKENS",
              help="Token budget of one encoder batch (padding included).")
@max_length_option
@click.option("--part-size", type=click.IntRange(min=1), default=DEFAULT_PART_SIZE, show_default=True, metavar="N",
              help="Documents per part: the unit of work, of retries and of resuming.")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Encode on a Ray cluster ('auto' for the one `ray start` made here, or ray://host:10001); "
              "needs `pip install m3search[distributed]`.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --ray: encoder actors (each loads the model once).")
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="With --ray: GPUs per encoder actor (0: CPU).")
@click.option("--cpus-per-worker", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="With --ray: CPUs per encoder actor.")
@sparse_terms_option
@quiet_option
def encode_command(corpus, out, corpus_format, model, batch_tokens, max_length, part_size, ray_address, workers,
                   gpus_per_worker, cpus_per_worker, sparse_terms, quiet):
    """Encode CORPUS (files, folders, or - for stdin) into the folder ENCODED; index it later with
    `m3search index ENCODED -o INDEX` (no model needed then).

    The corpus is cut into parts of --part-size documents in corpus order; each part is written
    atomically, so running the same command again after an interruption encodes only what is missing,
    and a part encoded twice (a retried Ray worker) is stored once.

    \b
    Examples:
      m3search encode corpus.jsonl -o corpus.encoded
      m3search encode corpus.jsonl -o corpus.encoded --ray auto --workers 8 --gpus-per-worker 1
      m3search index corpus.encoded -o my-index --shards 4
    """
    from m3search.data import CorpusReader

    apply_quiet(quiet)
    if ray_address is None and (workers != 1 or gpus_per_worker):
        raise click.UsageError("--workers and --gpus-per-worker go with --ray ADDRESS")
    if list(corpus).count("-") > 1:
        raise click.UsageError("stdin (-) can be read only once")
    docs = CorpusReader(list(corpus), format=corpus_format)
    options = {key: value for key, value in (("batch_tokens", batch_tokens), ("sparse_terms", sparse_terms))
               if value} or None
    started = time.perf_counter()
    if ray_address is not None:
        from m3search.distributed.encode_job import encode_corpus_ray

        result = encode_corpus_ray(docs, out, model, address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker,
                                   cpus_per_worker=cpus_per_worker, part_size=part_size, max_length=max_length,
                                   encoder_options=options, progress=show_progress(quiet))
    else:
        from m3search.encoding import encode_corpus

        result = encode_corpus(docs, out, model, part_size=part_size, max_length=max_length, encoder_options=options,
                               progress=show_progress(quiet))
    elapsed = time.perf_counter() - started
    lines = [f"Encoded {result.documents} documents into {result.parts_written} parts in {out} in {elapsed:.1f} s."]
    if result.parts_skipped:
        lines.append(f"Skipped {result.parts_skipped} parts already encoded (resumed).")
    status("\n".join(lines), quiet)
