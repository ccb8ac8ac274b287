"""The sandbox's products and order items: data, products/getAll, orderItems/getAll (filters,
limits, pages, intervals, scopes), the item changes, and the items orders/add makes."""

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from test_sandbox import all_pages, flat, iso, product_service_ids, utc, window

from mews_sandbox import DEMO_ACCESS_TOKEN, Sandbox, SandboxConfig

NOW = datetime(2026, 1, 15, 12, tzinfo=UTC)
LATER = NOW + timedelta(days=2, hours=3, seconds=7)
ITEMS = "orderItems/getAll"
PRODUCTS = "products/getAll"
ORDERS = "productServiceOrders/getAll"
QUARTER = window(datetime(2025, 7, 1, tzinfo=UTC), datetime(2025, 10, 1, tzinfo=UTC))


@pytest.fixture(scope="module")
def sb() -> Sandbox:
    """Read-only: tests that change data or settings build their own."""
    return Sandbox.generate(orders=2000, seed=5, now=NOW)


def changing(orders: int = 300, seed: int = 21) -> Sandbox:
    sandbox = Sandbox.generate(orders=orders, seed=seed, now=NOW)
    sandbox.clock = lambda: LATER
    return sandbox


def dec(value: float) -> Decimal:
    return Decimal(str(value))


def item_ids(call: Any, sb: Sandbox, count: int = 1000, **fields: Any) -> list[str]:
    return [i["Id"] for i in flat(all_pages(call, sb, ITEMS, "OrderItems", count, **fields))]


def newest_first(items: list[dict[str, Any]], keep: Any = lambda i: True) -> list[str]:
    """Ids of the items that `keep` keeps, as pages give them (order_items() is oldest first)."""
    return [i["Id"] for i in reversed(items) if keep(i)]


def in_window(field: str, start: datetime, end: datetime) -> Any:
    return lambda i: i[field] is not None and start <= utc(i[field]) < end


# --- data ------------------------------------------------------------------------------------


def test_items_are_made_on_first_use_and_the_same_for_the_same_seed() -> None:
    first = Sandbox.generate(orders=300, seed=9, now=NOW)
    orders = first.orders()
    assert first._items is None  # generate() pays nothing for items
    second = Sandbox.generate(orders=300, seed=9, now=NOW)
    assert first.order_items() == second.order_items()
    assert first.products() == second.products()
    assert first.orders() == orders  # making items changes no order
    other = Sandbox.generate(orders=300, seed=10, now=NOW)
    assert {i["Id"] for i in other.order_items()}.isdisjoint(i["Id"] for i in first.order_items())


def test_enterprises_have_their_currencies_and_products_their_prices(sb: Sandbox) -> None:
    enterprise_of = {s["Id"]: s["EnterpriseId"] for s in sb.services()}
    currencies = {enterprise_of[p["ServiceId"]]: p["Price"]["Currency"] for p in sb.products()}
    assert sorted(currencies.values()) == ["CZK", "EUR", "USD"]
    products = sb.products()
    assert {p["ServiceId"] for p in products} == set(product_service_ids(sb))
    for product in products:
        assert currencies[enterprise_of[product["ServiceId"]]] == product["Price"]["Currency"]
        assert product["Names"]["en-US"] and product["ExternalNames"]
        price = product["Price"]
        assert dec(price["NetValue"]) + dec(price["TaxValues"][0]["Value"]) == dec(
            price["GrossValue"]
        )
    assert any(len(p["Names"]) > 1 for p in products)  # some have translations
    assert {p["IsActive"] for p in products} == {True, False}


