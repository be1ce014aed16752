"""Corruption sweep: damage every kind of file of an index and check that m3search reports it or still
answers correctly, never serves garbage, never prints a traceback, never crashes.

An index with every kind of file is built (dense IVF + fp16 store, sparse, multi-vector PQ codes with a
shared codec, a merged segment with an id map, deletion bitmaps, LMDB). Reference answers are taken for
queries in four modes. Then, for every file, copies of the index get one mutation each (truncated to 0,
to half, by one byte; one byte appended; random bytes flipped; for data.mdb also whole 4 KiB pages
overwritten) and a forked child opens the copy, runs the queries and `check_index`. Each case is:

  correct    the answers equal the reference (the damage was never read, or sits in unused space)
  error      a one-line M3SearchError (IndexFormatError ...) named the damage
  garbage    answers that differ from the reference with no error            <- a failure
  traceback  any other exception                                              <- a failure
  crash      the child died by a signal or hung                              <- a failure

and, separately, whether `m3search check` flagged it. Usage:

    flock /tmp/m3search-heavy.lock python3 bench/corruption_sweep.py --flips 30 --out bench/results/corruption_sweep.md
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path


MODEL = "hashing:dim=32,vocab_size=5000"
COMPONENTS = {
    "dense": {"flat_threshold": 100, "nlist": 8},
    "sparse": {"block_docs": 16},
    "multivec": {"compression": "pq8", "min_train_tokens": 500, "coarse_k": 16},
}
QUERIES = ["river harbor golden", "theory of music engine", "castle walls at night", "number 42 about",
           "alpha beta gamma", "step seven", "document 311", "north wind"]
MODES = ("dense", "sparse", "multivec", "all")
SKIP = {"writer.lock", "lock.mdb", ".lock"}
WORDS = ("river harbor golden castle theory music engine walls night alpha beta gamma north wind step seven "
         "about number document light stone garden bridge market winter summer").split()


def build(path: Path) -> None:
    import m3search
    from m3search.indexes.index import Index

    rng = random.Random(7)
    docs = [(f"d{i}", f"document {i} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))))
            for i in range(600)]
    index = m3search.build_index(path, docs[:300], model=MODEL, components=COMPONENTS)
    index.delete([f"d{i}" for i in range(0, 300, 7)])
    index.close()
    with Index.open(path, writable=True) as engine:
        engine.optimize()  # one merged segment whose ids have gaps: an id map (ids.arr)
    index = m3search.open_index(path)
    index.add(docs[300:])
    index.delete([f"d{i}" for i in range(301, 600, 11)])  # a deletion bitmap
    index.close()


def answers(path: Path) -> dict:
    import m3search

    with m3search.open_index(path) as index:
        out = {}
        for mode in MODES:
            hits = index.search_many(QUERIES, k=10, mode=mode, depths=200)
            out[mode] = [[(h.docid, round(float(h.score), 4), h.text) for h in q] for q in hits]
        return json.loads(json.dumps(out))


def mutations(path: Path, rel: str, flips: int, rng: random.Random) -> list[tuple[str, callable]]:
    size = (path / rel).stat().st_size
    out = []

    def truncate(n):
        return lambda p: os.truncate(p, n)

    if size:
        out += [("truncate-0", truncate(0)), ("truncate-half", truncate(size // 2)), ("truncate-1", truncate(size - 1))]
    out.append(("append-1", lambda p: open(p, "ab").write(b"\x00")))
    n_flips = flips * (4 if rel.endswith("data.mdb") else 1)
    for _ in range(n_flips if size else 0):
        pos, mask = rng.randrange(size), rng.randrange(1, 256)

        def flip(p, pos=pos, mask=mask):
            with open(p, "r+b") as f:
                f.seek(pos)
                b = f.read(1)[0]
                f.seek(pos)
                f.write(bytes([b ^ mask]))
        out.append((f"flip@{pos}", flip))
    if rel.endswith("data.mdb"):
        for _ in range(flips):
            page = rng.randrange(max(1, size // 4096))
            data = rng.randbytes(4096)

            def garbage(p, page=page, data=data):
                with open(p, "r+b") as f:
                    f.seek(page * 4096)
                    f.write(data)
            out.append((f"page-garbage@{page}", garbage))
    return out


def in_child(fn, timeout: float) -> dict:
    """Run fn() -> JSON-able dict in a forked child; this process never runs FAISS (OpenMP) itself, so
    every child starts clean. A child killed by a signal or hung is reported as a crash."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            result = fn()
        except BaseException as e:  # noqa: BLE001
            result = {"outcome": "traceback", "message": f"{type(e).__name__}: {e}"}
        os.write(write_fd, json.dumps(result).encode())
        os.close(write_fd)
        os._exit(0)
    os.close(write_fd)
    chunks = []
    deadline = time.monotonic() + timeout
    os.set_blocking(read_fd, False)
    status = None
    while True:
        try:
            while chunk := os.read(read_fd, 1 << 16):
                chunks.append(chunk)
        except BlockingIOError:
            pass
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_fd)
            return {"outcome": "crash", "message": "hung"}
        time.sleep(0.01)
    try:
        while chunk := os.read(read_fd, 1 << 16):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    os.close(read_fd)
    if os.WIFSIGNALED(status):
        return {"outcome": "crash", "message": f"signal {os.WTERMSIG(status)}"}
    raw = b"".join(chunks)
    return json.loads(raw) if raw else {"outcome": "crash", "message": "no result"}


