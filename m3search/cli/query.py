"""`m3search query`: search an index with one or more queries, or a file of them."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import click

from m3search.cli.common import INDEX_ENV, apply_quiet, explicit_model, max_length_option, model_option, quiet_option, show_progress
from m3search.cli.params import param_option, parse_params
from m3search.errors import ConfigError, InputError
from m3search.indexes.manifest import is_any_index
from m3search.planner import FUSIONS
from m3search.planner.weights import mode_signals

QUERY_BATCH = 256  # queries encoded and searched together


@click.command("query")
@click.argument("args", nargs=-1, metavar="[INDEX] [TEXT]...")
@click.option("--queries", "queries_file", type=click.Path(allow_dash=True), default=None,
              help="A file of queries: TSV (qid<TAB>query, MIRACL topics), JSON lines ({_id|query_id, text|query}, "
              "BEIR/MLDR), or one query per line; - for stdin.")
@click.option("--mode", default=None, metavar="MODE",
              help="Signals to use: dense, sparse, multivec, all, or signals joined by '+' such as dense+sparse "
              "(default: all). Fused modes weigh dense 1, sparse 0.3, multivec 1; a single signal weighs 1.")
@click.option("--weights", default=None, metavar="SPEC",
              help="Any weighting instead of a mode, e.g. 'dense=1,sparse=0.3,multivec=1'.")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Hits per query.")
@click.option("--fusion", type=click.Choice(FUSIONS), default=None,
              help="Weighted sum of exact scores, or reciprocal-rank fusion (rrf). Default: weighted, or the "
              "index's stored search defaults (m3search tune) when no --mode/--weights is given either.")
@click.option("--rrf-k", type=click.FloatRange(min=0, min_open=True), default=None,
              help="The constant of reciprocal-rank fusion (default 60, or the index's stored one).")
@click.option("--depth", type=click.IntRange(min=0), default=None, metavar="N",
              help="Candidates per query from each index (default 100).")
@click.option("--dense-depth", type=click.IntRange(min=0), default=None, metavar="N",
              help="Candidates from the dense index (0: none).")
@click.option("--sparse-depth", type=click.IntRange(min=0), default=None, metavar="N",
              help="Candidates from the sparse index (0: none).")
@click.option("--filter", "filter_json", default=None, metavar="JSON",
              help='Only documents whose metadata passes, e.g. \'{"lang": "de", "year": {"$gte": 2020}}\' '
              "($eq $ne $in $nin $gt $gte $lt $lte $exists, $and $or $not, $id for document ids).")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True,
              help="Skip this many of the best hits (paging).")
@click.option("--fields", default=None, metavar="LIST",
              help="With --json: the hit fields to return, from text,title,metadata,scores (default: scores, "
              "metadata; --text adds title and text).")
@click.option("--drop-pieces", default=None, metavar="KINDS",
              help="Ignore the query's lexical weights on these kinds of pieces: punctuation, single, fragment "
              "(comma-separated; off by default).")
@click.option("--explain", is_flag=True, help="Show the lexical terms each hit shares with the query, with weights.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per query on stdout.")
@click.option("--text", "with_text", is_flag=True, help="With --json: include each hit's title and text.")
@click.option("--trec", "trec_file", type=click.Path(allow_dash=True, dir_okay=False), default=None, metavar="FILE",
              help="Write a TREC run file (qid Q0 docid rank score run); - for stdout.")
@click.option("--run-name", default=None, help="The run column of --trec (default: m3search-<mode>).")
@click.option("--multivec-depth", type=click.IntRange(min=0), default=None, metavar="N",
              help="Candidates from the token-vector candidate generator (0: none).")
@param_option
@model_option
@max_length_option
@quiet_option
def query_command(args, queries_file, mode, weights, k, fusion, rrf_k, depth, dense_depth, sparse_depth, filter_json,
                  offset, fields, drop_pieces, explain, as_json, with_text, trec_file, run_name, model, max_length,
                  quiet, multivec_depth=None, param_specs=()):
    """Search INDEX with TEXT (one or more queries) or a --queries file.

    INDEX may be left out when M3SEARCH_INDEX names it. Results come as a table, as JSON lines (--json),
    or as a TREC run (--trec FILE); every hit carries its fused score and its dense, sparse and
    multi-vector scores, each computed exactly whichever index found the document.

    \b
    Examples:
      m3search query my-index "how do I delete a column?"
      m3search query my-index "Spalte löschen" --mode dense+sparse -k 5 --explain
      m3search query my-index --queries topics.tsv --trec run.txt
      m3search query my-index --queries topics.tsv --json --weights dense=1,sparse=0.5
    """
    from m3search import api
    from m3search.data import Query, read_queries

    apply_quiet(quiet)
    model = explicit_model(model)
    index_path, texts = _split_args(args, queries_file)
    if texts and queries_file:
        raise click.UsageError("give query TEXT or --queries FILE, not both")
    if not texts and not queries_file:
        raise click.UsageError("give a query TEXT, or --queries FILE")
    if mode and weights:
        raise click.UsageError("give --mode or --weights, not both")
    if mode:
        mode_signals(mode)  # the same modes as `m3search bench --modes`; a bad one fails before any work
    if trec_file == "-" and as_json:
        raise click.UsageError("--json and --trec - would both write to stdout: give --trec a file name")
    if with_text and not as_json:
        raise click.UsageError("--text goes with --json (the table always shows the passage)")
    if queries_file == "-" and texts:
        raise click.UsageError("give query TEXT or --queries -, not both")

    queries = read_queries(queries_file) if queries_file else [
        Query(str(i), t) for i, t in enumerate(texts, start=1)
    ]
    empty = next((q.qid for q in queries if not q.text.strip()), None) if not queries_file else None
    if empty is not None:
        raise InputError(f"query {empty} is empty: give it some text")
    depths = _depths(depth, dense_depth, sparse_depth, multivec_depth)
    from m3search.planner.filters import Filter
    from m3search.planner.planner import hit_fields

    if fields is not None and not as_json:
        raise click.UsageError("--fields goes with --json (the table always shows scores and the passage)")
    options = dict(k=k, mode=mode, weights=weights, depths=depths, fusion=fusion, rrf_k=rrf_k, explain=explain,
                   max_length=max_length, filter=Filter.parse(filter_json, where="--filter"), offset=offset,
                   params=parse_params(param_specs), drop_pieces=drop_pieces)
    if fields is not None:
        options["fields"] = sorted(hit_fields(fields))
        with_text = with_text or bool({"text", "title"} & set(options["fields"]))
    table = not as_json and trec_file is None
    # JSON and the table show all three scores; a TREC run needs only the fused one
    options["all_scores"] = as_json or table
    options["with_text"] = table or with_text

    from m3search.cli.output import json_record, trec_lines, write_table

    stdout = sys.stdout
    trec_out = None
    with api.open_index(index_path, model) as index:
        tuned = not (mode or weights or fusion) and index.search_defaults is not None
        run_name = run_name or "m3search-" + _slug(weights or mode or ("tuned" if tuned else index.default_mode))
        try:
            if trec_file is not None:
                trec_out = stdout if trec_file == "-" else open(trec_file, "w", encoding="utf-8")
            batches = [queries[i : i + QUERY_BATCH] for i in range(0, len(queries), QUERY_BATCH)]
            bar = _bar(len(queries), show_progress(quiet) and len(batches) > 1)
            for chunk in batches:
                results = index.search_many([q.text for q in chunk], **options)
                for q, hits in zip(chunk, results):
                    if trec_out is not None:
                        trec_out.writelines(line + "\n" for line in trec_lines(q.qid, hits, run_name))
                    if as_json:
                        click.echo(json_record(q.qid, q.text, hits, text=with_text, start=offset + 1),
                                   file=stdout)
                    if table:
                        write_table(stdout, q.qid, q.text, hits, explain)
                if bar is not None:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
        finally:
            if trec_out is not None and trec_out is not stdout:
                trec_out.close()
    if trec_file not in (None, "-") and not quiet:
        click.echo(f"Wrote a TREC run for {len(queries)} queries to {trec_file}.", err=True)


def _split_args(args: tuple[str, ...], queries_file: str | None) -> tuple[str, list[str]]:
    """[INDEX] [TEXT]...: the first argument is the index unless M3SEARCH_INDEX is set and it is not an index."""
    env_index = os.environ.get(INDEX_ENV)
    if len(args) == 1 and not env_index and not queries_file and not is_any_index(args[0]):
        raise click.UsageError(
            f"{args[0]!r} is not an index folder: give the INDEX to search, then the query TEXT (or set {INDEX_ENV})"
        )
    if args and (not env_index or is_any_index(args[0])):
        return args[0], list(args[1:])
    if env_index:
        return env_index, list(args)
    raise click.UsageError(f"give the INDEX to search (or set {INDEX_ENV})")


def _depths(depth: int | None, dense: int | None, sparse: int | None,
            multivec: int | None = None) -> dict[str, int] | int | None:
    if dense is None and sparse is None and multivec is None:
        return depth
    if depth is not None:
        raise ConfigError("give --depth, or --dense-depth/--sparse-depth/--multivec-depth, not both")
    return {name: d for name, d in (("dense", dense), ("sparse", sparse), ("multivec", multivec)) if d is not None}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9=.+_-]+", "_", text)


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=" queries", desc="searching", dynamic_ncols=True)