def test_generated_items_are_consistent_with_their_orders_and_products(sb: Sandbox) -> None:
    orders = {o["Id"]: o for o in sb.orders()}
    products = {p["Id"]: p for p in sb.products()}
    items = sb.order_items()
    by_id = {i["Id"]: i for i in items}
    enterprise_of = {s["Id"]: s["EnterpriseId"] for s in sb.services()}
    per_order = Counter(i["ServiceOrderId"] for i in items if i["Type"] == "ProductOrder")
    assert set(per_order) == set(orders) and set(per_order.values()) == {1, 2, 3}
    for item in items:
        order = orders[item["ServiceOrderId"]]
        assert (item["ServiceId"], item["AccountId"]) == (order["ServiceId"], order["AccountId"])
        assert item["EnterpriseId"] == enterprise_of[order["ServiceId"]]
        assert (
            order["CreatedUtc"] <= item["CreatedUtc"] <= item["UpdatedUtc"] <= order["UpdatedUtc"]
        )
        unit, amount = item["UnitAmount"], item["Amount"]
        assert amount == item["OriginalAmount"] and unit["Currency"] == amount["Currency"]
        for name in ("NetValue", "GrossValue"):
            assert dec(amount[name]) == dec(unit[name]) * item["UnitCount"]
        for value in (unit, amount):
            [tax] = value["TaxValues"]
            assert dec(value["NetValue"]) + dec(tax["Value"]) == dec(value["GrossValue"])
            assert value["Breakdown"]["Items"] == [
                {
                    "TaxRateCode": tax["Code"],
                    "NetValue": value["NetValue"],
                    "TaxValue": tax["Value"],
                }
            ]
        state = item["AccountingState"]
        assert (item["ClosedUtc"] is not None) == (state == "Closed")
        assert (item["CanceledUtc"] is not None) == (state == "Canceled")
        assert state != "Closed" or item["BillId"]
        data = item["Data"]
        if item["Type"] == "ProductOrder":
            product = products[data["Product"]["ProductId"]]
            assert product["ServiceId"] == order["ServiceId"] and data["Discriminator"] == "Product"
            assert unit == product["Price"] and amount["GrossValue"] > 0
        else:
            assert item["Type"] == "ProductOrderRebate" and data["Discriminator"] == "Rebate"
            rebated = by_id[data["Rebate"]["RebatedItemId"]]
            assert rebated["AccountingState"] == "Closed"
            assert data["Rebate"]["ProductId"] == rebated["Data"]["Product"]["ProductId"]
            assert dec(amount["GrossValue"]) == -dec(rebated["Amount"]["GrossValue"])
    assert set(Counter(i["AccountingState"] for i in items)) == {
        "Open",
        "Closed",
        "Inactive",
        "Canceled",
    }
    assert Counter(i["Type"] for i in items)["ProductOrderRebate"] > 5
    # Decimals that floats do not add up exactly: a loader must keep them as decimals.
    nets = [i["Amount"]["NetValue"] for i in items]
    assert any(dec(a + b) != dec(a) + dec(b) for a, b in zip(nets, nets[1:], strict=False))


# --- products/getAll -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ServiceIds": None}, "ServiceIds"),
        ({"ServiceIds": [f"id-{i}" for i in range(1001)]}, "1000"),
        ({"ProductIds": [f"id-{i}" for i in range(1001)]}, "1000"),
        ({"IncludeDefault": "yes"}, "IncludeDefault"),
        (
            {"UpdatedUtc": {"StartUtc": "2025-01-01T00:00:00Z", "EndUtc": "2025-04-01T00:00:01Z"}},
            "3 months",
        ),
    ],
)
def test_products_get_all_rejects_invalid_requests(
    sb: Sandbox, mews_call: Any, fields: dict[str, Any], message: str
) -> None:
    request = {"ServiceIds": product_service_ids(sb), "Limitation": {"Count": 10}, **fields}
    response = mews_call(sb, PRODUCTS, **{k: v for k, v in request.items() if v is not None})
    assert response.status_code == 400, response.text
    assert message in response.json()["Message"]


