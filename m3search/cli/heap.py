"""Give freed heap memory back to the system (glibc's malloc_trim), for the CLI, which owns its process.

glibc keeps freed small blocks (a tokenizer's trie, a model's many small tensors) in its heap; after the
encoder is dropped, `release_free_memory` returns their pages so that the memory counts as free for the
rest of the run. A fixed mmap threshold (MALLOC_MMAP_THRESHOLD_=1 MB) was tried too: ~200 MB lower peak
RSS when the token buffer lived in the heap, but every encoder batch then page-faults its activations in
afresh (indexing 400 passages took 58.7 s instead of 40.9 s, same load), and with the buffered token
vectors in a file (indexes/token_spill.py) there is little heap left to fragment; so it is not set.
"""
from __future__ import annotations

import ctypes
import ctypes.util


def release_free_memory() -> bool:
    """Give the pages of freed heap memory back to the system now (glibc's malloc_trim); whether it did.
    A no-op where malloc is not glibc's."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))
