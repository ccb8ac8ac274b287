"""Reading the destination for people: `mews-sync status` and `mews-sync query`."""

from __future__ import annotations

import logging
import textwrap
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from pipelines.failures import EXIT_BUSY, EXIT_OK, EXIT_UNAVAILABLE
from pipelines.lock import SyncBusyError, file_lock
from pipelines.properties import pipeline_name
from pipelines.runs import clock_warning, read_runs
from pipelines.storage import DATASET_NAME, PostgresStorage, Storage, check_whole, damaged
from pipelines.views import TABLES
from sources.errors import MewsConfigError, MewsUnavailableError, counted

log = logging.getLogger("mews_sync.status")

MAX_CELL = 60  # characters of a cell in a table on screen; --csv prints whole values
CHART_MONTHS = 12
CHART_WIDTH = 40


class Reader:
    """Read-only SQL on the destination, tables resolving in the dataset, times in UTC:
    `rows(sql, *params)` with %s placeholders, and `cursor(sql)` for a query's columns;
    `interrupt()`, from another thread, stops the statement running."""

    def __init__(self, execute: Any, where: str, interrupt: Any):
        self._execute = execute
        self.where = where  # what is read, for people
        self.interrupt = interrupt
        self.tables: set[str] | None = None  # of the dataset, tables and views, once asked

    def cursor(self, sql: str, *params: Any) -> Any:
        return self._execute(sql, params)

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._execute(sql, params).fetchall()]


@contextmanager
def reading(storage: Storage) -> Iterator[Reader]:
    """A read-only view of the destination: for DuckDB the analysts' copy when a run has
    published one (nobody writes it, so nothing waits), else the working file, then holding
    the run lock shared so that a run starting meanwhile stops at once with "busy"."""
    if isinstance(storage, PostgresStorage):
        with reading_postgres(storage) as reader:
            yield reader
        return
    if storage.analytics_path.is_file():
        with reading_duckdb(storage.analytics_path) as reader:
            yield reader
        return
    if not storage.path.is_file():
        raise MewsConfigError(
            f"There is no DuckDB file at {storage.path}: run `mews-sync run` first, or point "
            "DESTINATION__DUCKDB__CREDENTIALS (or --path) at it."
        )
    busy = f"A mews-sync run is writing {storage.path} now; try again when it has finished."
    with file_lock(storage.lock_path, busy, shared=True), reading_duckdb(storage.path) as reader:
        yield reader


@contextmanager
def reading_duckdb(path: Path) -> Iterator[Reader]:
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        text = first_line(exc)
        if "lock" in text.lower():
            raise SyncBusyError(f"Cannot open {path} now: {text}") from None
        raise damaged(path, text) from None
    try:
        check_whole(con, path)
        con.execute(f"set TimeZone = 'UTC'; set search_path = '{DATASET_NAME}'")
        yield Reader(
            lambda sql, params: con.execute(sql.replace("%s", "?"), params),
            str(path),
            con.interrupt,
        )
    finally:
        con.close()


@contextmanager
def reading_postgres(storage: PostgresStorage) -> Iterator[Reader]:
    from pipelines.mews_pipeline import build_pipeline

    storage.connect().close()  # one sentence if the server cannot be reached, not dlt's trace
    pipeline = build_pipeline(storage)
    with pipeline.sql_client() as client:
        native = client.native_connection
        native.autocommit = False
        native.set_session(readonly=True)
        cursor = native.cursor()
        cursor.execute("set time zone 'UTC'")

        def execute(sql: str, params: tuple[Any, ...]) -> Any:
            cursor.execute(sql, params or None)
            return cursor

        try:
            yield Reader(execute, storage.where, native.cancel)
        finally:
            native.rollback()


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


def status_screen(
    storage: Storage, property: str | None = None, now: datetime | None = None
) -> tuple[str, int]:
    """What an operator asks first: how far the data goes, how the last runs went, how much
    there is, and whether orders keep coming. A destination several properties load shows
    each of them at a glance; `property` shows that one in full.

    With the exit code `status` ends with: 0, or, when the destination could not be read and
    only the run records are shown, 5 (a run is writing the DuckDB file) or 4 (PostgreSQL
    cannot be reached), so that a check scripted on `status` sees it."""
    now = now or datetime.now(UTC)
    out = [f"mews-sync status of {storage.where} at {when(now)}", ""]
    runs = read_runs(storage.runs_path)
    try:
        with reading(storage) as reader:
            if reader.where != storage.where:
                out[-1:] = [f"  read from the analysts' copy {reader.where}", ""]
            names = pipelines_in(reader)
            if property is None and len(names) > 1:
                out += group_lines(reader, names, runs, now) + [""]
                shown = None
            else:
                shown = pipeline_name(property or (names[0] if names else None))
                if property:
                    out += [f"Property {property}:", ""]
                out += watermark_lines(reader, shown, now) + [""]
                out += refresh_lines(reader, shown, now) + [""]
                out += run_lines(storage, runs_of(runs, shown), now) + [""]
            out += table_lines(reader) + [""]
            out += chart_lines(reader, now) + [""]
            out += dlt_lines(storage, shown or "<property>")
    except SyncBusyError:
        out += ["A run is writing the DuckDB file now: its tables are not shown until it ends.", ""]
        return "\n".join(out + run_lines(storage, runs, now)), EXIT_BUSY
    except MewsUnavailableError as exc:  # PostgreSQL cannot be reached: the runs say why
        out += [str(exc), ""] + run_lines(storage, runs, now)
        return "\n".join(out), EXIT_UNAVAILABLE
    return "\n".join(out), EXIT_OK


