"""`m3search index ENCODED -o INDEX`: index precomputed representations without loading a model."""
from __future__ import annotations

import time

import click

from m3search.cli.common import MODEL_ENV, show_progress, status


def index_encoded_command(sources: list[str], index_path: str, model: str | None, replace: bool,
                          shards: int | None, quiet: bool, sparse_terms: str | None = None) -> None:
    from m3search.encoded import is_encoded
    from m3search.encoding import index_encoded

    if len(sources) != 1 or not is_encoded(sources[0]):
        raise click.UsageError("give one ENCODED folder (made by `m3search encode`), not a mix with corpus files")
    if model is not None:
        from m3search.encoded import EncodedCorpus

        recorded = EncodedCorpus.open(sources[0]).model
        if model != recorded:
            raise click.UsageError(f"{sources[0]} was encoded with {recorded!r} and records its encoder: leave out "
                                   f"--model {model!r} (and {MODEL_ENV})")
    if sparse_terms is not None:
        from m3search.encoded import EncodedCorpus

        recorded = EncodedCorpus.open(sources[0]).identity.sparse_terms
        if sparse_terms != recorded:
            raise click.UsageError(f"{sources[0]} was encoded with --sparse-terms {recorded}: leave out --sparse-terms "
                                   f"{sparse_terms}, or encode the corpus again with it")
    started = time.perf_counter()
    result = index_encoded(sources[0], index_path, shards=shards, replace=replace, progress=show_progress(quiet))
    lines = [f"Indexed {result.added} precomputed documents from {sources[0]} into {index_path} in "
             f"{time.perf_counter() - started:.1f} s."]
    if result.skipped:
        lines.append(f"Skipped {result.skipped} documents already in the index (--replace re-indexes them).")
    if result.replaced:
        lines.append(f"Replaced {result.replaced} documents already in the index.")
    status("\n".join(lines), quiet)
