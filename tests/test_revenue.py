"""Order items and products: equal to the sandbox's truth (every item, amounts as exact
decimals) after every kind of change, whether or not item changes bump their order, through
every way of loading; and the revenue views."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from harness import (
    START_DATE,
    Target,
    assert_equals_truth,
    assert_items_equal_truth,
    lagging_sandbox,
    product_service_ids,
    users_pipeline,
    users_source,
)

from mews_sandbox import Sandbox
from pipelines import mews_pipeline

ITEMS = "orderItems/getAll"


def items_state(target: Target) -> dict[str, Any]:
    return target.state()["sources"]["mews"]["resources"]["order_items"]


def product_items(sandbox: Sandbox, state: str) -> list[dict[str, Any]]:
    return [
        i
        for i in sandbox.order_items()
        if i["AccountingState"] == state and i["Type"] == "ProductOrder"
    ]


def change_items(sandbox: Sandbox, at: datetime | None = None) -> list[str]:
    """Bills closed, items canceled, rebated and repriced, and a new order with two items;
    the ids of the items that changed or are new (the rebated item itself does not change)."""
    open_items = product_items(sandbox, "Open")
    closed = product_items(sandbox, "Closed")
    sandbox.close_bill([open_items[0]["Id"], open_items[1]["Id"]], at=at)
    sandbox.cancel_item(open_items[2]["Id"], at=at)
    sandbox.reprice_item(open_items[3]["Id"], 12.3456, at=at)
    rebate = sandbox.rebate_item(closed[0]["Id"], at=at)
    changed = [open_items[n]["Id"] for n in range(4)] + [rebate]
    if at is None:
        service = open_items[0]["ServiceId"]
        products = [p["Id"] for p in sandbox.products() if p["ServiceId"] == service][:2]
        order = sandbox.add_order(
            service, product_orders=[{"ProductId": p, "Count": 2} for p in products]
        )
        changed += [i["Id"] for i in sandbox.order_items() if i["ServiceOrderId"] == order]
    return changed


@pytest.mark.parametrize("bump", [False, True], ids=["items_leave_orders", "items_bump_orders"])
def test_items_equal_the_truth_after_every_kind_of_change(tmp_path, postgres, bump):
    sandbox = lagging_sandbox(orders=1500, seed=61)
    sandbox.config.items_bump_order = bump
    target = Target(sandbox, tmp_path, postgres, notes_refresh_days=0)
    report = target.sync()
    assert_items_equal_truth(target)
    assert report.table_rows["order_items"] == len(sandbox.order_items()) > 1500
    marks = items_state(target)["watermarks"]
    assert set(marks) == set(
        target.state()["sources"]["mews"]["resources"]["product_service_orders"]["watermarks"]
    )

    changed = change_items(sandbox)
    sandbox.log.clear()
    target.sync()

    assert_items_equal_truth(target)
    assert_equals_truth(target)
    assert sandbox.log.count(operation=ITEMS) <= len(marks) + 2  # one window, not the history
    stored = dict(target.rows("select id, accounting_state from mews.order_items"))
    assert [stored[i] for i in changed[:5]] == ["Closed", "Closed", "Canceled", "Open", "Open"]


WHOLE_TABLES = ("services", "enterprises", "products")  # read whole each run


def loads_of_whole_tables(target: Target) -> dict[str, str]:
    """The newest load that wrote each table read whole each run."""
    return {t: target.rows(f"select max(_dlt_load_id) from mews.{t}")[0][0] for t in WHOLE_TABLES}


def test_tables_read_whole_are_loaded_again_only_when_they_change(tmp_path, postgres):
    sandbox = lagging_sandbox(orders=300, seed=67)
    target = Target(sandbox, tmp_path, postgres)
    target.sync()
    first = loads_of_whole_tables(target)
    target.sync()
    assert loads_of_whole_tables(target) == first  # nothing changed: not loaded again

    service_id = sorted(product_service_ids(sandbox))[0]
    service = next(s for s in sandbox.services() if s["Id"] == service_id)
    product = next(p for p in sandbox.products() if p["ServiceId"] == service_id)
    sandbox.rename(service_id, "Spa & wellness")
    sandbox.rename(service["EnterpriseId"], "Hotel Praha")
    sandbox.rename(product["Id"], "Late checkout")
    target.sync()

    assert_items_equal_truth(target)  # the products among them
    assert dict(target.rows("select id, name from mews.services"))[service_id] == "Spa & wellness"
    names = dict(target.rows("select id, name from mews.enterprises"))
    assert names[service["EnterpriseId"]] == "Hotel Praha"
    again = loads_of_whole_tables(target)
    assert all(again[t] > first[t] for t in WHOLE_TABLES)


def test_amounts_are_exact_decimals_on_the_destination(tmp_path, postgres):
    sandbox = lagging_sandbox(orders=300, seed=62)
    target = Target(sandbox, tmp_path, postgres)
    target.sync()
    types = dict(
        target.rows(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'mews' and table_name = 'order_items' "
            "and column_name like '%value'"
        )
    )
    assert len(types) == 6 and set(types.values()) == (
        {"numeric"} if postgres else {"DECIMAL(38,12)"}
    )
    (price_type,) = target.rows(
        "select data_type from information_schema.columns where table_schema = 'mews' "
        "and table_name = 'products' and column_name = 'price__gross_value'"
    )[0]
    assert price_type == ("numeric" if postgres else "DECIMAL(38,12)")
    # Summed in SQL, the amounts are the exact sum of the decimals Mews sent, not of floats.
    (total,) = target.rows("select sum(amount__net_value) from mews.order_items")[0]
    assert total == sum(Decimal(repr(i["Amount"]["NetValue"])) for i in sandbox.order_items())


def test_items_load_in_steps_and_a_backfill_in_steps_sees_past_changes(tmp_path, postgres):
    sandbox = lagging_sandbox(orders=1500, seed=63)
    target = Target(sandbox, tmp_path, postgres, notes_refresh_days=0)
    target.sync(max_orders_per_load=400)
    assert_items_equal_truth(target)
    assert_equals_truth(target)
    (loads,) = target.rows("select count(*) from mews._dlt_loads where status = 0")[0]
    assert loads >= 3
    assert "pending" not in items_state(target)
    before = dict(items_state(target)["watermarks"])

    # Changes stamped in the past: only a backfill of that range sees them.
    some = product_items(sandbox, "Open")[:3]
    for item in some:
        sandbox.close_bill([item["Id"]], at=datetime.fromisoformat(item["UpdatedUtc"]))
    target.sync(
        "backfill",
        backfill_start=START_DATE,
        backfill_end=datetime.now(UTC).isoformat(),
        max_orders_per_load=400,
    )

    assert_items_equal_truth(target)
    assert_equals_truth(target)
    assert items_state(target)["watermarks"] == before


def test_a_run_killed_before_the_clean_up_is_healed_by_the_next(tmp_path, monkeypatch, postgres):
    sandbox = lagging_sandbox(orders=600, seed=64)
    target = Target(sandbox, tmp_path, postgres, notes_refresh_days=0)
    target.sync()
    changed = change_items(sandbox)
    clean_up = mews_pipeline.compact
    calls: list[str] = []

    def killed_after_the_load(client: Any, destination: str) -> Any:
        calls.append(destination)
        if len(calls) == 1:
            return clean_up(client, destination)
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(mews_pipeline, "compact", killed_after_the_load)
        with pytest.raises(KeyboardInterrupt):
            target.sync()
    copies = target.rows(f"select count(*) from mews.order_items where id = '{changed[0]}'")
    assert copies == [(2,)]  # loaded, not yet compacted
    report = target.sync()
    assert_items_equal_truth(target)
    assert report.removed.superseded_items >= len(changed) - 2  # new items have no copy


def test_a_plain_pipeline_run_keeps_one_row_per_item(tmp_path, postgres):
    sandbox = lagging_sandbox(orders=800, seed=65)
    target = Target(sandbox, tmp_path, postgres)
    pipeline = users_pipeline(target, tmp_path)

    def source() -> Any:
        return users_source(sandbox)

    pipeline.run(source())
    assert_items_equal_truth(target)
    change_items(sandbox)
    pipeline.run(source())
    pipeline.run(source())
    assert_items_equal_truth(target)


def test_a_plain_pipeline_run_loads_a_renamed_product_and_not_an_unchanged_one(
    tmp_path, postgres
):
    sandbox = lagging_sandbox(orders=300, seed=68)
    target = Target(sandbox, tmp_path, postgres)
    pipeline = users_pipeline(target, tmp_path)

    def source() -> Any:
        return users_source(sandbox)

    def tables_loaded() -> set[str]:
        # A run that read nothing new loads no package at all (likely when no order was
        # updated within the overlap before the watermark, which depends on the hour).
        packages = pipeline.run(source()).load_packages
        return {
            job.job_file_info.table_name
            for package in packages
            for job in package.jobs["completed_jobs"]
        }

    assert set(WHOLE_TABLES) <= tables_loaded()
    assert not set(WHOLE_TABLES) & tables_loaded()  # nothing changed: not loaded again
    service_id = sorted(product_service_ids(sandbox))[0]
    product = next(p for p in sandbox.products() if p["ServiceId"] == service_id)
    sandbox.rename(product["Id"], "Late checkout")
    assert set(WHOLE_TABLES) & tables_loaded() == {"products"}
    assert_items_equal_truth(target)


def test_the_command_line_keeps_items_equal_to_the_truth(tmp_path, postgres):
    from test_reliability import ACCESS_TOKEN, CLIENT_TOKEN, cli, cli_env

    from mews_sandbox import serve

    sandbox = lagging_sandbox(orders=800, seed=64)
    sandbox.client_token = CLIENT_TOKEN
    sandbox.add_token(ACCESS_TOKEN)
    with serve(sandbox) as url:
        env = cli_env(tmp_path, url)
        if postgres:
            env["MEWS_SYNC__DESTINATION"] = "postgres"
            env["DESTINATION__POSTGRES__CREDENTIALS"] = postgres
        first = cli(env, "run", cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        change_items(sandbox)
        second = cli(env, "run", cwd=tmp_path)
        assert second.returncode == 0, second.stderr
    assert " order items, " in second.stdout  # the summary counts them
    target = Target(sandbox, tmp_path, postgres)
    assert_items_equal_truth(target)
    assert_equals_truth(target)
