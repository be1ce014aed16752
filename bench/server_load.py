"""Load on a real `m3search serve`: N concurrent clients (1, 8, 32, 64) for a bounded time each, while a
writer adds documents; QPS, p50/p95/p99 latency, errors, server memory before and after, mean micro-batch,
and where the server's CPU went (per thread: event loop, search, writer), against the encoder's own batched
rate measured in the same run.

    flock /tmp/m3search-heavy.lock python bench/server_load.py --models m3search-small
    python bench/server_load.py --n 5000 --seconds 5 --clients 1,8 --models hashing   # a quick smoke run

Everything is local: the server is a subprocess bound to 127.0.0.1 on a free port; the clients are one
asyncio process (closed loop: each client sends its next query when the last is answered). By default they
speak HTTP/1.1 over raw asyncio streams, a load generator as lean as wrk's, because they share the server's
2 cores; `--client httpx` uses httpx instead (costlier per request). Each response is parsed and checked
(k hits per query).
The index holds --n passages of precomputed synthetic representations (bench/synthetic*.py) with the
query encoder's identity, dense + sparse components, so the server encodes real queries (the sample
queries, 9 languages) with the real model and searches a full-size index; mode dense+sparse, k=10.
The index is built once under --work-dir and copied fresh for every server run, so the writes of one run
don't change the next. The writer posts --write-batch documents every second (the server encodes them,
then commits).

The baseline, measured in this run, in this process, before the server starts: the same encoder (same
model, same loading, same torch threads) on the same query texts, in batches of 1, 8, 32, 64 and 128;
its rate at batch 32 is "the encoder's batched rate" the goal refers to (the best over batch sizes is
reported beside it).

Writes bench/results/server_load.{md,json,png} (or --out).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
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
BASELINE_BATCH = 32
TICK = os.sysconf("SC_CLK_TCK")


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


def encoder_rates(model: str, texts: list[str], sizes=(1, 8, BASELINE_BATCH, 64, 128), seconds: float = 6.0) -> dict:
    """The encoder alone, as the server loads it, on the queries the clients send: queries/s per batch size."""
    from m3search.encoder import load_encoder

    encoder = load_encoder(model)
    encoder.encode(texts[:4], kind="query")
    cycle = texts * (1 + max(sizes) // len(texts) + 1)
    rates = {}
    for size in sizes:
        done, start, lo = 0, time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            encoder.encode(cycle[lo : lo + size], kind="query")
            done += size
            lo = (lo + size) % len(texts)
        rates[size] = done / (time.perf_counter() - start)
    return {"batched_qps": rates[BASELINE_BATCH], "best_qps": max(rates.values()),
            "rates": {str(s): r for s, r in rates.items()}, "single_p50_ms": 1000 / rates[1]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of a process (threads of one name summed; the main thread is 'main')."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            name = "main" if task.name == str(pid) else (task / "comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return out


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


class RawClient:
    """HTTP/1.1 keep-alive POSTs of JSON over one asyncio connection: the load generator's client, a few
    tens of microseconds of CPU per request (httpx spends about a millisecond)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n" % (path.encode(), self.host.encode(), self.port, len(body))
                          + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class HttpxClient:
    def __init__(self, http):
        self.http = http

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        r = await self.http.post(path, content=body, headers={"content-type": "application/json"})
        return r.status_code, r.content

    async def close(self) -> None:
        pass


async def load(host: str, port: int, texts: list[str], clients: int, seconds: float, max_requests: int,
               write_batch: int, k: int, kind: str) -> dict:
    import httpx
    import orjson

    latencies: list[float] = []
    errors: list[str] = []
    written = 0
    stop_at = time.perf_counter() + seconds
    bodies = [orjson.dumps({"queries": [t], "k": k, "mode": "dense+sparse", "fields": ["scores"]}) for t in texts]
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=60, limits=limits) as http:
        def connection():
            return RawClient(host, port) if kind == "raw" else HttpxClient(http)

        async def client(c: int) -> None:
            conn = connection()
            i = c
            try:
                while time.perf_counter() < stop_at and len(latencies) < max_requests:
                    s = time.perf_counter()
                    try:
                        status, content = await asyncio.wait_for(conn.post("/v1/search", bodies[i % len(bodies)]), 60)
                        if status != 200:
                            errors.append(f"{status} {content[:200]!r}")
                        else:
                            latencies.append(time.perf_counter() - s)
                            hits = orjson.loads(content)["results"][0]["hits"]
                            if len(hits) != k:
                                errors.append(f"{len(hits)} hits, not {k}")
                    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, httpx.HTTPError) as e:
                        errors.append(repr(e))
                        await conn.close()
                        conn = connection()
                    i += clients
            finally:
                await conn.close()

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


