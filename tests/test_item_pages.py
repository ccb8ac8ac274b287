"""Pages of order items decoded by Arrow (`ArrowPageReader` with the items' declared tax lists
and Data) give what the general way gives: the same values, the same JSON once parsed; what
Arrow would read differently goes the general way."""

import json
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa
import pytest

from sources.mews.arrow_pages import ArrowPageReader
from sources.mews.client import MewsResponseError
from sources.mews.tables import ORDER_ITEM_COLUMNS, raw_schema, to_table

KEY = "OrderItems"
TEXT = {c.name for c in ORDER_ITEM_COLUMNS if c.raw is not None}


def amount(net: Any, tax: Any, gross: Any, code: str = "CZ-2024-S") -> dict[str, Any]:
    return {
        "Currency": "CZK", "NetValue": net, "GrossValue": gross,
        "TaxValues": [{"Code": code, "Value": tax}],
        "Breakdown": {"Items": [{"TaxRateCode": code, "NetValue": net, "TaxValue": tax}]},
    }  # fmt: skip


ITEM = {
    "Id": "i1", "EnterpriseId": "e1", "AccountId": "a1", "AccountType": "Customer",
    "Notes": None, "ServiceId": "s1", "ServiceOrderId": "o1", "BillId": None,
    "AccountingCategoryId": "c1", "BillingName": "Breakfast", "ExternalIdentifier": None,
    "UnitCount": 2, "UnitAmount": amount(10.989, 0.5178, 11.5068),
    "Amount": amount(21.978, 1.0356, 23.0136), "OriginalAmount": amount(21.978, 1.0356, 23.0136),
    "RevenueType": "Product", "CreatorProfileId": "p1", "UpdaterProfileId": "p1",
    "CreatedUtc": "2024-01-01T00:00:00Z", "UpdatedUtc": "2024-01-02T00:00:00Z",
    "ConsumedUtc": "2024-01-01T00:00:00Z", "CanceledUtc": None, "ClosedUtc": None,
    "StartUtc": None, "ClaimedUtc": None, "AccountingState": "Open", "Type": "ProductOrder",
    "Options": {"CanceledWithReservation": False},
    "Data": {"Discriminator": "Product", "Rebate": None,
             "Product": {"ProductId": "pr1", "AgeCategoryId": None, "ProductType": "Product"}},
}  # fmt: skip
REBATE = {
    **ITEM, "Id": "i2", "Type": "ProductOrderRebate", "UnitCount": 1,
    "UnitAmount": amount(-10.989, -0.5178, -11.5068),
    "Data": {"Discriminator": "Rebate", "Product": None,
             "Rebate": {"ProductId": "pr1", "RebatedItemId": "i1"}},
}  # fmt: skip
PRODUCT = ITEM["Data"]["Product"]
CUSTOM = {**ITEM, "Id": "i3", "Data": None, "RevenueType": "Additional"}


def decoded(items: list[dict[str, Any]]) -> tuple[pa.Table, bool]:
    """The table the source makes of a page of `items`, and whether Arrow decoded it."""
    body = orjson.dumps({KEY: items, "Cursor": "c"})
    page = ArrowPageReader(KEY, raw_schema(ORDER_ITEM_COLUMNS)).read(body)
    if page is None:
        return to_table(orjson.loads(body)[KEY], ORDER_ITEM_COLUMNS), False
    return to_table(page[KEY], ORDER_ITEM_COLUMNS), True


def parsed(text: str | None) -> Any:
    """JSON text as values, every number an exact decimal."""
    return None if text is None else json.loads(text, parse_float=Decimal, parse_int=Decimal)


def assert_same_meaning(table: pa.Table, items: list[dict[str, Any]]) -> None:
    """`table` holds what the general way makes of `items`: the same columns and values, the
    JSON text the same once parsed (its numbers' text may differ: "21" for 21.0)."""
    general = to_table(items, ORDER_ITEM_COLUMNS)
    assert sorted(table.column_names) == sorted(general.column_names)
    for name in general.column_names:
        fast, slow = table.column(name).to_pylist(), general.column(name).to_pylist()
        if name in TEXT:
            assert [parsed(t) for t in fast] == [parsed(t) for t in slow], name
        else:
            assert table.schema.field(name).type == general.schema.field(name).type, name
            assert fast == slow, name


