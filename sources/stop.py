"""A stop requested for the whole process (Ctrl-C, SIGTERM): every wait ends at once.

Outside `sources.mews` so that the command line can set it without importing dlt. The client's
waits (its rate limiter, its backoff) sleep on this event, so a stop ends them within
milliseconds in every thread, instead of when the longest wait was over (6.5 to 16.8 s
measured with a 30 s limiter window) while dlt waited for its thread pool.
"""

from __future__ import annotations

import threading

from sources.errors import MewsError

STOPPING = threading.Event()


class RunStopped(MewsError):
    """A wait ended because the process was asked to stop."""


def stoppable_sleep(seconds: float) -> None:
    """Sleep `seconds`, or raise RunStopped as soon as a stop is requested."""
    if STOPPING.wait(max(0.0, seconds)):
        raise RunStopped("stopped while waiting")
