"""Small FAISS helpers shared by the dense and multi-vector components: per-call thread counts, id
selectors from deleted masks, GPU cloning, quiet training."""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import faiss
import numpy as np

from m3search.errors import ConfigError

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def faiss_threads(n: int | None) -> Iterator[None]:
    """Run the block with n threads in FAISS (OpenMP) and numba, restoring the previous counts after.
    On shared or oversubscribed cores one thread is often much faster than spinning OpenMP teams."""
    if n is None:
        yield
        return
    import numba

    before, before_numba = faiss.omp_get_max_threads(), numba.get_num_threads()
    faiss.omp_set_num_threads(int(n))
    numba.set_num_threads(min(int(n), numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
        numba.set_num_threads(before_numba)


# Below this many multiply-adds a search or scoring call runs on one thread: a ~2 ms job gains little from
# a second thread, and on a busy machine waiting for an OpenMP team cost 10-25 ms per call (measured with 5
# other jobs on 2 cores: a 3,000-doc flat search took 12 ms on 2 threads, 0.1 ms on one).
SMALL_WORK = 10_000_000


def threads_for(work: float, configured: int | None) -> int | None:
    """The thread count for a call of `work` multiply-adds: the configured count, else 1 for small work,
    else None (the libraries' defaults)."""
    if configured is not None:
        return configured
    return 1 if work < SMALL_WORK else None


class LiveSelector:
    """An IDSelectorBitmap over the documents not marked deleted; keeps its bitmap alive."""

    def __init__(self, deleted: np.ndarray):
        self.bitmap = np.packbits(~deleted, bitorder="little")
        self.sel = faiss.IDSelectorBitmap(len(deleted), faiss.swig_ptr(self.bitmap))


def quiet_training(index: faiss.Index) -> None:
    """Lower the k-means points-per-centroid floor so FAISS doesn't print warnings on small samples."""
    for holder in (index, getattr(index, "pq", None)):
        cp = getattr(holder, "cp", None)
        if cp is not None:
            cp.min_points_per_centroid = 1
            cp.verbose = False


def gpu_count() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get else 0


def want_gpu(setting: object) -> bool:
    """Whether to use GPU FAISS for a `gpu` config value of "auto" / True / False."""
    available = gpu_count() > 0 and hasattr(faiss, "StandardGpuResources")
    if setting is True and not available:
        raise ConfigError(
            "config 'gpu' is true but FAISS sees no GPU; install faiss-gpu on a CUDA machine or set gpu to 'auto'"
        )
    return available and setting is not False


class GpuClone:
    """A GPU copy of a CPU index (same results up to float rounding), or None where FAISS's GPU code
    lacks the structure (e.g. fast-scan PQ): callers then search on the CPU."""

    def __init__(self, index: faiss.Index):
        self.resources = faiss.StandardGpuResources()
        options = faiss.GpuClonerOptions()
        options.useFloat16 = False  # keep codes and lookups in float32: same results as on the CPU
        try:
            self.index = faiss.index_cpu_to_gpu(self.resources, 0, index, options)
        except RuntimeError as e:  # unsupported structure
            logger.info("GPU FAISS can't hold %s (%s); searching on the CPU", type(index).__name__, e)
            self.index = None
