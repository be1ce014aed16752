"""The `m3search` command line: a thin click layer over the Python API.

Each command lives in its own module and is imported only when it runs:
`index` (build or extend an index), `query` (search it), `info` (describe it), `check` (verify every byte of it), and, where installed,
`train` and `bench`.
"""
from __future__ import annotations

import logging

import click

from m3search import __version__
from m3search.cli.lazy import LazyGroup

COMMANDS = {
    "index": "m3search.cli.index:index_command",
    "query": "m3search.cli.query:query_command",
    "info": "m3search.cli.info:info_command",
    "check": "m3search.cli.check:check_command",
    "serve": "m3search.cli.serve:serve_command",
    "tune": "m3search.cli.tune:tune_command",
    "train": "m3search.cli.train:train",
    "bench": "m3search.cli.bench:bench",
    "encode": "m3search.cli.encode:encode_command",
    "shard": "m3search.cli.shard:shard_command",
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="m3search")
@click.option("-v", "--verbose", is_flag=True, help="Log what m3search does (INFO level) on stderr.")
def main(verbose: bool) -> None:
    """m3search: multilingual hybrid search (dense + sparse + multi-vector) on M3 embeddings.

    \b
    Index a corpus, then query it:
      m3search index corpus.jsonl -o my-index
      m3search query my-index "how do I delete a column?"

    Environment: M3SEARCH_MODEL (default --model), M3SEARCH_INDEX (default index path).
    """
    _configure_logging(logging.INFO if verbose else logging.WARNING)


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is at the time (click's test runner swaps it per call)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


def _configure_logging(level: int) -> None:
    """Show m3search's log records on stderr as 'level: message' (the CLI owns logging, the library never does)."""
    logger = logging.getLogger("m3search")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