def pipelines_in(reader: Reader) -> list[str]:
    """The dlt pipelines (properties) whose state the dataset holds, by name."""
    if not has(reader, "_dlt_pipeline_state"):
        return []
    rows = reader.rows("select distinct pipeline_name from _dlt_pipeline_state order by 1")
    return [name for (name,) in rows]


def runs_of(runs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The run records of one pipeline (records before properties are the default one's)."""
    return [r for r in runs if pipeline_name(r.get("property")) == name]


def group_lines(
    reader: Reader, names: list[str], runs: list[dict[str, Any]], now: datetime
) -> list[str]:
    """Each property in a few lines: how far its orders go, its last runs, its refresh."""
    out = [f"Properties ({len(names)}; mews-sync status --property NAME shows one in full):"]
    for name in names:
        state = orders_state(reader, name)
        marks = sorted(state.get("watermarks", {}).values())
        if marks:
            oldest = datetime.fromisoformat(marks[0].replace("Z", "+00:00"))
            loaded = f"orders loaded up to {when(oldest)} ({ago(now - oldest)})"
        else:
            loaded = "no incremental run has finished yet"
        out.append(f"  {name}: {loaded}, {len(marks)} {plural(len(marks), 'service')}")
        mine = runs_of(runs, name)
        ok = next((r for r in reversed(mine) if r["status"] == "ok"), None)
        failed = next((r for r in reversed(mine) if r["status"] == "failed"), None)
        out.append(
            f"    last success: {run_head(ok, now) if ok else 'none recorded'}; last failure: "
            + (f"{run_head(failed, now)}, exit {failed['exit_code']}" if failed else "none")
        )
        progress = state.get("notes_refresh") or {}
        if progress.get("every_days"):
            position = progress.get("position", "")[:10]
            out.append(
                f"    notes refresh every {progress['every_days']:g} days: swept up to orders "
                f"updated {position or 'the start'}"
            )
    return out


def plural(count: int, noun: str) -> str:
    return noun if count == 1 else noun + "s"


def dlt_lines(storage: Storage, name: str) -> list[str]:
    return [
        "dlt's own view of the pipeline (its state, last trace and schema):",
        f"  dlt pipeline --pipelines-dir {storage.working_dir()} {name} info",
    ]


def watermark_lines(reader: Reader, name: str, now: datetime) -> list[str]:
    """Services that share a watermark, one line per watermark, with their names."""
    marks = dict(orders_state(reader, name).get("watermarks", {}))
    names = dict(reader.rows("select id, name from services")) if has(reader, "services") else {}
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


def orders_state(reader: Reader, name: str) -> dict[str, Any]:
    """The source's state of its orders resource, from the newest state dlt stored for the
    pipeline `name`: the watermarks, and where the notes refresh stands."""
    if not has(reader, "_dlt_pipeline_state"):
        return {}
    rows = reader.rows(
        "select state from _dlt_pipeline_state where pipeline_name = %s "
        "order by created_at desc limit 1",
        name,
    )
    if not rows:
        return {}
    state = decompress_state(rows[0][0])
    resources = state.get("sources", {}).get(DATASET_NAME, {}).get("resources", {})
    return dict(resources.get("product_service_orders", {}))


def decompress_state(stored: str) -> dict[str, Any]:
    """dlt's stored pipeline state (JSON, zlib-compressed, base64), as dlt's own
    `decompress_state` reads it but without importing dlt, so that `status` starts quickly.
    dlt's typed values (a private-use character before their text) stay text."""
    import base64
    import binascii
    import json
    import zlib

    try:
        text = zlib.decompress(base64.b64decode(stored, validate=True))
    except binascii.Error:
        text = stored.encode()  # dlt also reads a state stored uncompressed
    return untyped(json.loads(text))


def untyped(value: Any) -> Any:
    """`value` with dlt's type marks (U+F026 to U+F02E before the text) taken off its strings."""
    if isinstance(value, str):
        return value[1:] if value and 0xF026 <= ord(value[0]) <= 0xF02E else value
    if isinstance(value, dict):
        return {k: untyped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [untyped(v) for v in value]
    return value


def refresh_lines(reader: Reader, name: str, now: datetime) -> list[str]:
    """How far the notes refresh has come, and what it costs a day."""
    progress = orders_state(reader, name).get("notes_refresh") or {}
    days = progress.get("every_days")
    if not days:
        return ["Notes refresh: off (SOURCES__MEWS__NOTES_REFRESH_DAYS = 0)"]
    started = datetime.fromisoformat(progress["cycle_started"].replace("Z", "+00:00"))
    position = progress.get("position", "")[:10]
    out = [
        f"Notes refresh (every order's notes re-read at least every "
        f"{counted(days, 'day', 'g')}): this cycle started {when(started)} "
        f"({ago(now - started)}), swept up to orders updated {position}"
    ]
    if has(reader, "product_service_orders"):
        ((orders,),) = reader.rows("select count(*) from product_service_orders")
        # Each 1000 orders re-read cost an orders request and a notes request (plus pages).
        out.append(
            f"  about {counted(2 * orders / 1000 / days, 'extra request', '.0f')} a day for "
            f"{counted(orders, 'order', ',')}"
        )
    return out


def service_lines(head: str, names: list[str]) -> list[str]:
    """`head`, then the services' names wrapped; a name several enterprises use is counted."""
    counts = Counter(names)
    shown = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in sorted(counts.items()))
    plural = "" if len(names) == 1 else "s"
    return [f"  {head}, {len(names)} service{plural}:"] + textwrap.wrap(
        shown, width=96, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False
    )


def run_lines(storage: Storage, runs: list[dict[str, Any]], now: datetime) -> list[str]:
    ok = next((r for r in reversed(runs) if r["status"] == "ok"), None)
    # A run that found the destination busy (exit 5) did nothing, by design: skipped.
    skipped = [r for r in runs if r["status"] == "skipped" or r.get("exit_code") == EXIT_BUSY]
    failed = next((r for r in reversed(runs) if r["status"] != "ok" and r not in skipped), None)
    out = [f"Runs recorded in {storage.runs_path}: {len(runs)}"]
    if ok:
        out += [
            f"  last success: {run_head(ok, now)}, {ok['seconds']} s",
            f"    read {counted(ok['orders'], 'order')} in {counted(ok['order_pages'], 'page')} "
            f"over {counted(ok['windows'], 'window')}, {counted(ok['notes'], 'note')}, "
            f"{counted(ok.get('items', 0), 'order item')}; "
            f"{counted(ok['requests'], 'request')}, {counted(ok['retries'], 'retry')}, "
            f"{counted(ok['throttled'], '429')}",
        ]
        if warning := clock_warning(ok.get("mews_clock_offset")):
            out.append(f"    {warning}")
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
    if skipped:
        out.append(
            f"  skipped, another run or a reader held the destination (exit 5): "
            f"{len(skipped)}, the last {run_head(skipped[-1], now)}"
        )
    return out


def run_head(run: dict[str, Any], now: datetime) -> str:
    started = datetime.fromisoformat(run["started"])
    return f"{run['kind']} started {when(started)} ({ago(now - started)})"


def table_lines(reader: Reader) -> list[str]:
    out = ["Rows per table:"]
    counts = {t: reader.rows(f"select count(*) from {t}")[0][0] for t in TABLES if has(reader, t)}
    out += [f"  {DATASET_NAME}.{t:<24} {n:>10,}" for t, n in counts.items()] or ["  no tables yet"]
    if has(reader, "_dlt_loads"):
        ((last,),) = reader.rows("select max(inserted_at) from _dlt_loads where status = 0")
        if last:
            out.append(f"Last load: {when(last)}")
    return out


def chart_lines(reader: Reader, now: datetime) -> list[str]:
    """Orders per month of their latest update, for the last CHART_MONTHS months."""
    months = [month_start(now, back) for back in range(CHART_MONTHS - 1, -1, -1)]
    counts: dict[date, int] = {}
    if has(reader, "product_service_orders"):
        rows = reader.rows(
            "select cast(date_trunc('month', updated_utc at time zone 'UTC') as date), "
            "count(*) from product_service_orders where updated_utc >= %s group by 1",
            datetime.combine(months[0], datetime.min.time(), UTC),
        )
        counts = {month: n for month, n in rows}
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


def has(reader: Reader, table: str) -> bool:
    if reader.tables is None:  # asked once: the screen asks about a dozen times
        rows = reader.rows(
            "select table_name from information_schema.tables where table_schema = %s",
            DATASET_NAME,
        )
        reader.tables = {name for (name,) in rows}
    return table in reader.tables


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
