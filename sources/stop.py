"""A stop requested for the whole process (Ctrl-C, SIGTERM): every wait ends at once.

Outside `sources.mews` so that the command line can set it without importing dlt. The client's
waits (its rate limiter, its backoff) sleep on this event, so a stop ends them within
milliseconds in every thread, instead of when the longest wait was over (6.5 to 16.8 s
measured with a 30 s limiter window) while dlt waited for its thread pool.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sources.errors import MewsError

STOPPING = threading.Event()


class RunStopped(MewsError):
    """A wait ended because the process was asked to stop."""


def stoppable_sleep(seconds: float) -> None:
    """Sleep `seconds`, or raise RunStopped as soon as a stop is requested."""
    if STOPPING.wait(max(0.0, seconds)):
        raise RunStopped("stopped while waiting")


@contextmanager
def stoppable_lock(lock: threading.Lock) -> Iterator[None]:
    """Hold `lock`, waiting for it at most until a stop is requested (then RunStopped). A
    thread waiting on a plain lock outlived a stop: the process then hung at exit, joining it
    (one Ctrl-C in six in tests/test_reliability.py; the lock's holder, stopped between taking
    it and the block that releases it, never did)."""
    while not lock.acquire(timeout=0.05):
        if STOPPING.is_set():
            raise RunStopped("stopped while waiting for another request")
    try:
        yield
    finally:
        lock.release()
