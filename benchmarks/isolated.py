"""The environment of a benchmarked `mews-sync` process: none of this machine's own settings."""

from __future__ import annotations

import os
from pathlib import Path


def isolated_env(repo: Path, folder: Path, database: Path) -> dict[str, str]:
    """This process's environment without any SOURCES__, DESTINATION__, MEWS_SYNC__ or DLT_
    setting, importing `repo`, with dlt's data folder in `folder` and the DuckDB file
    `database`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SOURCES__", "DESTINATION__", "MEWS_SYNC__", "DLT_"))
    }
    env.update(
        PYTHONPATH=str(repo),
        DLT_DATA_DIR=str(folder / "dlt_data"),
        DESTINATION__DUCKDB__CREDENTIALS=str(database),
    )
    return env
