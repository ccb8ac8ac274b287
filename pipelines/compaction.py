"""The append-then-compact loading strategy: the fast way to keep one row per order and note.

The source declares dlt merges (see `sources/mews`), which are right on every destination. On
DuckDB and PostgreSQL the pipeline loads orders and notes by appending instead and then
removes the rows they supersede, here: a merge copies every row into a staging table and
again into the table, which on a first sync of 200,000 orders into DuckDB cost 3.5 s of CPU
against 1.4 s for appending. Only rows of loads no clean-up has looked at yet (those not in
`_mews_sync_cleaned_loads`) are looked at, so a nightly run touches what it loaded; a load is
entered there in the same transaction as the deletes, and only once dlt finished it, so a run
killed before this is healed by the next. Of one property, load ids are timestamps: a later
load read later. Properties have orders of their own services, so of different ones never
supersede each other's rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.views import existing_tables
from sources.errors import counted
from sources.mews import NOTE_MARKER_COLUMN

log = logging.getLogger("mews_sync")

# The loads a clean-up has looked at, one row each. Before properties, one mark stood for
# every load up to it (`_mews_sync_cleaned`): it is still read, never written.
CLEANED_TABLE = "_mews_sync_cleaned_loads"
LEGACY_MARK_TABLE = "_mews_sync_cleaned"
# Each destination's name for a row's physical identity, to tell apart two copies of a row.
ROW_ID = {"duckdb": "rowid", "postgres": "ctid"}
# What the clean-up finds ids read again by: in DuckDB the 8-byte hash of an id rather than the
# id (a 36-character text), so that the hash tables of a step of 400,000 orders (about 1M
# notes) fit the clean-up's memory limit (at 48 MB, the id's ran out of memory in the notes'
# delete of a first sync of 1,000,000 orders). Ids that merely share a hash are told apart by
# the id itself (`delete_superseded`). PostgreSQL hashes the ids as it joins them anyway.
ID_KEY = {"duckdb": "hash(id)", "postgres": "id"}
# And a part of the ids at a time: in DuckDB each delete of superseded rows runs once per slice
# of the ids' keys (their hashes), so that its hash tables hold a quarter of a step's ids.
ID_SLICES = {"duckdb": 4, "postgres": 1}
POSTGRES_WORK_MEM = "64MB"  # for the clean-up's transaction only
APPENDED = ("product_service_orders", "service_order_notes", "order_items")


@dataclass
class Compacted:
    """What one compaction removed: older copies of rows read again, and notes Mews deleted."""

    superseded_orders: int = 0
    superseded_notes: int = 0
    deleted_notes: int = 0
    superseded_items: int = 0

    def add(self, other: Compacted) -> None:
        self.superseded_orders += other.superseded_orders
        self.superseded_notes += other.superseded_notes
        self.deleted_notes += other.deleted_notes
        self.superseded_items += other.superseded_items


def load_by_appending(source: Any) -> None:
    """Switch the source's orders, notes and order items from dlt's merge to appending
    (compact() after each load). The notes' markers for orders without notes only matter to
    a merge."""
    # The merge-only hints go too: dlt warns on every load that an append ignores them.
    source.resources["product_service_orders"].apply_hints(
        write_disposition="append",
        columns={"updated_utc": {"name": "updated_utc", "dedup_sort": None}},
    )
    # Order items are never deleted in Mews: the latest copy of each is all there is to keep.
    source.resources["order_items"].apply_hints(
        write_disposition="append",
        columns={"updated_utc": {"name": "updated_utc", "dedup_sort": None}},
    )
    notes = source.resources["service_order_notes"]
    notes.apply_hints(
        write_disposition="append",
        merge_key="",
        columns={
            NOTE_MARKER_COLUMN: {
                "name": NOTE_MARKER_COLUMN,
                "data_type": "bool",
                "hard_delete": False,
            }
        },
    )
    notes.add_map(without_markers)


def without_markers(notes: pa.Table) -> pa.Table:
    if NOTE_MARKER_COLUMN not in notes.column_names:
        return notes
    keep = pc.invert(pc.fill_null(notes.column(NOTE_MARKER_COLUMN), False))
    return notes.filter(keep).drop_columns([NOTE_MARKER_COLUMN])


def compact(sql_client: Any, destination: str) -> Compacted:
    """Keep one row per order, note and order item, the latest read, and drop the notes Mews
    deleted,
    looking only at rows of the loads dlt finished that no clean-up has looked at yet.

    Whenever an order is read, all its notes are read in the same load, so a current note
    carries its order's `_dlt_load_id`; one with another load id was deleted in Mews (Mews only
    leaves it out). Run only under the destination's write lock: then no other load is under
    way, and the loads of every property into the dataset are cleaned up, whichever run does
    it, since their load ids (made when each run began to read) come in any order.
    """
    done = Compacted()
    existing = existing_tables(sql_client, (*APPENDED, LEGACY_MARK_TABLE, CLEANED_TABLE))
    if "product_service_orders" not in existing:
        return done
    cleaned = sql_client.make_qualified_table_name(CLEANED_TABLE)
    if CLEANED_TABLE not in existing:
        sql_client.execute_sql(f"create table if not exists {cleaned} (load_id varchar not null)")
    loads = sql_client.make_qualified_table_name("_dlt_loads")
    with sql_client.begin_transaction():
        if destination == "postgres":
            # The hashes of ids in memory rather than in files: PostgreSQL's 4 MB default
            # spilled them, and the checks of a first sync of 200,000 orders took 0.3 s more.
            sql_client.execute_sql(f"set local work_mem = '{POSTGRES_WORK_MEM}'")
        legacy = ""
        if LEGACY_MARK_TABLE in existing:
            legacy_table = sql_client.make_qualified_table_name(LEGACY_MARK_TABLE)
            ((legacy,),) = sql_client.execute_sql(
                f"select coalesce(max(load_id), '') from {legacy_table}"
            )
        new = f"""(select load_id from {loads} where status = 0 and load_id > %s
            and load_id not in (select load_id from {cleaned}))"""
        # Mostly none before a run's first load (what a killed run left): then one statement,
        # not a scan of every table's load ids.
        ((waiting,),) = sql_client.execute_sql(f"select count(*) from {new} as waiting", legacy)
        if waiting:
            done = remove_superseded(sql_client, destination, existing, new, legacy)
            sql_client.execute_sql(f"insert into {cleaned} {new}", legacy)
    if done.deleted_notes:
        log.info("removed %s Mews no longer has", counted(done.deleted_notes, "note"))
    if done.superseded_orders or done.superseded_notes:
        log.info(
            "removed the older copies of %s and %s read again",
            counted(done.superseded_orders, "order"),
            counted(done.superseded_notes, "note"),
        )
    return done


def remove_superseded(
    sql_client: Any, destination: str, existing: set[str], new: str, legacy: str
) -> Compacted:
    """The deletes of `compact`, of rows superseded by rows of the `new` loads."""
    orders = sql_client.make_qualified_table_name("product_service_orders")
    notes = sql_client.make_qualified_table_name("service_order_notes")
    quick = QuickChecks(sql_client, new, legacy) if destination == "postgres" else None
    done = Compacted()
    done.superseded_orders = delete_superseded_rows(
        sql_client, orders, destination, "updated_utc desc", new, legacy, quick
    )
    if "service_order_notes" in existing:
        # A join on keys, not dlt's merge key: that would make a delete an OR of two
        # keys, which DuckDB cannot hash-join (a nightly into 1M orders took 79 s so).
        # Older copies go first, so that what remains to delete was deleted in Mews.
        done.superseded_notes = delete_superseded_rows(
            sql_client, notes, destination, "id", new, legacy, quick
        )
        if quick is None or not quick.all_of_one_new_load(notes):
            done.deleted_notes = affected(
                sql_client,
                f"""delete from {notes} as n using {orders} as o
                where o.id = n.service_order_id and o._dlt_load_id in {new}
                and n._dlt_load_id <> o._dlt_load_id""",
                legacy,
            )
    if "order_items" in existing:
        items = sql_client.make_qualified_table_name("order_items")
        done.superseded_items = delete_superseded_rows(
            sql_client, items, destination, "updated_utc desc", new, legacy, quick
        )
    return done


def delete_superseded(table: str, destination: str, then: str, new: str, part: int = 0) -> str:
    """Of the rows sharing an id with a row of the `new` loads (a subquery of load ids) in
    slice `part` of `ID_SLICES`, keep the latest load's (ordered by `then` within one load,
    where a row read twice comes twice). The candidates are found by `ID_KEY`, then told
    apart by id: exact. Every copy of an id is in the same slice."""
    row_id, key, parts = ROW_ID[destination], ID_KEY[destination], ID_SLICES[destination]
    in_part = f"and {key} % {parts} = {part}" if parts > 1 else ""
    return f"""delete from {table} where {row_id} in (
        select {row_id} from (
            select {row_id}, row_number() over (
                partition by id order by _dlt_load_id desc, {then}) as newest
            from {table}
            where {key} in (
                select {key} from {table}
                where {key} in (
                    select {key} from {table} where _dlt_load_id in {new} {in_part})
                group by {key} having count(*) > 1)) as copies
        where newest > 1)"""


def delete_superseded_rows(
    sql_client: Any,
    table: str,
    destination: str,
    then: str,
    new: str,
    legacy: str,
    quick: QuickChecks | None,
) -> int:
    """`delete_superseded`, unless `quick` shows there is nothing to delete."""
    if quick is not None and quick.only_new_rows(table) and not quick.has_copies(table):
        return 0
    return sum(
        affected(sql_client, delete_superseded(table, destination, then, new, part), legacy)
        for part in range(ID_SLICES[destination])
    )


class QuickChecks:
    """What shows cheaply that a first sync superseded nothing, on PostgreSQL.

    There the deletes cost 3.2 s of the server's CPU after a first sync of 200,000 orders
    (two scans of each table, hash joins of all its ids spilling to disk), and found nothing.
    Exact, cheap to ask on a nightly (its first row is of an older load) and on a first sync
    (one scan, a hash of the ids: 0.3 s for 333,000 order items). Not on DuckDB, whose
    deletes are cheap: with the checks a first sync of 200,000 orders took 28.4 s of CPU
    instead of 27.2 (bench.py's `pipeline` scenario of both, side by side, medians of 3).
    """

    def __init__(self, sql_client: Any, new: str, legacy: str) -> None:
        self.sql_client, self.new, self.legacy = sql_client, new, legacy
        rows = sql_client.execute_sql(f"select load_id from {new} as new", legacy)
        self.new_loads = [load_id for (load_id,) in rows or []]
        self.only_new: dict[str, bool] = {}

    def only_new_rows(self, table: str) -> bool:
        """Whether every row of `table` is of a new load: then only those can share an id."""
        if table not in self.only_new:
            self.only_new[table] = not self.sql_client.execute_sql(
                f"select 1 from {table} where _dlt_load_id not in {self.new} limit 1",
                self.legacy,
            )
        return self.only_new[table]

    def has_copies(self, table: str) -> bool:
        """Whether two rows of `table` share an id."""
        return bool(
            self.sql_client.execute_sql(
                f"select 1 from {table} group by id having count(*) > 1 limit 1"
            )
        )

    def all_of_one_new_load(self, table: str) -> bool:
        """Whether the new loads are one, and every row of `table` is of it: then a note has
        its order's load id (so was not deleted in Mews)."""
        return len(self.new_loads) == 1 and self.only_new_rows(table)


def affected(sql_client: Any, sql: str, *args: Any) -> int:
    """Run a DELETE and return how many rows it removed, on DuckDB and PostgreSQL alike."""
    with sql_client.execute_query(sql, *args) as cursor:
        native = getattr(cursor, "native_cursor", cursor)
        if getattr(native, "rowcount", -1) >= 0:
            return int(native.rowcount)
        row = cursor.fetchone()  # DuckDB answers a DELETE with the count
        return int(row[0]) if row else 0
