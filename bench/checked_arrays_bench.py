"""Cost of the checked array format (segment_files.py) against what it replaced, in the same run.

For one (n, 384) uint8 codes array (default 256 MiB): time to open it (old: np.load memory map plus the
CRC of up to 64 MiB, sampled windows above; new: read and check the block-CRC trailer), the first read of
100 random rows (new: verifies the 64 KiB blocks they sit in), the same read again (verified already), and a
full verification (what `m3search check` does). Medians over repeats; page cache warm (both read the same
bytes). Usage: python3 bench/checked_arrays_bench.py [--mib 256] [--out bench/results/checked_arrays.md]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from m3search.indexes import segment_files as sf  # noqa: E402


def old_open(path: Path) -> np.ndarray:
    """The replaced scheme: full CRC below 64 MiB, 32 sampled 64 KiB windows above."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= 64 << 20:
            crc = 0
            while chunk := f.read(1 << 20):
                crc = zlib.crc32(chunk, crc)
        else:
            for start in np.linspace(0, size - (64 << 10), 32).astype(np.int64):
                f.seek(int(start))
                zlib.crc32(f.read(64 << 10))
    return np.load(path, mmap_mode="r")


def timed(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = (args.mib << 20) // 384
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        arr = rng.integers(0, 256, size=(n, 384), dtype=np.uint8)
        np.save(folder / "codes.npy", arr)
        entry = sf.write_array(folder, "codes.arr", arr)
        del arr
        rows = [np.sort(rng.choice(n, 100, replace=False)) for _ in range(args.repeats)]
        old = old_open(folder / "codes.npy")
        res = {
            "open: old (.npy + sampled CRC)": timed(lambda: old_open(folder / "codes.npy"), args.repeats),
            "open: new (block-CRC trailer)": timed(lambda: sf.open_checked(folder, "codes.arr", entry), args.repeats),
        }
        old_read = []
        new_first, new_again = [], []
        for r in rows:
            t = time.perf_counter()
            np.asarray(old[r])
            old_read.append(time.perf_counter() - t)
            checked = sf.open_checked(folder, "codes.arr", entry)
            t = time.perf_counter()
            checked[r]
            new_first.append(time.perf_counter() - t)
            t = time.perf_counter()
            checked[r]
            new_again.append(time.perf_counter() - t)
        res["100 random rows: old (unchecked)"] = statistics.median(old_read) * 1e3
        res["100 random rows: new, first read (verifies 100 blocks)"] = statistics.median(new_first) * 1e3
        res["100 random rows: new, again"] = statistics.median(new_again) * 1e3
        res["verify everything (m3search check)"] = timed(
            lambda: sf.open_checked(folder, "codes.arr", entry).verify_all(), max(1, args.repeats // 2))
    lines = [f"# Checked arrays: {args.mib} MiB of (n, 384) uint8 codes, medians of {args.repeats}, ms "
             "(2 shared CPU cores, warm page cache)", "", "| operation | ms |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in res.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
