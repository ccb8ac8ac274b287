"""Texts and amounts go into PostgreSQL exactly through the csv files its COPY reads (the
file format `PostgresStorage` asks for), and into DuckDB alike: quotes, commas, line breaks,
backslashes, the end-of-data marker, unicode, empty text apart from NULL, 12 decimals."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
from harness import Target, assert_equals_truth, lagging_sandbox, truth_orders

from pipelines.mews_pipeline import build_pipeline
from pipelines.storage import DuckDbStorage, PostgresStorage
from sources.mews.tables import AMOUNT, ORDER_ITEM_COLUMNS, to_table

TEXTS = [
    'She said "late", then left',
    "comma, and; semicolon",
    "two\nlines\r\nand a carriage return",
    "back\\slash \\N \\t",
    "\\.",
    "before\n\\.\nafter",  # COPY's end-of-data marker alone on a line
    "NULL",
    '""',
    "  spaces kept  ",
    "Zürich – 東京 – 🛎️",
]
AMOUNTS = [
    "0.000000000001",
    "-1234567890123456.123456789012",
    "9999999999999999.999999999999",
    "1.5",
    "0",
]


def test_texts_and_numbers_of_orders_and_notes_equal_the_truth(tmp_path, postgres):
    sandbox = lagging_sandbox(orders=200, seed=31)
    orders = truth_orders(sandbox)
    for (order_id, *_), text in zip(orders, TEXTS, strict=False):
        sandbox.add_note(order_id, text)
    sandbox.update_order(orders[-1][0], Number="")  # an empty text, not NULL
    sandbox.update_order(orders[-2][0], Number=None)
    target = Target(sandbox, tmp_path, postgres)

    target.sync()

    assert_equals_truth(target)
    numbers = dict(target.rows("select id, number from mews.product_service_orders"))
    assert (numbers[orders[-1][0]], numbers[orders[-2][0]]) == ("", None)
    texts = {t for (t,) in target.rows("select text from mews.service_order_notes")}
    assert set(TEXTS) <= texts


def test_empty_text_null_and_12_decimals_load_exactly(tmp_path, postgres):
    """What the pipeline's load files carry, in each kind of column: text (empty or NULL),
    exact amounts, timestamps with their zone, booleans, whole numbers."""
    items = [
        {
            "Id": f"item-{n}",
            "Notes": text,
            "BillingName": "" if n % 2 else None,
            "UnitCount": n,
            "UnitAmount": {"NetValue": amount, "GrossValue": None, "Currency": "EUR"},
            "Options": {"CanceledWithReservation": n % 3 == 0 if n % 4 else None},
            "UpdatedUtc": f"2025-03-30T0{n % 10}:59:59.123456Z",
            "ClosedUtc": None,
        }
        for n, (text, amount) in enumerate(
            zip([*TEXTS, "", None, "a\x00b"], AMOUNTS * 3, strict=False)
        )
    ]
    table = to_table(items, ORDER_ITEM_COLUMNS)
    assert table.schema.field("unit_amount__net_value").type == AMOUNT
    storage = PostgresStorage.configured() if postgres else DuckDbStorage.at(tmp_path / "t.duckdb")
    pipeline = build_pipeline(storage, "exact_load", str(tmp_path / "dlt"))
    pipeline.extract(table, table_name="order_items", loader_file_format=storage.loader_file_format)
    pipeline.normalize()
    pipeline.load().raise_on_failed_jobs()

    columns = (
        "id, notes, billing_name, unit_count, unit_amount__net_value, unit_amount__gross_value, "
        "options__canceled_with_reservation, updated_utc, closed_utc"
    )
    with pipeline.sql_client() as client:
        stored = sorted(client.execute_sql(f"select {columns} from mews.order_items"))
    expected = sorted(
        tuple(
            row[name]
            for name in (
                "id", "notes", "billing_name", "unit_count", "unit_amount__net_value",
                "unit_amount__gross_value", "options__canceled_with_reservation",
                "updated_utc", "closed_utc",
            )
        )  # fmt: skip
        for row in table.to_pylist()
    )
    if postgres:  # PostgreSQL cannot store a NUL character: it is left out, as dlt does
        expected = [(r[0], r[1].replace("\0", ""), *r[2:]) if r[1] else r for r in expected]
    assert stored == expected
    assert {r[1] for r in stored} >= {"", None, *TEXTS}
    assert {r[2] for r in stored} == {"", None}
    assert {r[4] for r in stored} == {Decimal(a) for a in AMOUNTS}
    assert all(r[7].utcoffset() is not None for r in stored)  # with their time zone
    assert pa.types.is_timestamp(table.schema.field("updated_utc").type)