def phase(pid: int, url: str, host: str, port: int, texts: list[str], clients: int, args) -> dict:
    """One client count: the load, and the server's counters and CPU per thread over it."""
    import httpx

    h0, cpu0, own0, la0 = httpx.get(url + "/health").json(), thread_cpu(pid), time.process_time(), loadavg()
    row = asyncio.run(load(host, port, texts, clients, args.seconds, args.max_requests, args.write_batch, args.k,
                           args.client))
    h1, cpu1, own1 = httpx.get(url + "/health").json(), thread_cpu(pid), time.process_time()
    n = max(1, row["requests"])
    cpu = {name: cpu1[name] - cpu0.get(name, 0.0) for name in cpu1}
    batches, queries = h1["batches"] - h0["batches"], h1["queries"] - h0["queries"]
    row.update(
        mean_batch=queries / max(1, batches), batches=batches,
        server_cpu_ms_per_query={name: 1000 * s / n for name, s in sorted(cpu.items()) if s > 0},
        server_cpu_share=sum(cpu.values()) / row["seconds"],  # cores the server kept busy
        client_cpu_ms_per_query=1000 * (own1 - own0) / n,
        loadavg_before=la0, loadavg_after=loadavg(),
    )
    return row


def bench_model(name: str, args) -> dict:
    import httpx

    from m3search.data import SAMPLE_QUERIES, read_queries

    model = MODELS[name]
    pristine = args.work_dir / f"load-{name}-n{args.n}-s{args.seed}.m3s"
    build(pristine, model, args.n, args.seed)
    path = args.work_dir / f"run-{name}.m3s"
    if path.exists():
        shutil.rmtree(path)
    shutil.copytree(pristine, path)
    texts = [q.text for q in read_queries(SAMPLE_QUERIES)]
    baseline = encoder_rates(model, texts, seconds=args.baseline_seconds)
    print(f"  {name}: encoder " + ", ".join(f"batch {s}: {r:.0f} q/s" for s, r in baseline["rates"].items()),
          file=sys.stderr, flush=True)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.update(dict(kv.split("=", 1) for kv in args.server_env))
    cmd = [sys.executable, "-m", "m3search", "serve", str(path), "--port", str(port), "--log-level", "warning",
           *args.server_args.split()]
    proc = subprocess.Popen(cmd, env=env)
    host, url = "127.0.0.1", f"http://127.0.0.1:{port}"
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
        for size in (1, 8, 32):  # warm up (numba compiles, first batches)
            httpx.post(url + "/v1/search", json={"queries": texts[:size], "k": 10, "mode": "dense+sparse"}, timeout=120)
        rss_before = rss_mb(proc.pid)
        rows = []
        for clients in args.clients:
            print(f"  {name}: {clients} clients", file=sys.stderr, flush=True)
            rows.append(phase(proc.pid, url, host, port, texts, clients, args))
            r = rows[-1]
            print(f"    {r['qps']:.1f} q/s, p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, mean batch "
                  f"{r['mean_batch']:.1f}, errors {r['errors']}, server cpu/query "
                  f"{ {k: round(v, 1) for k, v in r['server_cpu_ms_per_query'].items()} }, client "
                  f"{r['client_cpu_ms_per_query']:.2f} ms", file=sys.stderr, flush=True)
        rss_after = rss_mb(proc.pid)
        health = httpx.get(url + "/health").json()
        n_docs = httpx.get(url + "/v1/info").json()["n_docs"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return {"model": model, "baseline": baseline, "rows": rows, "rss_mb_before": rss_before,
            "rss_mb_after": rss_after, "batches": health["batches"], "queries_served": health["queries"],
            "n_docs_after": n_docs, "server_args": args.server_args, "server_env": args.server_env,
            "client": args.client}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 64])
    p.add_argument("--seconds", type=float, default=20.0, help="per client count")
    p.add_argument("--baseline-seconds", type=float, default=6.0, help="per batch size of the encoder baseline")
    p.add_argument("--max-requests", type=int, default=20_000, help="per client count")
    p.add_argument("--write-batch", type=int, default=20, help="documents the writer adds per second (0: none)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--client", choices=["raw", "httpx"], default="raw")
    p.add_argument("--server-args", default="", help="extra `m3search serve` options, e.g. '--batch-wait-ms 2'")
    p.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--models", default="m3search-small")
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


