"""`SearchIndex.tune` / `m3search.tune` on a real index (hashing encoder): the fit checked by brute force
through real searches, held-out numbers measured on queries not fitted on, stored defaults used by search
and kept across reopen, damage detected, bad inputs refused with one line."""
from __future__ import annotations

import itertools
import json
import random

import pytest

import m3search
from m3search.errors import ConfigError, IndexFormatError, InputError
from m3search.evaluation.metrics import evaluate
from m3search.indexes.search_defaults import DEFAULTS_NAME

MODEL = "hashing:dim=32,vocab_size=5000"
VALUES = (0.0, 0.3, 1.0)
COMPONENTS = ("dense", "sparse", "multivec")
N_DOCS = 40


def _data(seed=7):
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(60)]
    docs = [{"id": f"d{i}", "text": " ".join(rng.choices(vocab, k=10))} for i in range(N_DOCS)]
    queries, qrels = {}, {}
    for j in range(24):
        target = rng.randrange(N_DOCS)
        queries[f"q{j}"] = " ".join(rng.sample(docs[target]["text"].split(), 2) + rng.choices(vocab, k=2))
        qrels[f"q{j}"] = {f"d{target}": 1, f"d{rng.randrange(N_DOCS)}": 2}
    return docs, queries, qrels


@pytest.fixture(scope="module")
def data():
    return _data()


@pytest.fixture
def index(tmp_path, data):
    idx = m3search.build_index(tmp_path / "idx", data[0], model=MODEL)
    yield idx
    idx.close()


def _search_metric(index, queries, qrels, qids, weights, metric="ndcg@10", sources=("dense", "sparse"), k=10):
    """The metric of real searches with `weights` (every document a candidate) on the queries `qids`."""
    qids = sorted(qids)
    hits = index.search_many([queries[q] for q in qids], k=k, weights=weights,
                             depths={s: N_DOCS for s in sources}, with_text=False)
    run = {q: {h.docid: h.score for h in row} for q, row in zip(qids, hits)}
    return evaluate(run, {q: qrels[q] for q in qids}, [metric])[metric]


def test_fit_beats_every_grid_point_on_its_training_fold_and_held_out_is_measured_apart(index, data):
    _, queries, qrels = data
    report = index.tune(queries, qrels, folds=2, weight_grid=VALUES, depth=N_DOCS, save=False)
    assert report.n_queries == 24 and len(report.folds) == 2 and report.saved is None
    held = [set(f.held_out) for f in report.folds]
    assert held[0].isdisjoint(held[1]) and held[0] | held[1] == set(queries)
    for fold in report.folds:
        train = set(queries) - set(fold.held_out)
        brute = [_search_metric(index, queries, qrels, train, dict(zip(COMPONENTS, combo)))
                 for combo in itertools.product(VALUES, repeat=3) if max(combo) > 0]
        assert fold.fit.train_metric >= max(brute) - 1e-9
        assert fold.fit.train_metric == pytest.approx(max(brute), abs=1e-9)
        # the held-out number is a real search with the fold's weights on queries it was not fitted on
        assert fold.held_out_metric == pytest.approx(
            _search_metric(index, queries, qrels, fold.held_out, fold.fit.setting.weight_dict), abs=1e-9)
        assert fold.held_out_baseline == pytest.approx(
            _search_metric(index, queries, qrels, fold.held_out, {"dense": 1, "sparse": 0.3, "multivec": 1}), abs=1e-9)
    expected = sum(f.held_out_metric * len(f.held_out) for f in report.folds) / 24
    assert report.held_out == pytest.approx(expected)
    assert report.modes["dense"] == pytest.approx(_search_metric(index, queries, qrels, queries, {"dense": 1}), abs=1e-9)


