"""The pipeline against a sandbox that takes, one switch at a time, each plausible answer to what
the Mews documentation leaves open (issue 12, behaviours 2-7): every sync equals the truth.

The client's own answers are tested against fake servers in test_client_undocumented.py; here
the whole pipeline runs, and the sandbox's request log shows what it sent."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from harness import Target, assert_equals_truth, lagging_sandbox, one_sentence, truth_orders
from test_reliability import ACCESS_TOKEN, CLIENT_TOKEN, cli, cli_env

from mews_sandbox import (
    DEMO_PORTFOLIO_ACCESS_TOKEN,
    Faults,
    LoggedRequest,
    Sandbox,
    SandboxConfig,
    SandboxTransport,
    serve,
)
from pipelines.failures import EXIT_CONFIG, EXIT_REFUSED, EXIT_UNAVAILABLE, explain
from pipelines.runs import read_runs
from pipelines.storage import DuckDbStorage
from sources.mews.settings import (
    DEFAULT_NOTE_TYPES,
    MAX_WINDOW_DAYS_STRICTEST,
    ORDER_ITEMS_OPERATION,
    ORDERS_OPERATION,
)

ORDERS = 1000


def first_update(sandbox: Sandbox) -> str:
    """A start date just before the oldest order: fewer (empty) windows than START_DATE."""
    return (min(o[4] for o in truth_orders(sandbox)) - timedelta(days=1)).date().isoformat()


def body_key(entry: LoggedRequest) -> str:
    return entry.operation + json.dumps(entry.body, sort_keys=True)


# -- 2. a short page may not be the end ------------------------------------------------------


def test_short_pages_mid_walk_lose_nothing_and_their_cost_is_counted(tmp_path, postgres):
    sandbox = lagging_sandbox(orders=ORDERS, seed=21)
    sandbox.config.short_pages = 0.3
    target = Target(sandbox, tmp_path, postgres)

    # Pages of 20: every window and batch of notes takes several, so short ones come mid-walk.
    report = target.sync(page_size=20)

    assert_equals_truth(target)
    assert report.stats.short_pages > 0
    # A walk ends on an empty page: at most one request a walk beyond its pages, counted.
    assert 0 < report.stats.end_probes <= sandbox.log.count(status=200)
    assert f"short pages: {report.stats.short_pages} (+{report.stats.end_probes} end probes)" in (
        report.summary()
    )

    sandbox.update_order(truth_orders(sandbox)[0][0], State="Canceled")
    target.sync(page_size=20)
    assert_equals_truth(target)


class SameCursorAgain(httpx.BaseTransport):
    """A Mews that answers a page of orders with the cursor it was sent: a walk that follows
    cursors blindly would never end."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.inner = SandboxTransport(sandbox)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        sent = json.loads(request.content).get("Limitation", {}).get("Cursor")
        if not request.url.path.endswith(ORDERS_OPERATION) or sent is None:
            return response
        body = json.loads(response.read())
        return httpx.Response(response.status_code, json={**body, "Cursor": sent})


def test_the_same_cursor_twice_in_a_row_is_still_an_error_with_short_pages_on(tmp_path):
    sandbox = lagging_sandbox(orders=ORDERS, seed=22)
    sandbox.config.short_pages = 0.3
    target = Target(sandbox, tmp_path)

    with pytest.raises(Exception) as failure:
        target.sync(transport=SameCursorAgain(sandbox), page_size=20)

    code, sentence = explain(failure.value)
    assert code == EXIT_REFUSED
    assert sentence == f"Mews {ORDERS_OPERATION} returned the same cursor twice."
    sent = Counter(body_key(e) for e in sandbox.log.entries if e.operation == ORDERS_OPERATION)
    assert max(sent.values()) == 1  # it stopped at once rather than asking again


# -- 3. "3 months" counted differently -------------------------------------------------------


def interval_days(entry: LoggedRequest) -> float | None:
    interval = entry.body.get("UpdatedUtc")
    walked = (ORDERS_OPERATION, ORDER_ITEMS_OPERATION)  # walked in windows by one client
    if entry.operation not in walked or not isinstance(interval, dict):
        return None
    start, end = (datetime.fromisoformat(interval[k]) for k in ("StartUtc", "EndUtc"))
    return (end - start) / timedelta(days=1)


