"""The README and docs/: every relative link points at a file that exists, and every #anchor at
a heading of that file (as GitHub makes anchors of headings); every column a sync makes is in
the data dictionary."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest
from test_reliability import cli, cli_env

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(markdown: Path) -> set[str]:
    """GitHub's anchor of each heading: lower case, punctuation but hyphens dropped, spaces
    made hyphens (outside code blocks)."""
    found: set[str] = set()
    in_code = False
    for line in markdown.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def relative_links(markdown: Path) -> list[str]:
    return [
        link
        for link in LINK.findall(markdown.read_text())
        if not re.match(r"[a-z]+:", link)  # https:, mailto:
    ]


@pytest.mark.parametrize("markdown", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(markdown: Path) -> None:
    broken = []
    for link in relative_links(markdown):
        path, _, anchor = link.partition("#")
        target = (markdown.parent / path).resolve() if path else markdown
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no such heading")
    assert broken == []


def test_the_readme_links_every_document() -> None:
    linked = {
        (ROOT / link.partition("#")[0]).resolve() for link in relative_links(ROOT / "README.md")
    }
    assert set(DOCS[1:]) <= linked


DICTIONARY = ROOT / "docs" / "data-dictionary.md"


def documented_columns() -> dict[str, set[str]]:
    """Per `**`schema.table`**` heading, the names in backticks of the table that follows it;
    per view, the names in backticks of its row of the views' table."""
    found: dict[str, set[str]] = {}
    table = None  # from a table's heading to the end of the rows that follow it
    rows = False
    for line in DICTIONARY.read_text().splitlines():
        heading = re.match(r"\*\*`(\w+\.\w+)`\*\*", line)
        if heading:
            table, rows = heading.group(1), False
            found[table] = set()
        elif line.startswith("|") and table:
            rows = True
            if line.startswith("| `"):
                found[table].add(re.match(r"\| `(\w+)`", line).group(1))
        elif line.startswith("| `") and " | `" in line:  # a view: | `name` | `col`, `col` |
            name, columns = line.split(" | ", 1)
            found[f"mews.{name.strip('| `')}"] = set(re.findall(r"`(\w+)`", columns))
        elif rows:
            table, rows = None, False
    return found


def test_every_column_of_a_sync_is_in_the_data_dictionary(tmp_path):
    env = cli_env(tmp_path, "http://unused.invalid")
    database = tmp_path / "mews_demo.duckdb"
    assert cli(env, "demo", "--orders", "50", "--path", str(database), cwd=tmp_path).returncode == 0
    with duckdb.connect(str(database), read_only=True) as con:
        columns = con.execute(
            "select table_schema, table_name, column_name from information_schema.columns"
        ).fetchall()
    documented = documented_columns()
    staging = DICTIONARY.read_text().split("## The `mews_staging` schema", 1)[1]
    missing = []
    for schema, table, column in columns:
        if schema == "mews_staging":  # documented as its table of the same name in mews
            schema = "mews" if f"`{table}`" in staging else schema
        if column not in documented.get(f"{schema}.{table}", set()):
            missing.append(f"{schema}.{table}.{column}")
    assert missing == []
