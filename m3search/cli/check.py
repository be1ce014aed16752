"""`m3search check`: verify every byte of an index and report what is damaged (exit 1 if anything is)."""
from __future__ import annotations

import json

import click

from m3search.cli.common import INDEX_ENV, status


@click.command("check")
@click.argument("index_path", metavar="INDEX", envvar=INDEX_ENV, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="Only the damage, if any.")
def check_command(index_path, as_json, quiet):
    """Verify INDEX: every document record, id map entry and deletion bitmap, every segment file block by
    block, the shared component state, and the structure the readers rely on. Exits 1 and lists each
    damaged file or record if anything is wrong; reads only. [env: M3SEARCH_INDEX]
    """
    from m3search.indexes.check import check_index

    report = check_index(index_path)
    if as_json:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        for problem in report.problems:
            click.echo(f"damaged: {problem}", err=True)
        summary = (f"{report.documents} documents, {report.segments} segments, {report.arrays} arrays "
                   f"({report.array_bytes / 2**20:.1f} MiB) and {report.files} other files checked")
        if report.ok:
            status(f"{index_path}: OK ({summary}).", quiet)
        else:
            click.echo(f"{index_path}: {len(report.problems)} problem(s) found ({summary}); restore the index "
                       "from a copy or rebuild it", err=True)
    if not report.ok:
        raise SystemExit(1)