def assert_no_refused_length_again(entries: list[LoggedRequest], refusals: int) -> None:
    """At most `refusals` 400s, each on an UpdatedUtc interval, after which no interval as long,
    nor longer than the strictest reading allows, is sent."""
    refused = [i for i, e in enumerate(entries) if e.status == 400]
    assert len(refused) == refusals, [entries[i].body for i in refused]
    for i in refused:
        length = interval_days(entries[i])
        assert length is not None and length > MAX_WINDOW_DAYS_STRICTEST
        later = [d for e in entries[i + 1 :] if (d := interval_days(e)) is not None]
        assert later and max(later) <= MAX_WINDOW_DAYS_STRICTEST


@pytest.mark.parametrize("reading", ["calendar", "strict", "days90"])
def test_every_reading_of_three_months_syncs_with_at_most_one_refusal_a_run(
    tmp_path, postgres, reading
):
    sandbox = lagging_sandbox(orders=ORDERS, seed=23)
    sandbox.config.interval_limit = reading
    target = Target(sandbox, tmp_path, postgres)
    # From 2015-01-01 the windows start on the 1st: 1 Jan - 1 Apr is 3 calendar months (90
    # days, so "days90" takes it), 1 Apr - 1 Jul 91 days; "strict" refuses every one.
    refusals = 0 if reading == "calendar" else 1

    report = target.sync(allowed_400s=1)

    assert_equals_truth(target)
    assert_no_refused_length_again(sandbox.log.entries, refusals)
    assert report.stats.too_long_windows == refusals
    assert ("3-month limit learned: yes" in report.summary()) == bool(refusals)

    # A new run (a new client) sends 3 months again and learns again: one 400 at most a run.
    # From 1 Feb 2023 the windows are 89 days (taken by "days90", refused by "strict"), then
    # 92 (refused by "days90"): the 90-day windows of tap-mews would fail "strict" and
    # "calendar" from a start between 31 January and 28 February.
    sandbox.log.clear()
    sandbox.update_order(truth_orders(sandbox)[0][0], at=datetime(2023, 3, 1, tzinfo=UTC))
    target.sync("backfill", backfill_start="2023-02-01", backfill_end="2023-11-01", allowed_400s=1)
    assert_equals_truth(target)
    assert_no_refused_length_again(sandbox.log.entries, refusals)


# -- 4. a heavy request answered only after the client's timeout -----------------------------


def test_a_stall_beyond_the_client_timeout_asks_for_less_instead_of_asking_again(tmp_path):
    sandbox = lagging_sandbox(orders=ORDERS, seed=24)
    # Pages of more than 500 orders take a second, then answer (no 408 ever): too late for a
    # client that waits 0.25 s.
    stall = 1.0
    sandbox.config.faults = Faults(
        heavy_count=500, stall_heavy_s=stall, only_operations={ORDERS_OPERATION}
    )
    target = Target(sandbox, tmp_path)

    with serve(sandbox) as url:
        report = target.sync(
            platform_url=url,
            transport=None,
            request_timeout_seconds=0.25,
            start_date=first_update(sandbox),
        )
        time.sleep(stall + 0.2)  # the stalled requests are logged when they answer, late

    assert_equals_truth(target)
    assert report.stats.timeouts > 0
    orders = [e for e in sandbox.log.entries if e.operation == ORDERS_OPERATION]
    heavy = [e for e in orders if e.body["Limitation"]["Count"] > 500]
    assert report.stats.timeouts == len(heavy)  # every heavy request timed out, nothing else
    assert report.stats.timeouts == 1  # then the client kept pages of 500 for the whole run
    # Each request is sent once: after a timeout the client asks for half, never the same.
    sent = Counter(body_key(e) for e in sandbox.log.entries)
    assert max(sent.values()) == 1, sent.most_common(1)
    assert report.stats.retries == 0


# -- 5. a lower real rate limit, a shared token, 429s with or without Retry-After ------------


