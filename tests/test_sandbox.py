"""The sandbox's data and its read operations: validation, filters, intervals, pagination."""

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from mews_sandbox import (
    DEMO_ACCESS_TOKEN,
    DEMO_CLIENT_TOKEN,
    DEMO_PORTFOLIO_ACCESS_TOKEN,
    Sandbox,
    SandboxConfig,
    SandboxTransport,
)

NOW = datetime(2026, 1, 15, 12, tzinfo=UTC)
ORDERS = "productServiceOrders/getAll"
NOTES = "serviceOrderNotes/getAll"
SERVICES = "services/getAll"
ENTERPRISES = "enterprises/getAll"
KNOWN_STATES = {
    "Inquired",
    "Enquired",
    "Confirmed",
    "Started",
    "Processed",
    "Canceled",
    "Optional",
    "Requested",
}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text)


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def window(start: datetime, end: datetime) -> dict[str, str]:
    return {"StartUtc": iso(start), "EndUtc": iso(end)}


def product_service_ids(sb: Sandbox) -> list[str]:
    return [s["Id"] for s in sb.services() if s["Data"]["Discriminator"] == "Additional"]


def all_pages(
    call: Any, sb: Sandbox, operation: str, key: str, count: int, **fields: Any
) -> list[list[dict[str, Any]]]:
    """Every page, down to the first empty one (whose Cursor must be null)."""
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    for _ in range(10_000):
        limitation = {"Count": count} if cursor is None else {"Count": count, "Cursor": cursor}
        response = call(sb, operation, Limitation=limitation, **fields)
        assert response.status_code == 200, response.text
        body = response.json()
        items = body[key]
        assert len(items) <= count
        pages.append(items)
        if not items:
            assert body["Cursor"] is None
            return pages
        assert body["Cursor"] == items[-1]["Id"]
        cursor = body["Cursor"]
    raise AssertionError("pagination does not end")


def flat(pages: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [item for page in pages for item in page]


@pytest.fixture(scope="module")
def sb() -> Sandbox:
    """Read-only: tests that change data or settings build their own."""
    return Sandbox.generate(orders=3000, seed=5, now=NOW)


@pytest.fixture(scope="module")
def big() -> Sandbox:
    return Sandbox.generate(orders=5000, seed=2, now=NOW)


# --- data ----------------------------------------------------------------------------------


def test_same_seed_and_size_give_identical_data() -> None:
    first = Sandbox.generate(orders=400, seed=9, now=NOW)
    second = Sandbox.generate(orders=400, seed=9, now=NOW)
    assert first.orders() == second.orders()
    assert first.notes() == second.notes()
    assert first.services() == second.services()
    assert first.enterprises() == second.enterprises()
    other = Sandbox.generate(orders=400, seed=10, now=NOW)
    assert {o["Id"] for o in other.orders()}.isdisjoint(o["Id"] for o in first.orders())


def test_generated_orders_are_plausible(sb: Sandbox) -> None:
    orders = sb.orders()
    assert len(orders) == 3000
    assert len({o["Id"] for o in orders}) == 3000
    assert len({o["Number"] for o in orders}) == 3000
    additional = set(product_service_ids(sb))
    start = NOW - timedelta(days=4 * 365 + 60)
    for order in orders:
        assert order["ServiceId"] in additional
        assert start <= utc(order["CreatedUtc"]) <= utc(order["UpdatedUtc"]) <= NOW
        assert order["State"] in KNOWN_STATES
        assert (order["CancelledUtc"] is not None) == (order["State"] == "Canceled")
        assert set(order["Options"]) == {
            "OwnerCheckedIn",
            "AllCompanionsCheckedIn",
            "AnyCompanionCheckedIn",
            "ConnectorCheckIn",
        }
        assert order["UpdatedUtc"].endswith("Z") and len(order["UpdatedUtc"]) == 20
    states = Counter(o["State"] for o in orders)
    assert states["Enquired"] == 0 and states["Inquired"] > 0 and states["Processed"] > 500
    origins = Counter(o["CommanderOrigin"] for o in orders)
    assert origins["RoomingList"] > 0
    for name in (
        "BookerId",
        "LinkedReservationId",
        "VoucherId",
        "BusinessSegmentId",
        "CommanderOrigin",
        "OriginDetails",
    ):
        assert any(o[name] for o in orders) and any(o[name] is None for o in orders), name
    assert {o["AccountType"] for o in orders} == {"Customer", "Company"}


def test_legacy_values_mix_the_older_spelling_and_drop_new_values() -> None:
    current = Sandbox.generate(orders=3000, seed=5, now=NOW).orders()
    legacy = Sandbox.generate(
        orders=3000, seed=5, now=NOW, config=SandboxConfig(legacy_values=True)
    ).orders()
    states = Counter(o["State"] for o in legacy)
    assert states["Enquired"] > 0 and states["Inquired"] > 0
    assert "RoomingList" not in {o["CommanderOrigin"] for o in legacy}
    assert [o["Id"] for o in legacy] == [o["Id"] for o in current]  # the same draws
    for old, new in zip(legacy, current, strict=True):
        if old["State"] != new["State"]:
            assert (old["State"], new["State"]) == ("Enquired", "Inquired")


def test_some_notes_have_no_text_unless_switched_off() -> None:
    notes = Sandbox.generate(orders=3000, seed=5, now=NOW).notes()
    assert 0.005 < sum(n["Text"] is None for n in notes) / len(notes) < 0.05
    config = SandboxConfig(null_note_text=0.0)
    texts = Sandbox.generate(orders=3000, seed=5, now=NOW, config=config).notes()
    assert all(n["Text"] for n in texts)
    assert [n["Id"] for n in texts] == [n["Id"] for n in notes]  # only Text changed


def test_the_newest_page_has_whole_columns_of_nulls(sb: Sandbox) -> None:
    newest = sb.orders()[-1000:]
    for name in ("BookerId", "CancelledUtc", "LinkedReservationId"):
        assert all(o[name] is None for o in newest), name


def test_identical_updated_utc_clusters_sit_on_month_and_quarter_starts(sb: Sandbox) -> None:
    stamps = Counter(o["UpdatedUtc"] for o in sb.orders())
    clusters = {t: n for t, n in stamps.items() if n >= 3}
    assert clusters
    for stamp in clusters:
        assert utc(stamp).day == 1 and stamp.endswith("T00:00:00Z")
    assert any(utc(t).month in (1, 4, 7, 10) for t in clusters)
    assert 0.01 < sum(clusters.values()) / 3000 < 0.06


def test_notes_average_about_one_and_a_half_per_order(sb: Sandbox) -> None:
    notes = sb.notes()
    assert 1.2 < len(notes) / 3000 < 1.9
    types = Counter(n["Type"] for n in notes)
    assert types["General"] > types["ChannelManager"] > types["SpecialRequest"] > 0
    per_order = Counter(n["OrderId"] for n in notes)
    assert max(per_order.values()) < 1000  # only large data sets have huge note lists
    orders = {o["Id"]: o for o in sb.orders()}
    for note in notes:
        assert note["CreatedUtc"] <= note["UpdatedUtc"] <= orders[note["OrderId"]]["UpdatedUtc"]
    assert sb.notes(types=["SpecialRequest"]) == [n for n in notes if n["Type"] == "SpecialRequest"]


def test_large_data_sets_have_orders_with_more_than_1000_notes(big: Sandbox) -> None:
    per_order = Counter(n["OrderId"] for n in big.notes())
    assert 2 <= sum(1 for n in per_order.values() if n > 1000) <= 3


def test_a_new_sandbox_has_services_but_no_orders() -> None:
    sb = Sandbox()
    assert sb.orders() == [] and sb.notes() == []
    assert len(sb.enterprises()) == 3
    kinds = Counter(s["Data"]["Discriminator"] for s in sb.services())
    assert kinds["Bookable"] == 3 and kinds["Additional"] >= 6
    assert any(not s["IsActive"] for s in sb.services())


# --- transport-level rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/connector/v1/productserviceorders/getAll",
        "/api/connector/v1/productServiceOrders/getAll/",
        "/api/connector/v1/productServiceOrders/getall",
        "/api/connector/v2/productServiceOrders/getAll",
        "/api/connector/v1/reservations/getAll",
        "/productServiceOrders/getAll",
        "/",
    ],
)
def test_wrong_paths_are_404_with_a_json_message(sb: Sandbox, mews_call: Any, path: str) -> None:
    sb.log.clear()
    response = mews_call(sb, "", _path=path, Limitation={"Count": 1})
    assert response.status_code == 404
    assert response.json()["Message"]
    assert response.json()["RequestId"] == response.headers["Request-Id"]
    assert sb.log.entries[-1].operation == path and sb.log.entries[-1].status == 404


