"""mews-sync under Airflow 3: one DAG, `mews_sync`, with one mapped task per property, each
calling the same `sync()` as `mews-sync run --property NAME` (same tables, locks, run records,
summary in the task's log).

Where it goes: copy this file into the dags folder of an Airflow 3 whose workers have this
project installed in Airflow's own environment (`pip install /opt/mews-sync`). The file
imports only `airflow.sdk`: parsing it reads no setting, reaches no network and imports
neither dlt nor mews-sync, so the scheduler parses it fast, with Mews down or not.

What each worker needs:
- the project installed, in the Python environment that runs Airflow's tasks;
- the settings, as for cron: environment variables (those of /etc/mews-sync/env), or a
  `.dlt/` folder in the folder DLT_PROJECT_DIR names in the worker's environment (a task's
  working directory is Airflow's, so `.dlt/` is never found by itself). Per property its own
  AccessToken, `HOTEL_A__SOURCES__MEWS__ACCESS_TOKEN` or `[hotel_a.sources.mews]` in
  `.dlt/secrets.toml`; what the properties share (CLIENT_TOKEN, PLATFORM_URL,
  DESTINATION__POSTGRES__CREDENTIALS) as plain `SOURCES__MEWS__*` or `[sources.mews]`; the
  properties' names in MEWS_SYNC__PROPERTIES='["hotel_a", "hotel_b"]' or `properties = [...]`
  under `[mews_sync]` in `.dlt/config.toml` (none listed: the single default pipeline);
- network access to the Mews API and to the destination.

Each run asks the settings which properties there are (in a task, at run time: a property
added to the list loads from the next run on, with no change here), then loads each in a task
of its own, side by side within Airflow's limits (`parallelism`, pools). Properties share one
PostgreSQL database: each has its own dlt pipeline (state, working folder, run records), and
only their short load steps take turns.

Celery or Kubernetes executor: the same file, unchanged. Each Celery worker, or the image of
the Kubernetes pods, has the project installed and the settings: the shared ones as
environment variables, the tokens from a secrets store (Kubernetes Secrets as environment
variables, or a `.dlt/secrets.toml` mounted from one, with DLT_PROJECT_DIR pointing at its
parent). The destination must be PostgreSQL (MEWS_SYNC__DESTINATION=postgres), reachable
from every worker: a task may run on any machine or pod, and a DuckDB file is on one disk and
takes one writer at a time. A working folder is local to a worker (a pod's is gone when the
pod ends): dlt takes the state from the database when it finds none, and `mews-sync status`
shows the run records of the machine it runs on, so read the task logs for the others.

With DuckDB (MEWS_SYNC__DESTINATION unset), run the tasks on the one worker that holds the
file (LocalExecutor, or a queue one worker serves), in a pool of one slot, or a second
property may wait for the first's load and, after MEWS_SYNC__LOAD_WAIT_SECONDS, be retried.

Failures: Mews unavailable (the CLI's exit 4) or a destination held by another run (exit 5)
raise, and Airflow retries the task later. A configuration error or a refusal by Mews (exits
2 and 3: a person must act) and a bug fail the task at once (AirflowFailException), without
the retries that would only fail again. The one-sentence reason is in the task's log and in
the property's run record.

dlt's Airflow secrets provider (Airflow Variables as a settings source) is off unless
PROVIDERS__ENABLE_AIRFLOW_SECRETS=true is set in the workers' environment: on, dlt looks
every setting up in Airflow's Variables too, 765 lookups (8.2 s) for a run that finds no
change, and mews-sync's settings are not kept there.

`sync_mews()` below needs no Airflow: the tests call it as the task does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

log = logging.getLogger("mews_sync")


def use_task_defaults() -> None:
    """Before dlt is imported in a task: its Airflow secrets provider off unless configured
    on purpose (see above), its anonymous telemetry off, and one log line per HTTP request
    kept out of the task's log, as for the CLI."""
    os.environ.setdefault("PROVIDERS__ENABLE_AIRFLOW_SECRETS", "false")
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def property_names() -> list[str | None]:
    """The properties to load, as the settings name them now; [None] when none are listed:
    the single default pipeline (or the one of MEWS_SYNC__PROPERTY)."""
    use_task_defaults()
    from pipelines.properties import configured_properties

    return configured_properties()


def sync_mews(property: str | None = None) -> dict[str, int]:
    """The task: an incremental run of `property` (None: the default pipeline) up to now,
    from its stored state. Returns the rows per table (the task's XCom); raises on failure,
    with the one-sentence reason in the log and the property's run record."""
    use_task_defaults()
    from pipelines.mews_pipeline import sync

    report = sync("run", property=property)
    log.info("%s", report.summary())
    return report.table_rows


def retry_can_help(exc: BaseException) -> bool:
    """Mews unavailable (exit 4) or the destination busy (exit 5): a later try may succeed."""
    from pipelines.failures import EXIT_BUSY, EXIT_UNAVAILABLE, explain

    return explain(exc)[0] in (EXIT_UNAVAILABLE, EXIT_BUSY)


try:
    from airflow.sdk import dag, task
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # imported without Airflow (the tests): only the functions above are needed
    dag = task = None

if dag is not None:

    @contextmanager
    def retried_only_if_it_can_help() -> Iterator[None]:
        """Let Airflow retry a failure a later try may fix; fail any other at once, with
        its one sentence (a retry would only fail again)."""
        try:
            yield
        except Exception as exc:
            if retry_can_help(exc):
                raise
            from pipelines.failures import EXIT_BUG, run_error

            code, sentence = run_error(exc)
            cause = exc if code == EXIT_BUG else None  # a bug's traceback: for its report
            raise AirflowFailException(sentence) from cause

    @dag(
        schedule="17 * * * *",
        start_date=datetime(2025, 1, 1, tzinfo=UTC),
        catchup=False,  # each run reads from its watermarks up to now: nothing to replay
        max_active_runs=1,
        tags=["mews"],
    )
    def mews_sync() -> None:
        @task
        def properties() -> list[str | None]:
            with retried_only_if_it_can_help():
                return property_names()

        @task(
            retries=3,
            retry_delay=timedelta(minutes=10),
            retry_exponential_backoff=True,
            map_index_template="{{ task.op_kwargs['property'] or 'default' }}",
        )
        def sync(property: str | None) -> dict[str, int]:
            with retried_only_if_it_can_help():
                return sync_mews(property)

        sync.expand(property=properties())

    mews_sync()
