"""mews-sync under Airflow 3: one DAG, one mapped task per property, each calling the same
`sync()` as `mews-sync run`.

Where it goes: copy this file into the dags folder of an Airflow 3 whose workers have this
project installed (`pip install /opt/mews-sync`, into Airflow's own environment). The DAG
file imports only `airflow.sdk`: parsing it reads no setting, reaches no network and imports
neither dlt nor mews-sync, so the scheduler's parsing stays fast and works with Mews down.

What each worker needs:
- the settings, as for cron: environment variables (the same as /etc/mews-sync/env), or a
  `.dlt/` folder whose parent is named by DLT_PROJECT_DIR in the worker's environment (a
  task's working directory is Airflow's, not yours, so `.dlt/` is never found by itself);
- per property, its own AccessToken: `HOTEL_A__SOURCES__MEWS__ACCESS_TOKEN`, or
  `[hotel_a.sources.mews]` in `.dlt/secrets.toml`; what they share (CLIENT_TOKEN,
  PLATFORM_URL, DESTINATION__POSTGRES__CREDENTIALS) as plain `SOURCES__MEWS__*` and
  `[sources.mews]`; the properties' names in MEWS_SYNC__PROPERTIES='["hotel_a", "hotel_b"]'
  or `properties = [...]` under `[mews_sync]` in `.dlt/config.toml` (none: one default
  pipeline, as `mews-sync run`);
- network access to the Mews API and to the destination.

Each run asks which properties are configured (in a task, at run time: a property added to
the settings is loaded from the next run on, with no change here), then loads each in a task
of its own, all at once within Airflow's limits (`parallelism`, pools). Properties load into
one PostgreSQL database side by side: each has its own dlt pipeline (state, working folder,
run records) and only the short load step is taken one at a time.

With DuckDB (MEWS_SYNC__DESTINATION unset), the file lives on one worker's disk and takes
one writer at a time: run the tasks on the one worker that holds it (LocalExecutor, or a
queue one worker serves) and in a pool of one slot, or a second property finds it busy and
waits for its retry.

Failures: Mews unavailable (the CLI's exit 4) or a destination another run holds (exit 5)
raise, and Airflow retries the task later. A configuration error or a refusal by Mews (exits
2 and 3: a person must act) and a bug fail the task at once, with no retry: a retry would
only fail again. The one-sentence reason is in the task's log and in the property's run
record (`mews-sync status`).

dlt's Airflow secrets provider (Airflow Variables as a settings source) is off unless
PROVIDERS__ENABLE_AIRFLOW_SECRETS is set to true in the worker's environment: on, dlt looks
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