def test_products_pages_default_products_filters_and_scope(sb: Sandbox, mews_call: Any) -> None:
    services = product_service_ids(sb)
    truth = sb.products()
    defaults = {p["Id"] for p in truth if p["Names"]["en-US"] == "Service fee"}
    assert len(defaults) == len(services)

    def ids(**fields: Any) -> list[str]:
        fields.setdefault("ServiceIds", services)
        pages = all_pages(mews_call, sb, PRODUCTS, "Products", 7, **fields)
        return [p["Id"] for p in flat(pages)]

    plain = newest_first(truth, lambda p: p["Id"] not in defaults)
    assert ids() == plain  # no default products unless asked for
    assert ids(IncludeDefault=True) == newest_first(truth)
    body = mews_call(sb, PRODUCTS, ServiceIds=services, Limitation={"Count": 3}).json()
    assert body["CustomerProducts"] == [] and body["Cursor"] == body["Products"][-1]["Id"]
    assert body["Products"] == [p for p in reversed(truth) if p["Id"] not in defaults][:3]
    wanted = [*defaults][:2] + plain[:3]
    assert set(ids(ProductIds=wanted)) == set(wanted)  # with ProductIds, defaults by default
    assert set(ids(ProductIds=wanted, IncludeDefault=False)) == set(plain[:3])
    one = services[0]
    assert ids(ServiceIds=[one]) == newest_first(
        truth, lambda p: p["ServiceId"] == one and p["Id"] not in defaults
    )
    start, end = utc(truth[10]["UpdatedUtc"]), utc(truth[10]["UpdatedUtc"]) + timedelta(days=80)
    assert ids(IncludeDefault=True, UpdatedUtc=window(start, end)) == newest_first(
        truth, in_window("UpdatedUtc", start, end)
    )
    enterprise_of = {s["Id"]: s["EnterpriseId"] for s in sb.services()}
    first = sb.enterprises()[0]["Id"]
    of_first = newest_first(
        truth, lambda p: enterprise_of[p["ServiceId"]] == first and p["Id"] not in defaults
    )
    assert ids(EnterpriseIds=[first]) == of_first
    assert ids(AccessToken=DEMO_ACCESS_TOKEN) == of_first  # the demo token sees one enterprise


# --- orderItems/getAll: validation -----------------------------------------------------------

TOO_LONG = {"StartUtc": "2025-01-01T00:00:00Z", "EndUtc": "2025-04-01T00:00:01Z"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "At least one of"),
        ({"ServiceIds": []}, "At least one of"),  # an empty list is no filter
        ({"EnterpriseIds": ["x"], "AccountingStates": ["Open"], "Types": ["x"]}, "At least one"),
        *[
            ({name: [f"id-{i}" for i in range(1001)]}, "at most 1000")
            for name in ("OrderItemIds", "ServiceOrderIds", "ServiceIds", "BillIds")
        ],
        ({"AccountIds": [f"id-{i}" for i in range(101)]}, "at most 100"),
        *[
            ({name: TOO_LONG}, f"{name} interval must not be longer than 3 months")
            for name in ("CreatedUtc", "UpdatedUtc", "ConsumedUtc", "CanceledUtc", "ClosedUtc")
        ],
        ({"ServiceIds": ["x"], "Currency": "EUR"}, "Currency"),
        ({"ServiceIds": ["x"], "Types": [1]}, "Types"),
        ({"ServiceIds": ["x"], "Limitation": {"Count": 1001}}, "Count"),
        ({"ServiceIds": ["x"], "Limitation": None}, "Limitation"),
    ],
)
def test_order_items_reject_invalid_requests(
    sb: Sandbox, mews_call: Any, fields: dict[str, Any], message: str
) -> None:
    request = {k: v for k, v in {"Limitation": {"Count": 10}, **fields}.items() if v is not None}
    response = mews_call(sb, ITEMS, **request)
    assert response.status_code == 400, response.text
    assert message in response.json()["Message"]


