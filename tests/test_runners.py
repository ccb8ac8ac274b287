"""Whoever drives the load gets the same tables: a plain `pipeline.run(mews_source())`, the
Airflow recipe's task, and dlt's own command line on the pipeline mews-sync made."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from harness import (
    START_DATE,
    Target,
    assert_equals_truth,
    change_orders_and_notes,
    lagging_sandbox,
    users_pipeline,
    users_source,
)

from mews_sandbox import DEMO_PORTFOLIO_ACCESS_TOKEN, Sandbox, serve

REPO = Path(__file__).resolve().parent.parent


def test_a_plain_pipeline_run_keeps_one_row_per_order_and_drops_deleted_notes(tmp_path, postgres):
    """No mews-sync code but the source: dlt's merges alone keep the tables right."""
    sandbox = lagging_sandbox(orders=1500, seed=41)
    target = Target(sandbox, tmp_path, postgres)
    pipeline = users_pipeline(target, tmp_path)

    def source():
        return users_source(sandbox)

    pipeline.run(source())
    assert_equals_truth(target)
    change_orders_and_notes(sandbox)
    pipeline.run(source())
    pipeline.run(source())  # and once more with nothing new

    assert_equals_truth(target)
    marker = target.rows(
        "select count(*) from mews.service_order_notes where _mews_order_without_notes"
    )
    assert marker == [(0,)]  # the markers for orders without notes are never stored


def test_a_plain_pipeline_run_has_a_change_made_in_the_second_it_starts(tmp_path, postgres):
    """Mews' clock stands still at 12:00:00.5: both runs end at 12:00:00, the changes made
    between them are stamped after that end, and the second plain run has them."""
    moment = datetime(2026, 6, 1, 12, 0, 0, 500_000, tzinfo=UTC)
    sandbox = Sandbox.generate(orders=600, seed=47, now=datetime(2026, 6, 1, 11, tzinfo=UTC))
    sandbox.clock = lambda: moment
    target = Target(sandbox, tmp_path, postgres)
    pipeline = users_pipeline(target, tmp_path)
    pipeline.run(users_source(sandbox))
    change_orders_and_notes(sandbox)
    pipeline.run(users_source(sandbox))
    assert_equals_truth(target)


def test_a_plain_pipeline_run_with_nothing_new_loads_nothing(tmp_path, postgres):
    """The source leaves its state as it was when it read nothing, so dlt has nothing to
    load: no new load, whoever drives the run; the next change is read as usual."""
    moment = datetime(2026, 6, 1, 12, tzinfo=UTC)
    sandbox = Sandbox.generate(orders=600, seed=53, now=datetime(2026, 6, 1, 11, tzinfo=UTC))
    sandbox.clock = lambda: moment
    target = Target(sandbox, tmp_path, postgres)
    pipeline = users_pipeline(target, tmp_path)
    pipeline.run(users_source(sandbox))
    loads = target.rows("select load_id from mews._dlt_loads")
    info = pipeline.run(users_source(sandbox))
    assert info.loads_ids == []
    assert target.rows("select load_id from mews._dlt_loads") == loads
    change_orders_and_notes(sandbox)
    pipeline.run(users_source(sandbox))
    assert_equals_truth(target)


