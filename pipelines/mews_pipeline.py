"""The runnable Mews -> DuckDB pipeline: nightly sync, backfill and the offline demo."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dlt
import duckdb
from dlt.common.pipeline import get_dlt_pipelines_dir
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

from pipelines.progress import Progress
from sources.mews import SourceStats, mews_source
from sources.mews.client import ClientStats, MewsConfigError, MewsError, format_utc

PIPELINE_NAME = "mews_sync"
DATASET_NAME = "mews"
DEFAULT_DUCKDB_FILE = "mews_sync.duckdb"
TABLES = ("product_service_orders", "service_order_notes", "services")
# The load and the clean-up would otherwise let DuckDB take most of the machine's memory; past
# this limit it spills to disk. DuckDB fills its limit with blocks it has written, so the limit
# is most of a load's memory: 96 MB took the peak of a 1,000,000-order first sync from 434 to
# 371 MB at no cost in CPU. Insertion order means nothing here. One thread: on 200,000 orders
# the load took 2.7 s of CPU and 1.5 s of wall with it, 4.3 s and 2.9 s with two.
DUCKDB_LOAD_CONFIG = {"memory_limit": "96MB", "preserve_insertion_order": False, "threads": 1}
# One row: the newest load `keep_latest_rows` has cleaned up after.
CLEANED_MARK_TABLE = "_mews_sync_cleaned"
SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
# Run records live beside the DuckDB file, not in it: see record_run().
RUNS_SUFFIX = ".runs.jsonl"

log = logging.getLogger("mews_sync")

# A nightly job on a closed network: dlt's anonymous telemetry stays off unless asked for.
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
# dlt holds back a first Ctrl-C or SIGTERM during its normalize and load steps and may then
# drop it, so a stop request could let a long first sync go on. A stop ends the run at once
# instead: what is loaded stays, and the next run finishes a load left behind, as after a kill.
os.environ.setdefault("RUNTIME__INTERCEPT_SIGNALS", "false")
# Every row records the load that wrote it: `keep_latest_rows` depends on it.
os.environ["NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_LOAD_ID"] = "true"


class SyncBusyError(MewsError):
    """Another run holds the DuckDB file."""

    transient = True


@dataclass
class RunReport:
    """What one run did, for the summary printed at its end and the run record."""

    kind: str
    duckdb_file: str
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    seconds: float = 0.0
    stats: ClientStats = field(default_factory=ClientStats)
    read: SourceStats = field(default_factory=SourceStats)
    table_rows: dict[str, int] = field(default_factory=dict)  # rows per table after the run
    error: str | None = None  # the one-sentence reason a failed run stopped

    def summary(self) -> str:
        requests = sum(self.stats.requests.values())
        per_op = ", ".join(f"{op} {n}" for op, n in sorted(self.stats.requests.items()))
        tables = ", ".join(f"{t} {n}" for t, n in self.table_rows.items())
        read = self.read
        if self.error is None:
            head = f"mews-sync {self.kind} finished in {self.seconds:.1f} s into {self.duckdb_file}"
        else:
            head = f"mews-sync {self.kind} FAILED after {self.seconds:.1f} s: {self.error}"
            tables = tables or "not counted (the run did not finish)"
        return "\n".join(
            [
                head,
                f"  read: {read.orders} orders in {read.order_pages} pages over {read.windows} "
                f"windows, {read.notes} notes",
                f"  rows per table now: {tables or 'none'}",
                f"  requests: {requests} ({per_op or 'none'})",
                f"  retries: {self.stats.retries}, rate-limited (429): {self.stats.throttled}, "
                f"too heavy (408): {self.stats.heavy}",
                f"  waited for the rate limit: {self.stats.limiter_wait_seconds:.1f} s, "
                f"after 429s: {self.stats.throttle_wait_seconds:.1f} s",
            ]
        )

    def record(self, exit_code: int) -> dict[str, Any]:
        """The run as one JSON-able line: counts and the error sentence, never a token."""
        return {
            "kind": self.kind,
            "started": self.started.isoformat(timespec="seconds"),
            "finished": (self.started + timedelta(seconds=self.seconds)).isoformat(
                timespec="seconds"
            ),
            "seconds": round(self.seconds, 1),
            "status": "ok" if exit_code == 0 else "failed",
            "exit_code": exit_code,
            "error": self.error,
            "windows": self.read.windows,
            "order_pages": self.read.order_pages,
            "orders": self.read.orders,
            "notes": self.read.notes,
            "requests": sum(self.stats.requests.values()),
            "retries": self.stats.retries,
            "throttled": self.stats.throttled,
            "table_rows": self.table_rows,
        }


def duckdb_file() -> str:
    """The DuckDB file, from DESTINATION__DUCKDB__CREDENTIALS or .dlt/config.toml."""
    configured = dlt.config.get("destination.duckdb.credentials", str)
    return str(configured or DEFAULT_DUCKDB_FILE)


def build_pipeline(
    database: str, pipeline_name: str = PIPELINE_NAME, pipelines_dir: str | None = None
) -> dlt.Pipeline:
    """The dlt pipeline loading into `database`, with a working directory of its own."""
    return dlt.pipeline(
        pipeline_name=pipeline_name,
        destination=dlt.destinations.duckdb(
            credentials=DuckDbCredentials(database, global_config=DUCKDB_LOAD_CONFIG)
        ),
        dataset_name=DATASET_NAME,
        pipelines_dir=pipelines_dir or working_dir_for(database),
    )


def working_dir_for(database: str) -> str:
    """dlt's working directory (under DLT_DATA_DIR) for one DuckDB file.

    dlt keys its local state by pipeline name only; two DuckDB files synced on one machine
    (two hotels, a test copy) must not share it. The pipeline name stays the same, so a new
    machine still restores the state stored in the file.
    """
    path = str(Path(database).expanduser().resolve())
    digest = hashlib.sha256(path.encode()).hexdigest()[:10]
    return str(Path(get_dlt_pipelines_dir()) / f"{Path(path).stem}-{digest}")


def beside(database: str, suffix: str) -> Path:
    """A file next to the DuckDB file: its lock, its run records."""
    path = Path(database).expanduser().resolve()
    return path.with_name(path.name + suffix)


@contextmanager
def exclusive(database: str) -> Iterator[None]:
    """Hold a lock beside the DuckDB file so two runs never write it at once (readers such as
    `mews-sync query` hold it shared, because DuckDB lets one process write or many read)."""
    lock_path = beside(database, ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SyncBusyError(
                f"Another mews-sync run is using {database} (or a query is reading it); "
                "wait for it to finish."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sync(
    kind: str,
    database: str | None = None,
    pipeline_name: str = PIPELINE_NAME,
    pipelines_dir: str | None = None,
    report: RunReport | None = None,
    **source_args: Any,
) -> RunReport:
    """Run the source into DuckDB once (`kind` is "run" or "backfill") and apply sql/ views.

    Pass a `report` to keep what a failed run counted before it stopped.
    """
    database = database or duckdb_file()
    if Path(database).stem == DATASET_NAME:
        # DuckDB names the catalog after the file; one equal to the dataset confuses its binder.
        raise MewsConfigError(
            f"Name the DuckDB file something other than {Path(database).name}, "
            "e.g. mews_sync.duckdb (DESTINATION__DUCKDB__CREDENTIALS)."
        )
    report = report or RunReport(kind=kind, duckdb_file=database)
    started = time.monotonic()
    try:
        # Every load of this run ends at the same moment.
        now = datetime.now(UTC).replace(microsecond=0)
        args = {"end_date": format_utc(now), **source_args}
        with exclusive(database), Progress(report.read, report.stats):
            pipeline = build_pipeline(database, pipeline_name, pipelines_dir)
            if pipeline.has_pending_data:
                # A run was killed after extracting: finish its load first, or dlt would load
                # only that and drop what this run extracts.
                log.warning("finishing the load an interrupted run left behind")
                pipeline.run()
            while True:
                source = mews_source(stats=report.stats, source_stats=report.read, **args)
                # What the step before superseded, or what a run killed between its load and
                # this clean-up left behind (once the source has taken the configuration).
                keep_latest_rows(database)
                pipeline.run(source)
                if report.read.resume_at is None:
                    break
                log.info("loaded up to %s; going on", format_utc(report.read.resume_at))
                if args.get("backfill_start"):
                    args["backfill_start"] = format_utc(report.read.resume_at)
            keep_latest_rows(database)
            report.table_rows = finish_load(database)
    finally:
        report.seconds = time.monotonic() - started
    return report


def record_run(report: RunReport, exit_code: int) -> None:
    """Append the run to `<duckdb file>.runs.jsonl` for `mews-sync status`.

    A file beside the DuckDB file rather than a table in it: the record matters most when the
    DuckDB file is locked by another run or damaged, a rejected run leaves the DuckDB file
    byte for byte as it was, and `tail` reads it without DuckDB. One short line appended in
    one write, so runs that finish together do not mix their lines.
    """
    path = beside(report.duckdb_file, RUNS_SUFFIX)
    line = json.dumps(report.record(exit_code)) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
    except OSError as exc:
        log.warning("could not record this run in %s: %s", path, exc.strerror or exc)


def read_runs(database: str) -> list[dict[str, Any]]:
    """The run records, oldest first; a torn or foreign line is skipped, not fatal."""
    try:
        lines = beside(database, RUNS_SUFFIX).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    runs = []
    for line in lines:
        try:
            run = json.loads(line)
        except ValueError:
            continue
        if isinstance(run, dict) and "status" in run:
            runs.append(run)
    return runs


def finish_load(database: str) -> dict[str, int]:
    """After the last load: (re)create the views in sql/ and return the rows per table."""
    with duckdb.connect(database) as con:
        apply_sql_models(con)
        return count_rows(con)


def keep_latest_rows(database: str) -> None:
    """After a load: keep one row per order and per note, the latest read, and drop the notes
    Mews deleted.

    The source appends orders and notes rather than letting dlt merge them: a merge copies
    every row into a staging table and then again into the table, which on a first sync of
    200,000 orders cost 3.5 s of CPU against 1.4 s for appending. Only rows of loads newer than
    the mark in `_mews_sync_cleaned` are looked at, so a nightly run touches what it loaded; the
    mark moves in the same transaction as the deletes, and only to a load dlt finished, so a
    run killed before this is healed by the next. Load ids are timestamps: a later load read
    later.

    Whenever an order is read, all its notes are read in the same load, so a current note
    carries its order's `_dlt_load_id`; one with another load id was deleted in Mews (Mews only
    leaves it out).
    """
    orders = f"{DATASET_NAME}.product_service_orders"
    notes = f"{DATASET_NAME}.service_order_notes"
    mark_table = f"{DATASET_NAME}.{CLEANED_MARK_TABLE}"
    with duckdb.connect(database, config=DUCKDB_LOAD_CONFIG) as con:
        existing = existing_tables(con)
        if "product_service_orders" not in existing:
            return
        con.execute(f"create table if not exists {mark_table} (load_id varchar not null)")
        con.begin()
        (mark,) = con.execute(f"select coalesce(max(load_id), '') from {mark_table}").fetchone()
        delete_superseded(con, orders, mark, "updated_utc desc")
        if "service_order_notes" in existing:
            # A join on keys, not dlt's merge key: that would make a delete an OR of two
            # keys, which DuckDB cannot hash-join (a nightly into 1M orders took 79 s so).
            (deleted,) = con.execute(
                f"""delete from {notes} as n using {orders} as o
                where o.id = n.service_order_id and o._dlt_load_id > ?
                and n._dlt_load_id <> o._dlt_load_id""",
                [mark],
            ).fetchone()
            if deleted:
                log.info("removed %d notes Mews no longer has", deleted)
            delete_superseded(con, notes, mark, "id")
        con.execute(f"delete from {mark_table}")
        con.execute(
            f"""insert into {mark_table} select coalesce(max(load_id), ?)
            from {DATASET_NAME}._dlt_loads where status = 0""",
            [mark],
        )
        con.commit()


def delete_superseded(con: duckdb.DuckDBPyConnection, table: str, mark: str, then: str) -> None:
    """Of the rows sharing an id with a row loaded after `mark`, keep the latest load's
    (ordered by `then` within one load, where an order read twice in one load comes twice)."""
    con.execute(
        f"""delete from {table} where rowid in (
            select rowid from (
                select rowid, row_number() over (
                    partition by id order by _dlt_load_id desc, {then}) as newest
                from {table}
                where id in (
                    select id from {table}
                    where id in (select id from {table} where _dlt_load_id > ?)
                    group by id having count(*) > 1))
            where newest > 1)""",
        [mark],
    )


def apply_sql_models(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)create the views in sql/; a view whose tables do not exist yet waits for them."""
    for path in sorted(SQL_DIR.glob("*.sql")):
        try:
            con.execute(path.read_text())
        except duckdb.CatalogException as exc:
            log.info("view %s skipped until its tables exist: %s", path.stem, exc)


def table_counts(database: str) -> dict[str, int]:
    """Rows per table of the dataset, for the demo and the run summary."""
    with duckdb.connect(database, read_only=True) as con:
        return count_rows(con)


def count_rows(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows per table of the dataset that exists, on an open connection."""
    existing = existing_tables(con)
    return {
        t: con.execute(f"select count(*) from {DATASET_NAME}.{t}").fetchone()[0]
        for t in TABLES
        if t in existing
    }


def existing_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The tables of the dataset that exist."""
    return {
        name
        for (name,) in con.execute(
            "select table_name from information_schema.tables where table_schema = ?",
            [DATASET_NAME],
        ).fetchall()
    }
