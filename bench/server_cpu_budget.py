"""Where a served query's CPU goes, measured as CPU time on one thread (robust to other jobs on the cores,
unlike wall time): encoder per batch size, search per batch size, and the writer's add+commit per document,
on the load bench's 100k-passage index (a fresh copy). Pair it with bench/server_load.py's per-thread CPU of
the running server (event loop, client) to get the per-query budget on 2 cores.

    flock /tmp/m3search-heavy.lock python bench/server_cpu_budget.py --index bench/out/load-m3search-small-n100000-s0.m3s
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", type=Path, required=True, help="built by bench/server_load.py (copied, not changed)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "server_cpu_budget.md")
    args = p.parse_args(argv)
    import faiss
    import numba
    import torch

    from m3search import api
    from m3search.data import SAMPLE_QUERIES, read_queries

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    numba.set_num_threads(1)
    texts = [q.text for q in read_queries(SAMPLE_QUERIES)]
    cycle = texts * 3
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "idx"
        shutil.copytree(args.index, path)
        with api.open_index(path) as idx:
            enc = idx.encoder

            def measure(name, fn, items, reps):
                fn()
                c0, w0 = time.process_time(), time.perf_counter()
                for _ in range(reps):
                    fn()
                rows.append((name, (time.process_time() - c0) / reps / items * 1000,
                             (time.perf_counter() - w0) / reps / items * 1000))

            for bs in (1, 4, 8, 16, 32, 64):
                chunks = [cycle[i : i + bs] for i in range(0, len(texts), max(bs, 8))][:6]
                measure(f"encode {bs} queries per call", lambda: [enc.encode(c, kind="query") for c in chunks],
                        bs * len(chunks), 2)
            opts = dict(k=10, mode="dense+sparse", fields=["scores"], fusion="weighted", rrf_k=60.0)
            for bs in (1, 16, 32):
                batch = enc.encode(cycle[:bs], kind="query")
                measure(f"search {bs} encoded queries per call (dense+sparse, k=10)",
                        lambda: idx.search_encoded(batch, **opts), bs, 5)
            n = [0]

            def write():
                idx.add([{"id": f"x{n[0]}-{j}", "text": f"{texts[(n[0] + j) % len(texts)]} added {n[0]} {j}",
                          "metadata": {"bucket": j}} for j in range(20)])
                n[0] += 1

            measure("writer: add + commit 20 documents, per document", write, 20, 5)
            torch.set_num_threads(2)
            chunks = [cycle[i : i + 32] for i in range(0, len(texts), 32)][:3]
            measure("encode 32 queries per call, 2 torch threads", lambda: [enc.encode(c, kind="query") for c in chunks],
                    32 * len(chunks), 2)
    load = Path("/proc/loadavg").read_text().split()[:3]
    lines = ["CPU time per item on one thread (torch, FAISS, numba: 1 thread), m3search-small, the load bench's "
             f"100k-passage index; load average during the run {' / '.join(load)} (wall time is inflated by "
             "other jobs, CPU time much less).", "",
             "| part | CPU ms per item | wall ms per item |", "|---|---|---|"]
    lines += [f"| {name} | {c:.2f} | {w:.2f} |" for name, c, w in rows]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
