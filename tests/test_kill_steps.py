"""A killed run loses at most its last step, about a minute of fetching, and the next run loads
what the killed one extracted but did not load: the real command, killed for real, against the
sandbox over loopback HTTP."""

from __future__ import annotations

import itertools
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from dlt.common.versioned_state import decompress_state
from harness import Target, assert_equals_truth, lagging_sandbox, one_sentence, utc
from test_reliability import ACCESS_TOKEN, CLIENT_TOKEN, REPO, cli, cli_env, kill_when

from mews_sandbox import Faults, Sandbox, serve
from mews_sandbox.app import LoggedRequest
from pipelines.failures import EXIT_INTERRUPTED, INTERRUPTED
from sources.mews.client import format_utc
from sources.mews.settings import DEFAULT_OVERLAP
from sources.mews.steps import WindowPace

ORDERS_OPERATION = "productServiceOrders/getAll"


def tokened(sandbox: Sandbox) -> Sandbox:
    sandbox.client_token = CLIENT_TOKEN
    sandbox.add_token(ACCESS_TOKEN)
    return sandbox


def destination_env(
    folder: Path, url: str, postgres: str | None, **settings: str
) -> dict[str, str]:
    """The command's environment for a run into `folder`'s DuckDB file, or into `postgres`."""
    folder.mkdir(parents=True, exist_ok=True)
    if postgres:
        settings |= {
            "MEWS_SYNC__DESTINATION": "postgres",
            "DESTINATION__POSTGRES__CREDENTIALS": postgres,
        }
    return cli_env(folder, url, **settings)


def loads(target: Target) -> list[str]:
    """The ids of the loads dlt completed in the destination."""
    return [row[0] for row in target.rows("select load_id from mews._dlt_loads where status = 0")]


# -- a kill at 60 % of a first sync ----------------------------------------------------------

STEP_SECONDS = 1.0  # SOURCES__MEWS__MAX_SECONDS_PER_LOAD for these tests (default 60)


def load_times(target: Target) -> list[float]:
    """When each completed load was committed (time.time()), in order."""
    rows = target.rows("select inserted_at from mews._dlt_loads where status = 0 order by 1")
    return [row[0].timestamp() for row in rows]


def requests_per_step(entries: list[LoggedRequest], loads: list[float]) -> list[int]:
    """How many of `entries` each step (up to each load's commit) asked for."""
    return [
        sum(1 for e in entries if after < e.at <= until)
        for after, until in zip([0.0, *loads], loads, strict=False)
    ]


def test_a_first_sync_killed_at_60_percent_loses_at_most_its_last_step(tmp_path):
    # DuckDB only: a step is as long on PostgreSQL, and the test takes a minute or more.
    sandbox = tokened(lagging_sandbox(orders=6000, seed=11))
    sandbox.config.faults = Faults(latency_s=0.01)  # about 1,000 requests: 8 steps of 1 s
    settings = {
        "SOURCES__MEWS__MAX_SECONDS_PER_LOAD": str(STEP_SECONDS),
        "SOURCES__MEWS__PAGE_SIZE": "25",
    }
    with serve(sandbox) as url:
        whole = cli(destination_env(tmp_path / "whole", url, None, **settings), "run", cwd=tmp_path)
        assert whole.returncode == 0, whole.stderr
        full = sandbox.log.count()
        whole_loads = load_times(Target(sandbox, tmp_path / "whole"))
        steps = requests_per_step(sandbox.log.entries, whole_loads)
        # A step's time from commit to commit in the whole run: its second of fetching, then
        # its normalize and load, which a busy machine (2 test workers on 2 cores) stretches.
        gaps = [b - a for a, b in zip(whole_loads, whole_loads[1:], strict=False)]
        longest_step = max(gaps, default=0.0)

        # Killed halfway through the step of the whole run that holds its 60 % mark (the 4th
        # at least, so that steps were committed before): a step ends at the end of a window
        # once its second has passed, so the killed run steps as the whole run did, give or
        # take a window. A fixed 60 % fell 3 requests short of a step's end on some days.
        ends = list(itertools.accumulate(steps))
        assert len(ends) >= 5, steps
        step = max(3, next(i for i, end in enumerate(ends) if end >= 0.6 * full))
        halfway = full + (ends[step - 1] + ends[step]) // 2
        env = destination_env(tmp_path / "killed", url, None, **settings)
        assert kill_when(env, tmp_path, lambda: sandbox.log.count() >= halfway)
        killed_at, killed = time.time(), sandbox.log.count() - full
        target = Target(sandbox, tmp_path / "killed")
        committed = load_times(target)
        assert len(committed) >= 3  # steps were committed before the kill
        # What the kill lost: the requests after the last commit, within about a step's time
        # (and what a step does before it reads: the services, the compaction).
        lost = [e for e in sandbox.log.entries[full:] if e.at > committed[-1]]
        assert not lost or killed_at - lost[0].at <= max(3 * STEP_SECONDS, 2 * longest_step)

        rerun = cli(env, "run", cwd=tmp_path)
        assert rerun.returncode == 0, rerun.stderr
        again = sandbox.log.count() - full - killed

    assert killed + again <= full + max(steps), (full, killed, again, len(lost), steps)
    assert_equals_truth(target)


# -- a load a killed run left behind ---------------------------------------------------------


