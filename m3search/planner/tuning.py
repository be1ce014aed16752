"""Fitting fusion weights to judged queries: pure functions over cached exact component scores.

Each query's candidates are scored exactly on every component once (`ScoreTable`); a weighting is then
judged by fusing those cached scores the way the planner does (`fusion.weighted_sum` /
`fusion.reciprocal_rank`), ranking, and scoring the ranking with `m3search.evaluation.metrics` (trec_eval's
conventions). Nothing is re-encoded or re-searched per weighting, so a grid of hundreds of points costs
seconds. `cross_validate` fits on all folds but one and measures on the one left out, so no reported
held-out number was tuned on the queries it is measured on.

>>> import numpy as np
>>> table = ScoreTable.from_lists(["q1"], [["a", "b"]], {"dense": [[0.9, 0.1]], "sparse": [[0.0, 0.8]]})
>>> qrels = {"q1": {"b": 1}}
>>> measure(table, {"dense": 1.0}, qrels, "ndcg@10")["q1"] < measure(table, {"sparse": 1.0}, qrels, "ndcg@10")["q1"]
True
"""
from __future__ import annotations

import dataclasses
import itertools
import random
from typing import Iterable, Mapping, Sequence

import numpy as np

from m3search.errors import ConfigError, InputError
from m3search.evaluation.metrics import Metric, parse_metric, query_metric, rank
from m3search.planner import fusion as fuse
from m3search.planner.weights import ALL_SIGNALS, TEXT, TEXT_WEIGHT

# the values each component's weight takes on the grid (weighted fusion is scale-free, so proportional
# points are deduplicated); the RRF constants tried when fitting reciprocal-rank fusion. The coarse grid is
# the default: on the dev sets (bench/results/tune.md) it generalised better held out than the fine one in
# 3 of 3 languages (a few dozen judged queries can't pin down 283 weightings).
WEIGHT_GRID = (0.0, 0.3, 1.0)
FINE_WEIGHT_GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
GRIDS = {"coarse": WEIGHT_GRID, "fine": FINE_WEIGHT_GRID}
RRF_K_GRID = (5.0, 10.0, 20.0, 40.0, 60.0, 100.0)
# A grid value is in units of the signal's default fused weight: BM25 scores are ~10-40x the others, so
# the text weight's grid point 1.0 is TEXT_WEIGHT (0.3 -> 0.003). RRF fuses ranks, so it is not scaled there.
WEIGHTED_SCALES = {TEXT: TEXT_WEIGHT}


@dataclasses.dataclass(frozen=True)
class ScoreTable:
    """Candidates of several queries as flat (query, document) pairs with exact component scores.

    q_index[p]: the position in `qids` of pair p's query; docids[p]: its document; scores[c][p]: its exact
    score on component c. Pairs are grouped by query (q_index ascending).
    """

    qids: tuple[str, ...]
    q_index: np.ndarray
    docids: np.ndarray  # object array of str
    scores: Mapping[str, np.ndarray]

    @classmethod
    def from_lists(cls, qids: Sequence[str], docids: Sequence[Sequence[str]],
                   scores: Mapping[str, Sequence[Sequence[float]]]) -> "ScoreTable":
        """From per-query lists: docids[i] and scores[c][i] are query i's candidates."""
        if len(docids) != len(qids) or any(len(s) != len(qids) for s in scores.values()):
            raise ValueError("one list of candidates per query is needed for docids and every component")
        q_index = np.repeat(np.arange(len(qids), dtype=np.int64), [len(d) for d in docids])
        flat = np.array([d for row in docids for d in row] or [], dtype=object)
        cols = {c: np.array([x for row in rows for x in row], dtype=np.float64) for c, rows in scores.items()}
        for c, col in cols.items():
            if len(col) != len(flat):
                raise ValueError(f"component {c!r} has {len(col)} scores for {len(flat)} candidates")
        return cls(tuple(qids), q_index, flat, cols)

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(c for c in ALL_SIGNALS if c in self.scores)

    def subset(self, qids: Iterable[str]) -> "ScoreTable":
        """The rows of some queries only (in this table's order)."""
        wanted = set(qids)
        keep_q = [i for i, q in enumerate(self.qids) if q in wanted]
        renumber = np.full(len(self.qids), -1, dtype=np.int64)
        renumber[keep_q] = np.arange(len(keep_q))
        mask = renumber[self.q_index] >= 0
        return ScoreTable(tuple(self.qids[i] for i in keep_q), renumber[self.q_index[mask]], self.docids[mask],
                          {c: s[mask] for c, s in self.scores.items()})


