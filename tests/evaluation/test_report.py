"""Report rendering from a hand-made report dict: the paper-style table, the pattern notes, the sweep."""
from __future__ import annotations

from m3search.evaluation.report import metric_table, pattern_notes, sweep_table, to_markdown

VALUES = {  # mode -> (de, ja) nDCG@10
    "dense": (0.50, 0.40), "sparse": (0.30, 0.45), "all": (0.55, 0.44), "bm25": (0.35, 0.20),
}


def make_report() -> dict:
    langs = {}
    for i, lang in enumerate(("de", "ja")):
        grid = [{"dense": 1.0, "sparse": ws, "multivec": 0.0, "value": 0.4 + ws / 10 + i / 100} for ws in (0.0, 0.3, 1.0)]
        langs[lang] = {"queries_run": 10, "query_encode_seconds": 0.1,
                       "modes": {m: {"metrics": {"ndcg@10": v[i]}, "ms_per_query": 1.0 + i} for m, v in VALUES.items()},
                       "sweep": {"metric": "ndcg@10", "grid": grid}}
    avg = {m: {"ndcg@10": sum(v) / 2} for m, v in VALUES.items()}
    return {"task": "miracl", "data_dir": "/d/miracl_like_small", "split": "dev", "model": {"name": "m"},
            "backend": "engine", "k": 100, "depth": 100, "passage_max_length": None,
            "fusion_weights": {"dense": 1, "sparse": 0.3, "multivec": 1}, "modes": list(VALUES),
            "languages": langs, "average": avg,
            "corpora": {"c": {"files": ["/d/de/corpus.jsonl"], "docs": 5, "languages": ["de"],
                              "encode": {"cached": True, "seconds": 2.0, "passages_per_second": 2.5, "tokens": 9},
                              "index_bytes": {"dense": 10**6, "sparse": 2 * 10**6, "multivec": 0, "bm25": 10**6}}}}


def test_metric_table_rows_columns_and_bold():
    lines = metric_table(make_report(), "ndcg@10").splitlines()
    assert lines[0] == "| Mode | de | ja | Avg |"
    assert lines[2] == "| Dense | 50.0 | 40.0 | 45.0 |"
    assert lines[3] == "| Sparse | 30.0 | **45.0** | 37.5 |"
    assert lines[4] == "| All | **55.0** | 44.0 | **49.5** |"
    assert lines[5] == "| BM25 | 35.0 | 20.0 | 27.5 |"


def test_pattern_notes():
    notes = pattern_notes(make_report())
    assert notes[0].startswith("All 49.5 vs best single mode (Dense) 45.0: +4.5 on average, at or above it in 1/2")
    assert notes[0].endswith("the pattern holds.")
    assert "Dense vs BM25: 45.0 vs 27.5 (+17.5)." in notes


def test_sweep_and_markdown():
    table = sweep_table(make_report())
    assert "| 0.3 | 43.5 |" in table and "| 1 | **50.5** |" in table  # averaged over de and ja
    md = to_markdown(make_report())
    assert md.startswith("# MIRACL benchmark: miracl_like_small, split dev, model m")
    assert "| Sparse | sparse | 2.0 | 1.50 |" in md  # index MB and mean ms/query
    assert "| de/corpus.jsonl | de | 5 | 9 | 2.0 (cached) | 2.5 |" in md
