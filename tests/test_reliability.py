"""Surviving the real API: limits, faults, kills, concurrent runs, bad input, secrets."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from harness import START_DATE, Target, assert_equals_truth, lagging_sandbox, one_sentence

from mews_sandbox import Faults, Sandbox, SandboxTransport, serve
from pipelines.cli import (
    EXIT_BUSY,
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    explain,
)
from pipelines.runs import read_runs
from pipelines.storage import DuckDbStorage

REPO = Path(__file__).resolve().parent.parent
CLIENT_TOKEN = "CT-SECRET-7f3a9c1e"
ACCESS_TOKEN = "AT-SECRET-b42d5e86"


@pytest.fixture
def sandbox() -> Sandbox:
    sandbox = lagging_sandbox(orders=2000, seed=5)
    sandbox.client_token = CLIENT_TOKEN
    sandbox.add_token(ACCESS_TOKEN)
    return sandbox


@pytest.fixture
def served(sandbox: Sandbox) -> Iterator[str]:
    with serve(sandbox) as url:
        yield url


def cli_env(tmp_path: Path, url: str, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "DESTINATION__"))}
    env.update(
        PYTHONPATH=str(REPO),
        DLT_DATA_DIR=str(tmp_path / "dlt_data"),
        SOURCES__MEWS__PLATFORM_URL=url,
        SOURCES__MEWS__CLIENT_TOKEN=CLIENT_TOKEN,
        SOURCES__MEWS__ACCESS_TOKEN=ACCESS_TOKEN,
        SOURCES__MEWS__START_DATE=START_DATE,
        SOURCES__MEWS__BACKOFF_SECONDS="0.05",
        SOURCES__MEWS__RATE_LIMIT_REQUESTS="0",
        DESTINATION__DUCKDB__CREDENTIALS=str(tmp_path / "mews_sync.duckdb"),
    )
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def start_cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def target_for(sandbox: Sandbox, tmp_path: Path) -> Target:
    """Reads the DuckDB file the CLI wrote, to compare it with the sandbox's truth."""
    return Target(sandbox, tmp_path)


# -- rate limit, 429, 5xx, drops, 408 --------------------------------------------------------


def test_client_side_limiter_keeps_a_full_sync_free_of_429s(sandbox, tmp_path):
    sandbox.config.rate_limit = (25, 1.0)
    target = Target(sandbox, tmp_path)
    report = target.sync(rate_limit_requests=25, rate_limit_seconds=1.0)
    assert sandbox.log.count(status=429) == 0
    assert report.stats.limiter_wait_seconds > 0  # the limiter did hold requests back
    assert_equals_truth(target)


def test_the_steps_of_a_run_share_the_tokens_limit(sandbox, tmp_path):
    # Each step makes a new source and client; the limit is the token's, so a step must
    # count the previous step's requests of the last window (a limiter per client did not:
    # three 429s here).
    sandbox.config.rate_limit = (25, 1.0)
    target = Target(sandbox, tmp_path)
    target.sync(rate_limit_requests=25, rate_limit_seconds=1.0, max_orders_per_load=300)
    loads = target.rows("select count(*) from mews._dlt_loads")[0][0]
    assert loads >= 5  # 2,000 orders in steps of about 300
    assert sandbox.log.count(status=429) == 0
    assert_equals_truth(target)


@pytest.mark.parametrize("retry_after_header", [True, False])
def test_429s_are_waited_out(sandbox, tmp_path, retry_after_header):
    sandbox.config.faults = Faults(seed=3, error_429=0.06, retry_after_header=retry_after_header)
    target = Target(sandbox, tmp_path)
    report = target.sync(backoff_seconds=0.05)
    assert report.stats.throttled == sandbox.log.count(status=429) > 0
    assert_equals_truth(target)


def test_server_errors_and_dropped_connections_are_retried(sandbox, tmp_path):
    sandbox.config.faults = Faults(seed=4, error_500=0.15, drop=0.15)
    target = Target(sandbox, tmp_path)
    report = target.sync(backoff_seconds=0.01)
    assert sandbox.log.count(status=500) > 0 and sandbox.log.count(status=0) > 0
    assert report.stats.retries >= sandbox.log.count(status=500) + sandbox.log.count(status=0)
    assert_equals_truth(target)


