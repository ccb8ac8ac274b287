"""The runnable pipeline: `sync`, the one way to load, which the CLI, the Airflow recipe and the
tests all call, on DuckDB or PostgreSQL.

A run takes the destination's lock, finishes a load a killed run left behind, then runs the
source until its state says nothing is pending (a long history loads in steps), re-creates the
views, counts the rows, publishes the analysts' copy (DuckDB) and records itself.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dlt

from pipelines.compaction import ROW_ID, compact, load_by_appending
from pipelines.failures import EXIT_CONFIG, EXIT_OK, run_error
from pipelines.progress import Progress
from pipelines.runs import RunReport, record_run
from pipelines.storage import DATASET_NAME, PIPELINE_NAME, Storage, configured_storage
from pipelines.views import apply_views, count_rows
from sources.mews import mews_source, pending_work
from sources.mews.client import format_utc
from sources.mews.settings import MAX_ORDERS_PER_LOAD, MAX_SECONDS_PER_LOAD
from sources.mews.steps import WindowPace

log = logging.getLogger("mews_sync")


def build_pipeline(
    storage: Storage, pipeline_name: str = PIPELINE_NAME, pipelines_dir: str | None = None
) -> dlt.Pipeline:
    """The dlt pipeline into `storage`, in its own working folder (`dlt pipeline
    --pipelines-dir <folder> mews_sync info` shows it)."""
    # Every row records the load that wrote it (`_dlt_load_id`, which the compaction relies
    # on), for this pipeline only: dlt looks the setting up under the pipeline's name first.
    os.environ.setdefault(
        f"{pipeline_name.upper()}__NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_LOAD_ID", "true"
    )
    return dlt.pipeline(
        pipeline_name=pipeline_name,
        destination=storage.dlt_destination(),
        dataset_name=DATASET_NAME,
        pipelines_dir=pipelines_dir or str(storage.working_dir()),
    )


def sync(
    kind: str = "run",
    storage: Storage | None = None,
    pipeline_name: str = PIPELINE_NAME,
    pipelines_dir: str | None = None,
    report: RunReport | None = None,
    **source_args: Any,
) -> RunReport:
    """Run the source into the destination once (`kind`: "run", "backfill" or "demo"), leave
    one row per order and per note, apply the views, publish, and record the run.

    `storage` defaults to the configured destination (`configured_storage()`); `source_args`
    go to `mews_source` (with `backfill_start`/`backfill_end` for a backfill). Pass a
    `report` to keep what a failed run counted before it stopped. A configuration error
    (configured services Mews does not list included) is raised before anything is locked or
    written, and leaves no run record.
    """
    storage = storage or configured_storage()
    report = report or RunReport(kind=kind, where=storage.where)
    source_args.setdefault(
        "max_orders_per_load",
        dlt.config.get("sources.mews.max_orders_per_load", int) or MAX_ORDERS_PER_LOAD,
    )
    source_args.setdefault(
        "max_seconds_per_load",
        dlt.config.get("sources.mews.max_seconds_per_load", float) or MAX_SECONDS_PER_LOAD,
    )
    source_args.setdefault("window_pace", WindowPace())  # learned by one step for the next
    # Every step of this run ends at the same moment.
    source_args.setdefault("end_date", format_utc(datetime.now(UTC).replace(microsecond=0)))
    started = time.monotonic()
    locked = False
    try:
        storage.check()  # a folder it cannot write
        # Made once before anything is locked or written: its configuration errors come
        # first, and it reads the services (a wrong address, unknown services).
        source = mews_source(stats=report.stats, source_stats=report.read, **source_args)
        with storage.lock(), Progress(report.read, report.stats):
            locked = True
            pipeline = build_pipeline(storage, pipeline_name, pipelines_dir)
            load(pipeline, source, kind == "backfill", source_args, report)
            report.published = storage.publish()
    except BaseException as exc:
        report.seconds = time.monotonic() - started
        code, error = run_error(exc)
        if locked or code != EXIT_CONFIG:  # a configuration error leaves nothing behind
            report.error, report.exit_code = error, code
            record_run(storage.runs_path, report, code)
        raise
    report.seconds = time.monotonic() - started
    record_run(storage.runs_path, report, EXIT_OK)
    return report


def load(
    pipeline: dlt.Pipeline,
    source: Any,
    backfill: bool,
    source_args: dict[str, Any],
    report: RunReport,
) -> None:
    """Load the source in steps until its state says nothing is pending, keeping one row per
    order and note; then the views and the row counts."""
    destination = pipeline.destination.destination_name
    # The fast path where it was measured: append, then remove what the load superseded.
    compacting = destination in ROW_ID
    finish_interrupted_load(pipeline)
    while True:
        if compacting:
            # What a run killed between its load and its compaction left behind, first.
            with pipeline.sql_client() as client:
                report.removed.add(compact(client, destination))
            load_by_appending(source)
        pipeline.run(source)
        if not pending_work(pipeline.state, backfill):
            break
        log.info("loaded %d orders so far; going on", report.read.orders)
        source = mews_source(stats=report.stats, source_stats=report.read, **source_args)
    with pipeline.sql_client() as client:
        if compacting:
            report.removed.add(compact(client, destination))
        apply_views(client)
        report.table_rows = count_rows(client)


def finish_interrupted_load(pipeline: dlt.Pipeline) -> None:
    """Load what a killed run extracted or normalized but did not load (its rows and its
    state, so the watermarks move past them), and drop what a run killed while extracting
    left (half written files that no load ever takes)."""
    drop_abandoned_extracts(pipeline)
    if not pipeline.has_pending_data:
        return
    log.warning("finishing the load an interrupted run left behind")
    if pipeline.destination.destination_name == "postgres":
        allow_the_state_written_twice(pipeline)
    # Not `pipeline.run()`: it first syncs with the destination, and on one without the
    # dataset yet (a first sync killed before its first load) dlt 1.31 then wipes the
    # working folder, pending load and all, and the run reads everything again.
    pipeline.normalize()
    pipeline.load()


def allow_the_state_written_twice(pipeline: dlt.Pipeline) -> None:
    """Drop the UNIQUE constraint dlt puts on the state rows' `_dlt_id` in PostgreSQL.

    A load killed after its state row was written but before dlt noted so writes the row
    again when it is finished, which the constraint refuses, on every run from then on
    (dlt 1.31). dlt reads the state of the newest completed load: a second copy is harmless.
    """
    with pipeline.sql_client() as client:
        table = client.make_qualified_table_name("_dlt_pipeline_state")
        constraint = "_dlt_pipeline_state__dlt_id_key"  # PostgreSQL's name for it
        client.execute_sql(f"alter table if exists {table} drop constraint if exists {constraint}")


# The folder dlt extracts a load into (`normalize/<uniq_id(8)>`) before it renames it into
# `normalize/extracted` at the end of the extract: a run killed while extracting leaves it.
ABANDONED_EXTRACT = re.compile(r"[0-9a-f]{16}")


def drop_abandoned_extracts(pipeline: dlt.Pipeline) -> None:
    """Remove the folders of extracts no run will finish: only one run at a time extracts
    (the caller holds the destination's lock)."""
    folder = Path(pipeline.working_dir) / "normalize"
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.is_dir() and ABANDONED_EXTRACT.fullmatch(path.name):
            shutil.rmtree(path, ignore_errors=True)
