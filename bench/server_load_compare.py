"""Compare `bench/server_load.py` runs of different server versions/options made back to back (same lock
session, same index, same clients): one table and one plot.

    python bench/server_load_compare.py old=a.json new=b.json --out bench/results/server_load_ab
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server_load import _cpu_groups  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="LABEL=JSON")
    p.add_argument("--out", type=Path, required=True, help="path without suffix: writes .md and .png")
    args = p.parse_args(argv)
    runs = [(label, json.loads(Path(path).read_text())) for label, path in (r.split("=", 1) for r in args.runs)]
    lines = ["| server | clients | QPS | % of encoder batched rate (same run) | p50 ms | p95 ms | p99 ms | errors | "
             "mean batch | server CPU ms/query (loop / search / writer / other) | server cores busy | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, rep in runs:
        for m in rep["models"].values():
            base = m["baseline"]["batched_qps"]
            for r in m["rows"]:
                g = _cpu_groups(r.get("server_cpu_ms_per_query", {}))
                lines.append(f"| {label} | {r['clients']} | {r['qps']:.1f} | {100 * r['qps'] / base:.0f}% of "
                             f"{base:.0f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} | "
                             f"{r.get('mean_batch', float('nan')):.1f} | {g['loop']:.1f} / {g['search']:.1f} / "
                             f"{g['writer']:.1f} / {g['other']:.1f} | {r.get('server_cpu_share', float('nan')):.2f} | "
                             f"{r.get('loadavg_before', float('nan')):.1f} |")
    lines.append("")
    for label, rep in runs:
        for m in rep["models"].values():
            b = m["baseline"]
            lines.append(f"- {label}: server options '{m.get('server_args', '')}'; encoder alone (same run) by batch "
                         f"size: " + ", ".join(f"{s}: {v:.0f} q/s" for s, v in b.get("rates", {}).items())
                         + f"; RSS {m['rss_mb_before']:.0f} -> {m['rss_mb_after']:.0f} MB")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for label, rep in runs:
        for m in rep["models"].values():
            cs = [r["clients"] for r in m["rows"]]
            a.plot(cs, [r["qps"] for r in m["rows"]], "o-", label=label)
            b.plot(cs, [r["p99_ms"] for r in m["rows"]], "o-", label=f"{label} p99")
    b.axhline(250, ls="--", color="grey", lw=0.8, label="goal p99 250 ms (32 clients)")
    a.set_xlabel("concurrent clients"); a.set_ylabel("queries/s (load average in the table)")
    a.set_xscale("log", base=2); a.legend(fontsize=7)
    b.set_xlabel("concurrent clients"); b.set_ylabel("p99 latency (ms)"); b.set_xscale("log", base=2)
    b.set_yscale("log"); b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)


if __name__ == "__main__":
    main()
