"""Weight fitting over cached exact scores (m3search.planner.tuning), against plain-Python references:
the fused ranking scored by m3search.evaluation.metrics (which agrees with pytrec_eval) for every point of
the unreduced grid."""
from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from m3search.errors import ConfigError, InputError
from m3search.evaluation.metrics import evaluate
from m3search.planner import fusion as fuse
from m3search.planner import tuning

COMPONENTS = ("dense", "sparse", "multivec")
VALUES = (0.0, 0.3, 0.5, 1.0)


def _table(n_queries=24, n_docs=30, seed=0):
    rng = random.Random(seed)
    qids = [f"q{i}" for i in range(n_queries)]
    docids, scores, qrels = [], {c: [] for c in COMPONENTS}, {}
    for q in qids:
        cands = rng.sample([f"d{j}" for j in range(n_docs)], rng.randrange(5, n_docs))
        docids.append(cands)
        for c in COMPONENTS:
            scores[c].append([round(rng.random(), 3) for _ in cands])
        qrels[q] = {d: rng.choice([0, 1, 2]) for d in rng.sample(cands, 3)}
        qrels[q][f"d{n_docs + 1}"] = 1  # judged, never a candidate
    return tuning.ScoreTable.from_lists(qids, docids, scores), qrels


def _reference(table, weights, qrels, metric, qids=None, fusion="weighted", rrf_k=60.0):
    """The run a search with these weights gives, built in plain Python, scored by metrics.evaluate."""
    run = {}
    for i, q in enumerate(table.qids):
        if qids is not None and q not in qids:
            continue
        rows = np.nonzero(table.q_index == i)[0]
        if fusion == "weighted":
            fused = [sum(w * float(table.scores[c][p]) for c, w in weights.items()) for p in rows]
        else:
            sub = {c: table.scores[c][rows] for c in weights}
            fused = fuse.reciprocal_rank(np.zeros(len(rows), dtype=np.int64), np.arange(len(rows)), sub, weights, rrf_k)
        run[q] = {table.docids[p]: float(f) for p, f in zip(rows, fused)}
    judged = {q: qrels[q] for q in run}
    return evaluate(run, judged, [metric])[metric]


@pytest.mark.parametrize("metric", ["ndcg@10", "recall@5", "mrr@3"])
def test_measure_agrees_with_the_reference(metric):
    table, qrels = _table()
    for weights in ({"dense": 1.0}, {"sparse": 0.3, "multivec": 1.0}, {"dense": 1.0, "sparse": 0.3, "multivec": 1.0}):
        got = tuning.mean_metric(table, tuning.Setting.of(weights), qrels, metric)
        assert got == pytest.approx(_reference(table, weights, qrels, metric), abs=1e-12)


def test_rrf_measure_agrees_with_the_planners_fusion():
    table, qrels = _table(seed=3)
    weights = {"dense": 1.0, "sparse": 0.5, "multivec": 0.3}
    got = tuning.mean_metric(table, tuning.Setting.of(weights, "rrf", 10.0), qrels, "ndcg@10")
    assert got == pytest.approx(_reference(table, weights, qrels, "ndcg@10", fusion="rrf", rrf_k=10.0), abs=1e-12)


@pytest.mark.parametrize("fusion", ["weighted", "rrf"])
def test_fit_is_at_least_as_good_as_every_grid_point(fusion):
    table, qrels = _table(seed=1)
    settings = tuning.grid(COMPONENTS, fusion, VALUES, rrf_ks=(10.0, 60.0))
    best = tuning.fit(table, qrels, "ndcg@10", settings)
    brute = []
    for combo in itertools.product(VALUES, repeat=3):  # the whole grid, proportional points included
        if max(combo) == 0:
            continue
        for k in ((10.0, 60.0) if fusion == "rrf" else (60.0,)):
            brute.append(_reference(table, dict(zip(COMPONENTS, combo)), qrels, "ndcg@10", fusion=fusion, rrf_k=k))
    assert best.train_metric >= max(brute) - 1e-12
    assert best.train_metric == pytest.approx(max(brute), abs=1e-12)
    assert best.train_metric == pytest.approx(
        _reference(table, best.setting.weight_dict, qrels, "ndcg@10", fusion=fusion, rrf_k=best.setting.rrf_k), abs=1e-12)


def test_weighted_grid_drops_proportional_duplicates_only():
    settings = tuning.grid(COMPONENTS, "weighted", VALUES)
    keys = {tuple(round(w, 9) for _, w in s.weights) for s in settings}
    assert len(keys) == len(settings)
    assert all(max(w for _, w in s.weights) == 1.0 for s in settings)
    assert tuning.Setting.of({"dense": 1.0, "sparse": 0.3, "multivec": 1.0}) in tuning.grid(COMPONENTS)


def test_the_preferred_setting_wins_ties():
    table, qrels = _table(seed=2)
    flat = {q: {} for q in qrels}  # nothing relevant: every setting scores 0
    paper = tuning.Setting.of({"dense": 1.0, "sparse": 0.3, "multivec": 1.0})
    assert tuning.fit(table, flat, "ndcg@10", tuning.grid(COMPONENTS), prefer=paper).setting == paper


def test_folds_partition_the_queries():
    qids = [f"q{i}" for i in range(11)]
    folds = tuning.split_folds(qids, 3, seed=5)
    assert sorted(q for f in folds for q in f) == sorted(qids)
    assert [len(f) for f in folds] == [4, 4, 3]
    assert tuning.split_folds(qids, 3, seed=5) == folds
    with pytest.raises(ConfigError, match="folds must be"):
        tuning.split_folds(qids, 1)
    with pytest.raises(InputError, match="can't be split into 20 folds"):
        tuning.split_folds(qids, 20)


def test_cross_validation_fits_without_the_held_out_queries():
    table, qrels = _table(n_queries=30, seed=4)
    settings = tuning.grid(COMPONENTS, "weighted", VALUES)
    baseline = tuning.Setting.of({"dense": 1.0, "sparse": 0.3, "multivec": 1.0})
    folds, tuned, base = tuning.cross_validate(table, qrels, "ndcg@10", settings, baseline, folds=3, seed=0)
    assert sorted(tuned) == sorted(table.qids) == sorted(q for f in folds for q in f.held_out)
    for f in folds:
        train = [q for q in table.qids if q not in f.held_out]
        # fitting saw only the training queries: the same fit on them alone, and on them with the
        # held-out judgements scrambled
        assert f.fit == tuning.fit(table.subset(train), qrels, "ndcg@10", settings, prefer=baseline)
        scrambled = {q: ({"nothing": 1} if q in f.held_out else j) for q, j in qrels.items()}
        assert tuning.fit(table.subset(train), scrambled, "ndcg@10", settings, prefer=baseline) == f.fit
        # the held-out number is measured on the held-out queries only
        assert f.held_out_metric == pytest.approx(
            _reference(table, f.fit.setting.weight_dict, qrels, "ndcg@10", qids=set(f.held_out)), abs=1e-12)
        assert f.held_out_baseline == pytest.approx(
            _reference(table, baseline.weight_dict, qrels, "ndcg@10", qids=set(f.held_out)), abs=1e-12)
