"""The `mews-sync` command as a person and a scheduler use it: demo, project dir, backfill."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
from harness import one_sentence
from test_reliability import ACCESS_TOKEN, CLIENT_TOKEN, REPO, cli, cli_env

from mews_sandbox import DEMO_ACCESS_TOKEN, DEMO_CLIENT_TOKEN, Sandbox, serve


def test_demo_needs_no_configuration_and_shows_what_a_newcomer_needs(tmp_path):
    env = cli_env(tmp_path, "http://unused.invalid")
    for name in list(env):
        if name.startswith(("SOURCES__", "DESTINATION__")):
            del env[name]
    result = cli(env, "demo", "--orders", "300", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    database = tmp_path / "mews_demo.duckdb"
    with duckdb.connect(str(database), read_only=True) as con:
        orders = con.execute("select count(*) from mews.product_service_orders").fetchone()[0]
    assert orders == 300
    assert f"mews.product_service_orders {orders:>8}".replace(" ", "") in result.stdout.replace(
        " ", ""
    )
    assert str(database) in result.stdout
    assert "from mews.revenue_daily" in result.stdout  # a revenue question
    assert re.search(
        r"│\s+service\s+│\s+currency\s+│\s+items\s+│\s+gross_revenue\s+│", result.stdout
    )


def test_the_cli_works_from_any_directory_with_dlt_project_dir(tmp_path):
    sandbox = Sandbox.generate(orders=200, seed=3)
    sandbox.client_token = CLIENT_TOKEN
    sandbox.add_token(ACCESS_TOKEN)
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / ".dlt").mkdir(parents=True)
    elsewhere.mkdir()
    database = tmp_path / "hotel.duckdb"
    with serve(sandbox) as url:
        (project / ".dlt" / "config.toml").write_text(
            f'[sources.mews]\nplatform_url = "{url}"\nstart_date = "2015-01-01"\n'
            f'rate_limit_requests = 0\n\n[destination.duckdb]\ncredentials = "{database}"\n'
        )
        (project / ".dlt" / "secrets.toml").write_text(
            f'[sources.mews]\nclient_token = "{CLIENT_TOKEN}"\naccess_token = "{ACCESS_TOKEN}"\n'
        )
        env = cli_env(tmp_path, url, DLT_PROJECT_DIR=str(project))
        for name in list(env):
            if name.startswith(("SOURCES__", "DESTINATION__")):
                del env[name]
        result = cli(env, "run", cwd=elsewhere)

    assert result.returncode == 0, result.stderr
    with duckdb.connect(str(database), read_only=True) as con:
        loaded = con.execute("select count(*) from mews.product_service_orders").fetchone()[0]
    assert loaded == len(sandbox.orders())


def test_a_scheduled_run_with_nothing_new_loads_nothing(tmp_path):
    """Each run is a new process, as a scheduler starts it (string hashes salted each time):
    with nothing new in Mews, the second run loads nothing and leaves the analysts' copy."""
    sandbox = Sandbox.generate(orders=300, seed=5, now=datetime(2026, 6, 1, 11, tzinfo=UTC))
    sandbox.clock = lambda: datetime(2026, 6, 1, 12, tzinfo=UTC)
    sandbox.client_token = CLIENT_TOKEN
    sandbox.add_token(ACCESS_TOKEN)
    database = tmp_path / "mews_sync.duckdb"
    with serve(sandbox) as url:
        first = cli(cli_env(tmp_path, url, PYTHONHASHSEED="1"), "run", cwd=tmp_path)
        copy = (tmp_path / "mews_sync.analytics.duckdb").stat().st_ino
        second = cli(cli_env(tmp_path, url, PYTHONHASHSEED="2"), "run", cwd=tmp_path)

    assert first.returncode == second.returncode == 0, second.stderr
    assert "unchanged (nothing new was loaded)" in second.stdout
    assert (tmp_path / "mews_sync.analytics.duckdb").stat().st_ino == copy
    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("select count(*) from mews._dlt_loads").fetchone()[0] == 1


def test_backfill_from_the_command_line(tmp_path):
    sandbox = Sandbox.generate(orders=300, seed=4)
    sandbox.client_token = CLIENT_TOKEN
    sandbox.add_token(ACCESS_TOKEN)
    updated = sorted(o["UpdatedUtc"] for o in sandbox.orders())
    start, end = updated[100][:10], updated[200][:10]
    with serve(sandbox) as url:
        result = cli(
            cli_env(tmp_path, url), "backfill", "--start", start, "--end", end, cwd=tmp_path
        )
    assert result.returncode == 0, result.stderr
    expected = sum(start <= u[:10] < end for u in updated)
    assert f"read: {expected} orders" in result.stdout