def test_stored_defaults_are_used_by_search_and_survive_reopen(tmp_path, index, data):
    _, queries, qrels = data
    assert index.search_defaults is None
    report = m3search.tune(index, queries, qrels, weight_grid=VALUES, force=True)
    assert report.saved == index.path / DEFAULTS_NAME and report.not_saved is None
    stored = index.search_defaults
    assert stored.weights == report.chosen.weight_dict and stored.provenance["n_queries"] == 24
    path = index.path
    index.close()
    with m3search.open_index(path) as again:
        assert again.search_defaults.weights == stored.weights
        for q in list(queries.values())[:5]:
            default = again.search(q, with_text=False)
            explicit = again.search(q, weights=stored.weights, with_text=False)
            assert [(h.docid, h.score) for h in default] == [(h.docid, h.score) for h in explicit]
        paper = again.search(q, mode="all", with_text=False)  # an explicit mode still wins
        assert set(paper[0].scores) == {"dense", "sparse", "multivec"}
        assert again.info()["search_defaults"]["weights"] == stored.weights
        again.set_search_defaults(None)
        assert again.search_defaults is None and not (path / DEFAULTS_NAME).exists()


def test_rrf_defaults_carry_fusion_and_k(index, data):
    _, queries, qrels = data
    report = index.tune(queries, qrels, fusion="rrf", weight_grid=(0.0, 1.0), rrf_k_grid=(5.0, 60.0), force=True)
    stored = index.search_defaults
    assert stored.fusion == "rrf" and stored.rrf_k == report.chosen.rrf_k
    q = queries["q0"]
    assert [h.docid for h in index.search(q)] == [
        h.docid for h in index.search(q, weights=stored.weights, fusion="rrf", rrf_k=stored.rrf_k)]


def test_a_fit_that_does_not_generalise_is_not_stored(index, data):
    docs, _, _ = data
    # each query is a document's own text: the untuned default already ranks it first everywhere, so no
    # weighting can beat it on held-out queries
    queries = {f"q{i}": d["text"] for i, d in enumerate(docs[:12])}
    qrels = {f"q{i}": {d["id"]: 1} for i, d in enumerate(docs[:12])}
    report = index.tune(queries, qrels, weight_grid=VALUES)
    assert report.held_out_baseline == 1.0 and report.held_out_gain <= 0
    assert report.saved is None and "did not beat" in report.not_saved and index.search_defaults is None
    forced = index.tune(queries, qrels, weight_grid=VALUES, force=True)
    assert forced.saved is not None and index.search_defaults is not None


def test_damaged_defaults_are_reported_not_used(index, data):
    _, queries, qrels = data
    index.tune(queries, qrels, weight_grid=VALUES, force=True)
    path = index.path / DEFAULTS_NAME
    obj = json.loads(path.read_text())
    obj["weights"]["dense"] = 5.0  # changed without updating the checksum
    path.write_text(json.dumps(obj))
    index._refresh()
    with pytest.raises(IndexFormatError, match="fails its checksum"):
        index.search("w1 w2")
    path.write_text("{not json")
    index._refresh()
    with pytest.raises(IndexFormatError, match="damaged"):
        index.search("w1 w2")
    assert index.search("w1 w2", mode="dense")  # an explicit mode does not need them


def test_defaults_of_a_newer_version_are_refused(index):
    from m3search.indexes.fsutil import sealed_json
    from m3search.indexes.search_defaults import SearchDefaults, write_search_defaults

    write_search_defaults(index.path, SearchDefaults({"dense": 1.0, "sparse": 0.5}))
    path = index.path / DEFAULTS_NAME
    obj = json.loads(path.read_text())
    obj.pop("sha256")
    obj["version"] = 99
    path.write_text(json.dumps(sealed_json(obj)))
    index._refresh()
    with pytest.raises(IndexFormatError, match="newer than this m3search reads"):
        index.search("w1 w2")
    assert not list(index.path.glob(DEFAULTS_NAME + "*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize("queries, qrels, message", [
    ({"q1": "w1 w2"}, {"q1": {"d1": 1}, "q9": {"d2": 1}}, "judge query 'q9'"),
    ({"q1": "w1 w2"}, {}, "hold no judgements"),
    ({"q1": "w1 w2", "q2": "w3"}, {"q1": {"d1": 0}, "q2": {"d2": 0}}, "no document relevant"),
    ({"q1": "w1 w2", "q2": "w3"}, {"q1": {"x1": 1}, "q2": {"x2": 1}}, "are the qrels for this index"),
    ({"q1": "w1 w2"}, {"q1": {"d1": 1}}, "can't be split into 2 folds"),
])
def test_bad_inputs_are_one_line_errors(index, queries, qrels, message):
    with pytest.raises(InputError, match=message) as err:
        index.tune(queries, qrels, weight_grid=VALUES)
    assert "\n" not in str(err.value)
    assert index.search_defaults is None


