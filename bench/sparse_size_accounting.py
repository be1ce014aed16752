"""Where a sparse segment's inverted bytes go, per field, in formats 3 and 4 (bench helper, not a speed benchmark).

    python bench/sparse_size_accounting.py --docs 200000

Re-derives the postings layout of packed.py (FORMAT.md) on the benchmark's synthetic data and tallies bits
per field: chunk headers, block gaps, counts, block-maxes, payload offsets (single / list / bitmap),
payload impacts, dense-group headers and counts, plus the dense block-max rows, group pointers and the
per-token arrays. Prints B/doc per field; the version-4 lines replace version 3's gap, count and chunk
header fields of the non-dense tokens (Rice-coded gaps, count exceptions).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from numba import njit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from m3search.indexes.sparse import encode  # noqa: E402
from m3search.indexes.sparse.packed import (BITLEN, CHUNK, CHUNK_HEADER_BITS, GROUP_BLOCKS, GROUP_HEADER_BITS,  # noqa: E402
                                            RICE_HEADER_BITS, _entries, _exceptions, bitlen,
                                            rice_param)
from m3search.indexes.sparse.quantize import Quantizer  # noqa: E402

FIELDS = ["nd_chunk_header", "nd_gap", "nd_count", "nd_max", "nd_off_single", "nd_off_list", "nd_off_bitmap",
          "nd_impact", "d_group_header", "d_count", "d_off_single", "d_off_list", "d_off_bitmap", "d_impact"]
V4_FIELDS = ["v4 nd_chunk_header", "v4 nd_gap (Rice: lows + unary highs)", "v4 nd_count (exceptions)"]


@njit(cache=True)
def _tally(term_start, post_doc, post_code, shift, is_dense, bits, hist_nd, hist_d):
    R = 1 << shift
    n = len(term_start) - 1
    for i in range(n):
        lo, hi = term_start[i], term_start[i + 1]
        # entries, split as the writer splits them
        eb = np.empty(hi - lo, np.int64)
        ec = np.empty(hi - lo, np.int64)
        em = np.empty(hi - lo, np.int64)
        ei = np.empty(hi - lo + 1, np.int64)
        ne = _entries(post_doc, post_code, lo, hi, shift, eb, ec, em, ei)
        base = 0 if not is_dense[i] else 6
        for e in range(ne):
            c = ec[e]
            if is_dense[i]:
                hist_d[c] += 1
            else:
                hist_nd[c] += 1
            if c == 1:
                bits[base + 4] += shift
            elif c * shift <= R:
                bits[base + 5] += c * shift
                bits[base + 7] += c * BITLEN[em[e] - 1]
            else:
                bits[base + 6] += R
                bits[base + 7] += c * BITLEN[em[e] - 1]
        if not is_dense[i]:
            prev = -1
            for k0 in range(0, ne, CHUNK):
                k1 = min(k0 + CHUNK, ne)
                wg = 0
                wc = 0
                wm = 0
                for e in range(k0, k1):
                    wg = max(wg, bitlen(eb[e] - prev - 1))
                    wc = max(wc, bitlen(ec[e] - 1))
                    wm = max(wm, bitlen(em[e] - 1))
                    prev = eb[e]
                bits[0] += CHUNK_HEADER_BITS
                bits[1] += (k1 - k0) * wg
                bits[2] += (k1 - k0) * wc
                bits[3] += (k1 - k0) * wm
                _, gap_bits = rice_param(eb, k0, k1, eb[k0 - 1] if k0 > 0 else -1)
                bits[16] += RICE_HEADER_BITS
                bits[17] += gap_bits
                bits[18] += _exceptions(ec, k0, k1)[3]
        else:
            e = 0
            while e < ne:
                g = eb[e] // GROUP_BLOCKS
                e1 = e
                wc = 0
                while e1 < ne and eb[e1] // GROUP_BLOCKS == g:
                    wc = max(wc, bitlen(ec[e1] - 1))
                    e1 += 1
                bits[8] += GROUP_HEADER_BITS
                bits[9] += (e1 - e) * wc
                e = e1


def main():
    import index_bench_sparse as bench

    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--block-docs", type=int, default=64)
    ap.add_argument("--dense-fraction", type=float, default=0.25)
    args = ap.parse_args()
    x, _ = bench._load_data(args.docs, 1000, 0)
    n_docs = x.shape[0]
    qz = Quantizer(float(x.data.astype(np.float16).astype(np.float32).max()) * 1.25)
    codes, _ = qz.codes(x.data.astype(np.float16).astype(np.float32))
    shift = args.block_docs.bit_length() - 1
    n_blocks = (n_docs + (1 << shift) - 1) >> shift
    term_ids, term_start, post_doc, post_code = encode.invert(x.indptr.astype(np.int64), x.indices.astype(np.int32),
                                                              codes, x.shape[1])
    entries = encode.count_blocks(term_start, post_doc, shift)
    is_dense = entries >= max(1.0, args.dense_fraction * n_blocks)
    bits = np.zeros(19, np.int64)
    hist_nd = np.zeros((1 << shift) + 1, np.int64)
    hist_d = np.zeros((1 << shift) + 1, np.int64)
    _tally(term_start, post_doc, post_code, shift, is_dense, bits, hist_nd, hist_d)
    n_terms = len(term_ids)
    n_dense = int(is_dense.sum())
    n_groups = (n_blocks + GROUP_BLOCKS - 1) // GROUP_BLOCKS
    rows = [(f, bits[i] / 8 / n_docs) for i, f in enumerate(FIELDS[:8])]
    rows += [(f, bits[8 + i] / 8 / n_docs) for i, f in enumerate(FIELDS[8:])]
    rows += [("dense_max rows", n_dense * n_blocks / n_docs), ("group_ptr", 4 * n_dense * (n_groups + 1) / n_docs),
             ("per-token arrays (ids, ptr, dense, entries, max)", n_terms * (4 + 8 + 4 + 4 + 1) / n_docs)]
    total = sum(v for _, v in rows)
    print(f"docs {n_docs}, postings {x.nnz} ({x.nnz / n_docs:.1f}/doc), terms {n_terms}, dense {n_dense}, "
          f"blocks {n_blocks}, entries nd {hist_nd.sum()} dense {hist_d.sum()}")
    for f, v in rows:
        print(f"| {f} | {v:.2f} | {100 * v / total:.1f}% |")
    print(f"| total (format 3) | {total:.2f} | |")
    v4 = [(f, bits[16 + i] / 8 / n_docs) for i, f in enumerate(V4_FIELDS)]
    for f, v in v4:
        print(f"| {f} | {v:.2f} | |")
    total4 = total - (bits[0] + bits[1] + bits[2]) / 8 / n_docs + sum(v for _, v in v4)
    print(f"| total (format 4) | {total4:.2f} | |")
    for name, h in (("non-dense", hist_nd), ("dense", hist_d)):
        tot = h.sum()
        print(name, "count histogram (c: share of entries):",
              " ".join(f"{c}:{h[c] / tot:.3f}" for c in range(1, 12)), f"... mean {np.dot(np.arange(len(h)), h) / tot:.2f}")
    # postings per dense / non-dense
    per_term = np.diff(term_start)
    print(f"postings in dense tokens {per_term[is_dense].sum() / x.nnz:.3f}")


if __name__ == "__main__":
    main()