def test_a_page_of_products_rebates_and_custom_items_stays_on_arrow():
    items = [ITEM, REBATE, CUSTOM]
    table, by_arrow = decoded(items)
    assert by_arrow
    assert_same_meaning(table, items)
    assert table.column("product_id").to_pylist() == ["pr1", "pr1", None]
    assert table.column("rebated_item_id").to_pylist() == [None, "i1", None]
    assert table.column("unit_amount__net_value")[1].as_py() == Decimal("-10.989")
    assert table.column("unit_amount__tax_values")[0].as_py() == (
        '[{"Code": "CZ-2024-S", "Value": 0.5178}]'
    )  # json.dumps' text, as before
    assert table.column("data__rebate")[1].as_py() == '{"ProductId": "pr1", "RebatedItemId": "i1"}'
    assert table.column("data__product").to_pylist()[1:] == [None, None]


def test_amounts_are_read_exactly_from_their_text():
    body = orjson.dumps({KEY: [ITEM], "Cursor": "c"}).replace(
        b'"GrossValue":11.5068', b'"GrossValue":1234567890123.123456789012'
    )
    page = ArrowPageReader(KEY, raw_schema(ORDER_ITEM_COLUMNS)).read(body)
    assert page is not None
    table = to_table(page[KEY], ORDER_ITEM_COLUMNS)
    # Through a binary float it would be 1234567890123.1235.
    assert table.column("unit_amount__gross_value")[0].as_py() == Decimal(
        "1234567890123.123456789012"
    )


def with_tax(item: dict[str, Any], tax: dict[str, Any]) -> dict[str, Any]:
    return {**item, "Amount": {**item["Amount"], "TaxValues": [tax]}}


@pytest.mark.parametrize(
    ("items", "by_arrow"),
    [
        ([ITEM, {**ITEM, "Id": "i4", "Surcharge": "x", "Options": {"Fresh": 1.5}}], True),
        ([with_tax(ITEM, {"Code": "A", "Value": 1.5, "Rate": 0.21, "Note": 'a "b"\n'})], True),
        ([with_tax(ITEM, {"Code": "A", "Value": 21}), REBATE], True),
        ([{**ITEM, "Amount": {**ITEM["Amount"], "Breakdown": None}}, CUSTOM], True),
        ([{**ITEM, "Amount": {**ITEM["Amount"], "TaxValues": []}}], True),
        ([{**ITEM, "Data": {**ITEM["Data"], "Product": {**PRODUCT, "Age": 3}}}], True),
        ([with_tax(ITEM, {"Code": "A", "Value": 0.1234567890123})], False),
        ([with_tax(ITEM, {"Code": "A", "Value": "0.5"})], False),
        ([with_tax(ITEM, {"Code": "A"})], False),
        ([{**ITEM, "Data": {**ITEM["Data"], "Product": {"ProductId": "pr1"}}}], False),
        ([with_tax(ITEM, {"Code": "A", "Value": 1, "Since": "2024-01-01T00:00:00Z"})], False),
    ],
    ids=[
        "added-fields-in-an-item",
        "added-fields-in-a-tax-value",
        "integer-tax-value",
        "null-breakdown",
        "no-taxes",
        "added-field-in-data-product",
        "more-than-12-decimals",
        "tax-value-as-text",
        "tax-value-absent",
        "product-key-absent",
        "timestamp-in-a-tax-value",
    ],
)
def test_a_page_of_items_gives_what_the_general_way_gives(items, by_arrow):
    table, arrow = decoded(items)
    assert arrow == by_arrow
    assert_same_meaning(table, items)


def test_added_fields_in_a_tax_value_are_kept_in_its_text():
    table, by_arrow = decoded([with_tax(ITEM, {"Code": "A", "Value": 21, "Rate": 0.21})])
    assert by_arrow
    assert table.column("amount__tax_values")[0].as_py() == (
        '[{"Code": "A", "Value": 21, "Rate": 0.21}]'
    )


def test_more_than_12_decimals_are_rounded_half_even_the_general_way():
    table, by_arrow = decoded([with_tax({**ITEM, "UnitAmount": amount(0.1234567890125, 0, 1)},
                                        {"Code": "A", "Value": 1})])  # fmt: skip
    assert not by_arrow
    assert table.column("unit_amount__net_value")[0].as_py() == Decimal("0.123456789012")


def test_a_value_of_another_type_still_says_what_mews_sent():
    body = orjson.dumps({KEY: [{**ITEM, "UnitAmount": amount("abc", 1, 2)}], "Cursor": "c"})
    assert ArrowPageReader(KEY, raw_schema(ORDER_ITEM_COLUMNS)).read(body) is None
    with pytest.raises(MewsResponseError, match="^Mews sent unit_amount__net_value = 'abc', "):
        to_table(orjson.loads(body)[KEY], ORDER_ITEM_COLUMNS)