def test_operations_take_post_only(sb: Sandbox) -> None:
    with httpx.Client(transport=SandboxTransport(sb), base_url="http://sandbox") as client:
        response = client.get("/api/connector/v1/services/getAll")
        assert response.status_code == 405 and response.headers["Allow"] == "POST"
        assert response.headers["Request-Id"]
        assert client.get("/api/connector/v1/nothing/here").status_code == 404


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"not json", b'{"a": 1', "\xff".encode("latin-1"), b"[1, 2]", b'"text"']
)
def test_a_body_that_is_not_a_json_object_is_400(sb: Sandbox, mews_call: Any, raw: bytes) -> None:
    response = mews_call(sb, SERVICES, _raw=raw)
    assert response.status_code == 400
    assert response.json()["Message"] and response.headers["Request-Id"]


@pytest.mark.parametrize(
    ("missing", "changes", "status"),
    [
        ("ClientToken", {}, 401),
        ("", {"ClientToken": "nope"}, 401),
        ("AccessToken", {}, 401),
        ("", {"AccessToken": "nope"}, 401),
        ("", {"AccessToken": ["a", "list"]}, 401),
        ("Client", {}, 400),
        ("", {"Client": ""}, 400),
        # One without the other: "default values will be used" (requests.md), not a 400.
        ("", {"LanguageCode": "en-US"}, 200),
        ("", {"CultureCode": "en-US"}, 200),
        ("", {"LanguageCode": "en-US", "CultureCode": "en-US"}, 200),
        ("", {"SomethingNew": {"x": 1}, "MaskedAccessToken": "ab…"}, 200),  # ignored
    ],
)
def test_tokens_client_and_language(
    sb: Sandbox, mews_call: Any, missing: str, changes: dict[str, Any], status: int
) -> None:
    body = {
        "ClientToken": DEMO_CLIENT_TOKEN,
        "AccessToken": DEMO_ACCESS_TOKEN,
        "Client": "sandbox-tests 1.0",
        "Limitation": {"Count": 5},
        **changes,
    }
    body.pop(missing, None)
    response = mews_call(sb, SERVICES, _raw=json.dumps(body).encode())
    assert response.status_code == status, response.text
    if status != 200:
        assert response.json()["Message"]
        assert response.json()["RequestId"] == response.headers["Request-Id"]


# --- validation ------------------------------------------------------------------------------


