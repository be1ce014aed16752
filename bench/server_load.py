"""Load on a real `m3search serve`: N concurrent clients (1, 8, 32, 64) for a bounded time each, while a
writer adds documents; QPS, p50/p95/p99 latency, errors, server memory before and after.

    flock /tmp/m3search-heavy.lock python bench/server_load.py                      # hashing + m3search-small
    python bench/server_load.py --n 5000 --seconds 5 --clients 1,8 --models hashing   # a quick smoke run

Everything is local: the server is a subprocess bound to 127.0.0.1 on a free port; the clients are one
asyncio process with httpx (closed loop: each client sends its next query when the last is answered).
The index holds --n passages of precomputed synthetic representations (bench/synthetic*.py) with the
query encoder's identity, dense + sparse components, so the server encodes real queries (the sample
queries, 9 languages) with the real model and searches a full-size index; mode dense+sparse, k=10.
The writer posts --write-batch documents every second (the server encodes them, then commits).
The baseline, measured in this run in this process: the same encoder's batched rate on the same queries
(batches of 32), which bounds what the server can reach.

Writes bench/results/server_load.{md,json,png}.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from m3search.types import EncodedBatch  # noqa: E402

MODELS = {"hashing": "hashing:dim=384,vocab_size=30000", "m3search-small": "m3search-small"}


def build(path: Path, model: str, n: int, seed: int, chunk: int = 5000) -> None:
    from synthetic import DenseCorpus
    from synthetic_sparse import make_corpus, make_vocabulary

    from m3search.api import _model_reference
    from m3search.encoder import load_encoder
    from m3search.indexes.index import Index

    if (path / "manifest.json").is_file():
        return
    encoder = load_encoder(model)
    ident = encoder.identity
    dense = DenseCorpus(n, d=ident.dense_dim, seed=seed)
    sparse = make_corpus(n, make_vocabulary(ident.vocab_size, seed=seed), seed=seed)
    started = time.perf_counter()
    with Index.create(path, ident, model=_model_reference(model, encoder),
                      components={"dense": {}, "sparse": {}}) as index:
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            batch = EncodedBatch(dense.docs(lo, hi), sparse[lo:hi], np.zeros((0, ident.multivec_dim), np.float32),
                                 np.zeros(hi - lo, np.int64))
            index.add([f"p{i}" for i in range(lo, hi)], batch,
                      [{"text": f"passage {i}", "metadata": {"bucket": i % 100}} for i in range(lo, hi)])
        index.commit()
        index.optimize()
    print(f"  built {n} passages for {model} in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def encoder_rate(model: str, texts: list[str], batch: int = 32, seconds: float = 10.0) -> dict:
    from m3search.encoder import load_encoder

    encoder = load_encoder(model)
    encoder.encode(texts[:4], kind="query")
    single = []
    for t in texts[:40]:
        s = time.perf_counter()
        encoder.encode([t], kind="query")
        single.append(time.perf_counter() - s)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        lo = (done % len(texts))
        chunk = (texts * 2)[lo : lo + batch]
        encoder.encode(chunk, kind="query")
        done += len(chunk)
    return {"batched_qps": done / (time.perf_counter() - start), "single_p50_ms": float(np.median(single) * 1000)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def load(url: str, texts: list[str], clients: int, seconds: float, max_requests: int, write_batch: int,
               k: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    written = 0
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        async def client(c: int) -> None:
            i = c
            while time.perf_counter() < stop_at and len(latencies) < max_requests:
                body = {"queries": [texts[i % len(texts)]], "k": k, "mode": "dense+sparse", "fields": ["scores"]}
                s = time.perf_counter()
                try:
                    r = await http.post("/v1/search", json=body)
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        latencies.append(time.perf_counter() - s)
                except httpx.HTTPError as e:
                    errors.append(repr(e))
                i += clients

        async def writer() -> None:
            nonlocal written
            b = 0
            while time.perf_counter() < stop_at:
                docs = [{"id": f"w{clients}-{b}-{j}", "text": f"{texts[(b + j) % len(texts)]} added {b} {j}",
                         "metadata": {"bucket": j}} for j in range(write_batch)]
                try:
                    r = await http.post("/v1/documents", json={"documents": docs})
                    if r.status_code != 200:
                        errors.append(f"write {r.status_code} {r.text[:200]}")
                    else:
                        written += write_batch
                except httpx.HTTPError as e:
                    errors.append(f"write {e!r}")
                b += 1
                await asyncio.sleep(1.0)

        started = time.perf_counter()
        tasks = [asyncio.create_task(client(c)) for c in range(clients)]
        if write_batch:
            tasks.append(asyncio.create_task(writer()))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    lat = np.asarray(latencies) * 1000 if latencies else np.asarray([np.nan])
    return {"clients": clients, "requests": len(latencies), "errors": len(errors), "error_examples": errors[:3],
            "qps": len(latencies) / elapsed, "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)), "p99_ms": float(np.percentile(lat, 99)),
            "docs_written": written, "seconds": elapsed}


def bench_model(name: str, args) -> dict:
    import httpx

    from m3search.data import SAMPLE_QUERIES, read_queries

    model = MODELS[name]
    path = args.work_dir / f"load-{name}-n{args.n}-s{args.seed}.m3s"
    build(path, model, args.n, args.seed)
    texts = [q.text for q in read_queries(SAMPLE_QUERIES)]
    baseline = encoder_rate(model, texts)
    print(f"  {name}: encoder batched {baseline['batched_qps']:.0f} q/s", file=sys.stderr, flush=True)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "m3search", "serve", str(path), "--port", str(port),
                             "--log-level", "warning"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.5)
        httpx.post(url + "/v1/search", json={"queries": texts[:8], "k": 10, "mode": "dense+sparse"}, timeout=120)
        rss_before = rss_mb(proc.pid)
        rows = []
        for clients in args.clients:
            print(f"  {name}: {clients} clients", file=sys.stderr, flush=True)
            rows.append(asyncio.run(load(url, texts, clients, args.seconds, args.max_requests, args.write_batch,
                                         args.k)))
        rss_after = rss_mb(proc.pid)
        health = httpx.get(url + "/health").json()
        n_docs = httpx.get(url + "/v1/info").json()["n_docs"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return {"model": model, "baseline": baseline, "rows": rows, "rss_mb_before": rss_before,
            "rss_mb_after": rss_after, "batches": health["batches"], "queries_served": health["queries"],
            "n_docs_after": n_docs}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 64])
    p.add_argument("--seconds", type=float, default=20.0, help="per client count")
    p.add_argument("--max-requests", type=int, default=20_000, help="per client count")
    p.add_argument("--write-batch", type=int, default=20, help="documents the writer adds per second (0: none)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--models", default="hashing,m3search-small")
    p.add_argument("--work-dir", type=Path, default=ROOT / "bench" / "out")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "server_load.json")
    p.add_argument("--replot", action="store_true", help="only redraw the plot and table from --out's JSON")
    args = p.parse_args(argv)
    if args.replot:
        report = json.loads(args.out.read_text())
        plot(report, args.out.with_suffix(".png"))
        args.out.with_suffix(".md").write_text(markdown(report) + "\n")
        return report
    args.work_dir.mkdir(parents=True, exist_ok=True)
    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "n": args.n, "seconds": args.seconds, "write_batch": args.write_batch, "k": args.k,
              "models": {name: bench_model(name, args) for name in args.models.split(",")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    args.out.with_suffix(".md").write_text(markdown(report) + "\n")
    plot(report, args.out.with_suffix(".png"))
    print(markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = [f"{report['n']:,}-passage index (dense + sparse), mode dense+sparse, k={report['k']}; "
             f"{report['seconds']:.0f} s per client count, a writer adding {report['write_batch']} documents/s; "
             f"server and clients on the same {report['machine']['cpus']} CPU cores.", "",
             "| model | clients | QPS | % of encoder batched rate | p50 (ms) | p95 (ms) | p99 (ms) | errors | "
             "docs written |", "|---|---|---|---|---|---|---|---|---|"]
    for name, m in report["models"].items():
        base = m["baseline"]["batched_qps"]
        for r in m["rows"]:
            lines.append(f"| {name} | {r['clients']} | {r['qps']:.1f} | {100 * r['qps'] / base:.0f}% | "
                         f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | "
                         f"{r['docs_written']} |")
    lines.append("")
    for name, m in report["models"].items():
        b = m["baseline"]
        lines.append(f"- {name}: encoder alone {b['batched_qps']:.0f} queries/s batched (32), one query "
                     f"{b['single_p50_ms']:.1f} ms; server RSS {m['rss_mb_before']:.0f} MB before, "
                     f"{m['rss_mb_after']:.0f} MB after; {m['queries_served']} queries in {m['batches']} encoder "
                     f"batches (mean {m['queries_served'] / max(1, m['batches']):.1f} per batch); "
                     f"{m['n_docs_after']:,} documents at the end.")
    return "\n".join(lines)


def plot(report: dict, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for name, m in report["models"].items():
        cs = [r["clients"] for r in m["rows"]]
        a.plot(cs, [r["qps"] for r in m["rows"]], "o-", label=name)
        a.axhline(m["baseline"]["batched_qps"], ls=":", color=a.lines[-1].get_color(), label=f"{name} encoder alone")
        b.plot(cs, [r["p99_ms"] for r in m["rows"]], "o-", label=f"{name} p99")
        b.plot(cs, [r["p50_ms"] for r in m["rows"]], "x--", label=f"{name} p50")
    a.set_xlabel("concurrent clients"); a.set_ylabel("queries/s"); a.set_xscale("log", base=2); a.set_yscale("log")
    a.legend(fontsize=7)
    b.set_xlabel("concurrent clients"); b.set_ylabel("latency (ms)"); b.set_xscale("log", base=2); b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
