"""The runnable pipeline: `sync`, the one way to load, which the CLI, the Airflow recipe and the
tests all call, on DuckDB or PostgreSQL, for one property (one Mews token) at a time.

A run takes its property's run lock (a second run of the same property is skipped), reads what
changed, and holds the destination's write lock only while it loads: runs of other properties
read Mews at the same time and take turns to load. Each load finishes a load a killed run left
behind, removes the rows it superseded, and the last one re-creates the views, counts the rows
and publishes the analysts' copy (DuckDB). The run records itself, success or failure.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dlt
import pyarrow as pa
from dlt.common.configuration import inject_section
from dlt.common.configuration.specs.config_section_context import ConfigSectionContext

from pipelines import config
from pipelines.compaction import ROW_ID, compact, load_by_appending
from pipelines.failures import EXIT_CONFIG, EXIT_OK, run_error
from pipelines.progress import Progress
from pipelines.properties import check_property, configured_property, pipeline_name
from pipelines.runs import RunReport, record_run
from pipelines.storage import DATASET_NAME, Storage, configured_storage
from pipelines.views import apply_views, count_rows
from sources.errors import MewsConfigError, counted
from sources.mews import mews_source, pending_work, stored_request_sizes
from sources.mews.client import RequestSizes
from sources.mews.steps import WindowPace

log = logging.getLogger("mews_sync")

# How long a run waits for another property's load into the same destination before it
# stops with exit 5: a load of 400,000 orders (one step) took 20 s into DuckDB, 40 s into
# PostgreSQL on the development machine.
LOAD_WAIT_SECONDS = 600.0
M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 4 << 20


def build_pipeline(
    storage: Storage, name: str = pipeline_name(None), pipelines_dir: str | None = None
) -> dlt.Pipeline:
    """The dlt pipeline `name` (a property's) into `storage`, in the destination's working
    folder (`dlt pipeline --pipelines-dir <folder> <name> info` shows it)."""
    # Every row records the load that wrote it (`_dlt_load_id`, which the compaction relies
    # on), for this pipeline only: dlt looks the setting up under the pipeline's name first.
    os.environ.setdefault(f"{name.upper()}__NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_LOAD_ID", "true")
    for key, value in storage.dlt_settings.items():  # the destination's own
        os.environ.setdefault(f"{name.upper()}__{key}", value)
    return dlt.pipeline(
        pipeline_name=name,
        destination=storage.dlt_destination(),
        dataset_name=DATASET_NAME,
        pipelines_dir=pipelines_dir or str(storage.working_dir()),
    )


def share_freed_memory() -> None:
    """Allocate the source's and dlt's Arrow tables with the C library's malloc, as DuckDB
    allocates, unless ARROW_DEFAULT_MEMORY_POOL chooses otherwise, and have glibc's malloc
    give large freed blocks back to the system. With Arrow's default (mimalloc) what the
    extract freed stayed in mimalloc's caches, out of DuckDB's reach, and the load's memory
    came on top of it: see docs/performance.md ("Peak RSS")."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL", "system") == "system":
        pa.set_memory_pool(pa.system_memory_pool())
    if glibc() and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        # glibc raises its threshold for mapping a block to the size of the largest block
        # freed (up to 32 MB), after which Arrow's buffers of a page of orders come from the
        # heap, whose freed parts it keeps. Fixed, the largest are mapped and unmapped: peak
        # RSS of a first sync of 1,000,000 orders 292 against 305 MB unfixed (at 1 MB); at 4
        # MB 268 against 272 MB at 1 MB, with 4 % less CPU (docs/performance.md, "Peak RSS,
        # at this stop").
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def glibc() -> bool:
    """Whether this process's C library is GNU's (`mallopt` and its settings are glibc's)."""
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False


@contextmanager
def property_settings(name: str) -> Iterator[None]:
    """dlt resolves the source's settings under the property's section first
    (`HOTEL_A__SOURCES__MEWS__ACCESS_TOKEN`), then the plain `SOURCES__MEWS__...`."""
    with inject_section(ConfigSectionContext(pipeline_name=name)):
        yield


def sync(
    kind: str = "run",
    storage: Storage | None = None,
    property: str | None = None,
    pipelines_dir: str | None = None,
    report: RunReport | None = None,
    **source_args: Any,
) -> RunReport:
    """Run the source of one property into the destination (`kind`: "run", "backfill" or
    "demo"), leave one row per order and per note, apply the views, publish, and record the
    run.

    `storage` defaults to the configured destination (`configured_storage()`), `property` to
    MEWS_SYNC__PROPERTY (none: the single default pipeline); `source_args` go to
    `mews_source` (with `backfill_start`/`backfill_end` for a backfill). Pass a `report` to
    keep what a failed run counted before it stopped. A configuration error (configured
    services Mews does not list included) is raised before anything is locked or written,
    and leaves no run record.
    """
    storage = storage or configured_storage()
    share_freed_memory()
    property = check_property(property) if property else configured_property()
    name = pipeline_name(property)
    report = report or RunReport(kind=kind, where=storage.where)
    report.property = property
    source_args.setdefault("window_pace", WindowPace())  # learned by one step for the next
    started = time.monotonic()
    locked = False
    try:
        storage.check()  # a folder it cannot write
        with property_settings(name):
            sizes = last_request_sizes(storage, name, pipelines_dir)
            source_args.setdefault("request_sizes", sizes)
            # Made once before anything is locked or written: its configuration errors come
            # first, and it reads the services (a wrong address, unknown services).
            # Every step of this run ends where the first does (`report.read.end`, which the
            # steps share): at Mews' clock as it listed the services, unless the caller set an end.
            source = mews_source(stats=report.stats, source_stats=report.read, **source_args)
            with storage.run_lock(name), Progress(report.read, report.stats):
                locked = True
                pipeline = build_pipeline(storage, name, pipelines_dir)
                load(pipeline, storage, source, kind == "backfill", source_args, report)
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