def _orders_request(sb: Sandbox) -> dict[str, Any]:
    return {
        "ServiceIds": product_service_ids(sb),
        "Limitation": {"Count": 10},
        "UpdatedUtc": {"StartUtc": "2025-01-01T00:00:00Z", "EndUtc": "2025-03-01T00:00:00Z"},
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"Limitation": None}, "Limitation"),
        ({"Limitation": {}}, "Count"),
        ({"Limitation": {"Count": 0}}, "Count"),
        ({"Limitation": {"Count": 1001}}, "Count"),
        ({"Limitation": {"Count": "10"}}, "Count"),
        ({"Limitation": {"Count": 10.5}}, "Count"),
        ({"Limitation": {"Count": True}}, "Count"),
        ({"Limitation": {"Count": 10, "Cursor": "4f8b1f4e-0000-4000-8000-000000000000"}}, "Cursor"),
        ({"Limitation": {"Count": 10, "Cursor": 5}}, "Cursor"),
        ({"ServiceIds": None}, "ServiceIds"),
        ({"ServiceIds": []}, "ServiceIds"),
        ({"ServiceIds": "one-id"}, "ServiceIds"),
        ({"ServiceIds": [f"id-{i}" for i in range(1001)]}, "1000"),
        ({"ProductServiceOrderIds": [f"id-{i}" for i in range(1001)]}, "1000"),
        ({"EnterpriseIds": [f"id-{i}" for i in range(1001)]}, "1000"),
        ({"AccountIds": [f"id-{i}" for i in range(1001)]}, "1000"),
        ({"LinkedReservationIds": [f"id-{i}" for i in range(1001)]}, "1000"),
        ({"States": [1, 2]}, "States"),
        ({"UpdatedUtc": {"StartUtc": "2025-01-01T00:00:00Z"}}, "EndUtc"),
        ({"UpdatedUtc": {"EndUtc": "2025-01-01T00:00:00Z"}}, "StartUtc"),
        ({"UpdatedUtc": "2025-01-01T00:00:00Z"}, "UpdatedUtc"),
        ({"UpdatedUtc": {"StartUtc": "yesterday", "EndUtc": "2025-01-01T00:00:00Z"}}, "ISO 8601"),
        (
            {"UpdatedUtc": {"StartUtc": "2025-01-01T00:00:00", "EndUtc": "2025-01-02T00:00:00"}},
            "UTC",
        ),
        (
            {
                "UpdatedUtc": {
                    "StartUtc": "2025-01-01T00:00:00+02:00",
                    "EndUtc": "2025-01-02T00:00:00+02:00",
                }
            },
            "UTC",
        ),
        (
            {"UpdatedUtc": {"StartUtc": "2025-02-01T00:00:00Z", "EndUtc": "2025-01-01T00:00:00Z"}},
            "StartUtc",
        ),
        (
            {"UpdatedUtc": {"StartUtc": "2025-01-01T00:00:00Z", "EndUtc": "2025-04-01T00:00:01Z"}},
            "3 months",
        ),
        (
            {"UpdatedUtc": {"StartUtc": "2023-01-31T00:00:00Z", "EndUtc": "2023-05-01T00:00:00Z"}},
            "3 months",
        ),
    ],
)
def test_orders_get_all_rejects_invalid_requests(
    sb: Sandbox, mews_call: Any, changes: dict[str, Any], message: str
) -> None:
    fields = {k: v for k, v in {**_orders_request(sb), **changes}.items() if v is not None}
    response = mews_call(sb, ORDERS, **fields)
    assert response.status_code == 400, response.text
    assert message in response.json()["Message"]
    assert response.json()["RequestId"] == response.headers["Request-Id"]


@pytest.mark.parametrize(
    "interval",
    [
        {"StartUtc": "2025-01-01T00:00:00Z", "EndUtc": "2025-04-01T00:00:00Z"},  # exactly 3 months
        {"StartUtc": "2023-01-31T00:00:00Z", "EndUtc": "2023-04-30T00:00:00Z"},  # day clamped
        {"StartUtc": "2025-01-01T00:00:00.5Z", "EndUtc": "2025-01-01T00:00:00.5Z"},
        {"StartUtc": "2025-01-01T00:00:00+00:00", "EndUtc": "2025-01-02T00:00:00.1234567Z"},
    ],
)
def test_orders_get_all_accepts_intervals_up_to_three_calendar_months(
    sb: Sandbox, mews_call: Any, interval: dict[str, str]
) -> None:
    response = mews_call(sb, ORDERS, **{**_orders_request(sb), "UpdatedUtc": interval})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("start", "end", "calendar", "strict", "days90"),
    [
        ("2025-01-01", "2025-04-01T00:00:00", True, False, True),  # 3 months, 90 days
        ("2025-03-01", "2025-06-01T00:00:00", True, False, False),  # 3 months, 92 days
        ("2023-01-31", "2023-04-30T00:00:00", True, False, True),  # day clamped; 89 days
        ("2025-11-01", "2026-01-31T00:00:00", True, True, False),  # under 3 months, 91 days
        ("2025-02-01", "2025-04-30T00:00:00", True, True, True),
        ("2025-01-01", "2025-04-01T00:00:01", False, False, False),
    ],
)
def test_three_months_counted_each_way(
    sb: Sandbox, mews_call: Any, start: str, end: str, calendar: bool, strict: bool, days90: bool
) -> None:
    assert SandboxConfig().interval_limit == "calendar"
    interval = {"StartUtc": f"{start}T00:00:00Z", "EndUtc": f"{end}Z"}
    try:
        for limit, allowed in (("calendar", calendar), ("strict", strict), ("days90", days90)):
            sb.config.interval_limit = limit  # type: ignore[assignment]
            for operation, fields in (
                (ORDERS, _orders_request(sb)),
                (NOTES, {"ServiceOrderIds": ["x"], "Limitation": {"Count": 5}}),
                (SERVICES, {"Limitation": {"Count": 5}}),
            ):
                response = mews_call(sb, operation, **{**fields, "UpdatedUtc": interval})
                assert response.status_code == (200 if allowed else 400), (limit, operation)
                if not allowed:  # the same words for every reading
                    message = response.json()["Message"]
                    assert message == "UpdatedUtc interval must not be longer than 3 months."
    finally:
        sb.config.interval_limit = "calendar"  # sb is shared by the module


def test_updated_utc_is_optional_unless_required(mews_call: Any) -> None:
    sb = Sandbox.generate(orders=50, seed=1, now=NOW)
    request = {**_orders_request(sb)}
    del request["UpdatedUtc"]
    response = mews_call(sb, ORDERS, **request)
    assert response.status_code == 200 and len(response.json()["ProductServiceOrders"]) == 10
    sb.config.updated_utc_required = True
    response = mews_call(sb, ORDERS, **request)
    assert response.status_code == 400 and "UpdatedUtc" in response.json()["Message"]


