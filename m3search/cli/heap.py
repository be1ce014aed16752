"""Return freed memory to the system in long-running commands (`m3search index`).

glibc's malloc serves a large block from an mmap of its own only while the block is above a threshold that
it raises each time such a block is freed (the "dynamic mmap threshold", up to 32 MB). Indexing frees
encoder activations and batch arrays of a few MB every batch, so after the first batches they come from
the heap instead, where the kept token vectors fragment it and the freed space is never given back:
indexing 400 passages peaked at 1,211 MB with the default and at ~1,010 MB with a fixed 1 MB threshold
(bench/index_rss_profile.py). Fixing the threshold (as MALLOC_MMAP_THRESHOLD_ would) keeps large blocks
in their own mappings, unmapped when freed. A process-wide setting, so the command (which owns its
process) makes it, never the library. A no-op where malloc is not glibc's.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 1 << 20


def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Set glibc's mmap threshold to nbytes unless MALLOC_MMAP_THRESHOLD_ is set; whether it was set."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is not None:
        return False  # the user chose
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, int(nbytes)))


def release_free_memory() -> bool:
    """Give the pages of freed heap memory back to the system now (glibc's malloc_trim); whether it did."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))