def load_wait_seconds() -> float:
    """MEWS_SYNC__LOAD_WAIT_SECONDS (or `load_wait_seconds` under [mews_sync])."""
    value = config.value("mews_sync.load_wait_seconds")
    if value is None:
        return LOAD_WAIT_SECONDS
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if seconds < 0:
        raise MewsConfigError(
            "MEWS_SYNC__LOAD_WAIT_SECONDS must be a number of seconds, 0 or more."
        )
    return seconds


def last_request_sizes(
    storage: Storage, name: str, pipelines_dir: str | None
) -> RequestSizes:
    """The request sizes Mews answers in time as the last run left them, for every step of
    this one: from its first request (the services, read as the source is made), and each
    step from what the steps before learned. A pipeline never run before is not created
    here, so a configuration error leaves nothing behind."""
    sizes = RequestSizes()
    if (Path(pipelines_dir or storage.working_dir()) / name).is_dir():
        sizes.restore(
            stored_request_sizes(build_pipeline(storage, name, pipelines_dir).state)
        )
    return sizes


def load(
    pipeline: dlt.Pipeline,
    storage: Storage,
    source: Any,
    backfill: bool,
    source_args: dict[str, Any],
    report: RunReport,
) -> None:
    """Load the source in steps until its state says nothing is pending, keeping one row per
    order and note; then the views, the row counts and the analysts' copy.

    Reading Mews (dlt's extract) and writing the load files (normalize) happen outside the
    destination's write lock, so runs of several properties read in parallel; the load and
    the clean-up after it hold the lock, and the other properties' runs wait their turn."""
    wait = load_wait_seconds()
    # The fast path where it was measured: append, then remove what the load superseded.
    compacting = storage.kind in ROW_ID
    drop_abandoned_extracts(pipeline)
    with storage.lock(wait):
        # What a run stopped after extracting left (killed, or another process opened the
        # DuckDB file before its load), loaded first so that it is never dropped; then the
        # state as the destination has it (a new working folder, another machine); then the
        # clean-up of a run killed before its own.
        finish_interrupted_load(pipeline, storage.load_workers)
        pipeline.sync_destination()
        if compacting:
            with pipeline.sql_client() as client:
                clean_up(client, storage, report)
    while True:
        if compacting:
            load_by_appending(source)
        pipeline.extract(source, loader_file_format=storage.loader_file_format)
        pipeline.normalize()
        last = not pending_work(pipeline.state, backfill)
        with storage.lock(wait):
            pipeline.load(workers=storage.load_workers)
            if compacting or last:
                # One SQL client: dlt resolves the destination's configuration for each.
                with pipeline.sql_client() as client:
                    if compacting:
                        clean_up(client, storage, report)
                    if last:
                        finish_tables(client, storage, report)
            if last:
                report.published = storage.publish()
                return
        log.info("loaded %s so far; going on", counted(report.read.orders, "order"))
        source = mews_source(stats=report.stats, source_stats=report.read, **source_args)


def finish_tables(client: Any, storage: Storage, report: RunReport) -> None:
    """The views, and the rows per table for the summary. A run that changed nothing since
    the analysts' copy was made (nothing new in Mews) leaves the views as they are, so that
    the file, and with it the copy, stays as it was (`Storage.is_published`)."""
    if not storage.is_published():
        apply_views(client)
    report.table_rows = count_rows(client)


def clean_up(client: Any, storage: Storage, report: RunReport) -> None:
    """Remove the rows the loads not yet cleaned up superseded (see `compaction`)."""
    report.removed.add(compact(client, storage.kind))


def finish_interrupted_load(pipeline: dlt.Pipeline, workers: int) -> None:
    """Load what a killed run extracted or normalized but did not load (its rows and its
    state, so the watermarks move past them), `workers` files at a time."""
    if not pipeline.has_pending_data:
        return
    log.warning("finishing the load an earlier run left pending")
    if pipeline.destination.destination_name == "postgres":
        allow_the_state_written_twice(pipeline)
    # Not `pipeline.run()`: it first syncs with the destination, and on one without the
    # dataset yet (a first sync killed before its first load) dlt 1.31 then wipes the
    # working folder, pending load and all, and the run reads everything again.
    pipeline.normalize()
    pipeline.load(workers=workers)


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
    """Remove the folders of extracts no run will finish: only one run of a property (one
    pipeline, one working folder) extracts at a time (the caller holds its run lock)."""
    folder = Path(pipeline.working_dir) / "normalize"
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.is_dir() and ABANDONED_EXTRACT.fullmatch(path.name):
            shutil.rmtree(path, ignore_errors=True)