@pytest.mark.parametrize(
    ("operation", "fields", "message"),
    [
        (NOTES, {"Limitation": {"Count": 5}}, "ServiceOrderIds"),
        (NOTES, {"Limitation": {"Count": 5}, "ServiceOrderIds": []}, "ServiceOrderIds"),
        (NOTES, {"ServiceOrderIds": ["x"]}, "Limitation"),
        (NOTES, {"Limitation": {"Count": 5}, "ServiceOrderIds": ["x"] * 1001}, "1000"),
        (
            NOTES,
            {
                "Limitation": {"Count": 5},
                "ServiceOrderIds": ["x"],
                "ServiceOrderNoteIds": ["y"] * 1001,
            },
            "1000",
        ),
        (
            NOTES,
            {
                "Limitation": {"Count": 5},
                "ServiceOrderIds": ["x"],
                "UpdatedUtc": {
                    "StartUtc": "2025-01-01T00:00:00Z",
                    "EndUtc": "2025-06-01T00:00:00Z",
                },
            },
            "3 months",
        ),
        (NOTES, {"Limitation": {"Count": 5, "Cursor": "nope"}, "ServiceOrderIds": ["x"]}, "Cursor"),
        (SERVICES, {}, "Limitation"),
        (SERVICES, {"Limitation": {"Count": 1001}}, "Count"),
        (
            SERVICES,
            {
                "Limitation": {"Count": 5},
                "UpdatedUtc": {
                    "StartUtc": "2025-01-01T00:00:00Z",
                    "EndUtc": "2025-06-01T00:00:00Z",
                },
            },
            "3 months",
        ),
        (SERVICES, {"Limitation": {"Count": 5, "Cursor": "nope"}}, "Cursor"),
    ],
)
def test_notes_and_services_reject_invalid_requests(
    sb: Sandbox, mews_call: Any, operation: str, fields: dict[str, Any], message: str
) -> None:
    response = mews_call(sb, operation, **fields)
    assert response.status_code == 400
    assert message in response.json()["Message"]


UUID = "4f8b1f4e-0000-4000-8000-000000000000"


@pytest.mark.parametrize(
    ("operation", "name", "value"),
    [
        (ORDERS, "ServiceIds", ["not-a-uuid"]),
        (ORDERS, "EnterpriseIds", []),
        (ORDERS, "EnterpriseIds", ["hotel-1"]),
        (ORDERS, "ProductServiceOrderIds", []),
        (ORDERS, "ProductServiceOrderIds", [UUID, "not-an-order"]),
        (ORDERS, "AccountIds", []),
        (ORDERS, "LinkedReservationIds", ["{" + UUID + "}"]),
        (NOTES, "ServiceOrderIds", ["x"]),
        (NOTES, "ServiceOrderNoteIds", []),
        (NOTES, "EnterpriseIds", ["x"]),
        (SERVICES, "ServiceIds", []),
        (SERVICES, "EnterpriseIds", [UUID.replace("-", "")]),
        (ORDERS, "Limitation", {"Count": 5, "Cursor": "nope"}),
        (SERVICES, "Limitation", {"Count": 5, "Cursor": UUID[:-1]}),
        ("serviceOrderNotes/delete", "ServiceOrderNoteIds", []),
        ("serviceOrderNotes/delete", "ServiceOrderNoteIds", ["nope"]),
    ],
)
def test_strict_ids_refuse_empty_lists_and_ids_that_are_no_uuid(
    mews_call: Any, operation: str, name: str, value: Any
) -> None:
    sb = Sandbox.generate(orders=50, seed=1, now=NOW)
    base: dict[str, dict[str, Any]] = {
        ORDERS: {"ServiceIds": product_service_ids(sb), "Limitation": {"Count": 5}},
        NOTES: {"ServiceOrderIds": [o["Id"] for o in sb.orders()], "Limitation": {"Count": 5}},
        SERVICES: {"Limitation": {"Count": 5}},
        "serviceOrderNotes/delete": {},
    }
    fields = {**base[operation], name: value}
    lenient = mews_call(sb, operation, **fields)
    if operation != "serviceOrderNotes/delete" and name != "Limitation":
        assert lenient.status_code == 200, lenient.text  # [] is no filter; odd ids match nothing
    assert not SandboxConfig().strict_ids
    sb.config.strict_ids = True
    strict = mews_call(sb, operation, **fields)
    assert strict.status_code == 400
    message = strict.json()["Message"]
    assert message.startswith("Limitation.Cursor" if name == "Limitation" else name), message
    assert ("at least 1 item" if value == [] else "UUID") in message
    if operation != "serviceOrderNotes/delete":  # and a request of real ids passes
        assert mews_call(sb, operation, **base[operation]).status_code == 200


def test_strict_ids_check_the_ids_of_writes_too(mews_call: Any) -> None:
    sb = Sandbox.generate(orders=50, seed=1, now=NOW)
    sb.config.strict_ids = True
    target = next(s for s in sb.services() if s["Id"] in product_service_ids(sb) and s["IsActive"])
    order = {"EnterpriseId": target["EnterpriseId"], "ServiceId": target["Id"]}
    refused = mews_call(sb, "orders/add", **order, AccountId="acc-1")
    assert refused.status_code == 400 and "AccountId must be a UUID" in refused.json()["Message"]
    assert mews_call(sb, "orders/add", **order, AccountId=UUID).status_code == 200
    notes = [{"ServiceOrderId": "x", "Text": "t"}]
    refused = mews_call(sb, "serviceOrderNotes/add", ServiceOrderNotes=notes)
    assert refused.status_code == 400 and "UUID" in refused.json()["Message"]
    sb.config.strict_ids = False
    refused = mews_call(sb, "serviceOrderNotes/add", ServiceOrderNotes=notes)
    assert refused.status_code == 400 and "UUID" not in refused.json()["Message"]


# --- pagination ------------------------------------------------------------------------------


def test_pages_run_newest_to_oldest_by_creation_not_by_update(sb: Sandbox, mews_call: Any) -> None:
    start, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC)
    pages = all_pages(
        mews_call,
        sb,
        ORDERS,
        "ProductServiceOrders",
        37,
        ServiceIds=product_service_ids(sb),
        UpdatedUtc=window(start, end),
    )
    got = flat(pages)
    truth = [o for o in sb.orders() if start <= utc(o["UpdatedUtc"]) < end]
    assert len(truth) > 100
    assert [o["Id"] for o in got] == [o["Id"] for o in reversed(truth)]  # creation order
    assert got == list(reversed(truth))  # and exactly the truth's content
    assert all(len(p) == 37 for p in pages[:-2])
    updated = [o["UpdatedUtc"] for o in got]
    assert updated != sorted(updated, reverse=True)  # not UpdatedUtc order


