"""TREC run files round-trip, plain or gzip, in trec_eval's order."""
from __future__ import annotations

import pytest

from m3search.errors import InputError
from m3search.evaluation.trec import read_run, write_run


@pytest.mark.parametrize("name", ["run.trec", "run.trec.gz"])
def test_round_trip(tmp_path, name):
    run = {"q1": {"b": 0.1 + 0.2, "a": 0.3, "c": 1e-9}, "q 2".replace(" ", ""): {"x": -1.5}}
    write_run(tmp_path / name, run, tag="t")
    assert read_run(tmp_path / name) == run  # scores exact
    first = (tmp_path / name).read_bytes()
    write_run(tmp_path / name, run, tag="t")
    assert (tmp_path / name).read_bytes() == first  # deterministic, gzip included
    if name.endswith(".trec"):
        lines = first.decode().splitlines()
        assert lines[0] == f"q1 Q0 b 1 {0.1 + 0.2!r} t"  # 0.30000000000000004 ranks above 0.3
        assert [line.split()[3] for line in lines] == ["1", "2", "3", "1"]


def test_bad_line(tmp_path):
    (tmp_path / "r.trec").write_text("q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 0.4\n")
    with pytest.raises(InputError, match=r"r\.trec:2: expected 'qid Q0 docid rank score tag'"):
        read_run(tmp_path / "r.trec")
