"""Helpers shared by the end-to-end tests: sync a sandbox, read DuckDB, read the truth."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
from dlt.common.versioned_state import decompress_state

from mews_sandbox import DEMO_PORTFOLIO_ACCESS_TOKEN, Sandbox, SandboxTransport
from pipelines.mews_pipeline import RunReport, sync
from pipelines.storage import DuckDbStorage, PostgresStorage, Storage
from sources.mews.settings import DEFAULT_NOTE_TYPES

START_DATE = "2015-01-01"


def lagging_sandbox(orders: int, seed: int) -> Sandbox:
    """A generated sandbox whose changes are stamped 30 s before its clock, as a commit that
    lands late would be; this also keeps a change from sharing its second with the end of the run
    before it."""
    sandbox = Sandbox.generate(orders=orders, seed=seed)
    sandbox.commit_delay = timedelta(seconds=30)  # its clock, and so its Date headers, are right
    return sandbox


def change_orders_and_notes(sandbox, orders: int = 50) -> None:
    """Orders changed and added, a note edited, one deleted, and every note of one order."""
    existing = truth_orders(sandbox)
    for order in existing[:orders]:
        sandbox.update_order(order[0], State="Processed")
    sandbox.add_order(existing[0][1])
    by_order = notes_by_order(sandbox)
    several = sorted(o for o, ids in by_order.items() if len(ids) >= 2)
    sandbox.update_note(by_order[several[0]][0], "Edited")
    sandbox.delete_note(by_order[several[1]][0])
    for note_id in by_order[several[2]]:
        sandbox.delete_note(note_id)


class FakeClock:
    """Time that passes only when someone sleeps: for the client's and limiter's `clock` and
    `sleep`, so that tests of waiting take no time and always wait alike."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def one_sentence(stderr: str) -> str:
    """The single line an expected failure prints; fails on a traceback or several lines."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    return lines[0]


class Target:
    """One destination (a DuckDB file, or the PostgreSQL database of `postgres`, a URL that
    DESTINATION__POSTGRES__CREDENTIALS also holds) and one dlt working directory, synced from
    one sandbox."""

    def __init__(
        self, sandbox: Sandbox, tmp: Path, postgres: str | None = None, **source_args: Any
    ):
        self.sandbox = sandbox
        tmp.mkdir(parents=True, exist_ok=True)
        self.database = str(tmp / "mews_sync.duckdb")
        self.postgres = postgres
        self.workdir: Path | None = tmp / "dlt"
        self.source_args = source_args

    def storage(self) -> Storage:
        if self.postgres:
            return PostgresStorage.configured()
        return DuckDbStorage.at(self.database)

    def sync(self, kind: str = "run", *, allowed_400s: int = 0, **overrides: Any) -> RunReport:
        """A run of the pipeline against the sandbox; it may send at most `allowed_400s`
        requests Mews rejects with 400 (0: none; one is by design where the client learns a
        limit from the refusal, as a stricter reading of "3 months")."""
        args = {
            "platform_url": "http://sandbox.local",
            "client_token": self.sandbox.client_token,
            "access_token": DEMO_PORTFOLIO_ACCESS_TOKEN,
            "transport": SandboxTransport(self.sandbox),
            "start_date": START_DATE,
            "rate_limit_requests": 0,
            **self.source_args,
            **overrides,
        }
        before = self.sandbox.log.count(status=400)
        workdir = str(self.workdir) if self.workdir else None
        report = sync(kind, storage=self.storage(), pipelines_dir=workdir, **args)
        assert self.sandbox.log.count(status=400) - before <= allowed_400s, (
            "the pipeline sent a request Mews rejects"
        )
        return report

    def rows(self, sql: str) -> list[tuple]:
        if self.postgres:
            import psycopg2

            with psycopg2.connect(self.postgres) as con, con.cursor() as cursor:
                cursor.execute(sql)
                return [tuple(row) for row in cursor.fetchall()]
        with duckdb.connect(self.database, read_only=True) as con:
            return con.execute(sql).fetchall()

    def orders(self) -> list[tuple]:
        return sorted(
            self.rows(
                "select id, service_id, state, number, updated_utc from mews.product_service_orders"
            )
        )

    def notes(self) -> list[tuple]:
        return sorted(
            self.rows("select id, service_order_id, text, type from mews.service_order_notes")
        )

    def state(self) -> dict[str, Any]:
        """The incremental state as stored in the destination."""
        (blob,) = self.rows(
            "select state from mews._dlt_pipeline_state order by created_at desc limit 1"
        )[0]
        return decompress_state(blob)


def users_pipeline(target: Target, tmp_path: Path) -> Any:
    """A dlt pipeline as a user would write one, into the target's destination: nothing of
    mews-sync but the source is then needed."""
    import dlt

    destination = (
        dlt.destinations.postgres(target.postgres)
        if target.postgres
        else dlt.destinations.duckdb(target.database)
    )
    return dlt.pipeline(
        "a_users_pipeline",
        destination=destination,
        dataset_name="mews",
        pipelines_dir=str(tmp_path / "dlt"),
    )


def users_source(sandbox: Sandbox) -> Any:
    """The source as a user's `pipeline.run` takes it, reading the sandbox in-process."""
    from sources.mews import mews_source

    return mews_source(
        platform_url="http://sandbox.local",
        client_token=sandbox.client_token,
        access_token=DEMO_PORTFOLIO_ACCESS_TOKEN,
        transport=SandboxTransport(sandbox),
        start_date=START_DATE,
        rate_limit_requests=0,
    )


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def truth_orders(sandbox: Sandbox, service_ids: set[str] | None = None) -> list[tuple]:
    service_ids = service_ids or product_service_ids(sandbox)
    return sorted(
        (o["Id"], o["ServiceId"], o["State"], o.get("Number"), utc(o["UpdatedUtc"]))
        for o in sandbox.orders()
        if o["ServiceId"] in service_ids
    )


