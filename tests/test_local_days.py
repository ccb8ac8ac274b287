"""Enterprises are synced, and analysts count days in each hotel's own time zone."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from harness import (
    Target,
    amount,
    assert_equals_truth,
    assert_items_equal_truth,
    product_service_ids,
)

from mews_sandbox import Sandbox

# Europe/Prague moves to summer time on 2026-03-29 and back on 2026-10-25 (01:00 UTC both).
PRAGUE_ORDERS = {
    "2026-03-28T22:59:59Z": date(2026, 3, 28),  # 23:59:59 CET
    "2026-03-28T23:00:00Z": date(2026, 3, 29),  # 00:00:00 CET
    "2026-03-29T21:59:59Z": date(2026, 3, 29),  # 23:59:59 CEST
    "2026-03-29T22:00:00Z": date(2026, 3, 30),  # 00:00:00 CEST
    "2026-10-24T21:59:59Z": date(2026, 10, 24),  # 23:59:59 CEST
    "2026-10-24T22:00:00Z": date(2026, 10, 25),  # 00:00:00 CEST
    "2026-10-25T22:59:59Z": date(2026, 10, 25),  # 23:59:59 CET
    "2026-10-25T23:00:00Z": date(2026, 10, 26),  # 00:00:00 CET
}
HONOLULU_ORDERS = {  # UTC-10 all year
    "2026-03-29T09:59:59Z": date(2026, 3, 28),
    "2026-03-29T10:00:00Z": date(2026, 3, 29),
}


def service_of(sandbox: Sandbox, zone: str) -> tuple[str, str]:
    enterprise = next(e for e in sandbox.enterprises() if e["TimeZoneIdentifier"] == zone)
    service = next(
        s["Id"]
        for s in sandbox.services()
        if s["EnterpriseId"] == enterprise["Id"] and s["Id"] in product_service_ids(sandbox)
    )
    return service, enterprise["Name"]


def test_local_days_follow_each_enterprises_time_zone_across_dst(tmp_path, postgres):
    sandbox = Sandbox.generate(orders=0, seed=51)
    prague, prague_name = service_of(sandbox, "Europe/Prague")
    honolulu, honolulu_name = service_of(sandbox, "Pacific/Honolulu")
    for service, moments in ((prague, PRAGUE_ORDERS), (honolulu, HONOLULU_ORDERS)):
        for moment in moments:
            sandbox.add_order(service, at=datetime.fromisoformat(moment))
    target = Target(sandbox, tmp_path, postgres)
    target.sync()
    assert_equals_truth(target)

    rows = target.rows(
        "select enterprise_name, time_zone, day, orders_created "
        "from mews.order_activity_local_daily"
    )
    created = {(name, day): n for name, _, day, n in rows}
    assert created == {
        **{(prague_name, d): n for d, n in Counter(PRAGUE_ORDERS.values()).items()},
        **{(honolulu_name, d): n for d, n in Counter(HONOLULU_ORDERS.values()).items()},
    }
    assert {(name, zone) for name, zone, _, _ in rows} == {
        (prague_name, "Europe/Prague"),
        (honolulu_name, "Pacific/Honolulu"),
    }
    utc_days = dict(
        target.rows("select day, sum(orders_created) from mews.order_activity_daily group by day")
    )
    assert utc_days[date(2026, 3, 28)] == 2  # in UTC, both late-March Prague orders: not local


def test_enterprises_are_synced_and_named_in_the_views(tmp_path):
    sandbox = Sandbox.generate(orders=300, seed=52)
    target = Target(sandbox, tmp_path)
    target.sync()

    stored = target.rows(
        "select id, name, short_name, chain_name, time_zone_identifier from mews.enterprises"
    )
    synced = {
        s["EnterpriseId"] for s in sandbox.services() if s["Id"] in product_service_ids(sandbox)
    }
    assert sorted(stored) == sorted(
        (e["Id"], e["Name"], e["ShortName"], e["ChainName"], e["TimeZoneIdentifier"])
        for e in sandbox.enterprises()
        if e["Id"] in synced
    )
    names = {i: n for i, n, *_ in stored}
    for view in ("orders_current", "notes_with_orders"):
        pairs = target.rows(f"select distinct enterprise_id, enterprise_name from mews.{view}")
        assert pairs and all(names[i] == n for i, n in pairs), view


def test_revenue_daily_counts_local_days_across_dst_and_orders_their_gross(tmp_path, postgres):
    sandbox = Sandbox.generate(orders=0, seed=53)
    zones = {e["Id"]: ZoneInfo(e["TimeZoneIdentifier"]) for e in sandbox.enterprises()}
    prague, _ = service_of(sandbox, "Europe/Prague")
    honolulu, _ = service_of(sandbox, "Pacific/Honolulu")
    for service, moments in ((prague, PRAGUE_ORDERS), (honolulu, HONOLULU_ORDERS)):
        product = next(
            p["Id"] for p in sandbox.products() if p["ServiceId"] == service and p["IsActive"]
        )
        for moment in moments:
            sandbox.add_order(
                service,
                at=datetime.fromisoformat(moment),
                product_orders=[{"ProductId": product, "Count": 3}],
            )
    items = sandbox.order_items()
    sandbox.cancel_item(items[-1]["Id"], at=datetime.fromisoformat("2026-11-01T00:00:00Z"))
    sandbox.close_bill([items[1]["Id"]], at=datetime.fromisoformat("2026-11-01T00:00:00Z"))
    sandbox.rebate_item(items[1]["Id"], at=datetime.fromisoformat("2026-11-02T00:00:00Z"))
    target = Target(sandbox, tmp_path, postgres)
    target.sync()
    assert_items_equal_truth(target)

    expected: dict[tuple, list] = {}
    gross_by_order: dict[str, Decimal] = {}
    for item in sandbox.order_items():
        if item["AccountingState"] == "Canceled":
            continue
        consumed = datetime.fromisoformat(item["ConsumedUtc"]).astimezone(
            zones[item["EnterpriseId"]]
        )
        data = item["Data"]
        product = (data.get("Product") or data.get("Rebate"))["ProductId"]
        key = (item["EnterpriseId"], consumed.date(), product, item["Amount"]["Currency"])
        row = expected.setdefault(key, [0, Decimal(0), Decimal(0)])
        row[0] += 1
        row[1] += amount(item["Amount"]["NetValue"])
        row[2] += amount(item["Amount"]["GrossValue"])
        order = item["ServiceOrderId"]
        gross_by_order[order] = gross_by_order.get(order, 0) + amount(item["Amount"]["GrossValue"])
    rows = target.rows(
        "select enterprise_id, day, product_id, currency, items, net_value, gross_value "
        "from mews.revenue_daily"
    )
    assert {r[:4]: list(r[4:]) for r in rows} == expected
    assert len(rows) == len(expected)
    prague_days = {r[1] for r in rows if r[0] == sandbox_enterprise(sandbox, prague)}
    assert prague_days >= set(PRAGUE_ORDERS.values())  # each local midnight on its own day
    assert any(r[6] < 0 for r in rows)  # the rebate, on its own day, as a negative amount
    totals = dict(target.rows("select id, gross_total from mews.orders_current"))
    canceled_order = items[-1]["ServiceOrderId"]
    gross_by_order.setdefault(canceled_order, Decimal(0))  # its only item is canceled
    assert totals == gross_by_order


def sandbox_enterprise(sandbox: Sandbox, service_id: str) -> str:
    return next(s["EnterpriseId"] for s in sandbox.services() if s["Id"] == service_id)
