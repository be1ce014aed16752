"""The benchmark runner end to end on tiny data with the hashing encoder: both backends, the cache, TREC
runs, the sweep and the report files."""
from __future__ import annotations

import json

import pytest
from helpers.evaluation import write_jsonl

from m3search.encoder import HashingEncoder
from m3search.errors import ConfigError
from m3search.evaluation.report import write_report
from m3search.evaluation.config import BenchConfig
from m3search.evaluation.runner import run_benchmark
from m3search.evaluation.trec import read_run

pytrec_eval = pytest.importorskip("pytrec_eval")

MODES = ["dense", "sparse", "multivec", "dense+sparse", "all", "bm25"]


class CountingEncoder(HashingEncoder):
    """Counts the passages it encodes, to see the cache at work."""

    def __init__(self):
        super().__init__(dim=32, vocab_size=5000, seed=0)
        self.passages = 0

    def encode(self, texts, kind="passage", max_length=None):
        if kind == "passage":
            self.passages += len(texts)
        return super().encode(texts, kind=kind, max_length=max_length)


@pytest.fixture(scope="module")
def engine_report(tiny_miracl, tmp_path_factory):
    out = tmp_path_factory.mktemp("engine")
    config = BenchConfig(task="miracl", data_dir=tiny_miracl, modes=MODES, backend="engine", depth=100,
                         cache_dir=out / "cache", runs_dir=out / "runs", batch_size=7)
    encoder = CountingEncoder()
    report = run_benchmark(config, encoder=encoder)
    return report, out, encoder, config


def test_report_shape(engine_report):
    report, _, _, _ = engine_report
    assert list(report["languages"]) == ["de", "en"]
    for res in report["languages"].values():
        assert list(res["modes"]) == MODES
        assert res["queries_run"] == 6
        for mode in MODES:
            assert set(res["modes"][mode]["metrics"]) == {"ndcg@10", "recall@100", "mrr@10"}
            assert res["modes"][mode]["ms_per_query"] >= 0
    # the queries name a unique word of their passage: lexical modes must find every one
    assert report["average"]["bm25"]["recall@100"] == 1.0
    assert report["average"]["sparse"]["recall@100"] == 1.0
    for corpus in report["corpora"].values():
        assert set(corpus["index_bytes"]) == {"dense", "sparse", "multivec", "bm25"}
        assert corpus["docs"] == 40


def test_engine_agrees_with_exact_reference(engine_report, tiny_miracl):
    report, _, _, _ = engine_report
    # with a candidate depth beyond the corpus size, the planner re-scores every document: the engine must
    # then rank as brute force over the same encodings does
    exact = run_benchmark(BenchConfig(task="miracl", data_dir=tiny_miracl, modes=MODES, backend="exact"),
                          encoder=HashingEncoder(dim=32, vocab_size=5000, seed=0))
    for lang in ("de", "en"):
        for mode in MODES:
            ours = report["languages"][lang]["modes"][mode]["metrics"]
            ref = exact["languages"][lang]["modes"][mode]["metrics"]
            assert ours == pytest.approx(ref, abs=1e-6), (lang, mode)


def test_trec_runs_score_as_reported(engine_report, tiny_miracl):
    report, out, _, _ = engine_report
    from m3search.evaluation.datasets import load_task

    for lang in ("de", "en"):
        qrels = load_task("miracl", tiny_miracl, lang).qrels
        for mode in MODES:
            run = read_run(out / "runs" / lang / f"{mode}.trec")
            ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
            got = report["languages"][lang]["modes"][mode]["metrics"]
            assert got["ndcg@10"] == pytest.approx(sum(v["ndcg_cut_10"] for v in ref.values()) / len(ref), abs=1e-6)
            assert got["recall@100"] == pytest.approx(sum(v["recall_100"] for v in ref.values()) / len(ref), abs=1e-6)


def test_sweep_reproduces_the_fused_modes(engine_report):
    report, _, _, config = engine_report
    for res in report["languages"].values():
        grid = res["sweep"]["grid"]
        assert len(grid) == 15 and res["sweep"]["metric"] == "ndcg@10"
        point = {(p["sparse"], p["multivec"]): p["value"] for p in grid}
        # re-weighting the pool at the paper's weights gives what the 'all' and 'dense+sparse' modes scored
        assert point[(0.3, 1.0)] == pytest.approx(res["modes"]["all"]["metrics"]["ndcg@10"], abs=1e-6)
        assert point[(0.3, 0.0)] == pytest.approx(res["modes"]["dense+sparse"]["metrics"]["ndcg@10"], abs=1e-6)
        assert point[(0.0, 0.0)] == pytest.approx(res["modes"]["dense"]["metrics"]["ndcg@10"], abs=1e-6)