def test_a_sandbox_that_408s_every_big_page_is_still_synced_completely(sandbox, tmp_path):
    sandbox.config.faults = Faults(heavy_count=100)
    target = Target(sandbox, tmp_path)
    report = target.sync()
    assert report.stats.heavy > 0
    ok = [e for e in sandbox.log.entries if e.status == 200 and "Limitation" in e.body]
    assert ok and all(e.body["Limitation"]["Count"] <= 100 for e in ok)
    assert_equals_truth(target)


def test_random_408s_shrink_the_request_and_carry_on(sandbox, tmp_path):
    sandbox.config.faults = Faults(seed=8, error_408=0.1)
    target = Target(sandbox, tmp_path)
    report = target.sync()
    assert report.stats.heavy == sandbox.log.count(status=408) > 0
    assert_equals_truth(target)


def test_an_api_that_keeps_failing_stops_cleanly_with_retry_later(sandbox, tmp_path):
    sandbox.config.faults = Faults(error_500=1.0)
    with pytest.raises(Exception) as failure:
        Target(sandbox, tmp_path).sync(backoff_seconds=0.001, max_retries=2)
    code, sentence = explain(failure.value)
    assert code == EXIT_UNAVAILABLE
    assert "services/getAll" in sentence and "Try again later" in sentence


# -- refusals and bad answers from the API ---------------------------------------------------


def test_bad_tokens_stop_with_one_sentence_naming_the_operation(sandbox, served, tmp_path):
    env = cli_env(tmp_path, served, SOURCES__MEWS__ACCESS_TOKEN="AT-SECRET-wrong-0000")
    result = cli(env, "run", cwd=tmp_path)
    assert result.returncode == EXIT_REFUSED
    sentence = one_sentence(result.stderr)
    assert "services/getAll answered 401" in sentence and "ACCESS_TOKEN" in sentence
    assert "AT-SECRET" not in sentence and CLIENT_TOKEN not in sentence
    assert sandbox.log.count(status=401) == 1  # a 401 is not retried


class RewritingTransport(httpx.BaseTransport):
    """Passes requests to the sandbox and rewrites the answers of one operation."""

    def __init__(self, inner: httpx.BaseTransport, operation: str, rewrite) -> None:
        self.inner, self.operation, self.rewrite = inner, operation, rewrite

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.endswith(self.operation):
            return response
        response.read()
        return httpx.Response(response.status_code, content=self.rewrite(response.json()))


def loaded_fingerprint(target: Target) -> tuple:
    return target.orders(), target.notes(), target.state()


@pytest.mark.parametrize(
    ("rewrite", "expected_code", "expected_words"),
    [
        (lambda body: b'{"ProductServiceOrders": [', EXIT_UNAVAILABLE, "not valid JSON"),
        (lambda body: b'{"Orders": []}', EXIT_REFUSED, "without a 'ProductServiceOrders' list"),
        (lambda body: b'{"ProductServiceOrders": [1, 2]}', EXIT_REFUSED, "list of objects"),
        (
            lambda body: __import__("json").dumps({**body, "Cursor": "no-such-order"}).encode(),
            EXIT_REFUSED,
            "Invalid Cursor",
        ),
    ],
    ids=["malformed-json", "unexpected-shape", "items-not-objects", "unknown-cursor"],
)
def test_bad_answers_stop_cleanly_and_lose_nothing(
    sandbox, tmp_path, rewrite, expected_code, expected_words
):
    target = Target(sandbox, tmp_path)
    target.sync()
    before = loaded_fingerprint(target)
    sandbox.update_order(sandbox.orders()[0]["Id"], State="Canceled")
    sandbox.config.faults = Faults()
    broken = RewritingTransport(SandboxTransport(sandbox), "productServiceOrders/getAll", rewrite)
    with pytest.raises(Exception) as failure:
        # Pages of one order: the one changed order fills a page, so its cursor is followed.
        target.sync(transport=broken, backoff_seconds=0.001, max_retries=1, page_size=1)
    code, sentence = explain(failure.value)
    assert code == expected_code
    assert expected_words in sentence
    assert loaded_fingerprint(target) == before


# -- bad configuration and command lines -----------------------------------------------------


@pytest.fixture(scope="module")
def synced_once(tmp_path_factory) -> Iterator[tuple[Sandbox, str, Path]]:
    """One sandbox, served, and a folder holding a DuckDB file and dlt state synced from it."""
    sandbox = Sandbox.generate(orders=300, seed=6)
    sandbox.client_token = CLIENT_TOKEN
    sandbox.add_token(ACCESS_TOKEN)
    template = tmp_path_factory.mktemp("synced")
    with serve(sandbox) as url:
        assert cli(cli_env(template, url), "run", cwd=template).returncode == 0
        yield sandbox, url, template


