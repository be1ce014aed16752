from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from m3search.errors import InputError
from m3search.trainer.data import TrainExample, check_for_training, read_examples, sample_group, write_examples


def write_lines(path, lines):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


def test_reads_flagembedding_format_with_scores_and_metadata(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    write_lines(path, [
        {"query": "q1", "pos": ["p1"], "neg": ["n1", "n2"], "pos_scores": [0.9], "neg_scores": [0.1, 0.2], "lang": "de"},
        "",
        {"query": "q2", "pos": ["p2", "p3"]},
    ])
    a, b = read_examples(path)
    assert a == TrainExample("q1", ("p1",), ("n1", "n2"), (0.9,), (0.1, 0.2))
    assert a.meta == {"lang": "de"} and a.has_teacher_scores
    assert b.neg == () and not b.has_teacher_scores
    out = tmp_path / "round.jsonl"
    write_examples(out, [a, b])
    assert read_examples(out) == [a, b]


@pytest.mark.parametrize("record, needle", [
    ({"query": "q", "neg": []}, "bad.jsonl:2: field 'pos' is missing"),
    ({"query": "q", "pos": []}, "field 'pos' is empty"),
    ({"query": 3, "pos": ["p"]}, "field 'query' must be a string"),
    ({"query": "q", "pos": ["p"], "neg": "n"}, "field 'neg' must be a list of strings"),
    ({"query": "q", "pos": ["p"], "pos_scores": [1, 2]}, "'pos_scores' has 2 scores but 'pos' has 1"),
    ({"query": "q", "pos": ["p"], "pos_scores": ["x"]}, "'pos_scores' must be a list of finite numbers"),
])
def test_errors_name_file_line_and_field(tmp_path, record, needle):
    path = tmp_path / "bad.jsonl"
    write_lines(path, [{"query": "fine", "pos": ["p"]}, record])
    with pytest.raises(InputError) as e:
        read_examples(path)
    assert str(path) in str(e.value) and needle in str(e.value)


def test_invalid_json_names_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    write_lines(path, ['{"query": "q", "pos": ["p"]}', '{"query": '])
    with pytest.raises(InputError, match=r"bad.jsonl:2: not valid JSON"):
        read_examples(path)


def test_training_check_asks_for_mining_when_negatives_are_missing():
    with pytest.raises(InputError, match="mine-negatives"):
        check_for_training([TrainExample("q", ("p",))], n_negatives=3, teacher_scores=False, source="d.jsonl")
    check_for_training([TrainExample("q", ("p",))], n_negatives=0, teacher_scores=False, source="d.jsonl")
    with pytest.raises(InputError, match="pos_scores"):
        check_for_training([TrainExample("q", ("p",), ("n",))], 1, teacher_scores=True, source="d.jsonl")


def test_sample_group_positive_first_distinct_negatives_and_aligned_scores():
    ex = TrainExample("q", ("p0", "p1"), ("n0", "n1", "n2", "n3"), (1.0, 2.0), (0.0, 0.1, 0.2, 0.3))
    seen_pos = set()
    for seed in range(20):
        g = sample_group(ex, 3, np.random.default_rng(seed), teacher_scores=True)
        assert g.passages[0] in ex.pos and len(set(g.passages[1:])) == 3
        seen_pos.add(g.passages[0])
        for text, score in zip(g.passages, g.teacher_scores):
            idx = int(text[1:])
            assert score == (ex.pos_scores if text[0] == "p" else ex.neg_scores)[idx]
    assert seen_pos == {"p0", "p1"}


def test_sample_group_repeats_negatives_when_too_few():
    ex = TrainExample("q", ("p",), ("n0", "n1"))
    g = sample_group(ex, 5, np.random.default_rng(0), teacher_scores=False)
    assert len(g.passages) == 6 and sorted(set(g.passages[1:])) == ["n0", "n1"]
    assert g.teacher_scores is None
