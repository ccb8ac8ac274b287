"""mews-sync under Airflow: a sketch, not run here (this machine has no Airflow).

Copy into the dags/ folder of an Airflow 2.x whose workers have this project installed
(`pip install -e /opt/mews-sync`) and the settings in their environment (the same variables as
/etc/mews-sync/env, or Airflow's .dlt/ folder next to dags/).

DuckDB is one file on one disk, written by one process at a time: run these tasks on a single
worker that holds the file (LocalExecutor, or a queue served by one worker), one DAG run at a
time. Two shapes:

- `mews_sync_dlt` uses dlt's Airflow helper: dlt's logging and retries inside Airflow, a
  fresh dlt working folder per task (the state comes back from the DuckDB file), then a task
  that re-applies the SQL views. It bypasses the CLI, so no `.lock`, no run record and no
  run summary: keep cron/systemd runs off this file while Airflow owns it.
- `mews_sync_cli` runs the CLI as is: same lock, run record, summary and exit codes as cron.
  Airflow fails the task on a non-zero exit; exit 4/5 are worth a retry, 2/3 are not.
"""

from __future__ import annotations

import pendulum
from airflow.decorators import dag, task
from airflow.operators.bash import BashOperator

DUCKDB_FILE = "/var/lib/mews-sync/mews_sync.duckdb"
SCHEDULE = {
    "schedule": "17 * * * *",
    "start_date": pendulum.datetime(2025, 1, 1, tz="UTC"),
    "catchup": False,  # each run reads from the watermark up to now: no need to replay
    "max_active_runs": 1,
}


@dag(**SCHEDULE, tags=["mews"])
def mews_sync_dlt() -> None:
    import dlt
    from dlt.helpers.airflow_helper import PipelineTasksGroup

    from pipelines.mews_pipeline import DATASET_NAME, PIPELINE_NAME, finish_load
    from sources.mews import mews_source

    # The group first: it points dlt at a fresh working folder that the pipeline must use.
    tasks = PipelineTasksGroup(PIPELINE_NAME, use_data_folder=False, wipe_local_data=True)
    pipeline = dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        destination=dlt.destinations.duckdb(credentials=DUCKDB_FILE),
        dataset_name=DATASET_NAME,
    )
    # A callable, not mews_source(): the source fixes "now" (its end) when called, which must
    # happen when the task runs, not when the scheduler parses this file.
    (load,) = tasks.add_run(pipeline, mews_source, decompose="none", retries=0)

    @task
    def sql_views() -> None:
        finish_load(DUCKDB_FILE)  # drops the notes Mews deleted, then the views

    load >> sql_views()


@dag(**SCHEDULE, tags=["mews"])
def mews_sync_cli() -> None:
    BashOperator(
        task_id="run",
        bash_command="mews-sync run",
        env={"DESTINATION__DUCKDB__CREDENTIALS": DUCKDB_FILE},
        append_env=True,  # the tokens come from the worker's environment, not from here
        retries=2,
        retry_delay=pendulum.duration(minutes=10),
    )


mews_sync_dlt()
mews_sync_cli()