@pytest.mark.parametrize(
    ("overrides", "args", "words"),
    [
        ({"SOURCES__MEWS__ACCESS_TOKEN": None}, ("run",), "SOURCES__MEWS__ACCESS_TOKEN"),
        ({"SOURCES__MEWS__CLIENT_TOKEN": ""}, ("run",), "CLIENT_TOKEN"),
        ({"SOURCES__MEWS__PLATFORM_URL": "api.mews.com"}, ("run",), "PLATFORM_URL"),
        ({"SOURCES__MEWS__START_DATE": "yesterday"}, ("run",), "START_DATE"),
        ({"SOURCES__MEWS__SERVICE_IDS": '{"a": 1}'}, ("run",), "SERVICE_IDS"),
        ({"SOURCES__MEWS__SERVICE_IDS": "[1, 2]"}, ("run",), "SERVICE_IDS"),
        ({"SOURCES__MEWS__SERVICE_IDS": "not-json"}, ("run",), "SERVICE_IDS"),
        ({}, ("backfill", "--start", "2024-02-01", "--end", "2024-01-01"), "before its --end"),
        ({}, ("backfill", "--start", "2024-02-01"), "--end"),
        ({}, ("run", "--bogus"), "unrecognized arguments"),
        ({}, ("explode",), "invalid choice"),
    ],
)
def test_bad_input_gets_one_sentence_exit_2_and_changes_nothing(
    synced_once, tmp_path, overrides, args, words
):
    sandbox, url, template = synced_once
    shutil.copytree(template, tmp_path, dirs_exist_ok=True)
    database = tmp_path / "mews_sync.duckdb"
    before = hashlib.sha256(database.read_bytes()).hexdigest()
    requests_before = sandbox.log.count()

    result = cli(cli_env(tmp_path, url, **overrides), *args, cwd=tmp_path)

    assert result.returncode == EXIT_CONFIG
    assert words in one_sentence(result.stderr)
    assert hashlib.sha256(database.read_bytes()).hexdigest() == before
    assert sandbox.log.count() == requests_before


def test_a_start_date_after_mews_clock_is_one_sentence_exit_2_and_reads_no_order(
    synced_once, tmp_path
):
    """Checked against Mews' clock, which the services' answer gives: no order is read."""
    sandbox, url, template = synced_once
    shutil.copytree(template, tmp_path, dirs_exist_ok=True)
    database = tmp_path / "mews_sync.duckdb"
    before = hashlib.sha256(database.read_bytes()).hexdigest()
    orders_before = sandbox.log.count(operation="productServiceOrders/getAll")
    env = cli_env(tmp_path, url, SOURCES__MEWS__START_DATE="2999-01-01")

    result = cli(env, "run", cwd=tmp_path)

    assert result.returncode == EXIT_CONFIG
    assert "is not before Mews' current time" in one_sentence(result.stderr)
    assert hashlib.sha256(database.read_bytes()).hexdigest() == before
    assert sandbox.log.count(operation="productServiceOrders/getAll") == orders_before


# -- crashes and concurrent runs -------------------------------------------------------------


def test_a_second_run_on_the_same_file_stops_with_a_clear_message(served, tmp_path):
    env = cli_env(tmp_path, served)
    with DuckDbStorage.at(str(tmp_path / "mews_sync.duckdb")).run_lock("mews_sync"):
        result = cli(env, "run", cwd=tmp_path)
    assert result.returncode == EXIT_BUSY
    assert "Another mews-sync run is using" in one_sentence(result.stderr)


def pause_at(sandbox: Sandbox, operation: str) -> tuple[threading.Event, threading.Event]:
    """Hold the sandbox's first answer to `operation` until `resume` is set; `reached` is set
    when that request arrives."""
    reached, resume = threading.Event(), threading.Event()
    handle = sandbox.handle

    def paused(method: str, path: str, body: bytes):
        if path.endswith(operation) and not reached.is_set():
            reached.set()
            resume.wait(60)
        return handle(method, path, body)

    sandbox.handle = paused
    return reached, resume


def open_read_only(database: Path) -> subprocess.Popen[str]:
    """Another process (a notebook) holding `database` open read-only; it says "open"."""
    code = (
        "import duckdb, sys, time\n"
        f"con = duckdb.connect({str(database)!r}, read_only=True)\n"
        "print('open', flush=True)\n"
        "time.sleep(120)\n"
    )
    reader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "open"
    return reader