def test_queries_without_judgements_are_skipped_and_counted(index, data):
    _, queries, qrels = data
    extra = {**queries, "unjudged": "w5 w6"}
    report = index.tune(extra, qrels, weight_grid=VALUES, save=False)
    assert report.n_queries == 24 and report.n_skipped == 1


def test_drop_pieces_removes_only_the_querys_weights_of_those_pieces(index):
    q = "w1 w2 w3"
    plain = index.search(q, mode="dense+sparse", with_text=False)
    # the hashing encoder's pieces are '#<id>': fragments by the rules of encoder/pieces.py, never punctuation
    same = index.search(q, mode="dense+sparse", with_text=False, drop_pieces="punctuation")
    assert [(h.docid, h.scores) for h in same] == [(h.docid, h.scores) for h in plain]
    none = index.search(q, mode="dense+sparse", all_scores=True, with_text=False, drop_pieces="fragment,single")
    assert all(h.scores["sparse"] == 0 for h in none)
    by_id = {h.docid: h.scores["dense"] for h in index.search(q, mode="dense", k=N_DOCS, with_text=False)}
    assert all(h.scores["dense"] == pytest.approx(by_id[h.docid]) for h in none)
    with pytest.raises(ConfigError, match="unknown kind"):
        index.search(q, drop_pieces="words")


def test_an_index_with_text_tunes_the_text_weight_too(tmp_path, data):
    """The text (BM25) signal is on the grid in units of its default fused weight, the untuned baseline is
    all+text, and the fit is checked by brute force through real searches with those weights."""
    from m3search.planner.weights import TEXT_WEIGHT

    docs, queries, qrels = data
    signals = ("dense", "sparse", "multivec", "text")
    SOURCES = ("dense", "sparse", "text")  # BM25 ties: rank every document, so the cut at 10 is trec_eval's
    with m3search.build_index(tmp_path / "tx", docs, model=MODEL,
                              components={"dense": {}, "sparse": {}, "multivec": {}, "text": {}}) as index:
        report = index.tune(queries, qrels, folds=2, weight_grid=VALUES, depth=N_DOCS, save=False)
        assert report.baseline.weight_dict == {"dense": 1.0, "sparse": 0.3, "multivec": 1.0, "text": TEXT_WEIGHT}
        assert {"all", "all+text", "text"} <= set(report.modes)
        assert report.modes["text"] == pytest.approx(_search_metric(index, queries, qrels, queries, {"text": 1}, sources=SOURCES, k=N_DOCS), abs=1e-9)
        train = set(queries) - set(report.folds[0].held_out)
        scales = {"text": TEXT_WEIGHT}
        brute = [_search_metric(index, queries, qrels, train, {s: v * scales.get(s, 1.0) for s, v in zip(signals, combo)},
                                sources=SOURCES, k=N_DOCS)
                 for combo in itertools.product(VALUES, repeat=4) if max(combo) > 0]
        assert report.folds[0].fit.train_metric == pytest.approx(max(brute), abs=1e-9)
        assert report.modes["all+text"] == pytest.approx(report.baseline_all, abs=1e-9)
