"""This machine's clock against Mews': a run's windows end at Mews' clock (its Date header), so a
machine whose clock is ahead loses no order and one behind delays none; the summary says so."""

from __future__ import annotations

import glob
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from harness import FakeClock, Target, assert_equals_truth, product_service_ids, truth_orders
from test_reliability import ACCESS_TOKEN, CLIENT_TOKEN, cli, cli_env

from mews_sandbox import Sandbox, SandboxConfig, serve
from pipelines.failures import EXIT_OK
from pipelines.runs import RunReport, clock_warning, read_runs, record_run
from pipelines.status import run_lines
from pipelines.storage import DuckDbStorage
from sources.errors import MewsConfigError
from sources.mews.client import (
    ClientStats,
    MewsClient,
    MewsUnavailableError,
    format_utc,
    http_date,
)

TEN_MINUTES = timedelta(minutes=10)


# -- the Date header ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Thu, 03 Dec 2026 09:43:28 GMT",  # IMF-fixdate, what servers send
        "Thursday, 03-Dec-26 09:43:28 GMT",  # RFC 850, obsolete but allowed
        "Thu Dec  3 09:43:28 2026",  # asctime, obsolete but allowed
        "Thu, 03 Dec 2026 10:43:28 +0100",  # a zone other than GMT
        " Thu, 03 Dec 2026 09:43:28 -0000 ",  # no zone known: UTC
    ],
)
def test_an_http_date_is_read_as_utc(header):
    assert http_date(header) == datetime(2026, 12, 3, 9, 43, 28, tzinfo=UTC)


@pytest.mark.parametrize(
    "header", [None, "", "yesterday", "1", "Thu, 32 Dec 2026 09:43:28 GMT", "Thu, 03 Dec"]
)
def test_a_missing_or_malformed_date_header_is_no_date(header):
    assert http_date(header) is None


def dated(date: str | None, status: int = 200, **headers: str) -> httpx.MockTransport:
    """Answers services/getAll with no services, with this Date header (None: none)."""

    def answer(request: httpx.Request) -> httpx.Response:
        if date is not None:
            headers["Date"] = date
        return httpx.Response(status, json={"Services": [], "Cursor": None}, headers=headers)

    return httpx.MockTransport(answer)


def client_with(transport: httpx.MockTransport, clock: FakeClock | None = None) -> MewsClient:
    clock = clock or FakeClock()
    return MewsClient(
        "https://api.mews.com",
        "client-token",
        "access-token",
        transport=transport,
        rate_limit=None,
        sleep=clock.sleep,
        clock=clock,
        stats=ClientStats(),
    )