class SharedToken(httpx.BaseTransport):
    """The sandbox, and another process on the same AccessToken that takes `taken` slots of its
    rate limit every `every` requests of ours."""

    def __init__(self, sandbox: Sandbox, every: int, taken: int) -> None:
        self.inner, self.sandbox = SandboxTransport(sandbox), sandbox
        self.every, self.taken, self.seen = every, taken, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen += 1
        if self.seen % self.every == 0:
            self.sandbox.consume_rate_limit(DEMO_PORTFOLIO_ACCESS_TOKEN, self.taken)
        return self.inner.handle_request(request)


@pytest.mark.parametrize("retry_after_header", [True, False], ids=["Retry-After", "none"])
@pytest.mark.parametrize("scenario", ["lower-limit", "shared-token"])
def test_429s_from_a_lower_or_shared_limit_are_waited_out(tmp_path, scenario, retry_after_header):
    sandbox = lagging_sandbox(orders=ORDERS, seed=25)
    sandbox.config.faults = Faults(retry_after_header=retry_after_header)
    args: dict[str, Any] = {"start_date": first_update(sandbox), "backoff_seconds": 0.05}
    if scenario == "lower-limit":  # we think 40 a second, Mews gives 20 ("best effort")
        sandbox.config.rate_limit = (20, 1.0)
        args.update(rate_limit_requests=40, rate_limit_seconds=1.0)
    else:  # the same limit on both sides, but another process takes a share of it
        sandbox.config.rate_limit = (30, 1.0)
        args.update(rate_limit_requests=30, rate_limit_seconds=1.0)
        args["transport"] = SharedToken(sandbox, every=10, taken=10)
    target = Target(sandbox, tmp_path)

    report = target.sync(**args)

    assert_equals_truth(target)
    assert report.error is None
    assert report.stats.throttled == sandbox.log.count(status=429) > 0
    # The limiter slows down: far from one 429 per request sent.
    assert report.stats.throttled * 4 < sum(report.stats.requests.values())


def test_a_retry_after_beyond_the_cap_stops_the_cli_at_once_with_exit_4(tmp_path):
    sandbox = Sandbox.generate(orders=300, seed=26)
    sandbox.client_token = CLIENT_TOKEN
    sandbox.add_token(ACCESS_TOKEN)
    sandbox.config.rate_limit = (5, 30.0)
    sandbox.config.faults = Faults(retry_after_s=3600)
    sandbox.consume_rate_limit(ACCESS_TOKEN, 5)  # another process used the token's window

    with serve(sandbox) as url:
        result = cli(cli_env(tmp_path, url), "run", cwd=tmp_path)

    assert result.returncode == EXIT_UNAVAILABLE, result.stderr
    sentence = one_sentence(result.stderr)
    assert "asked to wait 3600 s" in sentence and "max_retry_after_seconds" in sentence
    assert "try again later" in sentence
    assert sandbox.log.count() == sandbox.log.count(status=429) == 1  # not one request more
    (run,) = read_runs(DuckDbStorage.at(str(tmp_path / "mews_sync.duckdb")).runs_path)
    assert (run["status"], run["exit_code"]) == ("failed", EXIT_UNAVAILABLE)


def test_the_retry_after_cap_is_a_setting(tmp_path):
    sandbox = lagging_sandbox(orders=300, seed=28)
    sandbox.config.faults = Faults(error_429=0.05, seed=3)  # each with Retry-After: 1 (6 of them)
    with pytest.raises(Exception, match=r"asked to wait 1 s, more than the 0.5 s"):
        Target(sandbox, tmp_path / "capped").sync(max_retry_after_seconds=0.5)
    target = Target(sandbox, tmp_path / "waits")
    target.sync(max_retry_after_seconds=2)
    assert_equals_truth(target)


# -- 6. stricter validation: minItems 1, format uuid -----------------------------------------