@dataclasses.dataclass(frozen=True)
class Setting:
    """One point of the search space: fusion weights (zero = off) and, for RRF, its constant."""

    weights: tuple[tuple[str, float], ...]  # (signal, weight) in ALL_SIGNALS order
    fusion: str = "weighted"
    rrf_k: float = fuse.DEFAULT_RRF_K

    @classmethod
    def of(cls, weights: Mapping[str, float], fusion: str = "weighted", rrf_k: float = fuse.DEFAULT_RRF_K) -> "Setting":
        return cls(tuple((c, float(weights[c])) for c in ALL_SIGNALS if c in weights), fusion, float(rrf_k))

    @property
    def weight_dict(self) -> dict[str, float]:
        """The positive weights (what a search is given)."""
        return {c: w for c, w in self.weights if w > 0}

    def describe(self) -> str:
        text = ",".join(f"{c}={w:g}" for c, w in self.weights)
        return text + (f" (rrf, k={self.rrf_k:g})" if self.fusion == "rrf" else "")


def fused_scores(table: ScoreTable, setting: Setting, ranks: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """The fused score of every pair under `setting`, as the planner computes it."""
    weights = setting.weight_dict
    if not weights:
        return np.zeros(len(table.docids))
    missing = [c for c in weights if c not in table.scores]
    if missing:
        raise ConfigError(f"no scores for {', '.join(missing)}: the index has {', '.join(table.components) or 'none'}")
    if setting.fusion == "weighted":
        return fuse.weighted_sum({c: table.scores[c] for c in weights}, weights)
    ranks = ranks if ranks is not None else component_ranks(table)
    return sum(w / (setting.rrf_k + ranks[c]) for c, w in weights.items())


def component_ranks(table: ScoreTable) -> dict[str, np.ndarray]:
    """Each pair's 1-based rank within its query by each component's score (what RRF uses; the same
    ordering as `fusion.reciprocal_rank`, computed once per table since it does not depend on weights)."""
    ids = _tie_ids(table)
    out = {}
    for c, s in table.scores.items():
        order, rank0 = fuse.rank_order(table.q_index, ids, s)
        r = np.empty(len(ids), dtype=np.float64)
        r[order] = rank0 + 1
        out[c] = r
    return out


def _tie_ids(table: ScoreTable) -> np.ndarray:
    """A stable integer per pair for tie-breaking (the planner uses internal ids; position is as stable)."""
    return np.arange(len(table.docids), dtype=np.int64)


def measure(table: ScoreTable, setting: Setting | Mapping[str, float], qrels: Mapping[str, Mapping[str, int]],
            metric: str | Metric, ranks: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
    """{qid: metric value} of the ranking `setting` gives each query of the table (trec_eval's conventions:
    the run holds each query's fused scores, ranked by score then docid)."""
    if not isinstance(setting, Setting):
        setting = Setting.of(setting)
    metric = parse_metric(metric) if isinstance(metric, str) else metric
    fused = fused_scores(table, setting, ranks)
    bounds = np.searchsorted(table.q_index, np.arange(len(table.qids) + 1))
    cut = metric.k
    out = {}
    for i, qid in enumerate(table.qids):
        lo, hi = bounds[i], bounds[i + 1]
        f = fused[lo:hi]
        if cut is not None and hi - lo > cut:
            # only the top of the ranking matters: keep the pairs scoring at least the cut-th best (ties kept)
            threshold = np.partition(f, len(f) - cut)[len(f) - cut]
            sel = np.nonzero(f >= threshold)[0]
        else:
            sel = np.arange(hi - lo)
        run = {table.docids[lo + j]: float(f[j]) for j in sel}
        out[qid] = query_metric(rank(run), qrels.get(qid, {}), metric)
    return out


def mean_metric(table: ScoreTable, setting: Setting, qrels, metric, ranks=None) -> float:
    values = measure(table, setting, qrels, metric, ranks)
    return float(np.mean(list(values.values()))) if values else 0.0


def grid(components: Sequence[str], fusion: str = "weighted", values: Sequence[float] = WEIGHT_GRID,
         rrf_ks: Sequence[float] = RRF_K_GRID) -> list[Setting]:
    """Every weighting of `components` with weights from `values` (not all zero). For weighted fusion a value
    is scaled by WEIGHTED_SCALES (the text signal's 1.0 is TEXT_WEIGHT), and proportional weightings rank alike
    and are kept once (the one with the largest weight 1)."""
    if fusion not in ("weighted", "rrf"):
        raise ConfigError(f"unknown fusion {fusion!r}: choose weighted or rrf")
    if not components:
        raise ConfigError("the index has no component to weigh")
    scales = [WEIGHTED_SCALES.get(c, 1.0) if fusion == "weighted" else 1.0 for c in components]
    seen, out = set(), []
    for combo in itertools.product(values, repeat=len(components)):
        combo = tuple(v * s for v, s in zip(combo, scales))
        top = max(combo)
        if top <= 0:
            continue
        key = tuple(round(v / top, 9) for v in combo) if fusion == "weighted" else combo
        if key in seen:
            continue
        seen.add(key)
        weights = dict(zip(components, (round(v / top, 6) for v in combo) if fusion == "weighted" else combo))
        if fusion == "weighted":
            out.append(Setting.of(weights))
        else:
            out.extend(Setting.of(weights, "rrf", k) for k in rrf_ks)
    return out


@dataclasses.dataclass(frozen=True)
class Fit:
    setting: Setting
    train_metric: float  # mean over the training queries
    points: int  # settings tried


def fit(table: ScoreTable, qrels, metric, settings: Sequence[Setting], prefer: Setting | None = None) -> Fit:
    """The setting with the best mean metric on the table's queries. `prefer` (e.g. the untuned default)
    is tried first and kept on ties, so tuning changes nothing unless it measurably helps."""
    if table.q_index.size == 0 and not table.qids:
        raise InputError("no judged queries to fit on")
    ranks = component_ranks(table) if any(s.fusion == "rrf" for s in settings) else None
    order = ([prefer] if prefer is not None else []) + [s for s in settings if s != prefer]
    best, best_value = None, -1.0
    for s in order:
        value = mean_metric(table, s, qrels, metric, ranks)
        if value > best_value + 1e-12:
            best, best_value = s, value
    assert best is not None
    return Fit(best, best_value, len(order))


def split_folds(qids: Sequence[str], folds: int, seed: int = 0) -> list[list[str]]:
    """Queries shuffled (with `seed`) and dealt into `folds` groups of near-equal size."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"folds must be an integer >= 2 (held-out measurement needs a fold to leave out), got {folds!r}")
    if len(qids) < folds:
        raise InputError(f"{len(qids)} judged queries can't be split into {folds} folds: give at least {folds} "
                         "judged queries or fewer folds")
    order = sorted(qids)
    random.Random(seed).shuffle(order)
    return [order[i::folds] for i in range(folds)]


@dataclasses.dataclass(frozen=True)
class FoldResult:
    held_out: tuple[str, ...]  # the queries measured (none of them used for fitting)
    fit: Fit
    held_out_metric: float  # the fitted setting on the held-out queries
    held_out_baseline: float  # the baseline setting on the same queries


def cross_validate(table: ScoreTable, qrels, metric, settings: Sequence[Setting], baseline: Setting,
                   folds: int = 2, seed: int = 0) -> tuple[list[FoldResult], dict[str, float], dict[str, float]]:
    """k-fold cross-validation. Returns the folds and, per query, the metric of the setting fitted without
    it and of the baseline: their means are held-out estimates of tuned and untuned quality."""
    groups = split_folds(list(table.qids), folds, seed)
    results, tuned, base = [], {}, {}
    for held in groups:
        train = table.subset(q for q in table.qids if q not in set(held))
        test = table.subset(held)
        f = fit(train, qrels, metric, settings, prefer=baseline)
        t = measure(test, f.setting, qrels, metric)
        b = measure(test, baseline, qrels, metric)
        tuned.update(t)
        base.update(b)
        results.append(FoldResult(tuple(test.qids), f, float(np.mean(list(t.values()))),
                                  float(np.mean(list(b.values())))))
    return results, tuned, base