def kill_at(env: dict[str, str], step: str, nth: int, stop: signal.Signals, cwd: Path) -> None:
    """Run `mews-sync run` and send it `stop` at dlt's NTH `step` (see kill_at.py)."""
    name = stop.name.removeprefix("SIG")
    process = subprocess.run(
        [sys.executable, str(REPO / "tests" / "kill_at.py"), step, str(nth), name, "run"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if stop == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL, process.stderr
    else:
        assert process.returncode == EXIT_INTERRUPTED, process.stderr
        assert one_sentence(process.stderr) == f"mews-sync: {INTERRUPTED}"


def pending_load(folder: Path) -> str:
    """The id of the one load dlt's working folder holds extracted or normalized, not loaded."""
    data = folder / "dlt_data"
    (load_id,) = [
        p.name
        for pattern in ("*/*/normalize/extracted/*", "*/*/load/normalized/*")
        for p in data.glob(f"mews_sync/{pattern}")
        if re.fullmatch(r"\d+\.\d+", p.name)  # not a folder dlt keeps beside them
    ]
    return load_id


@pytest.mark.parametrize(
    ("step", "nth", "stop"),
    [
        ("normalize", 1, signal.SIGKILL),
        ("normalize", 1, signal.SIGTERM),
        ("load", 1, signal.SIGKILL),
        ("load-job", 2, signal.SIGKILL),
        ("state-job", 1, signal.SIGKILL),
        ("normalize", 3, signal.SIGKILL),
    ],
    ids=[
        "extracted-first-step",  # the destination has no tables yet
        "extracted-first-step-SIGTERM",
        "normalized-first-step",
        "half-loaded",  # some of the load's tables were written, not all
        "state-written-not-recorded",  # its job ran, the kill came before dlt noted it
        "extracted-later-step",
    ],
)
def test_a_load_a_killed_run_left_behind_is_loaded_by_the_next(tmp_path, postgres, step, nth, stop):
    sandbox = tokened(lagging_sandbox(orders=1200, seed=12))
    settings = {
        "SOURCES__MEWS__MAX_ORDERS_PER_LOAD": "300",
        "SOURCES__MEWS__NOTES_REFRESH_DAYS": "0",  # every request of a rerun then goes on
    }
    target = Target(sandbox, tmp_path, postgres)
    with serve(sandbox) as url:
        env = destination_env(tmp_path, url, postgres, **settings)
        kill_at(env, step, nth, stop, tmp_path)
        left_behind = pending_load(tmp_path)
        before = sandbox.log.count()
        rerun = cli(env, "run", cwd=tmp_path)
        assert rerun.returncode == 0, rerun.stderr
    assert "finishing the load an earlier run left pending" in rerun.stderr

    assert left_behind in loads(target)
    carried = target.rows(
        f"select count(*) from mews.product_service_orders where _dlt_load_id = '{left_behind}'"
    )
    assert carried[0][0] > 0
    # Its watermarks count: the rerun reads on from them, not from those before.
    (blob,) = target.rows(
        f"select state from mews._dlt_pipeline_state where _dlt_load_id = '{left_behind}'"
    )[0]
    resources = decompress_state(blob)["sources"]["mews"]["resources"]
    marks = resources["product_service_orders"]["watermarks"].values()
    read_from = min(
        utc(e.body["UpdatedUtc"]["StartUtc"])
        for e in sandbox.log.entries[before:]
        if e.operation == ORDERS_OPERATION
    )
    assert format_utc(read_from) == format_utc(min(map(utc, marks)) - DEFAULT_OVERLAP)
    assert_equals_truth(target)


def test_a_run_killed_while_extracting_leaves_no_files_behind(tmp_path):
    sandbox = tokened(lagging_sandbox(orders=2000, seed=13))
    sandbox.config.faults = Faults(latency_s=0.01)
    with serve(sandbox) as url:
        env = cli_env(tmp_path, url)
        for _ in range(3):
            enough = sandbox.log.count() + 30
            assert kill_when(env, tmp_path, lambda enough=enough: sandbox.log.count() >= enough)
        (extracting,) = (tmp_path / "dlt_data").glob("mews_sync/*/*/normalize/????????????????")
        result = cli(env, "run", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert not extracting.exists()  # the last killed run's; the earlier ones went before
    assert_equals_truth(Target(sandbox, tmp_path))


def test_windows_are_split_to_the_pace_that_fits_a_step():
    start = utc("2024-01-01T00:00:00Z")
    pace = WindowPace()
    # Quick windows: a week first, then four times as long, then whole.
    split = list(pace.split((start, start + timedelta(days=80)), seconds=10.0))
    assert [end - begin for begin, end in split] == [timedelta(days=d) for d in (7, 28, 45)]
    assert pace.length is None

    windows = pace.split((start, start + timedelta(days=80)), seconds=0.05)
    assert next(windows) == (start, start + timedelta(days=80))
    time.sleep(0.2)  # read four times slower than the pace
    with pytest.raises(StopIteration):
        next(windows)
    assert timedelta(days=17) < pace.length < timedelta(days=20)
    length = pace.length
    (first, *_) = pace.split((start, start + timedelta(days=60)), seconds=10.0)
    assert first == (start, start + length - length % timedelta(seconds=1))
