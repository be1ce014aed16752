"""Options and helpers shared by the commands."""
from __future__ import annotations

import logging
import sys

import click

from m3search.encoder.terms import SCHEMES

MODEL_ENV = "M3SEARCH_MODEL"
INDEX_ENV = "M3SEARCH_INDEX"

model_option = click.option(
    "--model", "-m", envvar=MODEL_ENV, default=None, metavar="MODEL",
    help=f"Encoder: 'm3search-small' (the bundled default), a folder in BGE-M3's layout, or 'hashing:dim=64' "
    f"(a fast test encoder without meaning). For an existing index, default: the model it was built with. "
    f"[env: {MODEL_ENV}]",
)
sparse_terms_option = click.option(
    "--sparse-terms", type=click.Choice(SCHEMES), default=None,
    help="How lexical weights become sparse terms: 'pieces' (BGE-M3's, the default), without punctuation "
    "pieces ('-nopunct'), or plus whole words ('+words': better on long documents, bench/results/"
    "sparse_words_engine.md). Recorded in the index; its queries use it by themselves. Chosen when an index is created.",
)
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar, no summary; errors only.")
max_length_option = click.option(
    "--max-length", type=click.IntRange(min=2), default=None, metavar="TOKENS",
    help="Truncate each text to this many tokens (default: the model's limit).",
)


def apply_quiet(quiet: bool) -> None:
    if quiet:
        logging.getLogger("m3search").setLevel(logging.ERROR)


def show_progress(quiet: bool) -> bool:
    """Progress bars only for a person watching: not with --quiet, not when stderr is a file or pipe."""
    return not quiet and sys.stderr.isatty()


def status(message: str, quiet: bool) -> None:
    """A summary line on stderr, so stdout stays clean for results."""
    if not quiet:
        click.echo(message, err=True)


def explicit_model(model: str | None, existing_index: bool = True) -> str | None:
    """The --model to use with an existing index: the one given on the command line, but not a
    M3SEARCH_MODEL default, which applies to new indexes only (an index knows its own model)."""
    from click.core import ParameterSource

    ctx = click.get_current_context(silent=True)
    if existing_index and ctx is not None and ctx.get_parameter_source("model") is ParameterSource.ENVIRONMENT:
        return None
    return model
