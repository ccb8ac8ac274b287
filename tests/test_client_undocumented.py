"""The client against fake Mews servers that each take one reading of what the documentation
leaves open: heavy requests, short pages, how "3 months" is counted, timeouts, rate limits."""

from __future__ import annotations

import itertools
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pendulum
import pytest
from harness import FakeClock

from mews_sandbox import (
    DEMO_CLIENT_TOKEN,
    DEMO_PORTFOLIO_ACCESS_TOKEN,
    Sandbox,
    SandboxConfig,
    SandboxTransport,
)
from sources.mews.client import (
    ClientStats,
    IntervalTooLongError,
    MewsApiError,
    MewsClient,
    MewsResponseError,
    MewsUnavailableError,
    RequestTimedOutError,
    RequestTooHeavyError,
    SlidingWindowLimiter,
)
from sources.mews.settings import (
    MAX_WINDOW_DAYS_STRICTEST,
    MIN_PAGE_SIZE,
    MIN_WINDOW,
    NOTES_OPERATION,
    ORDERS_OPERATION,
    RATE_DECREASE_FACTOR,
    RATE_RECOVERY_PER_SUCCESS,
)

SERVICE = "3b2a7f0e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
START = datetime(2023, 1, 1, tzinfo=UTC)


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def answer(status: int, body: Any = None, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, json=body if body is not None else {"Message": "no"}, headers=headers
    )


