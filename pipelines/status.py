"""Reading the DuckDB file for people: `mews-sync status` and `mews-sync query`."""

from __future__ import annotations

import fcntl
import logging
import textwrap
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import duckdb
from dlt.common.versioned_state import decompress_state

from pipelines.mews_pipeline import (
    DATASET_NAME,
    RUNS_SUFFIX,
    SyncBusyError,
    beside,
    count_rows,
    read_runs,
)
from sources.mews.client import MewsConfigError

log = logging.getLogger("mews_sync.status")

MAX_CELL = 60  # characters of a cell in a table on screen; --csv prints whole values
CHART_MONTHS = 12
CHART_WIDTH = 40


@contextmanager
def reading(database: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to the DuckDB file, in UTC, with `mews` on the search path.

    While it is open the run lock is held shared: DuckDB lets one process write a file or
    several read it, so a sync starting now would crash at its load; this way it stops at
    once with "busy" instead, and a reader arriving during a sync is told to wait.
    """
    if not Path(database).is_file():
        raise MewsConfigError(
            f"There is no DuckDB file at {database}: run `mews-sync run` first, or point "
            "DESTINATION__DUCKDB__CREDENTIALS (or --path) at it."
        )
    with _shared_lock(database):
        try:
            con = duckdb.connect(database, read_only=True)
        except duckdb.IOException as exc:
            raise SyncBusyError(f"Cannot open {database}: {first_line(exc)}") from None
        try:
            con.execute(f"set TimeZone = 'UTC'; set search_path = '{DATASET_NAME}'")
            yield con
        finally:
            con.close()


@contextmanager
def _shared_lock(database: str) -> Iterator[None]:
    lock_path = beside(database, ".lock")
    handle = _open_lock(lock_path)
    if handle is None:
        log.debug("no lock file at %s to coordinate with runs", lock_path)
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SyncBusyError(
                f"A mews-sync run is writing {database} now; try again when it has finished."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_lock(lock_path: Path) -> IO[str] | None:
    # A reader may not be allowed to create files beside the sync's DuckDB file: then it
    # opens the lock file read-only, which is enough for flock.
    for mode in ("a+", "r"):
        try:
            return open(lock_path, mode)
        except OSError:
            continue
    return None


def first_line(exc: BaseException) -> str:
    """DuckDB's message up to its first blank line (before the LINE 1: ^ drawing), one line."""
    paragraph = str(exc).strip().split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


# -- query -----------------------------------------------------------------------------------


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], more: bool) -> str:
    """Rows as an aligned text table (numbers to the right), with a row count under it."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    numeric = [is_numeric([r[i] for r in rows]) for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        return " | ".join(
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(columns), "-+-".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    count = f"({len(rows)} row{'' if len(rows) == 1 else 's'}"
    out.append(count + (", more not shown: add LIMIT or --max-rows)" if more else ")"))
    return "\n".join(out)


def is_numeric(values: list[Any]) -> bool:
    """A column to align right: numbers (not booleans) and nulls, at least one number."""
    present = [v for v in values if v is not None]
    return bool(present) and all(
        isinstance(v, int | float | Decimal) and not isinstance(v, bool) for v in present
    )


def cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value.tzinfo else str(value)
    text = " ".join(str(value).split())  # newlines and tabs would break the table
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


# -- status ----------------------------------------------------------------------------------


def status_screen(database: str, now: datetime | None = None) -> str:
    """What an operator asks first: how far the data goes, how the last runs went, how much
    there is, and whether orders keep coming."""
    now = now or datetime.now(UTC)
    out = [f"mews-sync status of {Path(database).resolve()} at {when(now)}", ""]
    runs = read_runs(database)
    try:
        with reading(database) as con:
            out += watermark_lines(con, now) + [""]
            out += run_lines(database, runs, now) + [""]
            out += table_lines(con) + [""]
            out += chart_lines(con, now)
    except SyncBusyError:
        out += ["A run is writing the DuckDB file now: its tables are not shown until it ends.", ""]
        out += run_lines(database, runs, now)
    return "\n".join(out)


def watermark_lines(con: duckdb.DuckDBPyConnection, now: datetime) -> list[str]:
    """Services that share a watermark, one line per watermark, with their names."""
    marks = watermarks(con)
    names = (
        dict(con.execute("select id, name from services").fetchall())
        if has(con, "services")
        else {}
    )
    unsynced = sorted(set(names) - set(marks))
    sets: dict[str, list[str]] = {}
    for service_id, mark in marks.items():
        sets.setdefault(mark, []).append(names.get(service_id) or service_id)
    out = [
        "Watermarks (orders updated before them are loaded; "
        "the next run starts a few minutes before):"
    ]
    for mark, services in sorted(sets.items(), reverse=True):
        moment = datetime.fromisoformat(mark.replace("Z", "+00:00"))
        out += service_lines(f"{when(moment)} ({ago(now - moment)})", services)
    if unsynced:
        out += service_lines("none yet", [names[i] or i for i in unsynced])
    if not marks and not unsynced:
        out.append("  none: no incremental run has finished yet")
    return out


def watermarks(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Service id -> ISO watermark, from the newest pipeline state dlt stored in the file."""
    if not has(con, "_dlt_pipeline_state"):
        return {}
    row = con.execute(
        "select state from _dlt_pipeline_state order by created_at desc limit 1"
    ).fetchone()
    if row is None:
        return {}
    state = decompress_state(row[0])
    resources = state.get("sources", {}).get(DATASET_NAME, {}).get("resources", {})
    return dict(resources.get("product_service_orders", {}).get("watermarks", {}))