@pytest.mark.parametrize("configured", [False, True], ids=["discovered", "configured-ids"])
def test_strict_ids_sync_equals_the_truth_without_a_single_400(tmp_path, configured):
    sandbox = lagging_sandbox(orders=ORDERS, seed=27)
    sandbox.config.strict_ids = True
    args: dict[str, Any] = {}
    if configured:
        args["service_ids"] = sorted({o["ServiceId"] for o in sandbox.orders()})
        args["enterprise_ids"] = sorted(e["Id"] for e in sandbox.enterprises())
    target = Target(sandbox, tmp_path, **args)

    target.sync()  # Target.sync fails on any 400
    assert_equals_truth(target)

    target.sync()  # nothing changed: no order, so no notes request, and no empty id list
    assert_equals_truth(target)
    sandbox.update_order(truth_orders(sandbox)[0][0], State="Canceled")
    target.sync()
    assert_equals_truth(target)
    assert sandbox.log.count(status=400) == 0
    assert not [e for e in sandbox.log.entries if [] in e.body.values()]


@pytest.mark.parametrize(
    ("setting", "value", "words"),
    [
        ("SOURCES__MEWS__SERVICE_IDS", '["breakfast"]', "'breakfast', which is not a Mews id"),
        ("SOURCES__MEWS__SERVICE_IDS", "[]", "empty list"),
        ("SOURCES__MEWS__ENTERPRISE_IDS", '["1234"]', "'1234', which is not a Mews id"),
    ],
)
def test_a_configured_id_that_is_no_uuid_is_exit_2_before_any_request(
    tmp_path, setting, value, words
):
    sandbox = Sandbox.generate(orders=10, seed=28)
    sandbox.client_token = CLIENT_TOKEN
    sandbox.add_token(ACCESS_TOKEN)

    with serve(sandbox) as url:
        result = cli(cli_env(tmp_path, url, **{setting: value}), "run", cwd=tmp_path)

    assert result.returncode == EXIT_CONFIG, result.stderr
    sentence = one_sentence(result.stderr)
    assert setting in sentence and words in sentence
    assert sandbox.log.entries == []
    assert not (tmp_path / "mews_sync.duckdb").exists()


# -- 7. the current documentation's shapes by default; the older ones behind switches --------


def test_the_default_sandbox_has_the_current_shapes_and_they_load(tmp_path):
    assert SandboxConfig() == SandboxConfig(
        note_shape="current", service_shape="current", legacy_values=False
    )
    sandbox = lagging_sandbox(orders=1500, seed=29)
    target = Target(sandbox, tmp_path)

    target.sync()

    assert_equals_truth(target)
    notes = [n for n in sandbox.notes(types=list(DEFAULT_NOTE_TYPES))]
    assert notes and all("OrderId" in n and "ServiceOrderId" not in n for n in notes)
    stored = dict(target.rows("select id, updated_utc from mews.service_order_notes"))
    assert stored == {
        n["Id"]: datetime.fromisoformat(n["UpdatedUtc"]).astimezone(UTC) for n in notes
    }
    without_text = {n["Id"] for n in notes if n["Text"] is None}
    assert without_text  # the spec makes no note field required
    assert {
        i for (i,) in target.rows("select id from mews.service_order_notes where text is null")
    } == without_text
    states = {s for (s,) in target.rows("select distinct state from mews.product_service_orders")}
    assert "Inquired" in states and "Enquired" not in states
    origins = target.rows("select distinct commander_origin from mews.product_service_orders")
    assert ("RoomingList",) in origins
    services = sandbox.services()
    assert all("Names" in s and "Name" not in s for s in services)
    names = {s["Id"]: s["Names"]["en-US"] for s in services}
    for service_id, name in target.rows("select id, name from mews.services"):
        assert names[service_id] == name


@pytest.mark.parametrize(
    "config",
    [
        SandboxConfig(note_shape="seed"),
        SandboxConfig(service_shape="legacy"),
        SandboxConfig(legacy_values=True),
        SandboxConfig(updated_utc_required=True),
    ],
    ids=["seed-notes", "legacy-services", "legacy-values", "updated-utc-required"],
)
def test_the_older_shapes_behind_switches_still_sync_equal_to_the_truth(tmp_path, config):
    sandbox = Sandbox.generate(orders=500, seed=30, config=config)
    sandbox.commit_delay = timedelta(seconds=30)
    target = Target(sandbox, tmp_path)

    target.sync()

    assert_equals_truth(target)
    if config.legacy_values:
        states = target.rows("select distinct state from mews.product_service_orders")
        assert ("Enquired",) in states