@dataclass
class FakeMews:
    """Orders (id, UpdatedUtc) and notes (id, order id), paged newest first as Mews does.

    `refuse(operation, body)` may answer instead (a 408, 400, 429 ...) or raise a transport
    error; `requests` holds every body asked for, in order.
    """

    orders: list[tuple[str, datetime]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    refuse: Callable[[str, dict[str, Any]], httpx.Response | None] = lambda op, body: None
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Items a server that filters after paging drops from their page (which comes back short).
    dropped_after_paging: set[str] = field(default_factory=set)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        operation = request.url.path.removeprefix("/api/connector/v1/")
        body = json.loads(request.content)
        self.requests.append((operation, body))
        if (refused := self.refuse(operation, body)) is not None:
            return refused
        if operation == ORDERS_OPERATION:
            window = body["UpdatedUtc"]
            start, end = parse(window["StartUtc"]), parse(window["EndUtc"])
            found = [
                {"Id": i, "UpdatedUtc": u.isoformat()}
                for i, u in sorted(self.orders, key=lambda o: o[1], reverse=True)
                if start <= u < end
            ]
            return self.page(body, "ProductServiceOrders", found)
        if operation == NOTES_OPERATION:
            asked = set(body["ServiceOrderIds"])
            found = [{"Id": i, "OrderId": o} for i, o in self.notes if o in asked]
            return self.page(body, "ServiceOrderNotes", found)
        return answer(404)

    def page(self, body: dict[str, Any], key: str, items: list[dict[str, Any]]) -> httpx.Response:
        limitation = body["Limitation"]
        ids = [item["Id"] for item in items]
        first = ids.index(limitation["Cursor"]) + 1 if limitation.get("Cursor") else 0
        page = items[first : first + limitation["Count"]]
        cursor = page[-1]["Id"] if page else None
        page = [item for item in page if item["Id"] not in self.dropped_after_paging]
        return answer(200, {key: page, "Cursor": cursor})

    def sent(self, operation: str = ORDERS_OPERATION) -> list[dict[str, Any]]:
        return [body for op, body in self.requests if op == operation]


def interval_of(body: dict[str, Any]) -> tuple[datetime, datetime]:
    return parse(body["UpdatedUtc"]["StartUtc"]), parse(body["UpdatedUtc"]["EndUtc"])


def daily_orders(start: datetime, days: int) -> list[tuple[str, datetime]]:
    return [(f"o{day}", start + timedelta(days=day, hours=7)) for day in range(days)]


def client_for(fake: FakeMews, clock: FakeClock | None = None, **options: Any) -> MewsClient:
    clock = clock or FakeClock()
    options.setdefault("rate_limit", None)
    return MewsClient(
        "https://api.mews.com",
        "client-token",
        "access-token",
        transport=httpx.MockTransport(fake),
        sleep=clock.sleep,
        clock=clock,
        stats=ClientStats(),
        **options,
    )


def order_ids(client: MewsClient, start: datetime, end: datetime) -> list[str]:
    return [o["Id"] for page in client.product_service_orders([SERVICE], start, end) for o in page]


# -- 1. asking for less: smaller pages, then fewer ids or a shorter interval -----------------


def test_an_interval_too_heavy_even_for_small_pages_is_halved_until_it_is_light_enough():
    def heavy_beyond_ten_days(operation: str, body: dict[str, Any]) -> httpx.Response | None:
        start, end = interval_of(body)
        return answer(408, {"Message": "Too heavy."}) if end - start > timedelta(days=10) else None

    fake = FakeMews(orders=daily_orders(START, 90), refuse=heavy_beyond_ten_days)
    client = client_for(fake)

    found = order_ids(client, START, START + timedelta(days=90))

    assert set(found) == {i for i, _ in fake.orders}
    assert client.stats.splits > 0 and client.stats.heavy > 0
    # Smaller pages first: the interval is halved only after the smallest page was refused.
    sent = fake.sent()
    first_half = next(
        i for i, b in enumerate(sent) if interval_of(b)[0] + timedelta(90) > interval_of(b)[1]
    )
    assert sent[first_half - 1]["Limitation"]["Count"] == MIN_PAGE_SIZE


def test_an_interval_too_heavy_even_at_min_window_stops_with_the_408():
    fake = FakeMews(refuse=lambda op, body: answer(408, {"Message": "Too heavy."}))
    client = client_for(fake)

    with pytest.raises(RequestTooHeavyError, match="Too heavy"):
        order_ids(client, START, START + timedelta(days=1))

    shortest = min(end - start for start, end in map(interval_of, fake.sent()))
    assert MIN_WINDOW / 2 < shortest <= MIN_WINDOW


def test_a_batch_of_order_ids_too_heavy_even_for_small_pages_is_halved():
    orders = [f"o{i}" for i in range(40)]
    fake = FakeMews(
        notes=[(f"n{i}", o) for i, o in enumerate(orders)],
        refuse=lambda op, body: answer(408) if len(body["ServiceOrderIds"]) > 10 else None,
    )
    client = client_for(fake)

    notes = [n["Id"] for page in client.service_order_notes(orders) for n in page]

    assert sorted(notes) == sorted(n for n, _ in fake.notes)
    assert client.stats.splits == 1 + 2  # 40 -> 2 x 20 -> 4 x 10


# -- 2. a short page is not the end ---------------------------------------------------------


def test_short_pages_mid_walk_do_not_end_it_and_are_counted():
    # Newest first in pages of 10: o24..o15, o14..o5 without o14, o4..o0 without o3, empty.
    fake = FakeMews(orders=daily_orders(START, 25), dropped_after_paging={"o3", "o14"})
    client = client_for(fake, page_size=10)

    pages = list(client.product_service_orders([SERVICE], START, START + timedelta(days=30)))

    assert [len(page) for page in pages] == [10, 9, 4]
    assert {o["Id"] for page in pages for o in page} == {f"o{i}" for i in range(25)} - {"o3", "o14"}
    assert len(fake.requests) == 4
    assert (client.stats.short_pages, client.stats.end_probes) == (1, 1)


def test_a_walk_whose_last_page_is_full_costs_no_end_probe():
    fake = FakeMews(orders=daily_orders(START, 20))
    client = client_for(fake, page_size=10)

    assert len(order_ids(client, START, START + timedelta(days=30))) == 20

    assert len(fake.requests) == 3  # 10, 10, and the empty page that ends every such walk
    assert (client.stats.short_pages, client.stats.end_probes) == (0, 0)


def test_a_null_cursor_ends_a_walk_and_the_same_cursor_twice_is_an_error():
    orders = [{"Id": f"o{i}"} for i in range(10)]
    last = FakeMews(refuse=lambda op, body: answer(200, {"ProductServiceOrders": orders[:3]}))
    assert len(order_ids(client_for(last, page_size=10), START, START + timedelta(1))) == 3

    stuck = FakeMews(
        refuse=lambda op, body: answer(200, {"ProductServiceOrders": orders, "Cursor": "o9"})
    )
    with pytest.raises(MewsResponseError, match="same cursor twice"):
        order_ids(client_for(stuck, page_size=10), START, START + timedelta(1))
    assert len(stuck.requests) == 2


# -- 3. how "3 months" is counted ------------------------------------------------------------


def three_months_later(start: datetime) -> datetime:
    return pendulum.instance(start).add(months=3)  # not the client's own month arithmetic


READINGS: dict[str, Callable[[datetime, datetime], bool]] = {
    "<= 3 calendar months": lambda start, end: end <= three_months_later(start),
    "< 3 calendar months": lambda start, end: end < three_months_later(start),
    "<= 90 days": lambda start, end: end - start <= timedelta(days=90),
}


def test_the_readings_disagree_and_the_strictest_window_passes_them_all():
    starts = [START + timedelta(days=d, hours=h) for d in range(5 * 366) for h in (0, 13)]
    strictest = timedelta(days=MAX_WINDOW_DAYS_STRICTEST)
    for name, accepts in READINGS.items():
        assert all(accepts(s, s + strictest) for s in starts), name
    # tap-mews' 90-day windows break under the calendar reading from 31 Jan to 28 Feb, in a
    # year without 29 Feb; one more day than the strictest breaks "< 3 months" from 1 Feb.
    calendar = READINGS["<= 3 calendar months"]
    refused = {s.date() for s in starts if not calendar(s, s + timedelta(days=90))}
    assert refused == {
        date(year, 1, 31) + timedelta(days=d)
        for year in (2023, 2025, 2026, 2027)
        for d in range(29)
    }
    february = datetime(2023, 2, 1, tzinfo=UTC)
    assert not READINGS["< 3 calendar months"](february, february + strictest + timedelta(days=1))
    # What the client sent before it learned: 3 calendar months, too long for the other two.
    assert not READINGS["< 3 calendar months"](START, three_months_later(START))
    march = START.replace(month=3)
    assert not READINGS["<= 90 days"](march, three_months_later(march))


def reading_server(accepts: Callable[[datetime, datetime], bool], orders: list) -> FakeMews:
    def refuse(operation: str, body: dict[str, Any]) -> httpx.Response | None:
        if accepts(*interval_of(body)):
            return None
        return answer(400, {"Message": "UpdatedUtc interval must not be longer than 3 months."})

    return FakeMews(orders=orders, refuse=refuse)


@pytest.mark.parametrize("reading", READINGS)
@pytest.mark.parametrize(
    "start",
    [
        "2023-01-31",
        "2023-02-01",
        "2023-02-28T12:00",
        "2024-01-31",
        "2024-02-29",
        "2023-08-31",
        "2023-11-30T23:59:59",
        "2023-12-01",
    ],
)
def test_every_reading_of_three_months_gives_every_order_with_at_most_one_400(reading, start):
    begin = datetime.fromisoformat(start).replace(tzinfo=UTC)
    fake = reading_server(READINGS[reading], daily_orders(begin - timedelta(days=3), 400))
    client = client_for(fake)
    end = begin + timedelta(days=366)

    found = order_ids(client, begin, end)
    again = order_ids(client, begin, end)  # the same client remembers what it learned

    assert sorted(set(found)) == sorted(i for i, u in fake.orders if begin <= u < end)
    assert sorted(set(again)) == sorted(set(found))
    refused = [b for b in fake.sent() if not READINGS[reading](*interval_of(b))]
    # Only the calendar reading accepts the documented 3 months; the others refuse one window.
    expected_refusals = 0 if reading == "<= 3 calendar months" else 1
    assert len(refused) == client.stats.too_long_windows == expected_refusals


def test_window_end_tells_a_caller_the_window_the_client_sends_now():
    client = client_for(reading_server(READINGS["<= 90 days"], []))
    march = datetime(2023, 3, 1, tzinfo=UTC)
    assert client.window_end(march) == datetime(2023, 6, 1, tzinfo=UTC)  # 92 days

    order_ids(client, march, client.window_end(march))  # refused once, then 88-day windows

    assert client.window_end(march) == march + timedelta(days=MAX_WINDOW_DAYS_STRICTEST)


def test_a_400_on_an_interval_within_every_reading_is_an_error_with_the_api_message():
    fake = FakeMews(refuse=lambda op, body: answer(400, {"Message": "Invalid ServiceIds."}))
    client = client_for(fake)

    with pytest.raises(MewsApiError, match="answered 400: Invalid ServiceIds") as raised:
        order_ids(client, START, START + timedelta(days=MAX_WINDOW_DAYS_STRICTEST))
    assert len(fake.requests) == 1 and not isinstance(raised.value, IntervalTooLongError)

    # A longer interval is shortened once, then the same 400 is the error.
    fake.requests.clear()
    with pytest.raises(MewsApiError, match="Invalid ServiceIds"):
        order_ids(client_for(fake), START, START + timedelta(days=91))
    assert [interval_of(b)[1] - START for b in fake.sent()] == [timedelta(90), timedelta(88)]


# -- 4. a heavy request may only time out --------------------------------------------------


def slow_beyond(count: int) -> Callable[[str, dict[str, Any]], httpx.Response | None]:
    """A server that takes longer than the client waits for pages of more than `count`."""

    def refuse(operation: str, body: dict[str, Any]) -> httpx.Response | None:
        if body["Limitation"]["Count"] > count:
            raise httpx.ReadTimeout("no answer in time")
        return None

    return refuse


def test_a_read_timeout_asks_for_less_at_once_instead_of_retrying_the_same_request():
    fake = FakeMews(orders=daily_orders(START, 30), refuse=slow_beyond(250))
    clock = FakeClock()
    client = client_for(fake, clock)

    assert len(order_ids(client, START, START + timedelta(days=30))) == 30

    # 1000 and 500 time out; the walk goes on with pages of 250 (the last one is short).
    assert [b["Limitation"]["Count"] for b in fake.sent()] == [1000, 500, 250, 250]
    assert (client.stats.timeouts, client.stats.retries, clock.sleeps) == (2, 0, [])


def test_timeouts_even_for_the_least_split_the_ids_then_stop_with_one_sentence():
    fake = FakeMews(refuse=slow_beyond(0))
    client = client_for(fake, timeout=30)

    with pytest.raises(RequestTimedOutError, match=r"did not answer within 30 s.*try again"):
        list(client.service_order_notes(["o1", "o2"]))

    batches = [len(b["ServiceOrderIds"]) for b in fake.sent(NOTES_OPERATION)]
    # Pages of 1000, 500, ... 15, 10, then one id (the first half) with pages of 10 at once:
    # the client remembers the page size a timeout taught it.
    assert batches == [2] * 8 + [1]
    assert client.stats.splits == 1 and client.stats.timeouts == 9
    assert RequestTimedOutError("x", 1).transient  # exit 4: try again later


def test_connect_timeouts_and_dropped_connections_are_still_retried_with_backoff():
    failures = iter([httpx.ConnectTimeout("no route"), httpx.RemoteProtocolError("dropped")])

    def refuse(operation: str, body: dict[str, Any]) -> httpx.Response | None:
        if failure := next(failures, None):
            raise failure
        return None

    fake = FakeMews(orders=daily_orders(START, 3), refuse=refuse)
    clock = FakeClock()
    client = client_for(fake, clock)

    assert len(order_ids(client, START, START + timedelta(days=3))) == 3
    assert client.stats.retries == len(clock.sleeps) == 2 and client.stats.timeouts == 0
    assert [b["Limitation"]["Count"] for b in fake.sent()] == [1000] * 4  # 2 failed, page, end


# -- 5. a lower rate limit, or another process on the same token ----------------------------


def too_many(retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after else {}
    return answer(429, {"Message": "Too many requests."}, **headers)


def test_a_429_holds_every_thread_that_shares_the_client_not_only_the_one_that_got_it():
    clock = FakeClock()
    sent: list[tuple[str, float]] = []

    def first_is_throttled(operation: str, body: dict[str, Any]) -> httpx.Response | None:
        sent.append((threading.current_thread().name, clock.now))
        return too_many("5") if len(sent) == 1 else None

    client = client_for(FakeMews(refuse=first_is_throttled), clock, rate_limit=(200, 30.0))
    paused = threading.Event()
    limiter = client._limiter
    assert limiter is not None
    throttled = limiter.throttled
    limiter.throttled = lambda pause: (throttled(pause), paused.set())  # type: ignore[method-assign]

    def walk() -> None:
        order_ids(client, START, START + timedelta(days=1))

    def walk_once_paused() -> None:
        assert paused.wait(10)
        walk()

    threads = [
        threading.Thread(target=walk, name="A"),
        threading.Thread(target=walk_once_paused, name="B"),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert sent[0] == ("A", 0.0)
    assert sorted(name for name, _ in sent[1:]) == ["A", "B"]
    assert all(at >= 5.0 for _, at in sent[1:])  # B, which never got a 429, waited too
    assert client.stats.throttle_wait_seconds == 5.0


def test_the_limiter_allows_fewer_requests_after_429s_and_recovers_slowly():
    clock = FakeClock()
    limiter = SlidingWindowLimiter(200, 30.0, clock=clock, sleep=clock.sleep)

    limiter.throttled(2.0)
    limiter.throttled(2.0)  # during the first one's pause: the same burst, one signal
    assert limiter.allowed == 200 * RATE_DECREASE_FACTOR
    clock.now += 3.0
    limiter.throttled(2.0)
    assert limiter.allowed == 200 * RATE_DECREASE_FACTOR**2
    for _ in range(100):
        limiter.succeeded()
    assert limiter.allowed == pytest.approx(50 + 100 * RATE_RECOVERY_PER_SUCCESS)

    # The lower limit holds: 60 starts in one window, the 61st waits for the first to leave.
    starts = []
    for _ in range(61):
        limiter.acquire()
        starts.append(clock.now)
        limiter.release()
    assert starts[0] == 5.0 and starts[59] == 5.0 and starts[60] >= 5.0 + 30.0


def test_429s_slow_the_client_down():
    answers = iter([too_many("1"), None, too_many("1"), too_many("1")])
    fake = FakeMews(refuse=lambda operation, body: next(answers, None))
    client = client_for(fake, rate_limit=(200, 30.0))

    order_ids(client, START, START + timedelta(days=1))
    order_ids(client, START, START + timedelta(days=1))

    assert client._limiter is not None and client._limiter.allowed < 200 * RATE_DECREASE_FACTOR
    assert client.stats.throttled == 3


def test_429s_without_retry_after_back_off_exponentially_with_jitter():
    answers = iter([too_many()] * 5)
    fake = FakeMews(refuse=lambda operation, body: next(answers, None))
    clock = FakeClock()
    client = client_for(fake, clock, rate_limit=(200, 30.0), backoff_base=1.0)

    order_ids(client, START, START + timedelta(days=1))

    assert len(clock.sleeps) == 5 and len(set(clock.sleeps)) == 5  # no fixed pause
    assert all(0 <= pause <= 2**attempt for attempt, pause in enumerate(clock.sleeps))


def test_a_retry_after_longer_than_the_cap_stops_at_once_with_one_sentence():
    fake = FakeMews(refuse=lambda operation, body: too_many("3600"))
    clock = FakeClock()
    client = client_for(fake, clock, rate_limit=(200, 30.0), max_retry_after_seconds=120)

    with pytest.raises(MewsUnavailableError) as raised:
        order_ids(client, START, START + timedelta(days=1))
    assert str(raised.value) == (
        f"Mews {ORDERS_OPERATION} asked to wait 3600 s, more than the 120 s this client waits "
        "(max_retry_after_seconds): try again later."
    )
    assert clock.sleeps == [] and len(fake.requests) == 1

    # Every other thread of the client stops too, without asking again.
    with pytest.raises(MewsUnavailableError, match="asked to wait 3600 s"):
        list(client.service_order_notes(["o1"]))
    assert len(fake.requests) == 1


# -- 6. no empty id list is ever sent; a cursor goes back as it came -------------------------


def test_empty_id_lists_ask_for_nothing_and_send_nothing():
    fake = FakeMews()
    client = client_for(fake)
    end = START + timedelta(days=1)

    assert list(client.service_order_notes([])) == []
    assert list(client.product_service_orders([], START, end)) == []
    assert list(client.product_service_orders([SERVICE], START, end, enterprise_ids=[])) == []
    assert list(client.service_order_notes(["o1"], enterprise_ids=[])) == []
    assert list(client.services([])) == []
    assert list(client.services(None, enterprise_ids=[])) == []
    assert fake.requests == []


def test_a_cursor_from_the_server_goes_back_as_it_came():
    cursors = iter(["Not-A-UUID {1}", None])

    def pages(operation: str, body: dict[str, Any]) -> httpx.Response:
        return answer(200, {"ProductServiceOrders": [{"Id": "o1"}], "Cursor": next(cursors)})

    fake = FakeMews(refuse=pages)
    assert len(order_ids(client_for(fake), START, START + timedelta(days=1))) == 2
    assert fake.sent()[1]["Limitation"]["Cursor"] == "Not-A-UUID {1}"


# -- what is sent: whole seconds, at most 1000 ids a list --------------------------------------

WHOLE_SECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.mark.parametrize("semantics", ["half_open", "inclusive"])
def test_halved_windows_are_sent_in_whole_seconds_and_lose_no_order(semantics):
    """Bounds with fractions, and halving (by 408s): every interval sent is whole seconds, as
    the documentation writes times, the windows meet, and every order comes."""
    sandbox = Sandbox.generate(
        orders=300, seed=7, config=SandboxConfig(interval_semantics=semantics)
    )
    inner = SandboxTransport(sandbox)

    def heavy_beyond_ten_days(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if "UpdatedUtc" in body:
            start, end = interval_of(body)
            if end - start > timedelta(days=10):
                return answer(408, {"Message": "Too heavy."})
        return inner.handle_request(request)

    client = MewsClient(
        "http://sandbox",
        DEMO_CLIENT_TOKEN,
        DEMO_PORTFOLIO_ACCESS_TOKEN,
        transport=httpx.MockTransport(heavy_beyond_ten_days),
        rate_limit=None,
    )
    orders = sandbox.orders()
    services = sorted({o["ServiceId"] for o in orders})
    updated = sorted(parse(o["UpdatedUtc"]) for o in orders)
    start = updated[0] - timedelta(days=3, microseconds=250_000)
    end = updated[-1] + timedelta(days=1, microseconds=750_000)

    found = {o["Id"] for page in client.product_service_orders(services, start, end) for o in page}

    assert found == {o["Id"] for o in orders}
    assert client.stats.splits > 0
    sent = [e.body["UpdatedUtc"] for e in sandbox.log.entries if "UpdatedUtc" in e.body]
    assert all(WHOLE_SECONDS.fullmatch(t) for i in sent for t in i.values()), sent
    windows = sorted({interval_of({"UpdatedUtc": i}) for i in sent})
    assert windows[0][0] == start.replace(microsecond=0)
    assert windows[-1][1] == end.replace(microsecond=0) + timedelta(seconds=1)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(windows))  # no gap, no overlap


def test_more_than_1000_enterprise_ids_go_in_requests_of_at_most_1000():
    sandbox = Sandbox.generate(orders=100, seed=8)
    client = MewsClient(
        "http://sandbox",
        DEMO_CLIENT_TOKEN,
        DEMO_PORTFOLIO_ACCESS_TOKEN,
        transport=SandboxTransport(sandbox),
        rate_limit=None,
    )
    real = sorted({e["Id"] for e in sandbox.enterprises()})
    # Ids the token does not cover: the sandbox ignores them, as Mews is taken to.
    others = [str(uuid.UUID(int=i)) for i in range(2500)]
    enterprise_ids = others[:1200] + real + others[1200:]
    orders = sandbox.orders()
    services = sorted({o["ServiceId"] for o in orders})
    updated = sorted(parse(o["UpdatedUtc"]) for o in orders)

    found = {
        o["Id"]
        for page in client.product_service_orders(
            services, updated[0], updated[-1] + timedelta(seconds=1), enterprise_ids
        )
        for o in page
    }
    notes = {
        n["Id"] for page in client.service_order_notes(found, None, enterprise_ids) for n in page
    }
    listed = {s["Id"] for page in client.services(None, enterprise_ids) for s in page}
    enterprises = {e["Id"] for page in client.enterprises(enterprise_ids) for e in page}

    assert found == {o["Id"] for o in orders}
    assert notes == {n["Id"] for n in sandbox.notes() if n["Type"] in ("General", "ChannelManager")}
    assert listed == {s["Id"] for s in sandbox.services()}
    assert enterprises == set(real)
    assert sandbox.log.count(status=400) == 0
    sizes = [len(e.body["EnterpriseIds"]) for e in sandbox.log.entries]
    assert max(sizes) == 1000 and sum(1 for s in sizes if s == 1000) >= 4 * 3