def _cpu_groups(per_thread: dict[str, float]) -> dict[str, float]:
    groups = {"loop": 0.0, "search": 0.0, "writer": 0.0, "other": 0.0}
    for name, ms in per_thread.items():
        key = ("loop" if name == "main" else "search" if "search" in name else "writer" if "writ" in name
               else "other")
        groups[key] += ms
    return groups


def markdown(report: dict) -> str:
    lines = [f"{report['n']:,}-passage index (dense + sparse), mode dense+sparse, k={report['k']}; "
             f"{report['seconds']:.0f} s per client count, a writer adding {report['write_batch']} documents/s; "
             f"server and clients on the same {report['machine']['cpus']} CPU cores.", "",
             "| model | clients | QPS | % of encoder batched rate | p50 (ms) | p95 (ms) | p99 (ms) | errors | "
             "mean batch | server CPU ms/query (loop / search / writer / other) | client CPU ms/query | "
             "docs written | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in report["models"].items():
        base = m["baseline"]["batched_qps"]
        for r in m["rows"]:
            g = _cpu_groups(r.get("server_cpu_ms_per_query", {}))
            lines.append(f"| {name} | {r['clients']} | {r['qps']:.1f} | {100 * r['qps'] / base:.0f}% | "
                         f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | "
                         f"{r.get('mean_batch', float('nan')):.1f} | "
                         f"{g['loop']:.1f} / {g['search']:.1f} / {g['writer']:.1f} / {g['other']:.1f} | "
                         f"{r.get('client_cpu_ms_per_query', float('nan')):.2f} | {r['docs_written']} | "
                         f"{r.get('loadavg_before', float('nan')):.1f} |")
    lines.append("")
    for name, m in report["models"].items():
        b = m["baseline"]
        rates = ", ".join(f"{s}: {r:.0f}" for s, r in b.get("rates", {}).items())
        lines.append(f"- {name}: encoder alone {b['batched_qps']:.0f} queries/s in batches of {BASELINE_BATCH} "
                     f"(the baseline; by batch size {rates}); server RSS {m['rss_mb_before']:.0f} MB before, "
                     f"{m['rss_mb_after']:.0f} MB after; {m['queries_served']} queries in {m['batches']} encoder "
                     f"batches over the run; {m['n_docs_after']:,} documents at the end; server options "
                     f"'{m.get('server_args', '')}', client {m.get('client', 'httpx')}.")
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
        a.plot(cs, [r["qps"] for r in m["rows"]], "o-", label=f"{name} server")
        color = a.lines[-1].get_color()
        a.axhline(m["baseline"]["batched_qps"], ls=":", color=color, label=f"{name} encoder alone (batch 32)")
        a.axhline(0.8 * m["baseline"]["batched_qps"], ls="--", color="grey", lw=0.8, label="80% goal")
        b.plot(cs, [r["p99_ms"] for r in m["rows"]], "o-", label=f"{name} p99")
        b.plot(cs, [r["p50_ms"] for r in m["rows"]], "x--", label=f"{name} p50")
    b.axhline(250, ls="--", color="grey", lw=0.8, label="p99 goal (32 clients)")
    a.set_xlabel("concurrent clients"); a.set_ylabel("queries/s"); a.set_xscale("log", base=2)
    a.set_ylim(bottom=0); a.legend(fontsize=7)
    b.set_xlabel("concurrent clients"); b.set_ylabel("latency (ms)"); b.set_xscale("log", base=2)
    b.set_yscale("log"); b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
