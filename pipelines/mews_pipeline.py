"""The runnable Mews -> DuckDB pipeline: nightly sync, backfill and the offline demo."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dlt
import duckdb

from sources.mews import SourceStats, mews_source
from sources.mews.client import ClientStats, MewsConfigError, MewsError

PIPELINE_NAME = "mews_sync"
DATASET_NAME = "mews"
DEFAULT_DUCKDB_FILE = "mews_sync.duckdb"
TABLES = ("product_service_orders", "service_order_notes", "services")
SQL_DIR = Path(__file__).resolve().parent.parent / "sql"

log = logging.getLogger("mews_sync")

# A nightly job on a closed network: dlt's anonymous telemetry stays off unless asked for.
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")


class SyncBusyError(MewsError):
    """Another run holds the DuckDB file."""

    transient = True


@dataclass
class RunReport:
    """What one run did, for the summary printed at its end."""

    kind: str
    duckdb_file: str
    seconds: float = 0.0
    stats: ClientStats = field(default_factory=ClientStats)
    read: SourceStats = field(default_factory=SourceStats)
    table_rows: dict[str, int] = field(default_factory=dict)  # rows per table after the run

    def summary(self) -> str:
        requests = sum(self.stats.requests.values())
        per_op = ", ".join(f"{op} {n}" for op, n in sorted(self.stats.requests.items()))
        tables = ", ".join(f"{t} {n}" for t, n in self.table_rows.items())
        read = self.read
        return "\n".join(
            [
                f"mews-sync {self.kind} finished in {self.seconds:.1f} s into {self.duckdb_file}",
                f"  read: {read.orders} orders in {read.order_pages} pages over {read.windows} "
                f"windows, {read.notes} notes ({read.orders_without_notes} orders without notes)",
                f"  rows per table now: {tables or 'none'}",
                f"  requests: {requests} ({per_op or 'none'})",
                f"  retries: {self.stats.retries}, rate-limited (429): {self.stats.throttled}, "
                f"too heavy (408): {self.stats.heavy}, "
                f"waited for the rate limit: {self.stats.limiter_wait_seconds:.1f} s",
            ]
        )


def duckdb_file() -> str:
    """The DuckDB file, from DESTINATION__DUCKDB__CREDENTIALS or .dlt/config.toml."""
    configured = dlt.config.get("destination.duckdb.credentials", str)
    return str(configured or DEFAULT_DUCKDB_FILE)


def build_pipeline(
    database: str, pipeline_name: str = PIPELINE_NAME, pipelines_dir: str | None = None
) -> dlt.Pipeline:
    return dlt.pipeline(
        pipeline_name=pipeline_name,
        destination=dlt.destinations.duckdb(credentials=database),
        dataset_name=DATASET_NAME,
        pipelines_dir=pipelines_dir,
    )


@contextmanager
def exclusive(database: str) -> Iterator[None]:
    """Hold a lock beside the DuckDB file so two runs never write it at once."""
    lock_path = Path(database).expanduser().resolve().with_name(Path(database).name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SyncBusyError(
                f"Another mews-sync run is using {database}; wait for it to finish."
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
    **source_args: Any,
) -> RunReport:
    """Run the source into DuckDB once (`kind` is "run" or "backfill") and apply sql/ views."""
    database = database or duckdb_file()
    if Path(database).stem == DATASET_NAME:
        # DuckDB names the catalog after the file; one equal to the dataset confuses its binder.
        raise MewsConfigError(
            f"Name the DuckDB file something other than {Path(database).name}, "
            "e.g. mews_sync.duckdb (DESTINATION__DUCKDB__CREDENTIALS)."
        )
    report = RunReport(kind=kind, duckdb_file=database)
    started = time.monotonic()
    with exclusive(database):
        source = mews_source(stats=report.stats, source_stats=report.read, **source_args)
        pipeline = build_pipeline(database, pipeline_name, pipelines_dir)
        if pipeline.has_pending_data:
            # A run was killed after extracting: finish its load first, or dlt would load only
            # that and drop what this run extracts.
            log.warning("finishing the load an interrupted run left behind")
            pipeline.run()
        pipeline.run(source)
        apply_sql_models(database)
        report.table_rows = table_counts(database)
    report.seconds = time.monotonic() - started
    return report


def apply_sql_models(database: str) -> None:
    """(Re)create the views in sql/; a view whose tables do not exist yet waits for them."""
    with duckdb.connect(database) as con:
        for path in sorted(SQL_DIR.glob("*.sql")):
            try:
                con.execute(path.read_text())
            except duckdb.CatalogException as exc:
                log.info("view %s skipped until its tables exist: %s", path.stem, exc)


def table_counts(database: str) -> dict[str, int]:
    """Rows per table of the dataset, for the demo and status screens."""
    with duckdb.connect(database, read_only=True) as con:
        existing = {
            name
            for (name,) in con.execute(
                "select table_name from information_schema.tables where table_schema = ?",
                [DATASET_NAME],
            ).fetchall()
        }
        return {
            t: con.execute(f"select count(*) from {DATASET_NAME}.{t}").fetchone()[0]
            for t in TABLES
            if t in existing
        }
