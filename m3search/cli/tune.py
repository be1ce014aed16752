"""`m3search tune`: fit an index's fusion weights to judged queries and store them as its defaults."""
from __future__ import annotations

import json

import click

from m3search.cli.common import INDEX_ENV, apply_quiet, max_length_option, model_option, quiet_option, status


@click.command("tune")
@click.argument("index_path", metavar="INDEX", envvar=INDEX_ENV, type=click.Path())
@click.option("--queries", "queries_file", type=click.Path(allow_dash=True), default=None, metavar="FILE",
              help="The judged queries: TSV (qid<TAB>query), JSON lines ({query_id|_id, query|text}); - for stdin.")
@click.option("--qrels", "qrels_file", type=click.Path(), default=None, metavar="FILE",
              help="Relevance judgements: TREC (qid Q0 docid rel) or BEIR TSV. Every judged qid must be a query.")
@click.option("--metric", default="ndcg@10", show_default=True, help="What to maximise: ndcg@K, recall@K or mrr@K.")
@click.option("--folds", type=click.IntRange(min=2), default=2, show_default=True,
              help="Cross-validation folds for the held-out report (each fold measured with weights fitted on the others).")
@click.option("--fusion", type=click.Choice(["weighted", "rrf"]), default="weighted", show_default=True,
              help="Fit weights of the weighted sum, or weights and k of reciprocal-rank fusion.")
@click.option("--depth", type=click.IntRange(min=1), default=100, show_default=True, metavar="N",
              help="Candidates per query from each index, scored exactly on every component.")
@click.option("--grid", type=click.Choice(["coarse", "fine"]), default="coarse", show_default=True,
              help="Weights tried per component: coarse 0, 0.3, 1; fine 0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fold split.")
@click.option("--save/--no-save", default=True, show_default=True,
              help="Store the weights fitted on all queries as the index's search defaults.")
@click.option("--force", is_flag=True, help="Save even when the tuned weights do not beat the untuned default held out.")
@click.option("--reset", is_flag=True, help="Remove the index's stored search defaults (nothing else).")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON on stdout.")
@model_option
@max_length_option
@quiet_option
def tune_command(index_path, queries_file, qrels_file, metric, folds, fusion, depth, grid, seed, save, force, reset, as_json, model,
                 max_length, quiet):
    """Fit the fusion weights of INDEX to judged queries and store them as its search defaults.

    Each query's candidates (top N from the dense and sparse indexes) are scored exactly on every component
    once; a grid of weightings is then searched over those scores. The report gives the held-out quality
    (k-fold cross-validation: no query is measured with weights fitted on it) against the untuned default
    weights. `m3search query` and the Python API then search with the stored weights whenever no --mode or
    --weights is given; `m3search info` shows them.

    \b
    Example:
      m3search tune my-index --queries topics.dev.tsv --qrels qrels.dev.tsv --metric ndcg@10 --folds 2
    """
    from m3search import api
    from m3search.planner.tuning import GRIDS

    apply_quiet(quiet)
    if reset:
        if queries_file or qrels_file:
            raise click.UsageError("--reset removes the stored defaults: give it without --queries/--qrels")
        with api.open_index(index_path, model) as index:
            had = index.search_defaults is not None
            index.set_search_defaults(None)
        status("Removed the stored search defaults." if had else "The index had no stored search defaults.", quiet)
        return
    if not queries_file or not qrels_file:
        raise click.UsageError("give --queries FILE and --qrels FILE (the judged queries to fit the weights to)")
    with api.open_index(index_path, model) as index:
        report = index.tune(queries_file, qrels_file, metric=metric, folds=folds, fusion=fusion, depth=depth,
                            seed=seed, save=save, force=force, weight_grid=GRIDS[grid],
                            max_length=max_length)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(report.table())
