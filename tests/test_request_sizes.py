"""What a timeout or a 408 teaches about request sizes applies at once to every operation and
thread of a run, and to the next runs (issue 20, item 5): against a Mews that answers requests
of more than some number of items or ids only after the client's timeout."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from harness import Target, assert_equals_truth, lagging_sandbox
from test_client_undocumented import START, FakeMews, client_for, daily_orders, order_ids

from mews_sandbox import Faults, serve
from sources.mews.client import RequestTimedOutError
from sources.mews.settings import MIN_PAGE_SIZE, NOTES_OPERATION, PAGE_SIZE
from sources.mews.sizes import RequestSizes
from sources.stop import STOPPING, RunStopped


def size_of(body: dict[str, Any]) -> int:
    ids = [len(v) for k, v in body.items() if k.endswith("Ids") and isinstance(v, list)]
    return max([body["Limitation"]["Count"], *ids])


class SlowBeyond:
    """A server that takes `seconds` over requests larger than `limit` (page Count or ids) and
    then times out; it counts how many such requests were in flight at once, and how many
    requests within the limit."""

    def __init__(self, limit: int, seconds: float = 0.05) -> None:
        self.limit, self.seconds = limit, seconds
        self.in_flight = {True: 0, False: 0}  # over the limit, within it
        self.most_in_flight = {True: 0, False: 0}
        self._lock = threading.Lock()

    def __call__(self, operation: str, body: dict[str, Any]) -> httpx.Response | None:
        over = size_of(body) > self.limit
        with self._lock:
            self.in_flight[over] += 1
            self.most_in_flight[over] = max(self.most_in_flight[over], self.in_flight[over])
        time.sleep(self.seconds)  # long enough for the threads' requests to overlap
        with self._lock:
            self.in_flight[over] -= 1
        if over:
            raise httpx.ReadTimeout("no answer in time")
        return None


def notes_in_threads(client: Any, batches: list[list[str]]) -> None:
    """Each batch of order ids walked for its notes in a thread of its own, all at once."""
    failures: list[BaseException] = []

    def walk(ids: list[str]) -> None:
        try:
            list(client.service_order_notes(ids))
        except BaseException as error:  # noqa: BLE001 - shown by the assert below
            failures.append(error)

    threads = [threading.Thread(target=walk, args=(ids,)) for ids in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures


def order_batches(threads: int, per_thread: int = 1000) -> list[list[str]]:
    return [[f"o{t}-{i}" for i in range(per_thread)] for t in range(threads)]


# -- the client ----------------------------------------------------------------------------


def test_after_one_timeout_on_orders_the_notes_of_every_thread_are_already_capped():
    slow = SlowBeyond(500, seconds=0.01)
    notes = [(f"n{t}-{i}", f"o{t}-{i}") for t in range(4) for i in range(0, 1000, 3)]
    fake = FakeMews(orders=daily_orders(START, 30), notes=notes, refuse=slow)
    client = client_for(fake)

    assert len(order_ids(client, START, START + timedelta(days=30))) == 30
    assert client.stats.timeouts == 1  # pages of 1000 timed out; 500 were answered
    notes_in_threads(client, order_batches(threads=4))

    assert client.stats.timeouts == 1  # no thread sent 1000 ids, nor a page of 1000
    sent = fake.sent(NOTES_OPERATION)
    assert max(map(size_of, sent)) == 500
    assert sorted(len(b["ServiceOrderIds"]) for b in sent if "Cursor" not in b["Limitation"]) == [
        500
    ] * 8
    assert client.stats.splits == 0  # batched by the learned size, not split after the fact


def test_while_a_size_is_learned_one_large_request_is_in_flight_and_the_others_go_on():
    slow = SlowBeyond(250)
    client = client_for(FakeMews(refuse=slow))

    notes_in_threads(client, order_batches(threads=4))

    # 1000 and 500 each timed out once, for all four threads: not once per thread.
    assert client.stats.timeouts == 2
    assert slow.most_in_flight[True] == 1
    assert slow.most_in_flight[False] > 1  # requests within the size answered went on together
    assert (client.sizes.ceiling, client.sizes.answered) == (250, 250)


def test_a_timeout_on_a_size_answered_before_learns_again_one_at_a_time():
    client = client_for(FakeMews(orders=daily_orders(START, 3)))
    order_ids(client, START, START + timedelta(days=3))
    assert client.sizes.answered == 3  # what an answer carried, not the page asked for
    notes_in_threads(client, order_batches(threads=1))
    assert client.sizes.answered == PAGE_SIZE  # 1000 ids: large requests go on together

    slow = SlowBeyond(100)
    client._http._transport = httpx.MockTransport(FakeMews(refuse=slow))  # Mews got slower
    notes_in_threads(client, order_batches(threads=3, per_thread=300))

    assert slow.most_in_flight[True] <= 3  # those already sent time out together ...
    # ... and each thread's halved page may too, before two such timeouts forgot that 1000
    # was answered; then one at a time: 500 or 250, 125, and 62 is answered.
    assert client.stats.timeouts <= 2 * 3 + 3
    assert client.sizes.ceiling == 62


def test_orders_of_more_services_than_mews_answers_in_time_split_the_services_not_the_days():
    services = [f"s{i}" for i in range(20)]

    def slow_on_many_services(operation: str, body: dict[str, Any]) -> httpx.Response | None:
        if len(body["ServiceIds"]) > MIN_PAGE_SIZE:
            raise httpx.ReadTimeout("no answer in time")
        return None

    fake = FakeMews(orders=daily_orders(START, 5), refuse=slow_on_many_services)
    client = client_for(fake)
    end = START + timedelta(days=5)

    pages = client.product_service_orders(services, START, end)
    assert {o["Id"] for page in pages for o in page} == {f"o{d}" for d in range(5)}
    answered = [b for b in fake.sent() if len(b["ServiceIds"]) <= MIN_PAGE_SIZE]
    assert sorted({tuple(b["ServiceIds"]) for b in answered}) == [
        tuple(services[:10]),
        tuple(services[10:]),
    ]
    assert {b["UpdatedUtc"]["EndUtc"] for b in fake.sent()} == {"2023-01-06T00:00:00Z"}


# -- RequestSizes: what it keeps, and when it tries larger sizes again ------------------------


class Today:
    def __init__(self) -> None:
        self.moment = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.moment


def test_the_sizes_learned_are_kept_and_restored():
    today = Today()
    learned = RequestSizes(now=today)
    learned.too_heavy(1000)
    learned.too_heavy(500)
    learned.answered_in_time(250)
    store: dict[str, Any] = {}
    learned.keep_in(store)
    assert store == {"ceiling": 250, "answered": 250, "lowered_utc": today.moment.isoformat()}
    learned.too_heavy(250)  # answered before: taken for a passing overload ...
    assert store["ceiling"] == 250 and store["answered"] == 250
    learned.too_heavy(250)  # ... but not twice with no answer in between: learn again
    assert store["ceiling"] == 250 and store["answered"] == 0
    learned.too_heavy(250)  # the store follows every change
    assert store["ceiling"] == 125 and store["answered"] == 0

    restored = RequestSizes(now=today)
    restored.restore(store)
    assert (restored.ceiling, restored.answered) == (125, 0)
    restored.restore({"ceiling": 1000, "answered": 1000})  # once: later calls change nothing
    assert restored.ceiling == 125


def test_what_a_run_learned_itself_wins_over_the_stored_sizes_and_bad_state_is_ignored():
    learned = RequestSizes()
    learned.too_heavy(1000)
    learned.restore({"ceiling": 1000, "answered": 1000, "lowered_utc": None})
    assert learned.ceiling == 500

    for garbage in [{"ceiling": "x"}, {"ceiling": 5000}, {"ceiling": True}, {"answered": -1}]:
        sizes = RequestSizes()
        sizes.restore(garbage)
        assert (sizes.ceiling, sizes.answered) == (PAGE_SIZE, 0)
    today = Today()
    tiny = RequestSizes(now=today)
    tiny.restore({"ceiling": 3, "answered": 3, "lowered_utc": today.moment.isoformat()})
    assert tiny.ceiling == tiny.answered == MIN_PAGE_SIZE


def test_a_timeout_on_a_size_answered_in_time_between_answers_changes_nothing():
    sizes = RequestSizes()
    for _ in range(5):
        sizes.answered_in_time(1000)
        sizes.too_heavy(1000)  # 10% of random 408s must not take the size down
    assert (sizes.ceiling, sizes.answered) == (1000, 1000)


def test_never_below_the_least_page_nor_a_size_answered_in_time():
    sizes = RequestSizes()
    sizes.answered_in_time(300)
    sizes.too_heavy(1000)
    assert sizes.ceiling == 500
    sizes.too_heavy(500)
    assert sizes.ceiling == 300  # not 250: 300 was answered in time
    for _ in range(10):
        sizes.too_heavy(sizes.ceiling)
    assert sizes.ceiling == MIN_PAGE_SIZE


def stored_a_day_ago(hours: float) -> tuple[RequestSizes, Today]:
    today = Today()
    sizes = RequestSizes(now=today)
    lowered = today.moment - timedelta(hours=hours)
    sizes.restore({"ceiling": 250, "answered": 250, "lowered_utc": lowered.isoformat()})
    return sizes, today


def test_a_day_after_a_size_was_learned_the_full_size_is_probed_once():
    sizes, today = stored_a_day_ago(hours=23)
    assert sizes.ceiling == 250  # not yet

    sizes, today = stored_a_day_ago(hours=24)
    assert (sizes.ceiling, sizes.answered) == (PAGE_SIZE, 250)
    sizes.too_heavy(PAGE_SIZE)  # the probe timed out: straight back, one timeout
    assert sizes.ceiling == 250
    assert sizes.saved()["lowered_utc"] == today.moment.isoformat()  # next probe in a day

    sizes, _ = stored_a_day_ago(hours=30)
    sizes.answered_in_time(PAGE_SIZE)  # the probe was answered: no cap any more
    assert (sizes.ceiling, sizes.answered) == (PAGE_SIZE, PAGE_SIZE)
    for _ in range(3):  # later timeouts: two forget it was answered, the next halves
        sizes.too_heavy(PAGE_SIZE)
    assert sizes.ceiling == PAGE_SIZE // 2


def test_a_failed_probe_costs_one_timeout_for_all_threads():
    today = Today()
    sizes = RequestSizes(now=today)
    sizes.restore({"ceiling": 250, "answered": 250, "lowered_utc": "2026-11-01T00:00:00+00:00"})
    slow = SlowBeyond(250)
    client = client_for(FakeMews(refuse=slow), sizes=sizes)

    notes_in_threads(client, order_batches(threads=4))

    assert client.stats.timeouts == 1 and slow.most_in_flight[True] == 1
    assert sizes.ceiling == 250


def test_timeouts_even_for_the_least_still_stop_the_walk():
    client = client_for(FakeMews(refuse=SlowBeyond(0, seconds=0)))
    try:
        list(client.service_order_notes(["o1"]))
    except RequestTimedOutError:
        pass
    else:
        raise AssertionError("a walk Mews never answers must stop")
    assert client.sizes.ceiling == MIN_PAGE_SIZE


# -- the pipeline: a first sync learns once, the next run starts from it ---------------------


def test_a_first_sync_learns_the_size_once_and_the_next_run_starts_from_it(tmp_path):
    sandbox = lagging_sandbox(orders=8000, seed=20)
    # Every request for more than 250 items or ids answers only after 1.5 s, never with a
    # 408: too late for a client that waits 1 s (Mews: 70 s against 60).
    stall = 1.5
    sandbox.config.faults = Faults(heavy_count=250, heavy_ids=True, stall_heavy_s=stall)
    target = Target(sandbox, tmp_path)

    with serve(sandbox) as url:
        # In steps of about 3,000 orders, each with a new source and client.
        first = target.sync(
            platform_url=url, transport=None, request_timeout_seconds=1.0, max_orders_per_load=3000
        )
        [(loads,)] = target.rows("select count(*) from mews._dlt_loads")
        sandbox.update_order(sandbox.orders()[0]["Id"], Number="changed")
        sandbox.log.clear()
        second = target.sync(platform_url=url, transport=None, request_timeout_seconds=1.0)
        time.sleep(stall + 0.2)  # the stalled requests are logged when they answer, late

    assert_equals_truth(target)
    assert loads >= 3 and first.read.orders >= 8000  # steps of 3,000 orders
    assert first.stats.timeouts <= 2  # services/getAll: 1000 and 500, then 250 for all steps
    stored = target.state()["sources"]["mews"]["request_sizes"]
    assert (stored["ceiling"], stored["answered"]) == (250, 250)
    assert second.stats.timeouts == 0
    assert max(size_of(e.body) for e in sandbox.log.entries) == 250


def test_a_stop_ends_the_wait_for_a_large_requests_turn():
    """A thread waiting for its turn behind a large request whose thread was stopped (and so
    may never give the turn back) ends at the stop, so the process can exit."""
    sizes = RequestSizes()
    ended: list[BaseException] = []

    def wait_for_turn() -> None:
        try:
            with sizes.turn(PAGE_SIZE):
                pass
        except BaseException as exc:  # noqa: BLE001 - what ended the wait is the result
            ended.append(exc)

    with sizes.turn(PAGE_SIZE):  # a large request in flight, its turn never given back here
        waiting = threading.Thread(target=wait_for_turn)
        waiting.start()
        time.sleep(0.2)
        assert waiting.is_alive() and not ended  # it waits its turn
        STOPPING.set()
        try:
            waiting.join(timeout=2)
        finally:
            STOPPING.clear()
        assert not waiting.is_alive()
        assert len(ended) == 1 and isinstance(ended[0], RunStopped)