def run_case(case: Path, reference: dict, timeout: float) -> dict:
    """Open the damaged copy in a child, answer the queries and run check_index."""

    def child() -> dict:
        result = {}
        try:
            from m3search.errors import M3SearchError
            from m3search.indexes.check import check_index

            try:
                got = answers(case)
                result["outcome"] = "correct" if got == reference else "garbage"
            except M3SearchError as e:
                result["outcome"] = "error"
                result["message"] = str(e)
                result["one_line"] = "\n" not in str(e)
            except Exception as e:  # noqa: BLE001 (anything else is what we are hunting for)
                result["outcome"] = "traceback"
                result["message"] = f"{type(e).__name__}: {e}"
            try:
                result["check_flagged"] = not check_index(case).ok
            except Exception as e:  # noqa: BLE001
                result["check_flagged"] = None
                result["check_error"] = f"{type(e).__name__}: {e}"
        except BaseException as e:  # noqa: BLE001
            result = {"outcome": "traceback", "message": f"{type(e).__name__}: {e}"}
        return result

    return in_child(child, timeout)


def kind_of(rel: str) -> str:
    name = Path(rel).name
    if rel.startswith("segments/"):
        parts = Path(rel).parts
        return f"segments/*/{'/'.join(parts[2:])}" if len(parts) > 3 else f"segments/*/{name}"
    return rel


def sweep(work: Path, flips: int, seed: int, timeout: float = 120.0, one_file_per_kind: bool = False,
          mutations_kept: tuple[str, ...] | None = None, only: str | None = None) -> dict:
    """one_file_per_kind / mutations_kept (label prefixes): the small version the test suite runs."""
    import m3search.indexes.check  # noqa: F401  imported (not run) here, so each child starts at once
    import m3search.indexes.index  # noqa: F401
    import m3search.indexes.sparse.reader  # noqa: F401

    pristine = work / "pristine"
    built = in_child(lambda: build(pristine) or {"outcome": "built"}, timeout=600)
    if built.get("outcome") != "built":
        raise RuntimeError(f"building the index failed: {built}")
    reference = in_child(lambda: {"outcome": "ok", "answers": answers(pristine)}, timeout)["answers"]
    rng = random.Random(seed)
    files = sorted(p.relative_to(pristine).as_posix() for p in pristine.rglob("*")
                   if p.is_file() and p.name not in SKIP)
    if one_file_per_kind:
        firsts: dict[str, str] = {}
        for rel in files:
            firsts.setdefault(kind_of(rel), rel)
        files = sorted(firsts.values())
    cases = []
    for rel in files:
        for label, mutate in mutations(pristine, rel, flips, rng):
            if (mutations_kept and not label.startswith(mutations_kept)) or (only and only not in rel):
                continue  # (after drawing its random bytes, so --only reproduces the full run's cases)
            case = work / "case"
            if case.exists():
                shutil.rmtree(case)
            shutil.copytree(pristine, case)
            mutate(case / rel)
            result = run_case(case, reference, timeout)
            cases.append({"file": rel, "kind": kind_of(rel), "mutation": label, **result})
    return {"files": files, "cases": cases}


def summarise(result: dict) -> tuple[dict, str]:
    cases = result["cases"]
    by_kind = collections.defaultdict(collections.Counter)
    totals = collections.Counter()
    for c in cases:
        key = c["outcome"]
        by_kind[c["kind"]][key] += 1
        totals[key] += 1
        totals["check_flagged"] += bool(c.get("check_flagged"))
        if c["outcome"] == "error" and not c.get("one_line", True):
            totals["multi_line_errors"] += 1
        if c["outcome"] in ("error", "garbage") and c.get("check_flagged") is False:
            totals["check_missed"] += 1
        if c.get("check_error"):
            totals["check_crashed"] += 1
    lines = ["| file kind | cases | correct | clear error | garbage | traceback | crash |", "|---|---|---|---|---|---|---|"]
    for kind in sorted(by_kind):
        k = by_kind[kind]
        lines.append(f"| {kind} | {sum(k.values())} | {k['correct']} | {k['error']} | {k['garbage']} | "
                     f"{k['traceback']} | {k['crash']} |")
    lines.append(f"| **all** | **{len(cases)}** | {totals['correct']} | {totals['error']} | {totals['garbage']} | "
                 f"{totals['traceback']} | {totals['crash']} |")
    summary = {"cases": len(cases), **{k: totals[k] for k in ("correct", "error", "garbage", "traceback", "crash",
                                                               "check_flagged", "check_missed", "check_crashed",
                                                               "multi_line_errors")}}
    return summary, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flips", type=int, default=20, help="random byte flips per file (x4 for data.mdb)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write a markdown report here (and .json beside)")
    parser.add_argument("--only", default=None, help="run only the files whose path contains this (e.g. data.mdb)")
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="m3s-sweep-") as tmp:
        result = sweep(Path(tmp), args.flips, args.seed, only=args.only)
    summary, table = summarise(result)
    bad = [c for c in result["cases"] if c["outcome"] in ("garbage", "traceback", "crash")
           or (c["outcome"] == "error" and not c.get("one_line", True))]
    text = (f"# Corruption sweep\n\n{len(result['files'])} files, {summary['cases']} damaged copies "
            f"(seed {args.seed}, {args.flips} flips per file), {time.time() - started:.0f} s on 2 shared CPU cores.\n\n"
            f"{table}\n\n`m3search check` flagged {summary['check_flagged']} of the {summary['cases']} copies; it missed "
            f"{summary['check_missed']} whose damage a search reported or served; it crashed on {summary['check_crashed']}. "
            f"Errors spanning several lines: {summary['multi_line_errors']}.\n"
            "A 'correct' case is damage that no query read (e.g. a free LMDB page, or an array block the queries "
            "never touched: `check` flags the latter).\n")
    if bad:
        text += "\n## Failures\n\n" + "\n".join(f"- {c['file']} {c['mutation']}: {c['outcome']} {c.get('message', '')[:300]}"
                                               for c in bad[:50]) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({"summary": summary, **result}, indent=1))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
