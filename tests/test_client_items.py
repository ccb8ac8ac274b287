"""The client's order_items() and products() against the sandbox: every item of a long
history once, across windows, under each reading of the intervals and of "3 months"."""

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mews_sandbox import DEMO_PORTFOLIO_ACCESS_TOKEN, Sandbox, SandboxTransport
from sources.mews.client import MewsClient

NOW = datetime(2026, 1, 15, 12, tzinfo=UTC)
START = datetime(2015, 1, 1, tzinfo=UTC)
ITEMS = "orderItems/getAll"


def client_for(sb: Sandbox, **options: Any) -> MewsClient:
    return MewsClient(
        "http://sandbox.local",
        sb.client_token,
        DEMO_PORTFOLIO_ACCESS_TOKEN,
        transport=SandboxTransport(sb),
        rate_limit=None,
        **options,
    )


def additional(sb: Sandbox) -> list[str]:
    return [s["Id"] for s in sb.services() if s["Data"]["Discriminator"] == "Additional"]


def walked(client: MewsClient, services: list[str], start: datetime, end: datetime) -> list[str]:
    return [i["Id"] for page in client.order_items(services, start, end) for i in page]


@pytest.mark.parametrize("semantics", ["half_open", "inclusive"])
def test_a_long_history_gives_every_item_once_across_windows(semantics: str) -> None:
    sb = Sandbox.generate(orders=3000, seed=11, now=NOW)
    sb.config.interval_semantics = semantics  # type: ignore[assignment]
    edge = datetime(2025, 1, 1, tzinfo=UTC)  # a window boundary: 2015-01-01 + 40 quarters
    on_edge = [i["Id"] for i in sb.order_items() if i["AccountingState"] == "Open"][:4]
    sb.close_bill(on_edge, at=edge)
    with client_for(sb) as client:
        ids = walked(client, additional(sb), START, NOW + timedelta(seconds=1))
        windows = client.stats.requests[ITEMS]
    truth = {i["Id"] for i in sb.order_items()}
    assert set(ids) == truth  # set semantics: nothing lost
    if semantics == "half_open":
        assert len(ids) == len(truth)  # and nothing twice
    else:
        assert {i for i, n in Counter(ids).items() if n > 1} >= set(on_edge)  # in both windows
    assert windows >= 44  # 11 years in windows of 3 months, each at least one request
    bodies = [e.body for e in sb.log.entries if e.operation == ITEMS]
    assert all(
        "Currency" not in b and set(b["UpdatedUtc"]) == {"StartUtc", "EndUtc"} for b in bodies
    )


def test_changed_items_come_in_the_next_window_though_their_orders_did_not_change() -> None:
    sb = Sandbox.generate(orders=800, seed=12, now=NOW)
    later = NOW + timedelta(hours=5)
    sb.clock = lambda: later
    assert sb.config.items_bump_order is False
    open_items = [i for i in sb.order_items() if i["AccountingState"] == "Open"]
    sb.close_bill([open_items[0]["Id"], open_items[1]["Id"]])
    sb.cancel_item(open_items[2]["Id"])
    rebate = sb.rebate_item(open_items[3]["Id"])
    sb.reprice_item(open_items[4]["Id"], 9.99)
    with client_for(sb) as client:
        ids = walked(client, additional(sb), NOW, later + timedelta(seconds=1))
    changed = [open_items[n]["Id"] for n in (0, 1, 2, 4)]  # a rebated item does not change
    assert sorted(ids) == sorted([*changed, rebate])
    orders = [
        o["Id"]
        for page in client_for(sb).product_service_orders(
            additional(sb), NOW, later + timedelta(seconds=1)
        )
        for o in page
    ]
    assert orders == []  # the orders did not change: only the items' own UpdatedUtc says so


@pytest.mark.parametrize("reading", ["strict", "days90"])
def test_a_stricter_three_months_costs_one_400_and_loses_nothing(reading: str) -> None:
    sb = Sandbox.generate(orders=1500, seed=13, now=NOW)
    sb.config.interval_limit = reading  # type: ignore[assignment]
    with client_for(sb) as client:
        ids = walked(client, additional(sb), START, NOW + timedelta(seconds=1))
        assert client.stats.too_long_windows == 1
    assert sorted(ids) == sorted(i["Id"] for i in sb.order_items())
    assert sb.log.count(ITEMS, 400) == 1


def test_short_pages_and_small_pages_lose_nothing() -> None:
    sb = Sandbox.generate(orders=1200, seed=14, now=NOW)
    sb.config.short_pages = 0.4
    with client_for(sb, page_size=50) as client:
        ids = walked(client, additional(sb), START, NOW + timedelta(seconds=1))
        assert client.stats.short_pages > 0
    assert sorted(ids) == sorted(i["Id"] for i in sb.order_items())


def test_more_than_1000_services_go_in_batches_and_enterprise_ids_narrow_the_walk() -> None:
    sb = Sandbox.generate(orders=600, seed=15, now=NOW)
    services = additional(sb) + [f"00000000-0000-4000-8000-{i:012d}" for i in range(1200)]
    first = sb.enterprises()[0]["Id"]
    with client_for(sb) as client:
        ids = [
            i["Id"]
            for page in client.order_items(services, START, NOW, enterprise_ids=[first])
            for i in page
        ]
        assert list(client.order_items([], START, NOW)) == []  # asks for nothing
    assert sorted(ids) == sorted(i["Id"] for i in sb.order_items() if i["EnterpriseId"] == first)
    batches = {len(e.body["ServiceIds"]) for e in sb.log.entries if e.operation == ITEMS}
    assert max(batches) == 1000 and len(batches) == 2


def test_products_gives_every_product_default_ones_included() -> None:
    sb = Sandbox.generate(orders=10, seed=16, now=NOW)
    with client_for(sb, page_size=7) as client:
        products = [p for page in client.products(additional(sb)) for p in page]
        first = sb.enterprises()[0]["Id"]
        of_first = [p["Id"] for page in client.products(additional(sb), [first]) for p in page]
        assert list(client.products([])) == []
    assert sorted(p["Id"] for p in products) == sorted(p["Id"] for p in sb.products())
    assert any(p["Names"]["en-US"] == "Service fee" for p in products)  # a default product
    enterprise_of = {s["Id"]: s["EnterpriseId"] for s in sb.services()}
    assert sorted(of_first) == sorted(
        p["Id"] for p in sb.products() if enterprise_of[p["ServiceId"]] == first
    )
