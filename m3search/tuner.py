"""Fit an index's fusion weights to judged queries and store them as its search defaults.

    report = m3search.tune(index, "topics.tsv", "qrels.tsv", metric="ndcg@10", folds=2)
    print(report.table())

What it does: encodes the judged queries once, gathers each query's candidates from every source at
`depth` and scores them exactly on every component (`all_scores`), then searches a grid of weightings
over those cached scores (`m3search.planner.tuning`). Quality is reported twice, honestly:
- held out: k-fold cross-validation; each query is measured with weights fitted on the other folds;
- on all queries (the fit that is stored): optimistic by construction, shown for reference only.
The untuned default (the paper's weights) is measured on the same candidates, so the gain is a like-for-
like comparison. With `save=True` the weights fitted on all queries become the index's defaults
(`search_defaults.json`), which `search` / `m3search query` use when given no mode or weights.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from m3search import __version__
from m3search.errors import InputError
from m3search.planner import tuning
from m3search.planner.fusion import DEFAULT_RRF_K
from m3search.planner.weights import ALL_SIGNALS, DEFAULT_MODE, TEXT, TEXT_DEFAULT_MODE, mode_weights

if TYPE_CHECKING:  # pragma: no cover
    from m3search.api import SearchIndex

log = logging.getLogger(__name__)

DEFAULT_METRIC = "ndcg@10"
DEFAULT_FOLDS = 2
DEFAULT_DEPTH = 100
QUERY_BATCH = 256


@dataclasses.dataclass(frozen=True)
class TuneReport:
    """What `tune` found. Metric values are means over queries (0..1)."""

    metric: str
    fusion: str
    n_queries: int  # judged queries used
    n_skipped: int  # queries in the file without judgements (not used)
    folds: tuple[tuning.FoldResult, ...]
    baseline: tuning.Setting  # the untuned default
    held_out: float  # cross-validated: each query measured with weights fitted without it
    held_out_baseline: float  # the baseline on the same queries
    chosen: tuning.Setting  # fitted on all queries: what is stored
    fit_all: float  # the chosen setting on all queries (the data it was fitted on: optimistic)
    baseline_all: float
    modes: dict[str, float]  # untuned single modes and fused modes on all queries (nothing fitted)
    grid_points: int
    depth: int
    saved: Path | None = None
    not_saved: str | None = None  # why nothing was stored

    @property
    def held_out_gain(self) -> float:
        return self.held_out - self.held_out_baseline

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "fusion": self.fusion, "n_queries": self.n_queries, "n_skipped": self.n_skipped,
            "depth": self.depth, "grid_points": self.grid_points,
            "baseline": self.baseline.describe(), "chosen": self.chosen.describe(),
            "chosen_weights": self.chosen.weight_dict, "rrf_k": self.chosen.rrf_k,
            "held_out": self.held_out, "held_out_baseline": self.held_out_baseline,
            "held_out_gain": self.held_out_gain, "fit_all": self.fit_all, "baseline_all": self.baseline_all,
            "modes": dict(self.modes),
            "folds": [{"n_held_out": len(f.held_out), "n_train": self.n_queries - len(f.held_out),
                       "weights": f.fit.setting.describe(), "train": f.fit.train_metric,
                       "held_out": f.held_out_metric, "held_out_baseline": f.held_out_baseline} for f in self.folds],
            "saved": str(self.saved) if self.saved else None, "not_saved": self.not_saved,
        }

    def table(self) -> str:
        """A short human-readable report."""
        m = self.metric
        lines = [
            f"{self.n_queries} judged queries ({self.n_skipped} without judgements skipped), candidates: top {self.depth} "
            f"from each source, scored exactly; {self.grid_points} weightings tried ({self.fusion} fusion)",
            "",
            f"| fold | train queries | held-out queries | fitted weights | {m} train | {m} held out | untuned held out |",
            "|---:|---:|---:|---|---:|---:|---:|",
        ]
        for i, f in enumerate(self.folds, 1):
            lines.append(f"| {i} | {self.n_queries - len(f.held_out)} | {len(f.held_out)} | {f.fit.setting.describe()} | "
                         f"{100 * f.fit.train_metric:.1f} | {100 * f.held_out_metric:.1f} | {100 * f.held_out_baseline:.1f} |")
        lines += [
            "",
            f"held out ({len(self.folds)}-fold cross-validation): tuned {100 * self.held_out:.1f} vs untuned "
            f"{100 * self.held_out_baseline:.1f} ({self.baseline.describe()}): {100 * self.held_out_gain:+.1f}",
            f"stored weights (fitted on all {self.n_queries} queries): {self.chosen.describe()}; on those same queries "
            f"{100 * self.fit_all:.1f} vs untuned {100 * self.baseline_all:.1f} (optimistic: fitted there)",
            "untuned modes on all queries: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in self.modes.items()),
        ]
        if self.saved:
            lines.append(f"saved as the index's search defaults: {self.saved}")
        elif self.not_saved:
            lines.append(f"not saved: {self.not_saved}")
        return "\n".join(lines)


def tune(index: "SearchIndex", queries: Any, qrels: Any, *, metric: str = DEFAULT_METRIC, folds: int = DEFAULT_FOLDS,
         fusion: str = "weighted", depth: int = DEFAULT_DEPTH, save: bool = True, force: bool = False, seed: int = 0,
         weight_grid: Sequence[float] = tuning.WEIGHT_GRID, rrf_k_grid: Sequence[float] = tuning.RRF_K_GRID,
         max_length: int | None = None) -> TuneReport:
    """Fit `index`'s fusion weights to judged queries; see the module docstring.

    queries: a file (TSV, JSON lines: as `m3search query --queries`), {qid: text}, or `Query`s / (qid, text).
    qrels:   a file (TREC `qid Q0 docid rel` or BEIR TSV) or {qid: {docid: rel}}. Every judged qid must be
             among the queries; queries without judgements are skipped (and counted).
    fusion:  'weighted' fits the signals' weights (the text signal's too, on an index with one; its grid is in
             units of its default weight); 'rrf' fits the weights and RRF's k.
    save:    store the weights fitted on all queries as the index's search defaults, but only when the
             held-out quality beats the untuned default's (a fit that does not generalise is not stored)
             unless `force`. `report.saved` is the file written, `report.not_saved` says why not.
    """
    metric_obj = tuning.parse_metric(metric)
    texts, qrels_map, skipped = _judged_queries(queries, qrels)
    components = _signals(index)
    settings = tuning.grid(components, fusion, weight_grid, rrf_k_grid)
    baseline = _baseline(index, components, fusion)
    table = candidate_scores(index, texts, depth=depth, max_length=max_length)
    _check_relevant_indexed(table, qrels_map)

    fold_results, tuned_q, base_q = tuning.cross_validate(table, qrels_map, metric_obj, settings, baseline, folds, seed)
    full = tuning.fit(table, qrels_map, metric_obj, settings, prefer=baseline)
    modes = {m: tuning.mean_metric(table, tuning.Setting.of(w), qrels_map, metric_obj)
             for m, w in _untuned_modes(components).items()}
    report = TuneReport(
        metric=str(metric_obj), fusion=fusion, n_queries=len(texts), n_skipped=skipped, folds=tuple(fold_results),
        baseline=baseline, held_out=float(np.mean(list(tuned_q.values()))),
        held_out_baseline=float(np.mean(list(base_q.values()))), chosen=full.setting, fit_all=full.train_metric,
        baseline_all=tuning.mean_metric(table, baseline, qrels_map, metric_obj), modes=modes,
        grid_points=full.points, depth=depth,
    )
    if not save:
        return dataclasses.replace(report, not_saved="not asked to save (save=False / --no-save)")
    if report.held_out_gain <= 0 and not force:
        return dataclasses.replace(report, not_saved=(
            f"the tuned weights did not beat the untuned default on held-out queries ({100 * report.held_out_gain:+.1f}): "
            "the index's search defaults are unchanged (force=True / --force stores them anyway)"))
    return dataclasses.replace(report, saved=index.set_search_defaults(_defaults(report)))


def candidate_scores(index: "SearchIndex", queries: Mapping[str, str], depth: int = DEFAULT_DEPTH,
                     max_length: int | None = None) -> tuning.ScoreTable:
    """Each query's candidates (top `depth` of every source, unioned) with exact scores on every component
    the index has: one encoder pass and one planner call per batch of queries."""
    weights = {c: 1.0 for c in _signals(index)}
    n_sources = len(weights)  # every signal is a candidate source
    qids, docids, scores = list(queries), [], {c: [] for c in weights}
    for start in range(0, len(qids), QUERY_BATCH):
        chunk = qids[start : start + QUERY_BATCH]
        batch = index.encoder.encode([queries[q] for q in chunk], kind="query", max_length=max_length)
        hits = index.search_encoded(batch, k=max(1, depth * n_sources), weights=weights, depths=depth,
                                    all_scores=True, with_text=False, query_texts=[queries[q] for q in chunk])
        for row in hits:
            docids.append([h.docid for h in row])
            for c in weights:
                scores[c].append([h.scores[c] for h in row])
    return tuning.ScoreTable.from_lists(qids, docids, scores)


def _judged_queries(queries: Any, qrels: Any) -> tuple[dict[str, str], dict[str, dict[str, int]], int]:
    texts = _read_queries(queries)
    judgements = _read_qrels(qrels)
    if not judgements:
        raise InputError(f"the qrels {_name(qrels)} hold no judgements: give a file of 'qid Q0 docid rel' lines")
    unknown = [q for q in judgements if q not in texts]
    if unknown:
        raise InputError(f"the qrels {_name(qrels)} judge query {unknown[0]!r} ({len(unknown)} unknown in all), which is "
                         f"not among the queries {_name(queries)}: give the queries file these qrels belong to")
    judged = {q: t for q, t in texts.items() if q in judgements}
    if not any(r > 0 for q in judged for r in judgements[q].values()):
        raise InputError(f"the qrels {_name(qrels)} mark no document relevant (every rel <= 0): nothing to tune for")
    return judged, judgements, len(texts) - len(judged)


def _read_queries(queries: Any) -> dict[str, str]:
    from m3search.data.queries import Query, read_queries

    if isinstance(queries, (str, Path)):
        return {q.qid: q.text for q in read_queries(queries)}
    if isinstance(queries, Mapping):
        out = {str(k): v for k, v in queries.items()}
    else:
        out = {}
        for item in queries:
            qid, text = (item.qid, item.text) if isinstance(item, Query) else item
            out[str(qid)] = text
    for qid, text in out.items():
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"query {qid!r} is empty or not a string: give it some text")
    if not out:
        raise InputError("no queries given")
    return out


def _read_qrels(qrels: Any) -> dict[str, dict[str, int]]:
    from m3search.evaluation.datasets._files import read_qrels

    if isinstance(qrels, (str, Path)):
        path = Path(qrels).expanduser()
        if not path.is_file():
            raise InputError(f"qrels file {str(qrels)!r} does not exist: give a TREC qrels file (qid Q0 docid rel)")
        return read_qrels(path)
    return {str(q): {str(d): int(r) for d, r in judged.items()} for q, judged in qrels.items()}


def _check_relevant_indexed(table: tuning.ScoreTable, qrels: Mapping[str, Mapping[str, int]]) -> None:
    """Fail early when no relevant document is ever a candidate: the qrels most likely belong to another
    index (its docids are not in this one)."""
    found = set(table.docids.tolist())
    relevant = {d for q in table.qids for d, r in qrels[q].items() if r > 0}
    if relevant and not relevant & found:
        example = sorted(relevant)[0]
        raise InputError(f"no relevant document of the qrels is among any query's candidates (e.g. {example!r}): "
                         "are the qrels for this index? (docids must be the ids the documents were indexed with)")


def _signals(index: "SearchIndex") -> list[str]:
    """The signals the index can score: its M3 components and, when it has one, the text (BM25) component."""
    planner = index.planner
    have = set(planner.readers())
    if getattr(planner.snapshot, TEXT, None) is not None:
        have.add(TEXT)
    return [c for c in ALL_SIGNALS if c in have]


def _default_mode(components: Sequence[str]) -> str:
    return TEXT_DEFAULT_MODE if TEXT in components else DEFAULT_MODE


def _baseline(index: "SearchIndex", components: Sequence[str], fusion: str) -> tuning.Setting:
    """The untuned default on the grid's components: the paper's weights ('all', or 'all+text' on an index
    with a text component) over what the index has."""
    weights = {c: w for c, w in mode_weights(_default_mode(components)).items() if c in components} or {components[0]: 1.0}
    full = {c: weights.get(c, 0.0) for c in components}
    return tuning.Setting.of(full, fusion, DEFAULT_RRF_K)


def _untuned_modes(components: Sequence[str]) -> dict[str, dict[str, float]]:
    out = {c: {c: 1.0} for c in components}
    if len(components) > 1:
        for mode in dict.fromkeys(("all", _default_mode(components))):
            out[mode] = {c: w for c, w in mode_weights(mode).items() if c in components}
    return out


def _defaults(report: TuneReport):
    from m3search.indexes.search_defaults import SearchDefaults

    provenance = {
        "tuned_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "m3search_version": __version__, "metric": report.metric, "n_queries": report.n_queries,
        "folds": len(report.folds), "depth": report.depth, "held_out": round(report.held_out, 6),
        "held_out_baseline": round(report.held_out_baseline, 6), "baseline": report.baseline.describe(),
    }
    return SearchDefaults(weights=report.chosen.weight_dict, fusion=report.chosen.fusion, rrf_k=report.chosen.rrf_k,
                          provenance=provenance)


def _name(source: Any) -> str:
    return repr(str(source)) if isinstance(source, (str, Path)) else "given"
