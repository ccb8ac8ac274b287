"""How much one load (a step) reads: what a killed run loses.

A step's watermarks may only move to a window's end: inside a window Mews pages in an
undocumented order (not by UpdatedUtc), so a window cut short proves nothing read up to any
moment. A step therefore ends at a window's end, and windows are split in time, as they are
read, so that each takes about a quarter of `max_seconds_per_load`: a step ends at the first
window end after three quarters of it, about `max_seconds_per_load` after it began.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from .settings import MAX_WINDOW_DAYS_STRICTEST, MIN_WINDOW

Window = tuple[datetime, datetime]

# A window read in less than its share may be followed by one at most this many times longer:
# the history gets denser towards today, and a window much too long cannot be cut short.
MAX_GROWTH = 4.0
# A run's first window, before any pace is known. Short, as the first window holding orders
# may be dense (a group of 100 hotels, about 10,000 orders a day: 70,000 in a week, about 20 s
# at the API's limit; 4.5 minutes for three months); quick windows grow it back to whole
# windows by the third.
FIRST_WINDOW = timedelta(days=7)


def window_seconds(max_seconds_per_load: float) -> float:
    """How long reading one window should take."""
    return max_seconds_per_load / 4


def step_is_over(started: float, max_seconds_per_load: float | None) -> bool:
    """Whether a step that began at `started` (time.monotonic) should end before its next
    window: that window (a quarter of the time) would take it past `max_seconds_per_load`."""
    if not max_seconds_per_load:
        return False
    elapsed = time.monotonic() - started
    return elapsed + window_seconds(max_seconds_per_load) >= max_seconds_per_load


@dataclass
class WindowPace:
    """The length of window that takes about `seconds` to read, learned from the windows
    read; kept across the steps of a run. None: whole windows, until one is slow."""

    length: timedelta | None = FIRST_WINDOW

    def split(self, window: Window, seconds: float | None) -> Iterator[Window]:
        """Consecutive windows covering `window`, each sized by the pace of those before it
        (the caller reads each before asking for the next). `seconds` None: `window` whole."""
        start, end = window
        while start < end:
            stop = end if self.length is None or not seconds else start + self.length
            # Whole seconds, for readable requests and watermarks.
            stop = min(end, max(stop.replace(microsecond=0), start + MIN_WINDOW))
            began = time.monotonic()
            yield start, stop
            if seconds:
                self.learn(stop - start, time.monotonic() - began, seconds)
            start = stop

    def learn(self, length: timedelta, took: float, seconds: float) -> None:
        """Shrink the length to what a slow window's pace reads in `seconds`; let a quick
        window's pace grow it (by at most MAX_GROWTH), back to whole windows."""
        if took > seconds:
            self.length = max(MIN_WINDOW, length * (seconds / took))
        elif self.length is not None:
            grown = length * min(MAX_GROWTH, seconds / max(took, 0.001))
            if grown >= timedelta(days=MAX_WINDOW_DAYS_STRICTEST):
                self.length = None
            else:
                self.length = max(self.length, grown)
