"""Merges in the background of commits: one worker thread per writer, started by the first commit that
asks for merges and kept until the writer closes. One long-lived thread, not one per burst of merges:
the thread pools that OpenMP (FAISS, torch) and numba keep per calling thread are then made once, instead
of being built and torn down after every commit.

A commit is durable and visible when its transaction ends; the merges its policy asks for then run on this
thread while the caller goes on adding (encoding, buffering) and readers go on searching. Each merge commits
its own transaction (writer.py explains why a merge and a commit may interleave safely). A crash during a
background merge is a crash during a merge: the merged folder is not listed by any commit and the next
writer deletes it, so the index opens at its last commit.

The worker is a daemon thread: a process that exits without closing its index drops the merge under way
like a kill would (safe, see above); `Index.close()` waits for it instead, so a closed index holds the
segments its policy wants.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Callable, Iterator

logger = logging.getLogger(__name__)


class BackgroundMerges:
    """Runs `run_policy()` on a worker thread whenever `request()` is called, never two at once."""

    def __init__(self, run_policy: Callable[[], None], name: str = "m3search-merges"):
        self._run_policy = run_policy
        self._name = name
        self._cond = threading.Condition()
        self._requested = False
        self._thread: threading.Thread | None = None
        self._busy = False  # a policy round is running
        self._closed = False
        self.round_lock = threading.Lock()  # held while the policy runs; pause() takes it too
        self.failures = 0  # policy rounds that raised (logged), for callers and tests

    def request(self) -> None:
        """Ask for a policy round after the current one (starting the worker on first use)."""
        with self._cond:
            if self._closed:
                return
            self._requested = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
                while not self._requested and not self._closed:
                    self._cond.wait()
                if not self._requested:  # closed, nothing left to run
                    self._thread = None
                    self._cond.notify_all()
                    return
                self._requested = False
                self._busy = True
            with self.round_lock:
                try:
                    self._run_policy()
                except Exception:  # the commits are durable: a failed merge leaves the index as committed
                    self.failures += 1
                    logger.exception("background merge failed; the index stays as committed")

    @property
    def running(self) -> bool:
        """A policy round is under way or requested."""
        with self._cond:
            return self._busy or self._requested

    def wait(self) -> None:
        """Block until every requested round has run."""
        with self._cond:
            while self._busy or self._requested:
                if self._thread is threading.current_thread():
                    return
                self._cond.wait()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No policy round runs inside this block (one under way finishes first)."""
        with self.round_lock:
            yield

    def close(self) -> None:
        """Run what was requested, refuse new requests, and end the worker."""
        self.wait()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