def http(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


@pytest.mark.parametrize("mews_ahead", [TEN_MINUTES, -TEN_MINUTES, timedelta(0)])
def test_the_client_keeps_mews_clock_from_the_date_header_never_ahead_of_it(mews_ahead):
    mews_now = datetime.now(UTC) + mews_ahead
    client = client_with(dated(http(mews_now)))

    list(client.services())
    after = datetime.now(UTC) + mews_ahead

    offset = client.stats.mews_clock_offset
    assert offset is not None
    # A truncated second and the answer's trip make it early, never late.
    assert mews_ahead.total_seconds() - 2 < offset <= mews_ahead.total_seconds()
    assert after - timedelta(seconds=2) < client.mews_now() <= after


@pytest.mark.parametrize("date", [None, "not a date"])
def test_without_a_date_header_mews_clock_is_taken_as_this_machines(date):
    client = client_with(dated(date))

    list(client.services())

    assert client.stats.mews_clock_offset is None
    assert abs(client.mews_now() - datetime.now(UTC)) < timedelta(seconds=1)


def test_an_answer_without_a_date_header_keeps_the_offset_measured_before():
    stats = ClientStats(mews_clock_offset=-600.0)
    client = client_with(dated(None))
    client.stats = stats

    list(client.services())

    assert stats.mews_clock_offset == -600.0


@pytest.mark.parametrize("mews_ahead", [TEN_MINUTES, -TEN_MINUTES])
def test_a_retry_after_date_counts_from_mews_clock_not_this_machines(mews_ahead):
    """Mews asks to wait 5 s by date: 5 s, not nothing (Mews behind) nor 10 minutes (ahead,
    which would give up as too long to wait)."""
    mews_now = datetime.now(UTC).replace(microsecond=0) + mews_ahead
    throttled = {"Date": http(mews_now), "Retry-After": http(mews_now + timedelta(seconds=5))}
    answers = [
        httpx.Response(429, json={"Message": "Too many requests."}, headers=throttled),
        httpx.Response(200, json={"Services": [], "Cursor": None}),
    ]
    clock = FakeClock()
    client = client_with(httpx.MockTransport(lambda _: answers.pop(0)), clock)

    list(client.services())

    assert len(clock.sleeps) == 1 and 3 < clock.sleeps[0] <= 6


def test_a_429_that_asks_to_wait_long_by_mews_clock_still_stops_the_run():
    mews_now = datetime.now(UTC) - TEN_MINUTES
    client = client_with(
        dated(http(mews_now), 429, **{"Retry-After": http(mews_now + timedelta(hours=2))})
    )
    with pytest.raises(MewsUnavailableError, match="asked to wait"):
        list(client.services())


# -- the sandbox's Date header ---------------------------------------------------------------


def test_the_sandbox_dates_every_answer_by_its_own_clock(mews_call):
    sandbox = Sandbox()
    sandbox.clock = lambda: datetime(2026, 1, 2, 3, 4, 5, 999_999, tzinfo=UTC)

    ok = mews_call(sandbox, "services/getAll", Limitation={"Count": 10})
    refused = mews_call(sandbox, "services/getAll", AccessToken="wrong")
    unknown = mews_call(sandbox, "nothing/here")

    for answer, status in ((ok, 200), (refused, 401), (unknown, 404)):
        assert answer.status_code == status
        assert answer.headers.get_list("Date") == ["Fri, 02 Jan 2026 03:04:05 GMT"]


def test_over_http_the_sandbox_sends_one_date_header_its_own_or_none():
    for config, expected in (
        (SandboxConfig(), ["Fri, 02 Jan 2026 03:04:05 GMT"]),
        (SandboxConfig(date_header=False), []),
    ):
        sandbox = Sandbox(config)
        sandbox.clock = lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        with serve(sandbox) as url:
            answer = httpx.post(f"{url}/api/connector/v1/services/getAll", json={})
        assert answer.status_code == 401
        assert answer.headers.get_list("Date") == expected


# -- the summary -----------------------------------------------------------------------------


def test_the_summary_warns_of_a_clock_more_than_a_minute_off_mews():
    assert clock_warning(-600.4) == (
        "WARNING: this machine's clock is 10 minutes ahead of Mews' clock; the windows follow "
        "Mews' clock, but fix this machine's time sync (NTP)"
    )
    assert "is 1.5 minutes behind Mews' clock" in clock_warning(90.0)
    for quiet in (None, 0.0, -59.0, 60.0):
        assert clock_warning(quiet) is None


# -- runs ------------------------------------------------------------------------------------


def shifted_sandbox(orders: int, seed: int, machine_ahead: timedelta) -> Sandbox:
    """A sandbox whose clock (its changes' UpdatedUtc and its Date headers) is `machine_ahead`
    behind this machine's; its history ends an hour before either."""
    anchor = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    sandbox = Sandbox.generate(orders=orders, seed=seed, now=anchor)
    sandbox.clock = lambda: datetime.now(UTC) - machine_ahead
    return sandbox


def commit_five_orders(sandbox: Sandbox) -> set[str]:
    """Five new orders, stamped now by the sandbox's clock; returns 2 s later: a run ends up to
    2 s before Mews' clock (whole seconds, rounded down), so an order stamped within them is
    for the run after the next."""
    service_id = sorted(product_service_ids(sandbox))[0]
    committed = {sandbox.add_order(service_id) for _ in range(5)}
    time.sleep(2)
    return committed


def loaded_ids(target: Target) -> set[str]:
    return {o[0] for o in target.orders()}


@pytest.mark.parametrize(
    "machine_ahead", [TEN_MINUTES, -TEN_MINUTES], ids=["machine-ahead", "machine-behind"]
)
def test_orders_mews_commits_right_after_a_run_are_loaded_by_the_next_whatever_the_clock(
    tmp_path, postgres, machine_ahead
):
    sandbox = shifted_sandbox(orders=400, seed=61, machine_ahead=machine_ahead)
    target = Target(sandbox, tmp_path, postgres, max_orders_per_load=150)
    before = sandbox.clock()

    first = target.sync()

    # A run in steps: every step ended at one moment of Mews' clock, as it answered.
    assert first.read.end is not None and before - timedelta(seconds=3) <= first.read.end
    assert first.read.end <= sandbox.clock()
    marks = target.state()["sources"]["mews"]["resources"]["product_service_orders"]
    assert set(marks["watermarks"].values()) == {format_utc(first.read.end)}
    side = "ahead of" if machine_ahead > timedelta(0) else "behind"
    assert f"this machine's clock is 10 minutes {side} Mews' clock" in first.summary()

    committed = commit_five_orders(sandbox)
    second = target.sync()

    assert committed <= loaded_ids(target)
    assert_equals_truth(target)
    assert f"10 minutes {side} Mews' clock" in second.summary()


def test_a_start_date_is_checked_against_mews_clock_not_this_machines(tmp_path):
    """Two days off either way: a start date past for Mews is synced from, one future for
    Mews is one sentence, whatever this machine's clock says."""
    two_days = timedelta(days=2)
    mews_ahead = shifted_sandbox(orders=200, seed=64, machine_ahead=-two_days)
    tomorrow_here = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    committed = commit_five_orders(mews_ahead)  # after tomorrow_here, by Mews' clock
    target = Target(mews_ahead, tmp_path / "behind")
    target.sync(start_date=format_utc(tomorrow_here))
    assert loaded_ids(target) == committed

    mews_behind = shifted_sandbox(orders=200, seed=65, machine_ahead=two_days)
    yesterday_here = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    with pytest.raises(MewsConfigError, match="is not before Mews' current time"):
        Target(mews_behind, tmp_path / "ahead").sync(start_date=format_utc(yesterday_here))


def test_a_caller_end_date_wins_over_mews_clock(tmp_path):
    sandbox = shifted_sandbox(orders=200, seed=62, machine_ahead=TEN_MINUTES)
    end = sandbox.clock().replace(microsecond=0) - timedelta(days=30)
    target = Target(sandbox, tmp_path)

    report = target.sync(end_date=end.isoformat())

    assert report.read.end == end
    assert {o[0] for o in truth_orders(sandbox) if o[4] < end} == loaded_ids(target)


def test_without_date_headers_a_run_ends_at_this_machines_clock_and_warns_of_nothing(tmp_path):
    sandbox = shifted_sandbox(orders=200, seed=63, machine_ahead=timedelta(0))
    sandbox.config.date_header = False
    target = Target(sandbox, tmp_path)
    before = datetime.now(UTC).replace(microsecond=0)

    report = target.sync()

    assert before <= report.read.end <= datetime.now(UTC)
    assert report.stats.mews_clock_offset is None
    assert "WARNING" not in report.summary()
    committed = commit_five_orders(sandbox)
    target.sync()
    assert committed <= loaded_ids(target)
    assert_equals_truth(target)


# -- a real clock ahead: the CLI under libfaketime -------------------------------------------


def libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    assert found, "libfaketime is missing: apt-get install faketime (as .ci/run does)"
    return found[0]


def test_the_cli_on_a_machine_10_minutes_ahead_loses_no_order(tmp_path):
    """The machine's own clock faked 10 minutes ahead (libfaketime, the CLI only); the sandbox
    serves with the real one. Before windows followed Mews' clock, 0 of the 5 were loaded."""
    sandbox = shifted_sandbox(orders=300, seed=64, machine_ahead=timedelta(0))
    sandbox.client_token = CLIENT_TOKEN
    sandbox.add_token(ACCESS_TOKEN)
    with serve(sandbox) as url:
        env = cli_env(
            tmp_path,
            url,
            LD_PRELOAD=libfaketime(),
            FAKETIME="+10m",
            FAKETIME_DONT_FAKE_MONOTONIC="1",
        )
        first = cli(env, "run", cwd=tmp_path)
        committed = commit_five_orders(sandbox)
        second = cli(env, "run", cwd=tmp_path)

    target = Target(sandbox, tmp_path)
    assert committed <= loaded_ids(target)
    assert_equals_truth(target)
    for result in (first, second):
        assert result.returncode == 0, result.stderr
        assert "this machine's clock is 10 minutes ahead of Mews' clock" in result.stdout


def test_status_repeats_the_last_successful_runs_clock_warning(tmp_path):
    storage = DuckDbStorage.at(str(tmp_path / "mews_sync.duckdb"))
    report = RunReport(kind="run", where=storage.where)
    report.stats.mews_clock_offset = 600.2
    record_run(storage.runs_path, report, EXIT_OK)

    lines = run_lines(storage, read_runs(storage.runs_path), datetime.now(UTC))

    assert "    WARNING: this machine's clock is 10 minutes behind Mews' clock" in "\n".join(lines)
