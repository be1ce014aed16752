"""Resident memory of the indexing encoder, step by step: the torch M3Encoder with its ONNX Runtime layers
(what `m3search index` loaded before) against FastQueryEncoder's torch-free passage path (ort_passages.py).

Each path runs in a fresh process that reads VmRSS from /proc/self/status after each step: imports, model
load, first batch, and N real passages (the index_throughput corpus, in the CLI's chunks of 128), then
VmHWM (the process's peak). Also reports whether torch was imported.

    flock /tmp/m3search-heavy.lock python bench/encoder_rss_steps.py --n 2000
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
def rss(key="VmRSS"):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
steps = [("python + numpy", None)]
import numpy as np
steps[-1] = ("python + numpy", rss())
path, corpus, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
texts = []
for line in open(corpus, encoding="utf-8"):
    d = json.loads(line)
    texts.append(f"{d['title']} {d['text']}" if d.get("title", "").strip() else d["text"])
texts = texts[:n]
from m3search.encoder.default_model import default_model_path
folder = default_model_path()
t0 = time.perf_counter()
if path == "torch":
    import torch
    steps.append(("import torch", rss()))
    from m3search.encoder.m3 import M3Encoder
    enc = M3Encoder.from_pretrained(folder, device="cpu")
    steps.append(("model + tokenizers' Unigram loaded", rss()))
else:
    from m3search.encoder.fast_query import load_fast
    enc = load_fast(folder, device="cpu")
    steps.append(("query cache loaded", rss()))
enc.encode(texts[:16])
steps.append(("first batch (ORT session built)", rss()))
for lo in range(0, len(texts), 128):
    enc.encode(texts[lo : lo + 128])
steps.append((f"{len(texts)} passages encoded", rss()))
wall = time.perf_counter() - t0
print(json.dumps({"steps": steps, "peak": rss("VmHWM"), "torch": "torch" in sys.modules,
                  "runtime": ("ort_passages" if enc._ort is not None else "torch M3Encoder") if path == "fast"
                  else enc.runtime,
                  "wall": wall}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "encoder_rss_steps.md")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    import tempfile

    from index_throughput import write_corpus

    work = Path(tempfile.mkdtemp(prefix="m3s-rss-"))
    corpus = work / "passages.jsonl"
    write_corpus(corpus, args.n)
    load = os.getloadavg()
    results = {}
    for path in ("torch", "fast"):
        out = subprocess.run([sys.executable, "-c", CHILD, path, str(corpus), str(args.n)], capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=work, check=True)
        results[path] = json.loads(out.stdout.strip().splitlines()[-1])
        print(path, results[path], file=sys.stderr, flush=True)
    names = {"torch": "M3Encoder (torch + ONNX Runtime layers, tokenizers)", "fast": "FastQueryEncoder batch path (no torch)"}
    lines = [f"# Encoder RSS step by step, {args.n} real passages in chunks of 128 (m3search-small)", "",
             f"2 shared CPU cores; 1-min load average {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end.", ""]
    for path, r in results.items():
        lines += [f"## {names[path]}", "", f"torch imported: {r['torch']}; runtime: {r['runtime']}; "
                  f"wall from load to the last passage {r['wall']:.1f} s", "", "| step | RSS MB |", "|---|---:|"]
        lines += [f"| {name} | {mb:.0f} |" for name, mb in r["steps"]]
        lines += [f"| **peak (VmHWM)** | **{r['peak']:.0f}** |", ""]
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