def test_unknown_cursor_is_400_even_if_it_is_another_kind_of_id(
    sb: Sandbox, mews_call: Any
) -> None:
    note_id = sb.notes()[0]["Id"]
    request = {**_orders_request(sb), "Limitation": {"Count": 5, "Cursor": note_id}}
    response = mews_call(sb, ORDERS, **request)
    assert response.status_code == 400 and response.json()["Message"] == "Invalid Cursor."


def test_paging_goes_on_where_it_was_while_data_changes(mews_call: Any) -> None:
    sb = Sandbox.generate(orders=200, seed=3, now=NOW)
    sb.clock = lambda: NOW
    request = {"ServiceIds": product_service_ids(sb)}
    before = [
        o["Id"]
        for o in flat(all_pages(mews_call, sb, ORDERS, "ProductServiceOrders", 10, **request))
    ]
    assert len(before) == 200
    first = mews_call(sb, ORDERS, Limitation={"Count": 10}, **request).json()
    assert [o["Id"] for o in first["ProductServiceOrders"]] == before[:10]

    sb.update_order(before[3], State="Canceled")
    sb.update_order(before[9], State="Processed")  # the cursor item itself
    sb.update_order(before[150], State="Started")
    new_id = sb.add_order(request["ServiceIds"][0])

    second = mews_call(
        sb, ORDERS, Limitation={"Count": 10, "Cursor": first["Cursor"]}, **request
    ).json()
    assert [o["Id"] for o in second["ProductServiceOrders"]] == before[10:20]
    newest = mews_call(sb, ORDERS, Limitation={"Count": 1}, **request).json()
    assert newest["ProductServiceOrders"][0]["Id"] == new_id


def test_a_cursor_item_that_left_the_filter_still_works(mews_call: Any) -> None:
    sb = Sandbox.generate(orders=400, seed=4, now=NOW)
    request = {"ServiceIds": product_service_ids(sb), "States": ["Processed"]}
    baseline = flat(all_pages(mews_call, sb, ORDERS, "ProductServiceOrders", 5, **request))
    first = mews_call(sb, ORDERS, Limitation={"Count": 5}, **request).json()
    sb.update_order(first["Cursor"], State="Canceled")
    second = mews_call(
        sb, ORDERS, Limitation={"Count": 5, "Cursor": first["Cursor"]}, **request
    ).json()
    assert [o["Id"] for o in second["ProductServiceOrders"]] == [o["Id"] for o in baseline[5:10]]


def test_an_empty_page_has_a_null_cursor_and_a_short_page_a_cursor(
    sb: Sandbox, mews_call: Any
) -> None:
    order = next(o for o in sb.orders() if o["UpdatedUtc"].startswith("2025-02"))
    request = {**_orders_request(sb), "ProductServiceOrderIds": [order["Id"]]}
    body = mews_call(sb, ORDERS, **request).json()
    assert len(body["ProductServiceOrders"]) == 1
    assert body["Cursor"] == body["ProductServiceOrders"][0]["Id"]
    empty = mews_call(sb, ORDERS, **{**request, "States": ["NoSuchState"]}).json()
    assert empty == {"ProductServiceOrders": [], "Cursor": None}


def test_short_pages_mid_walk_lose_nothing_for_a_walk_that_follows_cursors(
    mews_call: Any,
) -> None:
    sb = Sandbox.generate(orders=1500, seed=5, now=NOW)
    request = {"ServiceIds": product_service_ids(sb)}
    truth = [o["Id"] for o in reversed(sb.orders())]
    full = all_pages(mews_call, sb, ORDERS, "ProductServiceOrders", 50, **request)
    assert all(len(p) == 50 for p in full[:-1])  # by default only the last page is short

    sb.config.short_pages = 0.5
    pages = all_pages(mews_call, sb, ORDERS, "ProductServiceOrders", 50, **request)
    assert [o["Id"] for o in flat(pages)] == truth  # every item, in order, once
    lengths = [len(p) for p in pages[:-1]]
    assert 0.3 < sum(n < 50 for n in lengths) / len(lengths) < 0.7 and min(lengths) >= 1
    first_short = next(i for i, n in enumerate(lengths) if n < 50)
    assert len(flat(pages[: first_short + 1])) < len(truth)  # stopping there misses items
    again = all_pages(mews_call, sb, ORDERS, "ProductServiceOrders", 50, **request)
    assert [len(p) for p in again] == [len(p) for p in pages]  # deterministic
    notes = all_pages(mews_call, sb, NOTES, "ServiceOrderNotes", 20, ServiceOrderIds=truth[:300])
    assert any(len(p) < 20 for p in notes[:-2])
    assert sorted(n["Id"] for n in flat(notes)) == sorted(
        n["Id"]
        for n in sb.notes(types=["General", "ChannelManager"])
        if n["OrderId"] in set(truth[:300])
    )


# --- intervals -------------------------------------------------------------------------------


def _biggest_cluster(sb: Sandbox) -> datetime:
    stamp, _ = Counter(o["UpdatedUtc"] for o in sb.orders()).most_common(1)[0]
    return utc(stamp)


