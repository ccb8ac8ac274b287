"""The clean-up after a load keeps one row per order, note and item, and drops the notes Mews
deleted, also where PostgreSQL's quick checks (`compaction.QuickChecks`) decide whether to look:
a first load holding copies of its own rows, a load after others, two loads cleaned up at once."""

from __future__ import annotations

from datetime import UTC, datetime

import dlt
import pyarrow as pa

from pipelines import compaction
from pipelines.compaction import Compacted, compact
from pipelines.mews_pipeline import build_pipeline
from pipelines.storage import DuckDbStorage, PostgresStorage


def at(hour: int) -> datetime:
    return datetime(2025, 1, 1, hour, tzinfo=UTC)


def orders(*rows: tuple[str, int]) -> pa.Table:
    return pa.table(
        {"id": [r[0] for r in rows], "updated_utc": [at(r[1]) for r in rows]},
        schema=pa.schema([("id", pa.string()), ("updated_utc", pa.timestamp("us", tz="UTC"))]),
    )


def notes(*rows: tuple[str, str]) -> pa.Table:
    return pa.table({"id": [r[0] for r in rows], "service_order_id": [r[1] for r in rows]})


class Dataset:
    def __init__(self, tmp_path, postgres: str | None) -> None:
        self.storage = (
            PostgresStorage.configured() if postgres else DuckDbStorage.at(tmp_path / "t.duckdb")
        )
        self.pipeline = build_pipeline(self.storage, "compaction_checks", str(tmp_path / "dlt"))

    def load(self, orders: pa.Table, notes: pa.Table, items: pa.Table) -> None:
        """One dlt load (one load id) of the three tables, appended."""
        tables = {
            "product_service_orders": orders,
            "service_order_notes": notes,
            "order_items": items,
        }
        resources = [
            dlt.resource([table], name=name, write_disposition="append")
            for name, table in tables.items()
        ]
        self.pipeline.extract(resources, loader_file_format=self.storage.loader_file_format)
        self.pipeline.normalize()
        self.pipeline.load().raise_on_failed_jobs()

    def compact(self) -> Compacted:
        with self.pipeline.sql_client() as client:
            return compact(client, self.pipeline.destination.destination_name)

    def rows(self, table: str, columns: str = "id") -> list[tuple]:
        with self.pipeline.sql_client() as client:
            return sorted(client.execute_sql(f"select {columns} from mews.{table}"))


def test_a_first_load_keeps_the_latest_of_its_own_copies(tmp_path, postgres):
    dataset = Dataset(tmp_path, postgres)
    # Order a and item x read twice in one load (changed while the run read): the later wins.
    dataset.load(
        orders(("a", 1), ("b", 1), ("a", 3)),
        notes(("n1", "a"), ("n2", "b"), ("n1", "a")),
        orders(("x", 2), ("x", 5), ("y", 1)),
    )

    removed = dataset.compact()

    assert (removed.superseded_orders, removed.superseded_notes) == (1, 1)
    assert (removed.superseded_items, removed.deleted_notes) == (1, 0)
    assert dataset.rows("product_service_orders", "id, updated_utc") == [("a", at(3)), ("b", at(1))]
    assert dataset.rows("service_order_notes") == [("n1",), ("n2",)]
    assert dataset.rows("order_items", "id, updated_utc") == [("x", at(5)), ("y", at(1))]


def test_a_first_load_without_copies_keeps_every_row(tmp_path, postgres):
    dataset = Dataset(tmp_path, postgres)
    dataset.load(orders(("a", 1), ("b", 1)), notes(("n1", "a")), orders(("x", 2)))

    assert dataset.compact() == Compacted()
    assert dataset.rows("product_service_orders") == [("a",), ("b",)]
    assert dataset.rows("service_order_notes") == [("n1",)]
    assert dataset.rows("order_items") == [("x",)]


def test_later_loads_supersede_older_rows_and_drop_deleted_notes(tmp_path, postgres):
    dataset = Dataset(tmp_path, postgres)
    dataset.load(orders(("a", 1), ("b", 1)), notes(("n1", "a"), ("n2", "b")), orders(("x", 1)))
    dataset.compact()
    # b read again without its note n2 (deleted in Mews), x changed.
    dataset.load(orders(("b", 2)), notes(), orders(("x", 2)))

    removed = dataset.compact()

    assert (removed.superseded_orders, removed.deleted_notes, removed.superseded_items) == (1, 1, 1)
    assert dataset.rows("product_service_orders", "id, updated_utc") == [("a", at(1)), ("b", at(2))]
    assert dataset.rows("service_order_notes") == [("n1",)]
    assert dataset.rows("order_items", "id, updated_utc") == [("x", at(2))]


def test_two_loads_cleaned_up_at_once(tmp_path, postgres):
    """A run killed after its load and before its clean-up: the next cleans up both loads."""
    dataset = Dataset(tmp_path, postgres)
    dataset.load(orders(("c", 1), ("d", 1)), notes(("n3", "c"), ("n4", "d")), orders(("x", 1)))
    dataset.load(orders(("c", 2)), notes(), orders(("y", 1)))

    removed = dataset.compact()

    assert (removed.superseded_orders, removed.deleted_notes, removed.superseded_items) == (1, 1, 0)
    assert dataset.rows("product_service_orders", "id, updated_utc") == [("c", at(2)), ("d", at(1))]
    assert dataset.rows("service_order_notes") == [("n4",)]
    assert dataset.rows("order_items") == [("x",), ("y",)]


def test_ids_that_only_share_a_hash_each_keep_their_row(tmp_path, postgres, monkeypatch):
    """DuckDB finds ids read again by their hash (`compaction.ID_KEY`): ids that merely share
    one are not copies. Made certain here by a key most ids share, their length."""
    monkeypatch.setitem(compaction.ID_KEY, "duckdb", "length(id)")
    monkeypatch.setitem(compaction.ID_KEY, "postgres", "length(id)")
    dataset = Dataset(tmp_path, postgres)
    dataset.load(orders(("a", 1), ("b", 1)), notes(("n1", "a"), ("n2", "b")), orders(("x", 1)))
    dataset.compact()
    # c and y are new, of the same length as a, b and x; b read again.
    dataset.load(orders(("b", 2), ("c", 2)), notes(("n2", "b"), ("n3", "c")), orders(("y", 2)))

    removed = dataset.compact()

    assert (removed.superseded_orders, removed.superseded_notes) == (1, 1)
    assert (removed.superseded_items, removed.deleted_notes) == (0, 0)
    assert dataset.rows("product_service_orders", "id, updated_utc") == [
        ("a", at(1)),
        ("b", at(2)),
        ("c", at(2)),
    ]
    assert dataset.rows("service_order_notes") == [("n1",), ("n2",), ("n3",)]
    assert dataset.rows("order_items") == [("x",), ("y",)]
