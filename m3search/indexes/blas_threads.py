"""One BLAS thread for the small matrix products of a query.

A query's products are tiny (16 query tokens x 384 dims x 4,096 centroids); a multi-threaded BLAS
(OpenBLAS, numpy's) wakes its pool for each and spins after it. On shared or busy cores that costs far more
than the product: measured on 2 cores at load ~17, `q @ centroids.T` took 24 ms of CPU (56 ms wall) with 2
OpenBLAS threads and 0.6 ms with one (bench/results/multivec_generator_profile.md). threadpoolctl limits the
pool for the block and restores it after (7 microseconds with a controller made once); without it the
block runs as it is.
"""
from __future__ import annotations

import contextlib
import threading

_controller = None
_lock = threading.Lock()


def _get_controller():
    global _controller
    if _controller is None:
        with _lock:
            if _controller is None:
                try:
                    from threadpoolctl import ThreadpoolController
                except ImportError:  # optional: without it BLAS keeps its own thread count
                    _controller = False
                else:
                    _controller = ThreadpoolController()
    return _controller


def one_blas_thread():
    """Context manager: BLAS on one thread inside the block."""
    ctl = _get_controller()
    return ctl.limit(limits=1, user_api="blas") if ctl else contextlib.nullcontext()
