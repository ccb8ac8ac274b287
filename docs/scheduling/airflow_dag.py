"""mews-sync under Airflow: one DAG whose task calls the same `sync()` as `mews-sync run`.

Copy into the dags/ folder of an Airflow 2.x whose workers have this project installed
(`pip install -e /opt/mews-sync`) and the settings in their environment (the same variables as
/etc/mews-sync/env, or a .dlt/ folder next to dags/). The task gets the same tables, lock, run
record, summary and analysts' copy as cron or systemd do, on DuckDB or PostgreSQL
(MEWS_SYNC__DESTINATION).

With DuckDB, the file lives on one worker's disk: run the task on a single worker that holds
it (LocalExecutor, or a queue one worker serves). Two runs never write at once: the second
stops with "busy" (exit 5 for the CLI; here a SyncBusyError, which `retries` covers), and
`max_active_runs=1` keeps Airflow from trying.

`sync_mews()` below needs no Airflow: the tests call it as the task would.
"""

from __future__ import annotations

import logging

import pendulum

log = logging.getLogger("mews_sync")


def sync_mews() -> dict[str, int]:
    """The task: an incremental run up to now, from the stored state. Returns the rows per
    table (Airflow keeps it as the task's XCom); raises on failure, with the one-sentence
    reason in the run record and the log."""
    from pipelines.mews_pipeline import sync

    report = sync("run")
    log.info("%s", report.summary())
    return report.table_rows


try:
    from airflow.decorators import dag, task
except ImportError:  # imported without Airflow (the tests): only sync_mews() is needed
    dag = task = None

if dag is not None:

    @dag(
        schedule="17 * * * *",
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,  # each run reads from the watermark up to now: no need to replay
        max_active_runs=1,
        tags=["mews"],
    )
    def mews_sync() -> None:
        task(sync_mews, task_id="sync", retries=2, retry_delay=pendulum.duration(minutes=10))()

    mews_sync()
