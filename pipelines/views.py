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
    for view in view_files():
        sql_client.execute_sql(view.read_text(encoding="utf-8"))


def view_files() -> list[Traversable]:
    """The views' SQL files, by name: sql/ of the repository, installed as the package
    `pipelines.sql` (pyproject.toml), so that a `pip install .` without -e has them too."""
    found = [f for f in files("pipelines.sql").iterdir() if f.name.endswith(".sql")]
    return sorted(found, key=lambda f: f.name)


def count_rows(sql_client: Any) -> dict[str, int]:
    """Rows per table of the dataset, of the tables that exist."""
    existing = existing_tables(sql_client, TABLES)
    counts = {}
    for table in TABLES:
        if table in existing:
            name = sql_client.make_qualified_table_name(table)
            ((counts[table],),) = sql_client.execute_sql(f"select count(*) from {name}")
    return counts


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