@pytest.mark.parametrize(
    "name",
    ["OrderItemIds", "ServiceOrderIds", "ServiceIds", "BillIds", "AccountIds"]
    + ["CreatedUtc", "UpdatedUtc", "ConsumedUtc", "CanceledUtc", "ClosedUtc"],
)
def test_any_one_filter_is_enough(sb: Sandbox, mews_call: Any, name: str) -> None:
    value = QUARTER if name.endswith("Utc") else [sb.order_items()[0]["Id"]]
    response = mews_call(sb, ITEMS, Limitation={"Count": 10}, **{name: value})
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"OrderItems", "Cursor"}


def test_an_unknown_cursor_is_400(sb: Sandbox, mews_call: Any) -> None:
    order_id = sb.orders()[0]["Id"]
    response = mews_call(
        sb, ITEMS, ServiceIds=product_service_ids(sb), Limitation={"Count": 5, "Cursor": order_id}
    )
    assert response.status_code == 400 and response.json()["Message"] == "Invalid Cursor."


# --- orderItems/getAll: pages, filters, intervals, scopes ------------------------------------


def test_pages_run_newest_to_oldest_by_creation_and_equal_the_truth(
    sb: Sandbox, mews_call: Any
) -> None:
    services = product_service_ids(sb)
    start, end = datetime(2025, 4, 1, tzinfo=UTC), datetime(2025, 7, 1, tzinfo=UTC)
    pages = all_pages(
        mews_call, sb, ITEMS, "OrderItems", 37, ServiceIds=services, UpdatedUtc=window(start, end)
    )
    truth = [i for i in sb.order_items() if start <= utc(i["UpdatedUtc"]) < end]
    assert len(truth) > 100 and all(len(p) == 37 for p in pages[:-2])
    assert flat(pages) == list(reversed(truth))  # in creation order, and the same content


def test_short_pages_lose_nothing_and_paging_goes_on_while_items_change(mews_call: Any) -> None:
    sb = changing(orders=600)
    services = product_service_ids(sb)
    truth = newest_first(sb.order_items())
    sb.config.short_pages = 0.5
    pages = all_pages(mews_call, sb, ITEMS, "OrderItems", 40, ServiceIds=services)
    assert [i["Id"] for i in flat(pages)] == truth
    assert any(len(p) < 40 for p in pages[:-2])
    sb.config.short_pages = 0.0
    first = mews_call(sb, ITEMS, ServiceIds=services, Limitation={"Count": 10}).json()
    cursor_item = next(i for i in sb.order_items() if i["Id"] == first["Cursor"])
    if cursor_item["AccountingState"] in ("Open", "Inactive"):
        sb.cancel_item(first["Cursor"])  # the cursor item changes meanwhile
    newest = sb.add_order(services[0])  # and a new order brings a new item
    second = mews_call(
        sb, ITEMS, ServiceIds=services, Limitation={"Count": 10, "Cursor": first["Cursor"]}
    ).json()
    assert [i["Id"] for i in second["OrderItems"]] == truth[10:20]
    top = mews_call(sb, ITEMS, ServiceIds=services, Limitation={"Count": 1}).json()
    assert top["OrderItems"][0]["ServiceOrderId"] == newest


