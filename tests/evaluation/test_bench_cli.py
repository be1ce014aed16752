"""`m3search bench` through the CLI group, with the hashing encoder."""
from __future__ import annotations

import json

from click.testing import CliRunner

from m3search.cli import main


def test_bench_writes_the_report(tiny_miracl, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "bench", "miracl", "--data-dir", str(tiny_miracl), "--model", "hashing:dim=32,vocab_size=5000",
        "--modes", "dense,sparse,all", "--langs", "de", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
        "--sweep-multivec", "0,1", "--no-plots",
    ])
    assert result.exit_code == 0, result.output
    assert "| Mode | de | Avg |" in result.stdout  # the headline table
    report = json.loads((out / "report.json").read_text())
    assert report["modes"] == ["dense", "sparse", "all", "bm25"]  # BM25 joins unless --no-bm25
    assert len(report["languages"]["de"]["sweep"]["grid"]) == 10
    assert (out / "report.md").is_file() and not (out / "plots").exists()
    assert sorted(p.name for p in (out / "runs" / "de").iterdir()) == ["all.trec", "bm25.trec", "dense.trec", "sparse.trec"]


def test_bench_usage_errors(tiny_miracl, tmp_path):
    runner = CliRunner()
    base = ["bench", "miracl", "--data-dir", str(tiny_miracl), "--model", "hashing", "--out", str(tmp_path / "o")]
    result = runner.invoke(main, [*base, "--modes", "dense,colbert"])
    assert result.exit_code != 0 and "unknown mode 'colbert'" in result.output
    result = runner.invoke(main, [*base, "--langs", "xx"])
    assert result.exit_code != 0 and "no language ['xx']" in result.output
    result = runner.invoke(main, [*base, "--weights", "dense=abc"])
    assert result.exit_code != 0 and "not a number" in result.output
    result = runner.invoke(main, [*base, "--no-cache", "--cache-dir", str(tmp_path)])
    assert result.exit_code != 0 and "not both" in result.output
    assert not (tmp_path / "o").exists()  # nothing written on a usage error