@pytest.mark.parametrize("semantics", ["half_open", "inclusive"])
def test_window_edges(semantics: str, mews_call: Any) -> None:
    sb = Sandbox.generate(orders=3000, seed=5, now=NOW)
    sb.config.interval_semantics = semantics  # type: ignore[assignment]
    edge = _biggest_cluster(sb)
    at_edge = {o["Id"] for o in sb.orders() if utc(o["UpdatedUtc"]) == edge}
    assert len(at_edge) >= 3
    services = product_service_ids(sb)

    def ids(start: datetime, end: datetime) -> set[str]:
        pages = all_pages(
            mews_call,
            sb,
            ORDERS,
            "ProductServiceOrders",
            1000,
            ServiceIds=services,
            UpdatedUtc=window(start, end),
        )
        return {o["Id"] for o in flat(pages)}

    def truth(start: datetime, end: datetime) -> set[str]:
        def inside(t: datetime) -> bool:
            if semantics == "inclusive" or start == end:
                return start <= t <= end
            return start <= t < end

        return {o["Id"] for o in sb.orders() if inside(utc(o["UpdatedUtc"]))}

    before, after = ids(edge - timedelta(days=40), edge), ids(edge, edge + timedelta(days=40))
    assert before == truth(edge - timedelta(days=40), edge)
    assert after == truth(edge, edge + timedelta(days=40))
    assert at_edge <= after
    if semantics == "half_open":
        assert not at_edge & before  # consecutive windows: no loss, no duplicate
    else:
        assert at_edge <= before  # the edge is in both windows
    assert ids(edge, edge) == at_edge  # Start == End: equality, in both semantics
    second = edge + timedelta(seconds=1)
    assert ids(second, second) == {o["Id"] for o in sb.orders() if utc(o["UpdatedUtc"]) == second}


# --- filters ---------------------------------------------------------------------------------


def _ids(call: Any, sb: Sandbox, **fields: Any) -> list[str]:
    pages = all_pages(call, sb, ORDERS, "ProductServiceOrders", 1000, **fields)
    return [o["Id"] for o in flat(pages)]


def test_orders_filters(sb: Sandbox, mews_call: Any) -> None:
    start, end = datetime(2024, 10, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)
    base = {"ServiceIds": product_service_ids(sb), "UpdatedUtc": window(start, end)}
    in_window = [o for o in reversed(sb.orders()) if start <= utc(o["UpdatedUtc"]) < end]
    assert len(in_window) > 100

    def expect(keep: Any) -> list[str]:
        return [o["Id"] for o in in_window if keep(o)]

    assert _ids(mews_call, sb, **base) == expect(lambda o: True)
    one_service = base["ServiceIds"][1]
    assert _ids(mews_call, sb, **{**base, "ServiceIds": [one_service]}) == expect(
        lambda o: o["ServiceId"] == one_service
    )
    assert _ids(mews_call, sb, **base, States=["Canceled", "Enquired"]) == expect(
        lambda o: o["State"] in ("Canceled", "Enquired")
    )
    accounts = [o["AccountId"] for o in in_window[:5]]
    assert _ids(mews_call, sb, **base, AccountIds=accounts) == expect(
        lambda o: o["AccountId"] in accounts
    )
    linked = [o["LinkedReservationId"] for o in in_window if o["LinkedReservationId"]][:4]
    assert linked
    assert _ids(mews_call, sb, **base, LinkedReservationIds=linked) == expect(
        lambda o: o["LinkedReservationId"] in linked
    )
    wanted = [o["Id"] for o in in_window[::7]] + [sb.orders()[0]["Id"], "not-an-order"]
    assert _ids(mews_call, sb, **base, ProductServiceOrderIds=wanted) == expect(
        lambda o: o["Id"] in wanted
    )  # the window applies too
    bookable = [s["Id"] for s in sb.services() if s["Data"]["Discriminator"] == "Bookable"]
    assert _ids(mews_call, sb, **{**base, "ServiceIds": bookable}) == []


def test_portfolio_tokens_and_enterprise_ids(mews_call: Any) -> None:
    sb = Sandbox.generate(orders=600, seed=8, now=NOW)
    first, second, _ = (e["Id"] for e in sb.enterprises())
    enterprise_of = {s["Id"]: s["EnterpriseId"] for s in sb.services()}
    services = product_service_ids(sb)

    def truth(enterprises: set[str]) -> list[str]:
        return [
            o["Id"] for o in reversed(sb.orders()) if enterprise_of[o["ServiceId"]] in enterprises
        ]

    everything = _ids(mews_call, sb, ServiceIds=services)
    assert everything == truth({e["Id"] for e in sb.enterprises()})
    assert _ids(mews_call, sb, ServiceIds=services, EnterpriseIds=[second]) == truth({second})

    sb.add_token("TOKEN-FIRST", [first])
    sb.add_token("TOKEN-TWO", [first, second])
    assert _ids(mews_call, sb, ServiceIds=services, AccessToken="TOKEN-FIRST") == truth({first})
    assert (
        _ids(mews_call, sb, ServiceIds=services, AccessToken="TOKEN-FIRST", EnterpriseIds=[second])
        == []
    )
    assert _ids(mews_call, sb, ServiceIds=services, AccessToken="TOKEN-TWO") == truth(
        {first, second}
    )
    assert _ids(
        mews_call, sb, ServiceIds=services, AccessToken="TOKEN-TWO", EnterpriseIds=[second]
    ) == truth({second})
    seen = mews_call(sb, SERVICES, AccessToken="TOKEN-FIRST", Limitation={"Count": 100}).json()
    assert {s["EnterpriseId"] for s in seen["Services"]} == {first}
    order = truth({second})[0]
    notes = mews_call(
        sb,
        NOTES,
        AccessToken="TOKEN-FIRST",
        ServiceOrderIds=[order],
        Limitation={"Count": 100},
        Types=["General", "ChannelManager", "SpecialRequest"],
    ).json()
    assert notes["ServiceOrderNotes"] == []


def test_the_demo_token_covers_one_enterprise_and_the_portfolio_token_all(mews_call: Any) -> None:
    sb = Sandbox.generate(orders=300, seed=8, now=NOW)
    first = sb.enterprises()[0]["Id"]
    enterprise_of = {s["Id"]: s["EnterpriseId"] for s in sb.services()}
    services = product_service_ids(sb)
    assert DEMO_PORTFOLIO_ACCESS_TOKEN != DEMO_ACCESS_TOKEN
    assert [len(part) for part in DEMO_PORTFOLIO_ACCESS_TOKEN.split("-")] == [
        len(part) for part in DEMO_ACCESS_TOKEN.split("-")
    ]
    demo = _ids(mews_call, sb, ServiceIds=services, AccessToken=DEMO_ACCESS_TOKEN)
    assert demo == [
        o["Id"] for o in reversed(sb.orders()) if enterprise_of[o["ServiceId"]] == first
    ]
    seen = mews_call(sb, SERVICES, AccessToken=DEMO_ACCESS_TOKEN, Limitation={"Count": 100})
    assert {s["EnterpriseId"] for s in seen.json()["Services"]} == {first}
    portfolio = _ids(mews_call, sb, ServiceIds=services, AccessToken=DEMO_PORTFOLIO_ACCESS_TOKEN)
    assert portfolio == [o["Id"] for o in reversed(sb.orders())]


