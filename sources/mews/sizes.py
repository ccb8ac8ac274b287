"""How large a request Mews answers in time, learned from timeouts and 408s.

A request's size is the larger of its page `Count` and its number of ids. One `RequestSizes` is
shared by every operation and thread of a client; the source keeps what it learned in dlt's
state (`saved`/`restore`), so the steps of a run and the next runs start from it. It knows
nothing of dlt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sources.stop import stoppable_lock

from .settings import MIN_PAGE_SIZE, PAGE_SIZE, REQUEST_SIZE_PROBE_AFTER

# Failures of sizes answered in time before, with no answer in time in between, after which
# the sizes are learned again. One is not enough: with 10% of requests answered 408 at random
# (tests/test_reliability.py), lowering the ceiling on each took it to MIN_PAGE_SIZE within
# 1,700 requests of a 2,000-order sync (to 31 in 400 requests with two).
STRIKES = 2


class RequestSizes:
    """The largest size to send (`ceiling`), and the largest answered in time (`answered`):
    of what the answer carried, the larger of its items and the ids asked about.

    A timeout or a 408 on a request of size s larger than `answered` lowers the ceiling for
    every operation and thread at once: to half of s, never below a size answered in time nor
    MIN_PAGE_SIZE. One on a size answered in time before may be a passing overload: only the
    request itself asks for less, unless it happens STRIKES times with no answer in time in
    between; then `answered` is forgotten and the sizes are learned again. A request larger
    than `answered` takes its `turn`: one at a time, so while the size is being learned a
    server that is slow on large requests costs one timeout per size tried, not one per thread
    (each notes thread timed out on 1,000 ids in the issue-20 incident). Requests up to
    `answered` go on meanwhile.
    """

    def __init__(
        self, full: int = PAGE_SIZE, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ):
        self.full = full
        self.ceiling = full
        self.answered = 0  # 0: nothing answered yet, or forgotten after STRIKES failures
        self.lowered_at: datetime | None = None  # when the ceiling was last lowered or probed
        self._now = now
        self._probe_fallback: int | None = None  # the stored ceiling, while the full is probed
        self._strikes = 0  # failures of sizes answered in time, since the last answer in time
        self._lock = threading.Lock()
        self._heavy = threading.Lock()  # held by the one request larger than `answered`
        self._restored = False
        self._store: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"RequestSizes(ceiling={self.ceiling}, answered={self.answered})"

    @contextmanager
    def turn(self, size: int) -> Iterator[bool]:
        """Around sending a request of `size`: waits while another request larger than
        `answered` is in flight, if this one is too; yields whether `size` is still within the
        ceiling (which another thread may have lowered meanwhile: then ask for less)."""
        if size <= self.answered:
            yield size <= self.ceiling
            return
        with stoppable_lock(self._heavy):
            yield size <= self.ceiling

    def answered_in_time(self, size: int) -> None:
        with self._lock:
            self._strikes = 0
            if self._probe_fallback is not None and size > self._probe_fallback:
                self._probe_fallback = None  # the probe was answered: the larger size stays
            answered = max(self.answered, min(size, self.ceiling))
            if answered != self.answered:
                self.answered = answered
                self._save()

    def too_heavy(self, size: int) -> None:
        """A request of `size` timed out or got a 408."""
        with self._lock:
            if size <= self.answered:
                self._strikes += 1
                if self._strikes >= STRIKES:  # Mews got slower: learn again, one at a time
                    self.answered = 0
                    self._save()
                return
            lower = self._probe_fallback or max(self.answered, size // 2)
            self._probe_fallback = None
            self.ceiling = max(MIN_PAGE_SIZE, min(self.ceiling, lower))
            self.lowered_at = self._now()
            self._save()

    def saved(self) -> dict[str, Any]:
        """What to keep between runs, JSON-safe: give it to `restore`."""
        lowered = self.lowered_at.isoformat() if self.lowered_at else None
        return {"ceiling": self.ceiling, "answered": self.answered, "lowered_utc": lowered}

    def restore(self, saved: Mapping[str, Any] | None) -> None:
        """Start from what an earlier run learned, unless this object already did or lowered
        its ceiling itself (what a run learned is fresher than what it stored).

        A ceiling lowered REQUEST_SIZE_PROBE_AFTER ago or more is lifted to the full size, once:
        the first large request then probes it alone; if it is not answered in time either,
        the ceiling goes straight back to the stored one (one timeout), else the hotel is no
        longer capped by a slow day.
        """
        with self._lock:
            if self._restored or self.lowered_at or not saved:
                return
            self._restored = True
            lowered_at = _moment(saved.get("lowered_utc"))
            self.ceiling = _size(saved.get("ceiling"), self.full) or self.full
            self.answered = min(self.ceiling, max(self.answered, _size(saved.get("answered"))))
            self.lowered_at = lowered_at
            if self.ceiling < self.full and (
                lowered_at is None or self._now() - lowered_at >= REQUEST_SIZE_PROBE_AFTER
            ):
                self._probe_fallback, self.ceiling = self.ceiling, self.full
                self.lowered_at = self._now()
            self._save()

    def keep_in(self, store: dict[str, Any]) -> None:
        """Restore from `store`, then write what is learned into it, now and on every change
        (the source passes a dict of dlt's state)."""
        self.restore(store)
        with self._lock:
            self._store = store
            self._save()

    def _save(self) -> None:
        if self._store is not None:
            self._store.update(self.saved())


def _size(value: Any, full: int = PAGE_SIZE) -> int:
    """A stored size, or 0 for one that cannot be (state edited by hand, an older format)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= full:
        return max(MIN_PAGE_SIZE, value) if value else 0
    return 0


def _moment(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