def truth_notes(sandbox: Sandbox, order_ids: set[str] | None = None) -> list[tuple]:
    if order_ids is None:
        order_ids = {o[0] for o in truth_orders(sandbox)}
    return sorted(
        (n["Id"], n.get("ServiceOrderId") or n.get("OrderId"), n["Text"], n["Type"])
        for n in sandbox.notes(types=list(DEFAULT_NOTE_TYPES))
        if (n.get("ServiceOrderId") or n.get("OrderId")) in order_ids
    )


def notes_by_order(sandbox: Sandbox) -> dict[str, list[str]]:
    """Order id -> ids of its live notes, of every type."""
    by_order: dict[str, list[str]] = {}
    for note in sandbox.notes():
        order_id = note.get("OrderId") or note.get("ServiceOrderId")
        by_order.setdefault(order_id, []).append(note["Id"])
    return by_order


def service_name(service: dict[str, Any]) -> str | None:
    """A service's English (or first) name, in the current shape (`Names`) or the older one."""
    names = service.get("Names") or {}
    return service.get("Name") or names.get("en-US") or next(iter(names.values()), None)


def product_service_ids(sandbox: Sandbox) -> set[str]:
    return {
        s["Id"]
        for s in sandbox.services()
        if (s.get("Data") or {}).get("Discriminator") == "Additional"
        or s.get("Type") == "Orderable"
    }


def assert_equals_truth(target: Target) -> None:
    orders, expected_orders = target.orders(), truth_orders(target.sandbox)
    assert len(orders) == len({o[0] for o in orders}), "duplicate orders"
    assert orders == expected_orders
    notes, expected_notes = target.notes(), truth_notes(target.sandbox)
    assert len(notes) == len({n[0] for n in notes}), "duplicate notes"
    assert notes == expected_notes


ITEM_FIELDS = (
    "id, service_order_id, service_id, enterprise_id, accounting_state, type, unit_count, "
    "amount__currency, amount__net_value, amount__gross_value, unit_amount__gross_value, "
    "original_amount__gross_value, product_id, rebated_item_id, bill_id, updated_utc, "
    "consumed_utc, closed_utc, canceled_utc"
)