def test_order_items_filters(sb: Sandbox, mews_call: Any) -> None:
    items = sb.order_items()
    start, end = datetime(2024, 7, 1, tzinfo=UTC), datetime(2024, 10, 1, tzinfo=UTC)
    quarter = in_window("UpdatedUtc", start, end)

    def check(keep: Any, **fields: Any) -> None:
        expected = newest_first(items, keep)
        assert expected, fields
        assert item_ids(mews_call, sb, **fields) == expected, fields

    sample = items[::97]
    check(lambda i: i in sample, OrderItemIds=[i["Id"] for i in sample] + ["not-an-item"])
    orders = {i["ServiceOrderId"] for i in sample}
    check(lambda i: i["ServiceOrderId"] in orders, ServiceOrderIds=sorted(orders))
    one = product_service_ids(sb)[2]
    check(lambda i: i["ServiceId"] == one, ServiceIds=[one])
    bills = {i["BillId"] for i in sample if i["BillId"]}
    check(lambda i: i["BillId"] in bills, BillIds=sorted(bills))
    accounts = sorted({i["AccountId"] for i in sample})[:50]
    check(lambda i: i["AccountId"] in accounts, AccountIds=accounts)
    for name in ("CreatedUtc", "UpdatedUtc", "ConsumedUtc", "CanceledUtc", "ClosedUtc"):
        check(in_window(name, start, end), **{name: window(start, end)})
    services = product_service_ids(sb)
    for state in ("Open", "Closed", "Inactive", "Canceled"):
        check(
            lambda i, s=state: quarter(i) and i["AccountingState"] == s,
            ServiceIds=services,
            UpdatedUtc=window(start, end),
            AccountingStates=[state],
        )
    check(
        lambda i: quarter(i) and i["Type"] == "ProductOrderRebate",
        ServiceIds=services,
        UpdatedUtc=window(start, end),
        Types=["ProductOrderRebate"],
    )
    closed = in_window("ClosedUtc", start, end)
    some = set(sorted(orders | {i["ServiceOrderId"] for i in items if closed(i)})[:1000])
    check(  # filters combine: these orders' items that were closed in the quarter
        lambda i: i["ServiceOrderId"] in some and closed(i),
        ServiceOrderIds=sorted(some),
        ClosedUtc=window(start, end),
    )
    bookable = [s["Id"] for s in sb.services() if s["Data"]["Discriminator"] == "Bookable"]
    assert item_ids(mews_call, sb, ServiceIds=bookable) == []


def test_portfolio_tokens_and_enterprise_ids(sb: Sandbox, mews_call: Any) -> None:
    items = sb.order_items()
    first, second, _ = (e["Id"] for e in sb.enterprises())
    services = product_service_ids(sb)

    def of(*enterprises: str) -> list[str]:
        return newest_first(items, lambda i: i["EnterpriseId"] in enterprises)

    request = {"ServiceIds": services}
    assert item_ids(mews_call, sb, **request) == newest_first(items)
    assert item_ids(mews_call, sb, **request, EnterpriseIds=[second]) == of(second)
    sb.add_token("ITEMS-FIRST", [first])
    sb.add_token("ITEMS-TWO", [first, second])
    assert item_ids(mews_call, sb, **request, AccessToken="ITEMS-FIRST") == of(first)
    assert (
        item_ids(mews_call, sb, **request, AccessToken="ITEMS-FIRST", EnterpriseIds=[second]) == []
    )
    assert item_ids(mews_call, sb, **request, AccessToken="ITEMS-TWO") == of(first, second)
    assert item_ids(mews_call, sb, **request, AccessToken=DEMO_ACCESS_TOKEN) == of(first)
    foreign = of(second)[:5]  # ids a token cannot see do not exist for it
    assert item_ids(mews_call, sb, OrderItemIds=foreign, AccessToken="ITEMS-FIRST") == []


@pytest.mark.parametrize("semantics", ["half_open", "inclusive"])
def test_window_edges_of_item_updates(semantics: str, mews_call: Any) -> None:
    sb = changing()
    sb.config.interval_semantics = semantics  # type: ignore[assignment]
    edge = datetime(2026, 1, 1, tzinfo=UTC)
    open_items = [i["Id"] for i in sb.order_items() if i["AccountingState"] == "Open"][:5]
    sb.close_bill(open_items, at=edge)  # a batch at midnight: several items on the edge
    services = product_service_ids(sb)

    def ids(start: datetime, end: datetime) -> set[str]:
        return set(item_ids(mews_call, sb, ServiceIds=services, UpdatedUtc=window(start, end)))

    before, after = ids(edge - timedelta(days=30), edge), ids(edge, edge + timedelta(days=30))
    assert set(open_items) <= after
    assert (set(open_items) <= before) == (semantics == "inclusive")
    assert ids(edge, edge) == set(open_items)  # Start == End: that instant, either way