def load_recipe() -> ModuleType:
    path = REPO / "docs" / "scheduling" / "airflow_dag.py"
    spec = importlib.util.spec_from_file_location("airflow_dag", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_airflow_recipes_task_keeps_one_row_per_order_after_changes(
    tmp_path, monkeypatch, postgres
):
    assert importlib.util.find_spec("airflow") is None  # the task needs no Airflow
    sandbox = lagging_sandbox(orders=3000, seed=43)
    target = Target(sandbox, tmp_path, postgres)
    with serve(sandbox) as url:
        for name, value in {
            "SOURCES__MEWS__PLATFORM_URL": url,
            "SOURCES__MEWS__CLIENT_TOKEN": sandbox.client_token,
            "SOURCES__MEWS__ACCESS_TOKEN": DEMO_PORTFOLIO_ACCESS_TOKEN,
            "SOURCES__MEWS__START_DATE": START_DATE,
            "SOURCES__MEWS__RATE_LIMIT_REQUESTS": "0",
            "DESTINATION__DUCKDB__CREDENTIALS": target.database,
            "MEWS_SYNC__DESTINATION": "postgres" if postgres else "duckdb",
            "DLT_DATA_DIR": str(tmp_path / "dlt_data"),
        }.items():
            monkeypatch.setenv(name, value)
        recipe = load_recipe()
        recipe.sync_mews()
        change_orders_and_notes(sandbox)
        rows = recipe.sync_mews()

    ids = [o[0] for o in target.orders()]
    assert len(ids) == len(set(ids)) == rows["product_service_orders"] == 3001
    assert_equals_truth(target)
    assert target.rows("select count(*) from mews.orders_current") == [(3001,)]


def test_dlt_pipeline_info_finds_the_pipeline_with_the_command_status_prints(tmp_path):
    sandbox = lagging_sandbox(orders=200, seed=45)
    env_dir = tmp_path / "dlt_data"
    with serve(sandbox) as url:
        env = {
            "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
            "PYTHONPATH": str(REPO),
            "DLT_DATA_DIR": str(env_dir),
            "RUNTIME__DLTHUB_TELEMETRY": "false",
            "SOURCES__MEWS__PLATFORM_URL": url,
            "SOURCES__MEWS__CLIENT_TOKEN": sandbox.client_token,
            "SOURCES__MEWS__ACCESS_TOKEN": DEMO_PORTFOLIO_ACCESS_TOKEN,
            "SOURCES__MEWS__START_DATE": START_DATE,
            "SOURCES__MEWS__RATE_LIMIT_REQUESTS": "0",
            "DESTINATION__DUCKDB__CREDENTIALS": str(tmp_path / "mews_sync.duckdb"),
        }
        mews_sync = [sys.executable, "-m", "pipelines.cli"]
        run = subprocess.run([*mews_sync, "run"], env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    status = subprocess.run([*mews_sync, "status"], env=env, capture_output=True, text=True)
    (command,) = [line.strip() for line in status.stdout.splitlines() if "dlt pipeline" in line]
    dlt_cli = [str(Path(sys.executable).parent / "dlt"), *command.split()[1:]]

    info = subprocess.run(dlt_cli, env=env, capture_output=True, text=True, cwd=tmp_path)
    listed = subprocess.run(
        [*dlt_cli[:-2], "--list-pipelines"], env=env, capture_output=True, text=True
    )

    assert info.returncode == 0, info.stderr
    assert "mews_sync" in info.stdout and "product_service_orders" in info.stdout + info.stderr
    assert listed.returncode == 0 and "mews_sync" in listed.stdout
    pipelines = env_dir / "pipelines"
    assert not pipelines.exists() or not list(pipelines.iterdir())  # nothing under another name


def test_the_airflow_recipe_retries_only_what_a_later_try_can_fix():
    """Mews unavailable (exit 4) or the destination busy (exit 5): Airflow retries. A
    configuration error, a refusal or a bug: the task fails at once."""
    from pipelines.lock import SyncBusyError
    from sources.errors import MewsApiError, MewsConfigError, MewsUnavailableError

    retry_can_help = load_recipe().retry_can_help
    wrapped = RuntimeError("a dlt step failed")
    wrapped.__cause__ = MewsUnavailableError("Mews did not answer")

    assert retry_can_help(MewsUnavailableError("Mews did not answer"))
    assert retry_can_help(wrapped)
    assert retry_can_help(SyncBusyError("another run is loading"))
    assert retry_can_help(MewsApiError("services/getAll", 503, "down"))
    assert not retry_can_help(MewsConfigError("SOURCES__MEWS__START_DATE is not a date."))
    assert not retry_can_help(MewsApiError("services/getAll", 401, "Invalid AccessToken"))
    assert not retry_can_help(ZeroDivisionError())
