"""Locks that keep two runs, or a run and a reader, off one destination at the same time."""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from sources.errors import MewsError


class SyncBusyError(MewsError):
    """Another run (or a reader) holds the destination: try again later."""

    transient = True


@contextmanager
def file_lock(path: Path, busy: str, shared: bool = False) -> Iterator[None]:
    """flock `path` (a file beside a DuckDB file) for the duration, or raise SyncBusyError(busy).

    Runs hold it exclusively; readers such as `mews-sync query` hold it shared, because DuckDB
    lets one process write a file or many read it, never both.
    """
    handle = _open_lock_file(path, create=not shared)
    if handle is None:  # a reader that may not create files beside the DuckDB file
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SyncBusyError(busy) from None
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
def advisory_lock(connection: Any, name: str, busy: str) -> Iterator[None]:
    """Hold PostgreSQL's session advisory lock `name` on an open DB-API connection (psycopg2,
    autocommit) for the duration, or raise SyncBusyError(busy). The server releases it when
    the session ends, so a killed run never leaves it held."""
    key = advisory_lock_key(name)
    with connection.cursor() as cursor:
        cursor.execute("select pg_try_advisory_lock(%s)", (key,))
        (taken,) = cursor.fetchone()
    if not taken:
        raise SyncBusyError(busy)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("select pg_advisory_unlock(%s)", (key,))
