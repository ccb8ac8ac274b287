"""The analysts' views in sql/, and rows per table, through dlt's SQL client of any destination."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

log = logging.getLogger("mews_sync")

TABLES = (
    "product_service_orders",
    "service_order_notes",
    "services",
    "enterprises",
    "order_items",
    "products",
)


def apply_views(sql_client: Any) -> None:
    """(Re)create the views in sql/. Their names are unqualified: the SQL client's search path
    is the dataset, so they land in it, and the analysts' copy of a DuckDB file (another
    catalog) still resolves them."""
    # One statement of them all, in name order: a round trip each cost 5-10 ms on DuckDB.
    # Each ends on a line of its own, after any trailing comment.
    texts = [view.read_text(encoding="utf-8").rstrip().removesuffix(";") for view in view_files()]
    sql_client.execute_sql("\n;\n".join(texts) + "\n;")


def view_files() -> list[Traversable]:
    """The views' SQL files, by name: sql/ of the repository, installed as the package
    `pipelines.sql` (pyproject.toml), so that a `pip install .` without -e has them too."""
    found = [f for f in files("pipelines.sql").iterdir() if f.name.endswith(".sql")]
    return sorted(found, key=lambda f: f.name)


def count_rows(sql_client: Any) -> dict[str, int]:
    """Rows per table of the dataset, of the tables that exist."""
    existing = existing_tables(sql_client, TABLES)
    present = [table for table in TABLES if table in existing]
    if not present:
        return {}
    # One statement for all: a round trip each cost 5-10 ms on DuckDB.
    each = " union all ".join(
        f"select %s, count(*) from {sql_client.make_qualified_table_name(table)}"
        for table in present
    )
    counts = dict(sql_client.execute_sql(each, *present))
    return {table: int(counts[table]) for table in present}


def existing_tables(sql_client: Any, names: Iterable[str]) -> set[str]:
    """Which of `names` exist in the dataset."""
    wanted = list(names)
    placeholders = ", ".join(["%s"] * len(wanted))
    rows = sql_client.execute_sql(
        "select table_name from information_schema.tables "
        f"where table_schema = %s and table_name in ({placeholders})",
        sql_client.dataset_name,
        *wanted,
    )
    return {name for (name,) in rows or []}