def test_rerun_reads_the_cache(engine_report, tiny_miracl):
    _, out, first, config = engine_report
    assert first.passages == 80  # two corpora of 40
    again = CountingEncoder()
    report = run_benchmark(BenchConfig(task="miracl", data_dir=tiny_miracl, modes=["dense"], backend="engine",
                                       cache_dir=out / "cache"), encoder=again)
    assert again.passages == 0
    assert all(c["encode"]["cached"] for c in report["corpora"].values())
    # another passage length is another cache entry
    longer = CountingEncoder()
    run_benchmark(BenchConfig(task="miracl", data_dir=tiny_miracl, modes=["dense"], backend="exact", max_length=8,
                              cache_dir=out / "cache"), encoder=longer)
    assert longer.passages == 80


def test_report_files(engine_report):
    report, out, _, _ = engine_report
    written = write_report(report, out / "report")
    names = {p.name for p in written}
    assert {"report.json", "report.md", "miracl_ndcg_at_10.png", "miracl_sweep.png", "miracl_cost.png"} <= names
    for p in written:
        if p.suffix == ".png":
            assert p.read_bytes()[:4] == b"\x89PNG"
    md = (out / "report" / "report.md").read_text()
    assert "## nDCG@10" in md and "## Recall@100" in md and "## Weight sweep (dev)" in md
    table = md.split("## nDCG@10")[1].split("\n\n")[1].splitlines()
    assert table[0] == "| Mode | de | en | Avg |"
    assert [row.split(" | ")[0] for row in table[2:]] == ["| Dense", "| Sparse", "| Multi-vec", "| Dense+Sparse", "| All", "| BM25"]
    avg = report["average"]["bm25"]["ndcg@10"]
    assert f"{100 * avg:.1f}" in table[-1].split(" | ")[-1]
    assert json.loads((out / "report" / "report.json").read_text())["languages"].keys() == {"de", "en"}
    assert not list((out / "report").glob(".*.tmp*"))


def test_mkqa_answers_and_shared_corpus(tmp_path):
    write_jsonl(tmp_path / "corpus.jsonl", [
        {"_id": "p1", "title": "Paris", "text": "Paris is the capital of France"},
        {"_id": "p2", "title": "Berlin", "text": "Berlin is the capital of Germany"},
        {"_id": "p3", "title": "Rome", "text": "Rome is the capital of Italy"},
    ])
    write_jsonl(tmp_path / "en.jsonl", [{"id": "1", "question": "capital of France", "answers": ["Paris"]},
                                        {"id": "2", "question": "capital of Italy", "answers": ["Rome"]}])
    write_jsonl(tmp_path / "fr.jsonl", [{"id": "1", "question": "capitale de la France", "answers": ["Paris"]}])
    encoder = CountingEncoder()
    report = run_benchmark(BenchConfig(task="mkqa", data_dir=tmp_path, modes=["sparse", "bm25"], backend="exact",
                                       metrics=None, sweep_sparse=(), k=1), encoder=encoder)
    assert encoder.passages == 3  # one corpus, encoded once for both languages
    assert len(report["corpora"]) == 1
    en = report["languages"]["en"]["modes"]
    assert set(en["bm25"]["metrics"]) == {"answer_recall@100", "answer_recall@20"}
    assert en["bm25"]["metrics"]["answer_recall@20"] == 1.0


def test_config_errors(tiny_miracl):
    with pytest.raises(ConfigError, match="unknown mode 'dense\\+bm25'"):
        BenchConfig(task="miracl", data_dir=tiny_miracl, modes=["dense+bm25"])
    with pytest.raises(ConfigError, match="unknown metric"):
        BenchConfig(task="miracl", data_dir=tiny_miracl, metrics=["map@10"])
    with pytest.raises(ConfigError, match="unknown benchmark"):
        BenchConfig(task="trec", data_dir=tiny_miracl)
