"""Locks that keep runs, and a run and a reader, off one destination at the same time.

Two kinds: a property's run lock, held for a whole run, which a second run of the same
property finds taken (it is skipped); and the destination's write lock, held only while a
run loads, which runs of other properties wait for, a bounded time.
"""

from __future__ import annotations

import fcntl
import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from sources.errors import MewsError

POLL_SECONDS = 0.1  # how often a waiting run looks again: a load section lasts seconds


class SyncBusyError(MewsError):
    """Another run (or a reader) holds the destination: try again later."""

    transient = True


def take_within(try_take: Callable[[], bool], wait: float, busy: str) -> None:
    """Call `try_take` until it succeeds, for at most `wait` seconds, or raise
    SyncBusyError(busy)."""
    deadline = time.monotonic() + wait
    while not try_take():
        if time.monotonic() >= deadline:
            raise SyncBusyError(busy)
        time.sleep(POLL_SECONDS)


@contextmanager
def file_lock(path: Path, busy: str, shared: bool = False, wait: float = 0.0) -> Iterator[None]:
    """flock `path` (a file beside a DuckDB file) for the duration, waiting at most `wait`
    seconds for it, or raise SyncBusyError(busy).

    Writers hold it exclusively; readers such as `mews-sync query` hold it shared, because
    DuckDB lets one process write a file or many read it, never both.
    """
    handle = _open_lock_file(path, create=not shared)
    if handle is None:  # a reader that may not create files beside the DuckDB file
        yield
        return
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB

    def try_take() -> bool:
        try:
            fcntl.flock(handle, mode)
        except BlockingIOError:
            return False
        return True

    with handle:
        take_within(try_take, wait, busy)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_lock_file(path: Path, create: bool) -> IO[str] | None:
    if create:
        return open(path, "a+")
    # A reader opens an existing lock file read-only, which is enough for flock.
    for mode in ("a+", "r"):
        try:
            return open(path, mode)
        except OSError:
            continue
    return None


def advisory_lock_key(name: str) -> int:
    """A stable signed 64-bit key for PostgreSQL's advisory locks."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def advisory_lock(connection: Any, name: str, busy: str, wait: float = 0.0) -> Iterator[None]:
    """Hold PostgreSQL's session advisory lock `name` on an open DB-API connection (psycopg2,
    autocommit) for the duration, waiting at most `wait` seconds for it, or raise
    SyncBusyError(busy). The server releases it when the session ends, so a killed run never
    leaves it held."""
    key = advisory_lock_key(name)

    def try_take() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("select pg_try_advisory_lock(%s)", (key,))
            (taken,) = cursor.fetchone()
        return bool(taken)

    take_within(try_take, wait, busy)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("select pg_advisory_unlock(%s)", (key,))