@pytest.mark.parametrize(
    ("limit", "days", "allowed"),
    [("calendar", 92, True), ("days90", 92, False), ("days90", 90, True), ("strict", 90, True)],
)
def test_every_reading_of_three_months_applies(
    sb: Sandbox, mews_call: Any, limit: str, days: int, allowed: bool
) -> None:
    start = datetime(2025, 3, 1, tzinfo=UTC)  # 2025-06-01 is 92 days on: 3 calendar months
    interval = window(start, start + timedelta(days=days))
    try:
        sb.config.interval_limit = limit  # type: ignore[assignment]
        for name in ("UpdatedUtc", "ClosedUtc"):
            response = mews_call(sb, ITEMS, Limitation={"Count": 5}, **{name: interval})
            assert response.status_code == (200 if allowed else 400), (limit, name)
        services = product_service_ids(sb)
        response = mews_call(
            sb, PRODUCTS, ServiceIds=services, Limitation={"Count": 5}, UpdatedUtc=interval
        )
        assert response.status_code == (200 if allowed else 400)
    finally:
        sb.config.interval_limit = "calendar"  # sb is shared by the module


# --- changes ---------------------------------------------------------------------------------


def get_items(call: Any, sb: Sandbox, **fields: Any) -> list[dict[str, Any]]:
    return flat(all_pages(call, sb, ITEMS, "OrderItems", 1000, **fields))


def order_updated(call: Any, sb: Sandbox, order_id: str) -> str:
    body = call(
        sb,
        ORDERS,
        ServiceIds=product_service_ids(sb),
        ProductServiceOrderIds=[order_id],
        Limitation={"Count": 1},
    ).json()
    return body["ProductServiceOrders"][0]["UpdatedUtc"]


def pick(sb: Sandbox, state: str, n: int = 1) -> list[dict[str, Any]]:
    return [
        i for i in sb.order_items() if i["AccountingState"] == state and i["Type"] == "ProductOrder"
    ][:n]


def test_item_changes_leave_orders_alone_by_default() -> None:
    assert SandboxConfig().items_bump_order is False
    assert SandboxConfig().notes_bump_order is True


@pytest.mark.parametrize("bump", [False, True])
def test_each_item_change_moves_the_item_to_its_new_updated_utc(mews_call: Any, bump: bool) -> None:
    sb = changing()
    sb.config.items_bump_order = bump
    services = product_service_ids(sb)
    around = window(LATER - timedelta(days=1), LATER + timedelta(days=1))
    assert get_items(mews_call, sb, ServiceIds=services, UpdatedUtc=around) == []
    to_close = pick(sb, "Open", 2)
    to_cancel, to_reprice = pick(sb, "Open", 4)[2:]
    to_rebate = pick(sb, "Closed")[0]
    before = {o["Id"]: o["UpdatedUtc"] for o in sb.orders()}

    bill_id = sb.close_bill([i["Id"] for i in to_close])
    sb.cancel_item(to_cancel["Id"])
    rebate_id = sb.rebate_item(to_rebate["Id"])
    sb.reprice_item(to_reprice["Id"], 12.5)

    changed = {i["Id"]: i for i in get_items(mews_call, sb, ServiceIds=services, UpdatedUtc=around)}
    expected = {i["Id"] for i in (*to_close, to_cancel, to_reprice)} | {rebate_id}
    assert set(changed) == expected  # the rebated item itself does not change
    assert all(i["UpdatedUtc"] == iso(LATER) for i in changed.values())
    for item in to_close:
        closed = changed[item["Id"]]
        assert closed["AccountingState"] == "Closed" and closed["BillId"] == bill_id
        assert closed["ClosedUtc"] == iso(LATER)
    canceled = changed[to_cancel["Id"]]
    assert canceled["AccountingState"] == "Canceled" and canceled["CanceledUtc"] == iso(LATER)
    rebate = changed[rebate_id]
    assert rebate["Type"] == "ProductOrderRebate" and rebate["AccountingState"] == "Open"
    assert rebate["Data"]["Rebate"] == {
        "ProductId": to_rebate["Data"]["Product"]["ProductId"],
        "RebatedItemId": to_rebate["Id"],
    }
    assert rebate["ServiceOrderId"] == to_rebate["ServiceOrderId"]
    assert dec(rebate["Amount"]["GrossValue"]) == -dec(to_rebate["Amount"]["GrossValue"])
    assert dec(rebate["Amount"]["NetValue"]) == -dec(to_rebate["Amount"]["NetValue"])
    repriced = changed[to_reprice["Id"]]
    pricing = {e["Id"]: e["Pricing"] for e in sb.enterprises()}[repriced["EnterpriseId"]]
    value = "GrossValue" if pricing == "Gross" else "NetValue"
    assert repriced["UnitAmount"][value] == 12.5
    assert dec(repriced["Amount"][value]) == dec(12.5) * repriced["UnitCount"]

    touched = {i["ServiceOrderId"] for i in changed.values()}
    for order_id, updated in before.items():
        now = order_updated(mews_call, sb, order_id)
        assert now == (iso(LATER) if bump and order_id in touched else updated)


