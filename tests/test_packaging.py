"""What `pip install .` (not -e) installs: the analysts' views too (issue 20)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "sql", "pipelines", "sources", "mews_sandbox")


def test_the_wheel_carries_every_view(tmp_path):
    # Built from a copy: the build leaves build/ and *.egg-info beside the sources.
    copy = tmp_path / "src"
    for name in SOURCES:
        source = REPOSITORY / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            copy.mkdir(exist_ok=True)
            shutil.copy(source, copy / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), "."],
        cwd=copy,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("mews_sync-*.whl")
    inside = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".sql")}
    views = {f"pipelines/sql/{p.name}" for p in (REPOSITORY / "sql").glob("*.sql")}
    assert views and inside == views