# --- notes -----------------------------------------------------------------------------------


def _orders_with_notes(sb: Sandbox, minimum: int) -> list[str]:
    per_order = Counter(n["OrderId"] for n in sb.notes())
    return [o for o, n in per_order.items() if n >= minimum]


def test_notes_default_types_and_shapes(mews_call: Any) -> None:
    sb = Sandbox.generate(orders=800, seed=6, now=NOW)
    order_ids = [o["Id"] for o in sb.orders()[:900]]
    every_type = ["General", "ChannelManager", "SpecialRequest"]

    def notes(**fields: Any) -> list[dict[str, Any]]:
        pages = all_pages(
            mews_call, sb, NOTES, "ServiceOrderNotes", 1000, ServiceOrderIds=order_ids, **fields
        )
        return flat(pages)

    truth = [n for n in reversed(sb.notes()) if n["OrderId"] in set(order_ids)]
    assert notes() == [n for n in truth if n["Type"] != "SpecialRequest"]
    assert notes(Types=["SpecialRequest"]) == [n for n in truth if n["Type"] == "SpecialRequest"]
    assert notes(Types=every_type) == truth
    assert all(
        set(n) == {"Id", "OrderId", "Text", "Type", "CreatedUtc", "UpdatedUtc"} for n in truth
    )

    sb.config.note_shape = "seed"
    seed = notes(Types=every_type)
    assert all(set(n) == {"Id", "ServiceOrderId", "Text", "Type", "CreatedUtc"} for n in seed)
    assert [(n["Id"], n["ServiceOrderId"]) for n in seed] == [
        (n["Id"], n["OrderId"]) for n in truth
    ]
    assert seed == [n for n in reversed(sb.notes()) if n["ServiceOrderId"] in set(order_ids)]
    sb.config.note_shape = "current"

    picked = [n["Id"] for n in truth[::5]]
    assert [n["Id"] for n in notes(Types=every_type, ServiceOrderNoteIds=picked)] == picked
    edited = [n for n in truth if n["UpdatedUtc"] != n["CreatedUtc"]]
    assert edited  # some notes were edited after creation
    stamp = utc(edited[0]["UpdatedUtc"])
    exact = notes(Types=every_type, UpdatedUtc=window(stamp, stamp))
    assert edited[0] in exact and all(n["UpdatedUtc"] == edited[0]["UpdatedUtc"] for n in exact)
    enterprise = next(
        s["EnterpriseId"] for s in sb.services() if s["Id"] == sb.orders()[0]["ServiceId"]
    )
    services = {s["Id"] for s in sb.services() if s["EnterpriseId"] == enterprise}
    in_enterprise = {o["Id"] for o in sb.orders() if o["ServiceId"] in services}
    assert notes(Types=every_type, EnterpriseIds=[enterprise]) == [
        n for n in truth if n["OrderId"] in in_enterprise
    ]


def test_more_than_1000_notes_of_one_order_come_in_pages(big: Sandbox, mews_call: Any) -> None:
    order_id = _orders_with_notes(big, 1001)[0]
    truth = [n for n in reversed(big.notes()) if n["OrderId"] == order_id]
    pages = all_pages(mews_call, big, NOTES, "ServiceOrderNotes", 1000, ServiceOrderIds=[order_id])
    assert [len(p) for p in pages][0] == 1000 and len(pages) >= 3
    assert flat(pages) == [n for n in truth if n["Type"] != "SpecialRequest"]


def test_a_deleted_note_still_works_as_a_cursor(mews_call: Any) -> None:
    sb = Sandbox.generate(orders=300, seed=12, now=NOW)
    order_id = _orders_with_notes(sb, 4)[0]
    request = {
        "ServiceOrderIds": [order_id],
        "Types": ["General", "ChannelManager", "SpecialRequest"],
    }
    baseline = flat(all_pages(mews_call, sb, NOTES, "ServiceOrderNotes", 1, **request))
    first = mews_call(sb, NOTES, Limitation={"Count": 1}, **request).json()
    sb.delete_note(first["Cursor"])
    second = mews_call(
        sb, NOTES, Limitation={"Count": 2, "Cursor": first["Cursor"]}, **request
    ).json()
    assert second["ServiceOrderNotes"] == baseline[1:3]


# --- services --------------------------------------------------------------------------------


def test_services_shapes_filters_and_pages(mews_call: Any) -> None:
    sb = Sandbox.generate(orders=10, seed=1, now=NOW)
    pages = all_pages(mews_call, sb, SERVICES, "Services", 4)
    got = flat(pages)
    assert got == list(reversed(sb.services())) and len(got) == 18
    for service in got:
        assert {
            "Id",
            "EnterpriseId",
            "IsActive",
            "Names",
            "Options",
            "Ordering",
            "CreatedUtc",
            "UpdatedUtc",
            "Data",
            "ExternalIdentifier",  # optional; null for some
        } == set(service)  # the deprecated Name is gone
        assert service["Data"]["Discriminator"] in ("Additional", "Bookable")
    assert {s["ExternalIdentifier"] is None for s in got} == {True, False}
    enterprise = got[0]["EnterpriseId"]
    mine = mews_call(sb, SERVICES, Limitation={"Count": 100}, EnterpriseIds=[enterprise]).json()
    assert {s["EnterpriseId"] for s in mine["Services"]} == {enterprise}
    assert len(mine["Services"]) == 6
    one = mews_call(sb, SERVICES, Limitation={"Count": 100}, ServiceIds=[got[3]["Id"]]).json()
    assert one["Services"] == [got[3]]
    stamp = utc(got[5]["UpdatedUtc"])
    by_time = mews_call(
        sb, SERVICES, Limitation={"Count": 100}, UpdatedUtc=window(stamp, stamp)
    ).json()
    assert got[5] in by_time["Services"]

    sb.config.service_shape = "legacy"
    legacy = flat(all_pages(mews_call, sb, SERVICES, "Services", 100))
    assert all("Data" not in s and "Options" not in s for s in legacy)
    assert [s["Name"] for s in legacy] == [s["Names"]["en-US"] for s in got]
    assert [s["Type"] for s in legacy] == [
        "Reservable" if s["Data"]["Discriminator"] == "Bookable" else "Orderable" for s in got
    ]