def test_item_changes_refuse_what_mews_would_not_do() -> None:
    sb = changing()
    closed, canceled = pick(sb, "Closed")[0]["Id"], pick(sb, "Canceled")[0]["Id"]
    with pytest.raises(ValueError, match="Closed"):
        sb.cancel_item(closed)  # a closed item is rebated, not canceled
    with pytest.raises(ValueError, match="Closed"):
        sb.reprice_item(closed, 10.0)
    with pytest.raises(ValueError, match="Canceled"):
        sb.close_bill([canceled])
    rebate = sb.rebate_item(closed)
    with pytest.raises(ValueError, match="no product order"):
        sb.rebate_item(rebate)
    with pytest.raises(KeyError):
        sb.cancel_item("no-such-item")


# --- orders/add and add_order make items -----------------------------------------------------


def additional_service(sb: Sandbox) -> tuple[dict[str, Any], dict[str, Any]]:
    """An active Additional service and its enterprise."""
    service = next(
        s for s in sb.services() if s["Data"]["Discriminator"] == "Additional" and s["IsActive"]
    )
    enterprise = next(e for e in sb.enterprises() if e["Id"] == service["EnterpriseId"])
    return service, enterprise


def test_orders_add_creates_the_items_it_names(mews_call: Any) -> None:
    sb = changing()
    service, enterprise = additional_service(sb)
    first, second, *_ = (p for p in sb.products() if p["ServiceId"] == service["Id"])
    currency, code = first["Price"]["Currency"], first["Price"]["TaxValues"][0]["Code"]
    value = "GrossValue" if enterprise["Pricing"] == "Gross" else "NetValue"
    response = mews_call(
        sb,
        "orders/add",
        EnterpriseId=enterprise["Id"],
        ServiceId=service["Id"],
        AccountId="407a26f8-dcfc-4e29-b978-ab440117a153",
        ConsumptionUtc="2026-01-20T00:00:00Z",
        BillId="22b68915-05fe-4a31-b1cb-bd5efa35d305",
        ProductOrders=[
            {"ProductId": first["Id"], "Count": 2},
            {
                "ProductId": second["Id"],
                "UnitAmount": {"Currency": currency, value: 3.5, "TaxCodes": [code]},
            },
        ],
        Items=[
            {
                "Name": "Beer",
                "UnitCount": 3,
                "UnitAmount": {"Currency": currency, value: 5.9, "TaxCodes": [code]},
            }
        ],
    )
    assert response.status_code == 200, response.text
    order_id = response.json()["OrderId"]
    items = get_items(mews_call, sb, ServiceOrderIds=[order_id])[::-1]
    assert [i["Type"] for i in items] == ["ProductOrder", "ProductOrder", "CustomItem"]
    assert [i["UnitCount"] for i in items] == [2, 1, 3]
    assert items[0]["UnitAmount"] == first["Price"]  # the product's price unless overridden
    assert items[1]["UnitAmount"][value] == 3.5 and items[2]["UnitAmount"][value] == 5.9
    assert dec(items[2]["Amount"][value]) == dec("17.7")
    assert items[2]["Data"] is None and items[2]["BillingName"] == "Beer"
    assert items[2]["RevenueType"] == "Additional" and items[0]["RevenueType"] == "Product"
    for item in items:
        assert (
            item["AccountingState"] == "Open"
            and item["BillId"] == "22b68915-05fe-4a31-b1cb-bd5efa35d305"
        )
        assert item["CreatedUtc"] == item["UpdatedUtc"] == iso(LATER)
        assert item["ConsumedUtc"] == "2026-01-20T00:00:00Z"
        assert item["AccountId"] == "407a26f8-dcfc-4e29-b978-ab440117a153"
    assert order_updated(mews_call, sb, order_id) == iso(LATER)