def service_lines(head: str, names: list[str]) -> list[str]:
    """`head`, then the services' names wrapped; a name several enterprises use is counted."""
    counts = Counter(names)
    shown = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in sorted(counts.items()))
    plural = "" if len(names) == 1 else "s"
    return [f"  {head}, {len(names)} service{plural}:"] + textwrap.wrap(
        shown, width=96, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False
    )


def run_lines(database: str, runs: list[dict[str, Any]], now: datetime) -> list[str]:
    ok = next((r for r in reversed(runs) if r["status"] == "ok"), None)
    failed = next((r for r in reversed(runs) if r["status"] != "ok"), None)
    out = [f"Runs recorded in {beside(database, RUNS_SUFFIX).name}: {len(runs)}"]
    if ok:
        out += [
            f"  last success: {run_head(ok, now)}, {ok['seconds']} s",
            f"    read {ok['orders']} orders in {ok['order_pages']} pages over "
            f"{ok['windows']} windows, {ok['notes']} notes; {ok['requests']} requests, "
            f"{ok['retries']} retries, {ok['throttled']} 429s",
        ]
    else:
        out.append("  last success: none recorded")
    if failed:
        later = not ok or failed["started"] > ok["started"]
        out.append(
            f"  last failure: {run_head(failed, now)}, exit {failed['exit_code']}"
            + ("" if later else " (before the last success)")
        )
        out += textwrap.wrap(
            failed.get("error") or "no reason recorded",
            width=96,
            initial_indent="    ",
            subsequent_indent="    ",
            break_on_hyphens=False,  # a Request-Id or a path stays whole, to copy and grep
        )
    else:
        out.append("  last failure: none recorded")
    return out


def run_head(run: dict[str, Any], now: datetime) -> str:
    started = datetime.fromisoformat(run["started"])
    return f"{run['kind']} started {when(started)} ({ago(now - started)})"


def table_lines(con: duckdb.DuckDBPyConnection) -> list[str]:
    out = ["Rows per table:"]
    counts = count_rows(con)
    out += [f"  {DATASET_NAME}.{t:<24} {n:>10,}" for t, n in counts.items()] or ["  no tables yet"]
    if has(con, "_dlt_loads"):
        (last,) = con.execute("select max(inserted_at) from _dlt_loads where status = 0").fetchone()
        if last:
            out.append(f"Last load into the file: {when(last)}")
    return out


def chart_lines(con: duckdb.DuckDBPyConnection, now: datetime) -> list[str]:
    """Orders per month of their latest update, for the last CHART_MONTHS months."""
    months = [month_start(now, back) for back in range(CHART_MONTHS - 1, -1, -1)]
    counts: dict[date, int] = {}
    if has(con, "product_service_orders"):
        counts = dict(
            con.execute(
                "select cast(date_trunc('month', updated_utc at time zone 'UTC') as date), "
                "count(*) from product_service_orders where updated_utc >= ? group by 1",
                [datetime.combine(months[0], datetime.min.time(), UTC)],
            ).fetchall()
        )
    top = max(counts.values(), default=0)
    out = [f"Orders updated per month (each at its latest update, UTC, last {CHART_MONTHS}):"]
    for month in months:
        n = counts.get(month, 0)
        bar = "#" * (round(n / top * CHART_WIDTH) if top else 0)
        partial = " (so far)" if month == months[-1] else ""
        out.append(f"  {month:%Y-%m} {bar:<{CHART_WIDTH}} {n:>8,}{partial}")
    return out


def month_start(now: datetime, back: int) -> date:
    """The first day of the month `back` months before now's month."""
    index = now.year * 12 + now.month - 1 - back
    return date(index // 12, index % 12 + 1, 1)


def has(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(
        con.execute(
            "select count(*) from information_schema.tables "
            "where table_schema = ? and table_name = ?",
            [DATASET_NAME, table],
        ).fetchone()[0]
    )


def when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "in the future"
    for unit, size in (("day", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            amount = seconds // size
            return f"{amount} {unit}{'s' if unit == 'day' and amount > 1 else ''} ago"
    return "just now"
