"""Engine vs exhaustive exact scoring, per task and mode: the fidelity table of issue #11.

Reads the report.json files of two bench/run_eval.py runs over the same encodings (one with
--backend exact, one with --backend engine and the index preset under test) and writes a markdown table
of each task's headline metric (x100, averaged over languages) per mode, with the difference.

    python bench/fidelity_table.py --exact bench/out/exact --engine bench/out/engine-default \
        --out bench/results/multivec_fidelity.md --title "default index settings"
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from m3search.evaluation.modes import label
from m3search.evaluation.report import headline_metric, metric_title


def table(exact_dir: Path, engine_dirs: dict[str, Path]) -> str:
    lines = []
    for task in ("miracl", "mkqa", "mldr"):
        ref_path = exact_dir / task / "report.json"
        if not ref_path.is_file():
            continue
        ref = json.loads(ref_path.read_text())
        metric = headline_metric(ref)
        runs = {name: json.loads((d / task / "report.json").read_text()) for name, d in engine_dirs.items()
                if (d / task / "report.json").is_file()}
        if not runs:
            continue
        # compare on the languages every run has (an engine run may cover a subset of the reference's)
        langs = [lang for lang in ref["languages"] if all(lang in r["languages"] for r in runs.values())]
        lines += [f"### {task}: {Path(ref['data_dir']).name}, {metric_title(metric)}, {len(langs)} languages "
                  f"({', '.join(langs)})",
                  "", "| mode | exhaustive exact | " + " | ".join(f"engine {n} | diff" for n in runs) + " |",
                  "|---|---:|" + "---:|---:|" * len(runs)]
        def avg(report, mode):
            vals = [report["languages"][lang]["modes"].get(mode, {}).get("metrics", {}).get(metric) for lang in langs]
            return None if any(v is None for v in vals) or not vals else 100 * sum(vals) / len(vals)

        for mode in ref["modes"]:
            e = avg(ref, mode)
            if e is None:
                continue
            cells = []
            for r in runs.values():
                v = avg(r, mode)
                cells += ["-", "-"] if v is None else [f"{v:.1f}", f"{v - e:+.1f}"]
            lines.append(f"| {label(mode)} | {e:.1f} | " + " | ".join(cells) + " |")
        lines += ["", "Averages over the languages listed (x100); a mode an engine run did not run shows '-'."]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exact", type=Path, required=True)
    p.add_argument("--engine", nargs="+", required=True, help="NAME=DIR or DIR")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--title", default="Engine vs exhaustive exact scoring (same encodings)")
    a = p.parse_args(argv)
    engines = {}
    for spec in a.engine:
        name, _, d = spec.rpartition("=")
        engines[name or Path(d).name] = Path(d)
    text = f"## {a.title}\n\n" + table(a.exact, engines)
    if a.out:
        a.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
