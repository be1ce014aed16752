"""Whole-index size against the corpus for an index built by `m3search index`, as a user builds it.

    flock /tmp/m3search-heavy.lock python bench/cli_index_size.py            # 3,000 German passages

The corpus is shared/data/eval/miracl_like_small/de (3,000 MIRACL-like German passages, the issue's 1.1 MB
corpus), indexed with the default model (m3search-small) and default components by `m3search index CORPUS
-o INDEX --quiet --commit-interval S`, once per --commit-interval (the CLI's default, 120 s, and the
issue's 10 s), a fresh index each time, no optimize. Then a copy of each is optimized (`Index.optimize()`,
one segment; the CLI has no optimize command) in its own process. Reported per index: the corpus's raw
text bytes (title + text, UTF-8), wall time and passages/s of the indexing process (process start and
model load included, as a user sees it), its peak RSS (the child's ru_maxrss), the segment count and sizes,
the multi-vector codes' bytes per token (and the codec's coarse centroids, K, chosen from the tokens
seen when it was trained), and bytes on disk per component: the files under segments/*/<kind>/ and
components/<kind>/ (allocated blocks, like `du`), docs.lmdb (texts, ids and state) and everything else.

Results go to bench/results/cli_index_size.{md,json}.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "eval" / "miracl_like_small" / "de" / "corpus.dev.jsonl.gz"
KINDS = ("dense", "sparse", "multivec", "text")


def run_child(argv: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one child process; raises on failure."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    # cwd outside the repository: `python -m` puts the working directory before PYTHONPATH on sys.path
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv[:5])}... failed: {proc.stderr.read().decode(errors='replace')[-800:]}")
    return wall, usage.ru_maxrss / 1024


def allocated(path: Path) -> int:
    """Bytes the files under path occupy on disk (allocated blocks, as `du` counts them)."""
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def disk_bytes(index: Path) -> dict:
    out = {kind: 0 for kind in KINDS}
    for seg in sorted((index / "segments").glob("*")):
        for kind in KINDS:
            if (seg / kind).exists():
                out[kind] += allocated(seg / kind)
    for kind in KINDS:
        if (index / "components" / kind).exists():
            out[kind] += allocated(index / "components" / kind)
    out["docstore"] = allocated(index / "docs.lmdb") if (index / "docs.lmdb").exists() else 0
    out["total"] = allocated(index)
    out["other"] = out["total"] - sum(out[k] for k in (*KINDS, "docstore"))
    return out


def describe(index: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    from m3search.indexes.index import Index

    with Index.open(index) as ix:
        info = ix.info()
    mv = (info["components"].get("multivec") or {}).get("fidelity") or {}
    return {"n_docs": info["n_docs"], "n_segments": info["n_segments"],
            "segments": [s["n_docs"] for s in info["segments"]],
            "info_bytes": {k: c["bytes"] for k, c in info["components"].items()} | {
                "docstore": info["docstore_bytes"], "total": info["total_bytes"]},
            "disk_bytes": disk_bytes(index),
            "multivec_fidelity": {k: mv.get(k) for k in ("compression", "fp16_ratio", "disk_bytes_per_token", "generator_centroids")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DATA)
    ap.add_argument("--commit-intervals", default="120,10", help="seconds, one index per value")
    ap.add_argument("--model", default=None, help="encoder (default: the CLI's, m3search-small)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the indexes in this folder (default: a temp one)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cli_index_size")
    args = ap.parse_args()

    with gzip.open(args.corpus, "rt", encoding="utf-8") if args.corpus.suffix == ".gz" else open(args.corpus) as f:
        docs = [json.loads(line) for line in f]
    corpus = {"path": str(args.corpus), "n": len(docs),
              "text_bytes": sum(len((d.get("title") or "").encode()) + len(d["text"].encode()) for d in docs),
              "file_bytes": args.corpus.stat().st_size}
    work = args.keep or Path(tempfile.mkdtemp(prefix="m3s-size-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    load_start = os.getloadavg()
    for interval in [float(x) for x in args.commit_intervals.split(",")]:
        path = work / f"de-commit{interval:g}s"
        shutil.rmtree(path, ignore_errors=True)  # our own scratch index
        wall, rss = run_child([sys.executable, "-m", "m3search", "index", str(args.corpus.resolve()), "-o", str(path),
                               "--quiet", "--commit-interval", str(interval)]
                              + (["--model", args.model] if args.model else []), work)
        row = {"commit_interval_s": interval, "index_wall_s": wall, "passages_per_s": len(docs) / wall,
               "index_peak_rss_mb": rss, **describe(path)}
        opt = work / f"de-commit{interval:g}s-optimized"
        shutil.rmtree(opt, ignore_errors=True)
        shutil.copytree(path, opt)
        code = ("import sys; from m3search.indexes.index import Index\n"
                f"with Index.open({str(opt)!r}, writable=True) as ix: ix.optimize()")
        owall, orss = run_child([sys.executable, "-c", code], work)
        row["optimized"] = {"wall_s": owall, "peak_rss_mb": orss, **describe(opt)}
        runs.append(row)
        print(f"  commit every {interval:g} s: {row['n_segments']} segments, "
              f"{row['disk_bytes']['total'] / 1e6:.1f} MB, optimized {row['optimized']['disk_bytes']['total'] / 1e6:.1f} MB",
              file=sys.stderr, flush=True)
    report = {"corpus": corpus, "runs": runs, "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
              "cpus": os.cpu_count(), "work": str(work),
              "model": args.model or "m3search-small (the CLI's default)"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    args.out.with_suffix(".md").write_text(markdown(report) + "\n")
    print(markdown(report))


def markdown(r: dict) -> str:
    c = r["corpus"]
    mb = 1e6
    lines = [f"# Whole index vs corpus: `m3search index` ({r['model']}, default components), no optimize, then optimized",
             "",
             f"Corpus: {c['path']} — {c['n']:,} passages, {c['text_bytes'] / mb:.2f} MB of raw text (title + text, "
             f"UTF-8; {c['file_bytes'] / mb:.2f} MB gzipped file). {r['cpus']} CPU cores (shared), no GPU; load "
             f"average {r['load_avg_start'][0]:.2f} at the start, {r['load_avg_end'][0]:.2f} at the end. Bytes are "
             "allocated on disk (`du`), MB = 10^6 bytes.", "",
             "| index | segments | passages/s (wall) | peak RSS MB | dense | sparse | multivec | docstore (texts, ids) "
             "| other | total MB | x corpus | multivec B/token |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in r["runs"]:
        for label, row, speed in ((f"commit every {run['commit_interval_s']:g} s (CLI)", run,
                                   f"{run['passages_per_s']:.1f} ({run['index_wall_s']:.1f} s)"),
                                  ("  same, optimized", run["optimized"],
                                   f"optimize {run['optimized']['wall_s']:.1f} s")):
            d = row["disk_bytes"]
            rss = run["index_peak_rss_mb"] if row is run else row["peak_rss_mb"]
            bpt, kc = row["multivec_fidelity"].get("disk_bytes_per_token"), row["multivec_fidelity"].get("generator_centroids")
            lines.append(
                f"| {label} | {row['n_segments']} {row['segments']} | {speed} | {rss:.0f} | {d['dense'] / mb:.2f} | "
                f"{d['sparse'] / mb:.2f} | {d['multivec'] / mb:.2f} | {d['docstore'] / mb:.2f} | {d['other'] / mb:.2f} | "
                f"{d['total'] / mb:.2f} | {d['total'] / c['text_bytes']:.1f}x | "
                + (f"{bpt:.1f}" if isinstance(bpt, (int, float)) else "-") + (f" (K {kc:.0f})" if kc else "") + " |")
    lines += ["", "Component columns are MB. `other` is the manifest, lock files and the like. Multivec B/token: the "
              "token codes on disk per token (the codec's files, e.g. K coarse centroids, come on top, in the multivec "
              "column)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