@pytest.mark.parametrize("kind", ["Additional", "Bookable"])
def test_services_filter_by_service_type(mews_call: Any, kind: str) -> None:
    sb = Sandbox.generate(orders=10, seed=1, now=NOW)
    every = flat(all_pages(mews_call, sb, SERVICES, "Services", 100))
    typed = flat(all_pages(mews_call, sb, SERVICES, "Services", 100, ServiceType=kind))
    assert typed == [s for s in every if s["Data"]["Discriminator"] == kind]
    assert typed and len(typed) < len(every)
    sb.config.service_shape = "legacy"  # the filter is on the data, whatever the shape
    assert len(flat(all_pages(mews_call, sb, SERVICES, "Services", 100, ServiceType=kind))) == len(
        typed
    )


@pytest.mark.parametrize("value", ["Orderable", 1, ["Additional"]])
def test_an_unknown_service_type_is_400(sb: Sandbox, mews_call: Any, value: Any) -> None:
    response = mews_call(sb, SERVICES, Limitation={"Count": 5}, ServiceType=value)
    assert response.status_code == 400 and "ServiceType" in response.json()["Message"]


# --- enterprises -----------------------------------------------------------------------------


def test_more_than_1000_enterprise_ids_are_a_400_on_every_operation(mews_call: Any) -> None:
    sb = Sandbox.generate(orders=10, seed=1, now=NOW)
    many = [f"4f8b1f4e-0000-4000-8000-{i:012d}" for i in range(1001)]
    order_ids = [o["Id"] for o in sb.orders()]
    for operation, fields in (
        (ORDERS, {"ServiceIds": product_service_ids(sb)}),
        (NOTES, {"ServiceOrderIds": order_ids}),
        (SERVICES, {}),
        (ENTERPRISES, {}),
    ):
        limitation = {"Count": 10}
        refused = mews_call(sb, operation, EnterpriseIds=many, Limitation=limitation, **fields)
        assert refused.status_code == 400 and "1000" in refused.json()["Message"], operation
        fine = mews_call(sb, operation, EnterpriseIds=many[:1000], Limitation=limitation, **fields)
        assert fine.status_code == 200, operation


def test_enterprises_get_all_pages_filters_and_scope(mews_call: Any) -> None:
    sb = Sandbox.generate(orders=10, seed=1, now=NOW)
    truth = sb.enterprises()
    pages = all_pages(mews_call, sb, ENTERPRISES, "Enterprises", 1)
    assert flat(pages) == list(reversed(truth)) and len(truth) == 3
    for enterprise in truth:
        assert {
            "Id",
            "Name",
            "ShortName",
            "ChainId",
            "ChainName",
            "TimeZoneIdentifier",
            "CreatedUtc",
            "UpdatedUtc",
            "LinkedUtc",
            "DefaultLanguageCode",
            "Pricing",
            # Required by the documentation (enterprises.md, 2026-08).
            "AccountingEditableHistoryInterval",
            "OperationalEditableHistoryInterval",
            "AddressId",
            "Address",
            "GroupNames",
            "Subscription",
            "LegalEnvironmentCode",
            "AccommodationEnvironmentCode",
            "AccountingEnvironmentCode",
            "TaxEnvironmentCode",
        } <= set(enterprise)
        assert enterprise["Address"]["Id"] == enterprise["AddressId"]
        assert enterprise["Address"]["CountryCode"] and isinstance(enterprise["GroupNames"], list)
        assert enterprise["ShortName"] is None or len(enterprise["ShortName"]) <= 11
        assert utc(enterprise["CreatedUtc"]) <= utc(enterprise["UpdatedUtc"]) <= NOW
    assert len({e["ChainId"] for e in truth}) == 1
    zones = [ZoneInfo(e["TimeZoneIdentifier"]) for e in truth]
    january, july = datetime(2025, 1, 15, tzinfo=UTC), datetime(2025, 7, 15, tzinfo=UTC)
    dst = [january.astimezone(z).utcoffset() != july.astimezone(z).utcoffset() for z in zones]
    assert any(dst) and not all(dst)
    assert truth[0]["TimeZoneIdentifier"] == "Europe/Prague"

    first, second = truth[0]["Id"], truth[1]["Id"]
    demo = mews_call(sb, ENTERPRISES, AccessToken=DEMO_ACCESS_TOKEN, Limitation={"Count": 10})
    assert demo.json() == {"Enterprises": [truth[0]], "Cursor": first}
    hidden = mews_call(
        sb,
        ENTERPRISES,
        AccessToken=DEMO_ACCESS_TOKEN,
        EnterpriseIds=[second],
        Limitation={"Count": 10},
    )
    assert hidden.json() == {"Enterprises": [], "Cursor": None}
    picked = mews_call(sb, ENTERPRISES, EnterpriseIds=[second], Limitation={"Count": 10}).json()
    assert picked["Enterprises"] == [truth[1]]
    stamp = utc(truth[2]["UpdatedUtc"])
    by_time = mews_call(
        sb, ENTERPRISES, UpdatedUtc=window(stamp, stamp), Limitation={"Count": 10}
    ).json()
    assert truth[2] in by_time["Enterprises"]
    none = mews_call(
        sb, ENTERPRISES, ExternalIdentifiers=["Enterprise2023"], Limitation={"Count": 10}
    )
    assert none.json()["Enterprises"] == []
    too_long = window(datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 6, 1, tzinfo=UTC))
    refused = mews_call(sb, ENTERPRISES, UpdatedUtc=too_long, Limitation={"Count": 10})
    assert refused.status_code == 400 and "3 months" in refused.json()["Message"]
    assert mews_call(sb, ENTERPRISES).status_code == 400  # Limitation is required
