"""Give freed heap memory back to the system (glibc's malloc_trim).

glibc keeps freed blocks in its heap: a tokenizer's trie and a model's many small tensors once the encoder is
dropped (the CLI releases them before its last commit), and the activations of each encoder batch, which
ONNX Runtime allocates and frees with malloc (~200 MB held after a 128-passage batch of m3search-small).
`release_free_memory` returns their pages, so that a segment build does not stack on them: the writer calls
it before it flushes its buffer (the codec's training sample alone is ~300 MB at 384-d). It changes no
state a program can see, only which free pages the process keeps. A fixed mmap threshold (MALLOC_MMAP_THRESHOLD_=1 MB) was tried too: ~200 MB lower peak
RSS when the token buffer lived in the heap, but every encoder batch then page-faults its activations in
afresh (indexing 400 passages took 58.7 s instead of 40.9 s, same load), and with the buffered token
vectors in a file (indexes/token_spill.py) there is little heap left to fragment; so it is not set.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import mmap


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


def drop_file_pages(array) -> bool:
    """Take the pages of the read-only file mapping under `array` out of the process's resident set
    (MADV_DONTNEED: read again from the page cache if touched again); whether there was one to drop.
    For arrays read once in a pass (a merge's source segments), whose pages would otherwise stay counted."""
    base = array
    while base is not None and not isinstance(base, mmap.mmap):  # array -> ... -> memoryview -> mmap
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    if base is None or not hasattr(base, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return False
    base.madvise(mmap.MADV_DONTNEED)
    return True