def amount(value: Any) -> Decimal | None:
    """A JSON number of the sandbox as the exact decimal its text is."""
    return None if value is None else Decimal(repr(value) if isinstance(value, float) else value)


def optional_utc(text: str | None) -> datetime | None:
    return None if text is None else utc(text)


def truth_items(sandbox: Sandbox, service_ids: set[str] | None = None) -> list[tuple]:
    """The sandbox's order items of the synced services, as `ITEM_FIELDS` reads them."""
    service_ids = service_ids or product_service_ids(sandbox)
    rows = []
    for i in sandbox.order_items():
        if i["ServiceId"] not in service_ids:
            continue
        data = i.get("Data") or {}
        product, rebate = data.get("Product") or {}, data.get("Rebate") or {}
        money = i["Amount"]
        rows.append(
            (
                i["Id"], i["ServiceOrderId"], i["ServiceId"], i["EnterpriseId"],
                i["AccountingState"], i["Type"], i["UnitCount"], money["Currency"],
                amount(money["NetValue"]), amount(money["GrossValue"]),
                amount(i["UnitAmount"]["GrossValue"]), amount(i["OriginalAmount"]["GrossValue"]),
                product.get("ProductId") or rebate.get("ProductId"), rebate.get("RebatedItemId"),
                i["BillId"], utc(i["UpdatedUtc"]), optional_utc(i["ConsumedUtc"]),
                optional_utc(i["ClosedUtc"]), optional_utc(i["CanceledUtc"]),
            )
        )  # fmt: skip
    return sorted(rows)


# The columns kept as JSON text: their text may differ from Mews' ("21" for 21.0), their values
# may not.
ITEM_TEXTS = ("unit_amount__tax_values", "amount__breakdown", "data__product", "data__rebate")


def json_values(text: str | None) -> Any:
    """JSON text as values, every number an exact decimal."""
    return None if text is None else json.loads(text, parse_float=Decimal, parse_int=Decimal)


def truth_item_texts(sandbox: Sandbox) -> list[tuple]:
    """What `ITEM_TEXTS` hold for the sandbox's items of the synced services."""
    synced = product_service_ids(sandbox)
    return sorted(
        (
            i["Id"],
            *(
                json_values(json.dumps(value))
                for value in (
                    i["UnitAmount"]["TaxValues"], i["Amount"]["Breakdown"],
                    (i["Data"] or {}).get("Product"), (i["Data"] or {}).get("Rebate"),
                )
            ),
        )  # fmt: skip
        for i in sandbox.order_items()
        if i["ServiceId"] in synced
    )


def truth_products(sandbox: Sandbox) -> list[tuple]:
    synced = product_service_ids(sandbox)
    return sorted(
        (
            p["Id"],
            p["ServiceId"],
            p["Names"].get("en-US") or next(iter(p["Names"].values()), None),
            amount(p["Price"]["GrossValue"]),
            utc(p["UpdatedUtc"]),
        )
        for p in sandbox.products()
        if p["ServiceId"] in synced
    )


def assert_items_equal_truth(target: Target) -> None:
    """The order items (every field the views use, amounts as exact decimals) and the
    products equal the sandbox's, one row each."""
    items = sorted(target.rows(f"select {ITEM_FIELDS} from mews.order_items"))
    assert len(items) == len({i[0] for i in items}), "duplicate order items"
    expected = truth_items(target.sandbox)
    assert len(items) == len(expected)
    assert items == expected
    assert all(isinstance(i[8], Decimal) and isinstance(i[9], Decimal) for i in items)
    texts = sorted(target.rows(f"select id, {', '.join(ITEM_TEXTS)} from mews.order_items"))
    assert [(t[0], *map(json_values, t[1:])) for t in texts] == truth_item_texts(target.sandbox)
    products = sorted(
        target.rows(
            "select id, service_id, name, price__gross_value, updated_utc from mews.products"
        )
    )
    assert products == truth_products(target.sandbox)