def test_a_reader_opening_the_file_mid_run_is_busy_and_the_next_run_loads_what_it_read(
    sandbox, served, tmp_path, monkeypatch
):
    env = cli_env(tmp_path, served)
    monkeypatch.setenv("DLT_DATA_DIR", env["DLT_DATA_DIR"])  # to find the CLI's dlt folder
    database = tmp_path / "mews_sync.duckdb"
    assert cli(env, "run", cwd=tmp_path).returncode == 0
    mutate(sandbox, random.Random(3))
    # Paused in its extract: past its own check of the file, before dlt's load connects.
    reached, resume = pause_at(sandbox, "serviceOrderNotes/getAll")
    run = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert reached.wait(60), "the run never read notes"
    reader = open_read_only(database)
    try:
        resume.set()
        stdout, stderr = run.communicate(timeout=120)
        assert run.returncode == EXIT_BUSY, stderr
        # Found before the load (the write lock checks the file), or by the load itself.
        assert one_sentence(stderr) in (
            f"mews-sync: Another process has {database} open (a BI tool, a notebook, "
            "`duckdb -readonly`?): close it and try again; analysts should read the analytics "
            "copy instead.",
            f"mews-sync: Another process opened {database} during the run (a BI tool, a "
            "notebook, `duckdb -readonly`?): close it and run again, which loads what this "
            "run read; analysts should read the analytics copy instead.",
        )
        pending = pending_load_ids(database)
        assert pending, "the run left nothing pending to load"
    finally:
        reader.kill()
        reader.wait()
    result = cli(env, "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_equals_truth(target_for(sandbox, tmp_path))
    loads = target_for(sandbox, tmp_path).rows("select load_id from mews._dlt_loads")
    assert set(pending) <= {load_id for (load_id,) in loads}  # loaded, not dropped
    assert pending_load_ids(database) == []


def pending_load_ids(database: Path) -> list[str]:
    """The load packages a run extracted and did not load, in its dlt working folder."""
    import dlt

    folder = DuckDbStorage.at(database).working_dir()
    return list(dlt.attach("mews_sync", pipelines_dir=str(folder)).list_normalized_load_packages())


def kill_after(env: dict[str, str], seconds: float, cwd: Path) -> bool:
    """SIGKILL a run after `seconds`; True if it was still running then."""
    deadline = time.monotonic() + seconds
    return kill_when(env, cwd, lambda: time.monotonic() >= deadline)


def kill_after_requests(sandbox: Sandbox, env: dict[str, str], count: int, cwd: Path) -> bool:
    """SIGKILL a run once the sandbox has answered `count` of its requests (a nightly run is
    too quick for a timer to land in it); True if it was still running then."""
    before = sandbox.log.count()
    return kill_when(env, cwd, lambda: sandbox.log.count() >= before + count)


def kill_when(env: dict[str, str], cwd: Path, ready: Callable[[], bool]) -> bool:
    """Start a run and SIGKILL it once `ready()`; True if it was still running then."""
    process = start_cli(env, "run", cwd=cwd)
    while not ready() and process.poll() is None:
        time.sleep(0.002)
    running = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    return running


def mutate(sandbox: Sandbox, rng: random.Random) -> None:
    orders = sandbox.orders()
    for order in rng.sample(orders, 5):
        sandbox.update_order(order["Id"], State=rng.choice(["Canceled", "Processed", "Started"]))
    notes = sandbox.notes()
    sandbox.update_note(rng.choice(notes)["Id"], f"edited {rng.random()}")
    sandbox.delete_note(rng.choice(notes)["Id"])
    sandbox.add_note(rng.choice(orders)["Id"], "added")
    sandbox.add_order(orders[0]["ServiceId"])


@pytest.mark.parametrize("seed", [1, 2])
def test_runs_killed_at_any_point_then_rerun_equal_the_truth(sandbox, served, tmp_path, seed):
    rng = random.Random(seed)
    sandbox.config.faults = Faults(latency_s=0.01)
    env = cli_env(tmp_path, served)
    killed = []
    for _ in range(3):
        killed.append(kill_after(env, rng.uniform(0.5, 3.0), tmp_path))
        mutate(sandbox, rng)
    assert any(killed)
    result = cli(env, "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_equals_truth(target_for(sandbox, tmp_path))


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_run_stopped_by_a_signal_says_so_is_recorded_and_the_next_equals_the_truth(
    sandbox, served, tmp_path, stop
):
    sandbox.config.faults = Faults(latency_s=0.01)
    # Steps of 300 orders: the run loads several times, so a stop may land in a load.
    env = cli_env(tmp_path, served, SOURCES__MEWS__MAX_ORDERS_PER_LOAD="300")
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "--log-level", "WARNING", "run"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while sandbox.log.count(operation="serviceOrderNotes/getAll") < 3 and process.poll() is None:
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before it could be stopped"
    process.send_signal(stop)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == EXIT_INTERRUPTED
    assert one_sentence(stderr) == (
        "mews-sync: interrupted; the next run starts from the last completed load."
    )
    assert "mews-sync run FAILED" in stdout
    (run,) = read_runs(DuckDbStorage.at(str(tmp_path / "mews_sync.duckdb")).runs_path)
    assert (run["status"], run["exit_code"]) == ("failed", EXIT_INTERRUPTED)
    sandbox.config.faults = Faults()
    result = cli(cli_env(tmp_path, served), "run", cwd=tmp_path)  # the rest in one step
    assert result.returncode == 0, result.stderr
    assert_equals_truth(target_for(sandbox, tmp_path))


def test_chaos_faults_and_two_kills_in_one_sync_end_equal_to_the_truth(sandbox, served, tmp_path):
    rng = random.Random(42)
    sandbox.config.faults = Faults(
        seed=42, latency_s=0.003, error_500=0.05, error_408=0.05, drop=0.05, error_429=0.03
    )
    env = cli_env(tmp_path, served)
    assert cli(env, "run", cwd=tmp_path).returncode == 0
    mutate(sandbox, rng)
    assert kill_after_requests(sandbox, env, rng.randint(1, 2), tmp_path)
    mutate(sandbox, rng)
    assert kill_after_requests(sandbox, env, rng.randint(1, 2), tmp_path)
    result = cli(env, "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sandbox.log.count(status=500) and sandbox.log.count(status=408)
    assert sandbox.log.count(status=0) and sandbox.log.count(status=429)
    assert_equals_truth(target_for(sandbox, tmp_path))


# -- secrets ---------------------------------------------------------------------------------


def test_tokens_appear_nowhere_after_runs_that_succeed_and_fail(sandbox, served, tmp_path):
    env = cli_env(tmp_path, served)
    outputs = []
    for args in (("--log-level", "DEBUG", "run"), ("run",)):
        result = cli(env, *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        outputs += [result.stdout, result.stderr]
    sandbox.config.faults = Faults(error_500=1.0)
    failed = cli(cli_env(tmp_path, served, SOURCES__MEWS__MAX_RETRIES="1"), "run", cwd=tmp_path)
    assert failed.returncode == EXIT_UNAVAILABLE
    outputs += [failed.stdout, failed.stderr]

    for token in (CLIENT_TOKEN, ACCESS_TOKEN):
        assert not any(token in text for text in outputs)
        leaking = [
            p for p in tmp_path.rglob("*") if p.is_file() and token.encode() in p.read_bytes()
        ]
        assert leaking == []
    assert any((tmp_path / "dlt_data").rglob("trace.pickle"))  # dlt's trace was searched too


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_while_the_rate_limiter_waits_ends_the_run_at_once(sandbox, served, tmp_path, stop):
    # A limit of 30 requests / 30 s: once the notes threads are under way, one of them (or
    # the main thread) sleeps in the limiter and the others wait for it.
    env = cli_env(
        tmp_path,
        served,
        SOURCES__MEWS__RATE_LIMIT_REQUESTS="30",
        SOURCES__MEWS__RATE_LIMIT_SECONDS="30",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "--log-level", "WARNING", "run"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while sandbox.log.count() < 30 and process.poll() is None:
        time.sleep(0.005)
    time.sleep(1.0)  # well into the limiter's wait
    assert process.poll() is None, "the run ended before it could be stopped"
    stopped = time.monotonic()
    process.send_signal(stop)
    stdout, stderr = process.communicate(timeout=60)
    took = time.monotonic() - stopped
    assert process.returncode == EXIT_INTERRUPTED
    # One line: no word from dlt about threads it could not stop.
    assert one_sentence(stderr) == (
        "mews-sync: interrupted; the next run starts from the last completed load."
    )
    assert took < 3.0, took  # it took 6.5 to 16.8 s while a thread slept out its wait
    waited = float(stdout.split("waited for the rate limit: ")[1].split(" s")[0])
    assert waited >= 1.0, stdout  # the wait cut short is counted
