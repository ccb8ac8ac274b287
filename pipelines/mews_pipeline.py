"""The runnable pipeline: `sync`, the one way to load, which the CLI, the Airflow recipe and the
tests all call, on DuckDB or PostgreSQL.

A run takes the destination's lock, finishes a load a killed run left behind, then runs the
source until its state says nothing is pending (a long history loads in steps), re-creates the
views, counts the rows, publishes the analysts' copy (DuckDB) and records itself.
"""

from __future__ import annotations

import logging
import os
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
from sources.mews import mews_source, pending_work, stored_request_sizes
from sources.mews.client import RequestSizes, format_utc
from sources.mews.settings import MAX_ORDERS_PER_LOAD

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
    # Every step of this run ends at the same moment.
    source_args.setdefault("end_date", format_utc(datetime.now(UTC).replace(microsecond=0)))
    started = time.monotonic()
    locked = False
    try:
        storage.check()  # a folder it cannot write
        source_args.setdefault(
            "request_sizes", last_request_sizes(storage, pipeline_name, pipelines_dir)
        )
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


def last_request_sizes(
    storage: Storage, pipeline_name: str, pipelines_dir: str | None
) -> RequestSizes:
    """The request sizes Mews answers in time as the last run left them, for every step of
    this one: from its first request (the services, read as the source is made), and each
    step from what the steps before learned. A pipeline never run before is not created
    here, so a configuration error leaves nothing behind."""
    sizes = RequestSizes()
    if (Path(pipelines_dir or storage.working_dir()) / pipeline_name).is_dir():
        sizes.restore(
            stored_request_sizes(build_pipeline(storage, pipeline_name, pipelines_dir).state)
        )
    return sizes


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
    if pipeline.has_pending_data:
        # A run was killed after extracting: finish its load first, or dlt would load only
        # that and drop what this run extracts.
        log.warning("finishing the load an interrupted run left behind")
        pipeline.run()
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
