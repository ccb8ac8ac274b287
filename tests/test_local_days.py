"""Enterprises are synced, and analysts count days in each hotel's own time zone."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime

from harness import Target, assert_equals_truth, product_service_ids

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
