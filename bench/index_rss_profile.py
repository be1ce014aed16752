"""Where the peak RSS of `m3search index` comes from: runs the CLI in this process with a sampler thread
that reads VmRSS from /proc/self/status every few ms and notes the main thread's innermost m3search frames.

    flock /tmp/m3search-heavy.lock python bench/index_rss_profile.py --n 2000

Prints the RSS timeline by stage (the innermost m3search function the main thread was in) and the stack
at the peak. Linux only (reads /proc).
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_throughput import write_corpus  # noqa: E402


def rss_mb(key: str = "VmRSS") -> float:
    return status_mb(key)[0]


def status_mb(*keys: str) -> list[float]:
    """Those fields of /proc/self/status in MB (RssAnon: heap; RssFile: mapped files' resident pages)."""
    found = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in keys:
                found[name] = int(value.split()[0]) / 1024
    return [found.get(k, 0.0) for k in keys]


def where(frame, depth: int = 3) -> str:
    names = []
    for fs in reversed(traceback.extract_stack(frame)):
        if "/m3search/" in fs.filename:
            names.append(f"{Path(fs.filename).stem}.{fs.name}")
            if len(names) == depth:
                break
    return " < ".join(names) or "(outside m3search)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--corpus", type=Path, help="index this corpus file instead of --n generated passages")
    ap.add_argument("--extra", nargs="*", default=[], help="extra CLI arguments for m3search index")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="m3s-rss-"))
    corpus = args.corpus or work / "passages.jsonl"
    if args.corpus is None:
        write_corpus(corpus, args.n)
    main_id = threading.get_ident()
    stop = threading.Event()
    timeline: list[tuple[float, float, str]] = []
    peak = {"mb": 0.0, "stack": ""}
    hwm_steps: list[tuple[float, float, str, float, float]] = []  # VmHWM rises: catches peaks shorter than a sampling interval
    t0 = time.perf_counter()

    def sample() -> None:
        while not stop.is_set():
            mb = rss_mb()
            frame = sys._current_frames().get(main_id)
            w = where(frame) if frame is not None else "?"
            timeline.append((time.perf_counter() - t0, mb, w))
            hwm, anon, file = status_mb("VmHWM", "RssAnon", "RssFile")
            if not hwm_steps or hwm > hwm_steps[-1][1] + 10:
                hwm_steps.append((timeline[-1][0], hwm, w, anon, file))
            if mb > peak["mb"]:
                peak["mb"] = mb
                peak["stack"] = "".join(traceback.format_stack(frame)[-14:]) if frame is not None else ""
            time.sleep(args.interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    from m3search.cli import main as cli_main

    try:
        cli_main(["index", str(corpus), "-o", str(work / "index"), "--quiet", *args.extra], standalone_mode=False)
    finally:
        stop.set()
        th.join()
        shutil.rmtree(work, ignore_errors=True)  # our own scratch folder
    wall = time.perf_counter() - t0
    # stage table: per innermost location, time spent and max RSS
    stages: dict[str, list[float]] = collections.OrderedDict()
    for i, (t, mb, w) in enumerate(timeline):
        dt = timeline[i + 1][0] - t if i + 1 < len(timeline) else 0.0
        s = stages.setdefault(w, [0.0, 0.0, t])
        s[0] += dt
        s[1] = max(s[1], mb)
    print(f"wall {wall:.1f} s, peak VmRSS {peak['mb']:.0f} MB, ru_maxrss {__import__('resource').getrusage(0).ru_maxrss / 1024:.0f} MB\n")
    print("| first seen s | time s | max RSS MB | where (innermost m3search frames) |\n|---:|---:|---:|---|")
    for w, (dt, mb, first) in stages.items():
        if dt >= 0.2 or mb >= 0.8 * peak["mb"]:
            print(f"| {first:.1f} | {dt:.1f} | {mb:.0f} | {w} |")
    print("\nVmHWM rises of > 10 MB (peak so far, where the main thread was when the sampler saw it; "
          "RSS then split into anonymous memory and mapped files' pages):")
    for t, mb, w, anon, file in hwm_steps:
        print(f"  {t:6.1f} s {mb:7.0f} MB  (anon {anon:5.0f}, file {file:5.0f})  {w}")
    print("\nRSS every ~2 s:")
    last = -9.0
    for t, mb, w in timeline:
        if t - last >= 2.0:
            print(f"  {t:6.1f} s {mb:7.0f} MB  {w}")
            last = t
    print("\nstack at the peak:\n" + peak["stack"])


if __name__ == "__main__":
    main()