@pytest.mark.parametrize(
    ("product_order", "message"),
    [
        ({"ProductId": "2eb7ad8b-8dfb-4381-aba5-ab58009f2993"}, "not a product of service"),
        ({"ProductId": "OTHER"}, "not a product of service"),
        ({"ProductId": "FIRST", "Count": 0}, "Count"),
        ({"ProductId": "FIRST", "UnitAmount": {"Currency": "XXX"}}, "Currency"),
        ({"ProductId": "FIRST", "UnitAmount": {"Currency": "CUR", "TaxCodes": ["X"]}}, "TaxCodes"),
        ({"ProductId": "FIRST", "UnitAmount": {"Currency": "CUR", "TaxCodes": ["CODE"]}}, "Value"),
    ],
)
def test_orders_add_refuses_items_mews_would_refuse(
    mews_call: Any, product_order: dict[str, Any], message: str
) -> None:
    sb = changing()
    service, enterprise = additional_service(sb)
    mine = next(p for p in sb.products() if p["ServiceId"] == service["Id"])
    other = next(p for p in sb.products() if p["ServiceId"] != service["Id"])
    names = {
        "FIRST": mine["Id"],
        "OTHER": other["Id"],
        "CUR": mine["Price"]["Currency"],
        "CODE": mine["Price"]["TaxValues"][0]["Code"],
    }

    def fill(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return names.get(value, value)

    count = len(sb.orders())
    response = mews_call(
        sb,
        "orders/add",
        EnterpriseId=enterprise["Id"],
        ServiceId=service["Id"],
        AccountId="407a26f8-dcfc-4e29-b978-ab440117a153",
        ProductOrders=[fill(product_order)],
    )
    assert response.status_code == 400, response.text
    assert message in response.json()["Message"]
    assert len(sb.orders()) == count  # nothing was added


def test_python_add_order_makes_items_too() -> None:
    sb = changing()
    service, _ = additional_service(sb)
    products = [p for p in sb.products() if p["ServiceId"] == service["Id"]]
    before = len(sb.order_items())
    drawn = sb.add_order(service["Id"])
    [item] = [i for i in sb.order_items() if i["ServiceOrderId"] == drawn]
    assert item["Data"]["Product"]["ProductId"] in {p["Id"] for p in products}
    assert item["UnitCount"] == 1 and item["CreatedUtc"] == iso(LATER)
    named = sb.add_order(
        service["Id"], product_orders=[{"ProductId": products[1]["Id"], "Count": 3}]
    )
    [item] = [i for i in sb.order_items() if i["ServiceOrderId"] == named]
    assert item["UnitCount"] == 3 and item["UnitAmount"] == products[1]["Price"]
    empty = sb.add_order(service["Id"], product_orders=[])
    assert not [i for i in sb.order_items() if i["ServiceOrderId"] == empty]
    assert len(sb.order_items()) == before + 2
    with pytest.raises(ValueError, match="not a product"):
        sb.add_order(service["Id"], product_orders=[{"ProductId": "nope"}])
