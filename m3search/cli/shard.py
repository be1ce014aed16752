"""`m3search shard`: split an index into N shards (a sharded index that answers exactly like it)."""
from __future__ import annotations

import time

import click

from m3search.cli.common import apply_quiet, quiet_option, show_progress, status


@click.command("shard")
@click.argument("index_path", metavar="INDEX", type=click.Path(exists=True, file_okay=False))
@click.option("--output", "-o", "out", required=True, metavar="OUT", help="The new sharded index folder.")
@click.option("--shards", type=click.IntRange(min=1), required=True, help="Number of shards.")
@quiet_option
def shard_command(index_path, out, shards, quiet):
    """Copy INDEX into OUT as a sharded index of --shards shards, documents assigned by a stable hash of
    their id. Stored representations are copied (no model, no re-encoding); INDEX is left as it is.

    \b
    Example:
      m3search shard my-index -o my-index-4 --shards 4
      m3search query my-index-4 "how do I delete a column?"
    """
    from m3search.sharding.reshard import shard_index

    apply_quiet(quiet)
    started = time.perf_counter()
    n = shard_index(index_path, out, shards, progress=show_progress(quiet))
    status(f"Copied {n} documents from {index_path} into {shards} shards at {out} in "
           f"{time.perf_counter() - started:.1f} s.", quiet)