def test_a_backfill_wholly_in_the_future_is_a_configuration_error(tmp_path):
    sandbox = Sandbox.generate(orders=50, seed=4)
    sandbox.client_token = CLIENT_TOKEN
    sandbox.add_token(ACCESS_TOKEN)
    with serve(sandbox) as url:
        result = cli(
            cli_env(tmp_path, url),
            *("backfill", "--start", "2099-01-01", "--end", "2099-02-01"),
            cwd=tmp_path,
        )
    assert result.returncode == 2, result.stderr
    sentence = one_sentence(result.stderr)
    assert "--start 2099-01-01T00:00:00Z is not before Mews' current time" in sentence
    assert "--end" in sentence
    assert sandbox.log.count(operation="productServiceOrders/getAll") == 0  # said at once
    assert not (tmp_path / "mews_sync.duckdb").exists()


def test_a_backfill_ending_in_the_future_reads_up_to_now(tmp_path):
    sandbox = Sandbox.generate(orders=300, seed=4)
    sandbox.client_token = CLIENT_TOKEN
    sandbox.add_token(ACCESS_TOKEN)
    first = min(o["UpdatedUtc"] for o in sandbox.orders())[:10]
    with serve(sandbox) as url:
        result = cli(
            cli_env(tmp_path, url), "backfill", "--start", first, "--end", "2099-01-01",
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stderr
    assert "read: 300 orders" in result.stdout
    ends = [
        e.body["UpdatedUtc"]["EndUtc"]
        for e in sandbox.log.entries
        if e.operation == "productServiceOrders/getAll"
    ]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ends and max(ends) <= now  # never the future --end itself


def test_the_console_script_is_installed():
    script = Path(sys.executable).parent / "mews-sync"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and "backfill" in result.stdout


def test_mews_sync_sandbox_serves_in_the_foreground_until_ctrl_c(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "sandbox", "--port", "0", "--orders", "50"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        line = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        body = {
            "ClientToken": DEMO_CLIENT_TOKEN,
            "AccessToken": DEMO_ACCESS_TOKEN,
            "Client": "test 1.0",
            "ServiceIds": [s["Id"] for s in Sandbox().services()],
            "UpdatedUtc": {"StartUtc": "2025-01-01T00:00:00Z", "EndUtc": "2025-03-01T00:00:00Z"},
            "Limitation": {"Count": 10},
        }
        answer = httpx.post(f"{url}/api/connector/v1/productServiceOrders/getAll", json=body)
        assert answer.status_code == 200 and "ProductServiceOrders" in answer.json()
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0


def test_the_demo_never_replaces_a_file_it_did_not_make(tmp_path):
    sandbox = Sandbox.generate(orders=50, seed=4)
    sandbox.client_token = CLIENT_TOKEN
    sandbox.add_token(ACCESS_TOKEN)
    with serve(sandbox) as url:
        env = cli_env(tmp_path, url)
        assert cli(env, "run", cwd=tmp_path).returncode == 0
    synced = tmp_path / "mews_sync.duckdb"
    garbage = tmp_path / "notes.duckdb"
    garbage.write_bytes(b"not a database")
    files = {path: path.read_bytes() for path in (synced, garbage)}
    runs = synced.with_name(synced.name + ".runs.jsonl").read_bytes()

    for path in files:
        result = cli(env, "demo", "--orders", "10", "--path", str(path), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "was not made by `mews-sync demo`" in one_sentence(result.stderr)

    assert {path: path.read_bytes() for path in files} == files
    assert synced.with_name(synced.name + ".runs.jsonl").read_bytes() == runs
    assert not garbage.with_name(garbage.name + ".lock").exists()


def test_the_demo_replaces_its_own_file_but_not_while_it_is_in_use(tmp_path):
    env = cli_env(tmp_path, "http://unused.invalid")
    database = tmp_path / "mews_demo.duckdb"
    assert cli(env, "demo", "--orders", "20", cwd=tmp_path).returncode == 0
    with open(database.with_name(database.name + ".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        before = database.read_bytes()
        busy = cli(env, "demo", "--orders", "30", cwd=tmp_path)
        assert busy.returncode == 5, busy.stderr
        assert database.read_bytes() == before
    again = cli(env, "demo", "--orders", "30", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("select count(*) from mews.product_service_orders").fetchone() == (30,)
