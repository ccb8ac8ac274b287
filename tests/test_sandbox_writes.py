"""The sandbox's write operations, over HTTP and through Python, and what they do to UpdatedUtc."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mews_sandbox import DEMO_ACCESS_TOKEN, Sandbox

NOW = datetime(2026, 1, 15, 12, tzinfo=UTC)
LATER = NOW + timedelta(days=3, hours=2, minutes=5, seconds=7)
ORDERS = "productServiceOrders/getAll"
NOTES = "serviceOrderNotes/getAll"
ALL_TYPES = ["General", "ChannelManager", "SpecialRequest"]


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def around(dt: datetime) -> dict[str, str]:
    return {"StartUtc": iso(dt - timedelta(days=1)), "EndUtc": iso(dt + timedelta(days=1))}


@pytest.fixture
def sb() -> Sandbox:
    sandbox = Sandbox.generate(orders=200, seed=21, now=NOW)
    sandbox.clock = lambda: LATER
    return sandbox


def service(
    sb: Sandbox,
    *,
    discriminator: str = "Additional",
    active: bool = True,
) -> dict[str, Any]:
    return next(
        s
        for s in sb.services()
        if s["Data"]["Discriminator"] == discriminator and s["IsActive"] == active
    )


def enterprise_of(sb: Sandbox, target_service: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in sb.enterprises() if e["Id"] == target_service["EnterpriseId"])


def get_order(call: Any, sb: Sandbox, order_id: str, at: datetime) -> dict[str, Any]:
    body = call(
        sb,
        ORDERS,
        ServiceIds=[s["Id"] for s in sb.services()],
        ProductServiceOrderIds=[order_id],
        UpdatedUtc=around(at),
        Limitation={"Count": 10},
    ).json()
    [order] = body["ProductServiceOrders"]
    return order


def get_notes(call: Any, sb: Sandbox, order_id: str) -> list[dict[str, Any]]:
    response = call(
        sb, NOTES, ServiceOrderIds=[order_id], Types=ALL_TYPES, Limitation={"Count": 1000}
    )
    assert response.status_code == 200
    return response.json()["ServiceOrderNotes"]


def fill(value: Any, names: dict[str, str]) -> Any:
    """`value` with the placeholder strings in `names` replaced, at any depth."""
    if isinstance(value, dict):
        return {k: fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    return names.get(value, value) if isinstance(value, str) else value


def order_with_notes(sb: Sandbox, minimum: int) -> str:
    counts: dict[str, int] = {}
    for note in sb.notes():
        counts[note["OrderId"]] = counts.get(note["OrderId"], 0) + 1
    return next(o for o, n in counts.items() if n >= minimum)


# --- orders/add ------------------------------------------------------------------------------


def test_orders_add_creates_a_confirmed_connector_order_and_its_note(
    sb: Sandbox, mews_call: Any
) -> None:
    target = service(sb)
    product = next(p for p in sb.products() if p["ServiceId"] == target["Id"])
    price = product["Price"]  # the enterprise's currency and one of its tax codes
    value = "GrossValue" if enterprise_of(sb, target)["Pricing"] == "Gross" else "NetValue"
    unit = {"Currency": price["Currency"], value: 7, "TaxCodes": [price["TaxValues"][0]["Code"]]}
    response = mews_call(
        sb,
        "orders/add",
        EnterpriseId=target["EnterpriseId"],
        ServiceId=target["Id"],
        AccountId="407a26f8-dcfc-4e29-b978-ab440117a153",
        ConsumptionUtc="2026-01-20T00:00:00Z",
        ProductOrders=[{"ProductId": product["Id"], "Count": 2}],
        Items=[{"Name": "Beer", "UnitCount": 3, "UnitAmount": unit}],
        Notes="Leave it at the reception.",
        BusinessSegmentId="seg-1",
        LinkedReservationId="9e6d4492-315b-4089-b9d6-5b1bd2eddc1b",
        Options={"DisableItemGrouping": False},
        BillId="22b68915-05fe-4a31-b1cb-bd5efa35d305",
    )
    assert response.status_code == 200, response.text
    created = response.json()
    assert set(created) == {"OrderId", "ChargeId"} and created["OrderId"] != created["ChargeId"]

    order = get_order(mews_call, sb, created["OrderId"], LATER)
    assert order == sb.orders()[-1]
    assert order["State"] == "Confirmed" and order["Origin"] == "Connector"
    assert order["Number"] == "201"
    assert order["CreatedUtc"] == order["UpdatedUtc"] == iso(LATER)
    assert order["AccountId"] == "407a26f8-dcfc-4e29-b978-ab440117a153"
    assert order["ServiceId"] == target["Id"] and order["CancelledUtc"] is None
    assert order["LinkedReservationId"] == "9e6d4492-315b-4089-b9d6-5b1bd2eddc1b"
    assert order["BusinessSegmentId"] == "seg-1"
    [note] = get_notes(mews_call, sb, created["OrderId"])
    assert note["Text"] == "Leave it at the reception." and note["Type"] == "General"
    assert note["OrderId"] == created["OrderId"] and note["CreatedUtc"] == iso(LATER)

    newest = mews_call(
        sb, ORDERS, ServiceIds=[target["Id"]], UpdatedUtc=around(LATER), Limitation={"Count": 1}
    ).json()
    assert newest["ProductServiceOrders"][0]["Id"] == created["OrderId"]


def test_orders_add_takes_the_deprecated_customer_id_and_no_notes(
    sb: Sandbox, mews_call: Any
) -> None:
    target = service(sb)
    response = mews_call(
        sb,
        "orders/add",
        EnterpriseId=target["EnterpriseId"],
        ServiceId=target["Id"],
        CustomerId="c-1",
    )
    assert response.status_code == 200
    order_id = response.json()["OrderId"]
    assert get_order(mews_call, sb, order_id, LATER)["AccountId"] == "c-1"
    assert get_notes(mews_call, sb, order_id) == []


def test_orders_add_with_a_single_enterprise_token_needs_no_enterprise_id(
    sb: Sandbox, mews_call: Any
) -> None:
    target = service(sb)
    sb.add_token("ONE-PROPERTY", [target["EnterpriseId"]])
    response = mews_call(
        sb, "orders/add", AccessToken="ONE-PROPERTY", ServiceId=target["Id"], AccountId="a-1"
    )
    assert response.status_code == 200
    other = next(s for s in sb.services() if s["EnterpriseId"] != target["EnterpriseId"])
    refused = mews_call(
        sb, "orders/add", AccessToken="ONE-PROPERTY", ServiceId=other["Id"], AccountId="a-1"
    )
    assert refused.status_code == 400


def test_orders_add_with_the_demo_token_needs_no_enterprise_id(sb: Sandbox, mews_call: Any) -> None:
    target = service(sb)  # of the first enterprise, the demo token's one
    assert target["EnterpriseId"] == sb.enterprises()[0]["Id"]
    fields = {"ServiceId": target["Id"], "AccountId": "a-1"}
    response = mews_call(sb, "orders/add", AccessToken=DEMO_ACCESS_TOKEN, **fields)
    assert response.status_code == 200, response.text
    refused = mews_call(sb, "orders/add", **fields)  # the portfolio token needs it
    assert refused.status_code == 400 and "EnterpriseId" in refused.json()["Message"]


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"ServiceId": None}, 400, "ServiceId"),
        ({"ServiceId": "4f8b1f4e-0000-4000-8000-000000000000"}, 400, "ServiceId"),
        ({"ServiceId": "bookable"}, 403, "bookable"),
        ({"ServiceId": "inactive"}, 403, "not active"),
        ({"EnterpriseId": None}, 400, "EnterpriseId"),
        ({"EnterpriseId": "other"}, 400, "EnterpriseId"),
        ({"AccountId": None}, 400, "AccountId"),
        ({"AccountId": 5}, 400, "AccountId"),
        ({"ConsumptionUtc": "tomorrow"}, 400, "ConsumptionUtc"),
        ({"ProductOrders": [{"Count": 1}]}, 400, "ProductId"),
        ({"ProductOrders": [{"ProductId": "p"}] * 1001}, 400, "1000"),
        ({"ProductOrders": {"ProductId": "p"}}, 400, "ProductOrders"),
        ({"Items": [{"Name": "Beer"}]}, 400, "Items[0]"),
        ({"Notes": ["a"]}, 400, "Notes"),
    ],
)
def test_orders_add_refusals(
    sb: Sandbox, mews_call: Any, change: dict[str, Any], status: int, message: str
) -> None:
    target = service(sb)
    body = {
        "EnterpriseId": target["EnterpriseId"],
        "ServiceId": target["Id"],
        "AccountId": "a",
        **change,
    }
    if body["ServiceId"] == "bookable":
        body["ServiceId"] = service(sb, discriminator="Bookable")["Id"]
    if body["ServiceId"] == "inactive":
        inactive = service(sb, active=False)
        body.update(ServiceId=inactive["Id"], EnterpriseId=inactive["EnterpriseId"])
    if body["EnterpriseId"] == "other":
        body["EnterpriseId"] = next(
            e["Id"] for e in sb.enterprises() if e["Id"] != target["EnterpriseId"]
        )
    before = sb.orders()
    response = mews_call(sb, "orders/add", **{k: v for k, v in body.items() if v is not None})
    assert response.status_code == status, response.text
    assert message in response.json()["Message"]
    assert sb.orders() == before


# --- serviceOrderNotes/add, update, delete ----------------------------------------------------


def test_notes_add_update_delete_round_trip(sb: Sandbox, mews_call: Any) -> None:
    order_id = order_with_notes(sb, 2)
    bare = next(o["Id"] for o in sb.orders() if o["Id"] not in {n["OrderId"] for n in sb.notes()})
    before = get_notes(mews_call, sb, order_id)

    added = mews_call(
        sb,
        "serviceOrderNotes/add",
        ServiceOrderNotes=[
            {"ServiceOrderId": order_id, "Text": "Shaken, not stirred."},
            {"ServiceOrderId": bare, "Text": "Příjezd po půlnoci ✓"},
        ],
    )
    assert added.status_code == 200, added.text
    new = added.json()["ServiceOrderNotes"]
    assert [(n["OrderId"], n["Text"], n["Type"], n["CreatedUtc"]) for n in new] == [
        (order_id, "Shaken, not stirred.", "General", iso(LATER)),
        (bare, "Příjezd po půlnoci ✓", "General", iso(LATER)),
    ]
    assert get_notes(mews_call, sb, order_id) == [new[0], *before]  # newest first
    assert get_notes(mews_call, sb, bare) == [new[1]]
    assert get_order(mews_call, sb, bare, LATER)["UpdatedUtc"] == iso(LATER)  # bumped

    edit_time = LATER + timedelta(minutes=30)
    sb.clock = lambda: edit_time
    updated = mews_call(
        sb,
        "serviceOrderNotes/update",
        ServiceOrderNoteUpdates=[
            {"Id": new[0]["Id"], "Text": {"Value": "Stirred after all."}},  # the seed's sample
            {"ServiceOrderNoteId": before[0]["Id"], "Text": "Edited too."},  # the seed's table
        ],
    )
    assert updated.status_code == 200, updated.text
    assert [(n["Id"], n["Text"]) for n in updated.json()["ServiceOrderNotes"]] == [
        (new[0]["Id"], "Stirred after all."),
        (before[0]["Id"], "Edited too."),
    ]
    texts = {n["Id"]: n["Text"] for n in get_notes(mews_call, sb, order_id)}
    assert texts[new[0]["Id"]] == "Stirred after all." and texts[before[0]["Id"]] == "Edited too."
    assert get_order(mews_call, sb, order_id, edit_time)["UpdatedUtc"] == iso(edit_time)
    current = {n["Id"]: n for n in get_notes(mews_call, sb, order_id)}
    assert current[new[0]["Id"]]["UpdatedUtc"] == iso(edit_time)
    assert current[new[0]["Id"]]["CreatedUtc"] == iso(LATER)
    assert current[new[0]["Id"]]["OrderId"] == order_id

    delete_time = edit_time + timedelta(minutes=30)
    sb.clock = lambda: delete_time
    deleted = mews_call(
        sb, "serviceOrderNotes/delete", ServiceOrderNoteIds=[new[0]["Id"], before[1]["Id"]]
    )
    assert deleted.status_code == 200 and deleted.json() == {}
    remaining = {n["Id"] for n in get_notes(mews_call, sb, order_id)}
    assert new[0]["Id"] not in remaining and before[1]["Id"] not in remaining
    assert before[0]["Id"] in remaining
    assert not {new[0]["Id"], before[1]["Id"]} & {n["Id"] for n in sb.notes()}
    assert get_order(mews_call, sb, order_id, delete_time)["UpdatedUtc"] == iso(delete_time)


def test_note_changes_leave_the_order_alone_when_bumping_is_off(
    sb: Sandbox, mews_call: Any
) -> None:
    order_id = order_with_notes(sb, 1)
    sb.config.notes_bump_order = False
    order_before = next(o for o in sb.orders() if o["Id"] == order_id)
    note_id = mews_call(
        sb, "serviceOrderNotes/add", ServiceOrderNotes=[{"ServiceOrderId": order_id, "Text": "x"}]
    ).json()["ServiceOrderNotes"][0]["Id"]
    mews_call(
        sb,
        "serviceOrderNotes/update",
        ServiceOrderNoteUpdates=[{"Id": note_id, "Text": {"Value": "y"}}],
    )
    sb.update_note(note_id, "z", at=LATER + timedelta(hours=1))
    assert next(n for n in sb.notes() if n["Id"] == note_id)["UpdatedUtc"] == iso(
        LATER + timedelta(hours=1)
    )
    mews_call(sb, "serviceOrderNotes/delete", ServiceOrderNoteIds=[note_id])
    assert next(o for o in sb.orders() if o["Id"] == order_id) == order_before


@pytest.mark.parametrize(
    ("operation", "fields", "message"),
    [
        ("serviceOrderNotes/add", {}, "ServiceOrderNotes"),
        ("serviceOrderNotes/add", {"ServiceOrderNotes": []}, "ServiceOrderNotes"),
        (
            "serviceOrderNotes/add",
            {"ServiceOrderNotes": [{"ServiceOrderId": "ORDER", "Text": ""}]},
            "Text",
        ),
        ("serviceOrderNotes/add", {"ServiceOrderNotes": [{"ServiceOrderId": "ORDER"}]}, "Text"),
        (
            "serviceOrderNotes/add",
            {"ServiceOrderNotes": [{"ServiceOrderId": "ORDER", "Text": 5}]},
            "Text",
        ),
        (
            "serviceOrderNotes/add",
            {"ServiceOrderNotes": [{"ServiceOrderId": "nope", "Text": "x"}]},
            "ServiceOrderId",
        ),
        (
            "serviceOrderNotes/add",
            {
                "ServiceOrderNotes": [
                    {"ServiceOrderId": "ORDER", "Text": "ok"},
                    {"ServiceOrderId": "nope", "Text": "x"},
                ]
            },
            "ServiceOrderNotes[1]",
        ),
        (
            "serviceOrderNotes/add",
            {"ServiceOrderNotes": [{"ServiceOrderId": "ORDER", "Text": "x"}] * 1001},
            "1000",
        ),
        ("serviceOrderNotes/update", {}, "ServiceOrderNoteUpdates"),
        (
            "serviceOrderNotes/update",
            {"ServiceOrderNoteUpdates": [{"Id": "nope", "Text": "x"}]},
            "unknown",
        ),
        (
            "serviceOrderNotes/update",
            {
                "ServiceOrderNoteUpdates": [
                    {"Id": "NOTE", "Text": "fine"},
                    {"Id": "NOTE", "Text": {"Value": ""}},
                ]
            },
            "Text",
        ),
        ("serviceOrderNotes/update", {"ServiceOrderNoteUpdates": [{"Id": "NOTE"}]}, "Text"),
        (
            "serviceOrderNotes/update",
            {"ServiceOrderNoteUpdates": [{"Id": "NOTE", "Text": "x"}] * 1001},
            "1000",
        ),
        ("serviceOrderNotes/delete", {}, "ServiceOrderNoteIds"),
        ("serviceOrderNotes/delete", {"ServiceOrderNoteIds": ["NOTE", "nope"]}, "unknown"),
        ("serviceOrderNotes/delete", {"ServiceOrderNoteIds": ["NOTE"] * 1001}, "1000"),
    ],
)
def test_note_writes_are_validated_and_all_or_nothing(
    sb: Sandbox, mews_call: Any, operation: str, fields: dict[str, Any], message: str
) -> None:
    order_id = order_with_notes(sb, 1)
    note_id = next(n["Id"] for n in sb.notes() if n["OrderId"] == order_id)
    before_notes, before_orders = sb.notes(), sb.orders()
    response = mews_call(sb, operation, **fill(fields, {"ORDER": order_id, "NOTE": note_id}))
    assert response.status_code == 400, response.text
    assert message in response.json()["Message"]
    assert sb.notes() == before_notes and sb.orders() == before_orders


def test_deleted_notes_cannot_be_updated_or_deleted_again(sb: Sandbox, mews_call: Any) -> None:
    note_id = sb.notes()[0]["Id"]
    assert (
        mews_call(sb, "serviceOrderNotes/delete", ServiceOrderNoteIds=[note_id]).status_code == 200
    )
    assert (
        mews_call(sb, "serviceOrderNotes/delete", ServiceOrderNoteIds=[note_id]).status_code == 400
    )
    assert (
        mews_call(
            sb,
            "serviceOrderNotes/update",
            ServiceOrderNoteUpdates=[{"Id": note_id, "Text": {"Value": "back?"}}],
        ).status_code
        == 400
    )
    with pytest.raises(KeyError):
        sb.update_note(note_id, "back?")


# --- mutations through Python ----------------------------------------------------------------


def test_update_order_moves_it_to_its_new_updated_utc(sb: Sandbox, mews_call: Any) -> None:
    order = next(o for o in sb.orders() if o["CancelledUtc"] is None)
    old = datetime.fromisoformat(order["UpdatedUtc"])
    sb.update_order(order["Id"], at=LATER, State="Canceled")
    changed = get_order(mews_call, sb, order["Id"], LATER)
    assert changed["UpdatedUtc"] == changed["CancelledUtc"] == iso(LATER)
    assert changed["State"] == "Canceled" and changed["CreatedUtc"] == order["CreatedUtc"]
    stale = mews_call(
        sb,
        ORDERS,
        ServiceIds=[order["ServiceId"]],
        UpdatedUtc=around(old),
        ProductServiceOrderIds=[order["Id"]],
        Limitation={"Count": 1},
    ).json()
    assert stale["ProductServiceOrders"] == []

    sb.update_order(order["Id"], State="Processed")  # clock() when no `at`
    assert get_order(mews_call, sb, order["Id"], LATER)["UpdatedUtc"] == iso(LATER)


def test_update_order_takes_new_fields_and_unknown_values(sb: Sandbox, mews_call: Any) -> None:
    order_id = sb.orders()[0]["Id"]
    sb.update_order(
        order_id,
        State='Wait"listed\\ ✓',
        LoyaltyTier="Gold",
        Options={"ConnectorCheckIn": True},
        Tags=["a", 1, None],
    )
    response = mews_call(
        sb,
        ORDERS,
        ServiceIds=[s["Id"] for s in sb.services()],
        ProductServiceOrderIds=[order_id],
        UpdatedUtc=around(LATER),
        Limitation={"Count": 10},
    )
    [truth] = [o for o in sb.orders() if o["Id"] == order_id]
    assert (
        response.content
        == json.dumps(
            {"ProductServiceOrders": [truth], "Cursor": order_id},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
    )
    order = response.json()["ProductServiceOrders"][0]
    assert order["State"] == 'Wait"listed\\ ✓' and order["LoyaltyTier"] == "Gold"
    assert order["Tags"] == ["a", 1, None]
    assert order["Options"]["ConnectorCheckIn"] is True
    assert sum(o["Options"]["ConnectorCheckIn"] for o in sb.orders()) < 50  # not shared
    with pytest.raises(ValueError):
        sb.update_order(order_id, Id="another")
    with pytest.raises(KeyError):
        sb.update_order("no-such-order", State="Canceled")


def test_python_add_order_and_notes(sb: Sandbox, mews_call: Any) -> None:
    target = service(sb)
    order_id = sb.add_order(target["Id"], at=NOW, State="Optional", AccountId="acc")
    order = get_order(mews_call, sb, order_id, NOW)
    assert (order["State"], order["AccountId"], order["CreatedUtc"]) == (
        "Optional",
        "acc",
        iso(NOW),
    )
    with pytest.raises(ValueError):
        sb.add_order(service(sb, discriminator="Bookable")["Id"])
    with pytest.raises(KeyError):
        sb.add_order("no-such-service")

    note_id = sb.add_note(order_id, "Allergic to nuts", "SpecialRequest", at=LATER)
    assert get_order(mews_call, sb, order_id, LATER)["UpdatedUtc"] == iso(LATER)
    assert [n["Text"] for n in get_notes(mews_call, sb, order_id)] == ["Allergic to nuts"]
    assert (
        mews_call(sb, NOTES, ServiceOrderIds=[order_id], Limitation={"Count": 5}).json()[
            "ServiceOrderNotes"
        ]
        == []
    )  # SpecialRequest is not a default type
    sb.update_note(note_id, "Allergic to peanuts", at=LATER + timedelta(seconds=1))
    assert [n["Text"] for n in sb.notes(types=["SpecialRequest"]) if n["Id"] == note_id] == [
        "Allergic to peanuts"
    ]
    sb.delete_note(note_id)
    assert get_notes(mews_call, sb, order_id) == []
    with pytest.raises(ValueError):
        sb.add_note(order_id, "")
    with pytest.raises(KeyError):
        sb.delete_note(note_id)


def test_the_default_clock_is_real_utc_now(mews_call: Any) -> None:
    sb = Sandbox.generate(orders=20, seed=1)
    order_id = sb.orders()[0]["Id"]
    sb.update_order(order_id, State="Canceled")
    updated = datetime.fromisoformat(
        next(o for o in sb.orders() if o["Id"] == order_id)["UpdatedUtc"]
    )
    assert abs(updated - datetime.now(UTC)) < timedelta(seconds=5)
    assert all(datetime.fromisoformat(o["UpdatedUtc"]) <= datetime.now(UTC) for o in sb.orders())


def test_a_change_is_stamped_precisely_and_shown_in_whole_seconds(
    sb: Sandbox, mews_call: Any
) -> None:
    changed_at = datetime(2026, 1, 20, 12, 0, 0, 700_000, tzinfo=UTC)
    sb.clock = lambda: changed_at
    order = sb.orders()[0]
    sb.update_order(order["Id"], State="Processed")

    def found(start: str, end: str) -> bool:
        body = mews_call(
            sb,
            ORDERS,
            ServiceIds=[order["ServiceId"]],
            ProductServiceOrderIds=[order["Id"]],
            Limitation={"Count": 1},
            UpdatedUtc={"StartUtc": start, "EndUtc": end},
        ).json()
        return bool(body["ProductServiceOrders"])

    shown = get_order(mews_call, sb, order["Id"], changed_at)["UpdatedUtc"]
    assert shown == "2026-01-20T12:00:00Z"
    # a window that ended before the change, within the same second, does not hide it forever:
    assert not found("2026-01-20T11:00:00Z", "2026-01-20T12:00:00.5Z")
    assert found("2026-01-20T12:00:00.5Z", "2026-01-20T13:00:00Z")
    assert found("2026-01-20T11:00:00Z", "2026-01-20T12:00:00.8Z")
    assert found("2026-01-20T12:00:00.7Z", "2026-01-20T12:00:00.7Z")
    assert not found(shown, shown)  # equality is on the precise instant
