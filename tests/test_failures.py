"""Every failure an operator can meet (issue 13): one sentence on stderr, the documented exit
code, and the DuckDB file byte for byte as it was; and a command line that starts quickly."""

from __future__ import annotations

import argparse
import contextlib
import http.server
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb
import pytest
from harness import Target, assert_equals_truth, one_sentence

from mews_sandbox import (
    DEMO_ACCESS_TOKEN,
    DEMO_CLIENT_TOKEN,
    DEMO_PORTFOLIO_ACCESS_TOKEN,
    Sandbox,
    serve,
)
from pipelines import mews_pipeline
from pipelines import storage as storage_module
from pipelines.cli import (
    EXIT_BUSY,
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    build_parser,
    main,
)
from pipelines.failures import explain
from pipelines.lock import SyncBusyError
from pipelines.progress import Progress
from pipelines.runs import RunReport, read_runs
from pipelines.storage import FILE_RECORD, DuckDbStorage, configured_storage
from sources.errors import MewsConfigError, MewsUnavailableError
from sources.mews import SourceStats, walk_windows, window_work
from sources.mews.client import ClientStats, MewsClient

REPO = Path(__file__).resolve().parent.parent
SETTINGS_PREFIXES = ("SOURCES__", "DESTINATION__", "MEWS_SYNC__", "DLT_PROJECT_DIR")


@pytest.fixture(scope="module")
def synced_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DuckDB file one run synced (with its run record and analysts' copy); tests copy it."""
    target = Target(Sandbox.generate(orders=300, seed=13), tmp_path_factory.mktemp("synced"))
    target.sync()
    return Path(target.database)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder with a .dlt/ folder, the current folder, and no setting from
    the environment."""
    for name in list(os.environ):
        if name.startswith(SETTINGS_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt_data"))
    folder = tmp_path / "project"
    (folder / ".dlt").mkdir(parents=True)
    monkeypatch.chdir(folder)
    return folder


def files_in(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# -- start-up --------------------------------------------------------------------------------


def test_help_version_status_and_query_never_import_dlt(synced_file, tmp_path):
    """dlt alone costs about a second to import (benchmarks/startup.py measures the rest)."""
    database = tmp_path / "mews_sync.duckdb"
    database.write_bytes(synced_file.read_bytes())
    script = """
import contextlib, io, json, sys
from pipelines.cli import main
codes = []
for argv in (["--help"], ["--version"], ["status"], ["query", "select count(*) from services"]):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            codes.append(main(argv))
        except SystemExit as exit:
            codes.append(exit.code)
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"dlt", "httpx", "pyarrow", "pendulum"})
print(json.dumps([codes, heavy]))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES)}
    env.update(PYTHONPATH=str(REPO), DESTINATION__DUCKDB__CREDENTIALS=str(database))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    codes, heavy = json.loads(done.stdout.splitlines()[-1])
    assert codes == [0, 0, 0, 0]
    assert heavy == []


def test_version_is_the_installed_one(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == EXIT_OK
    assert capsys.readouterr().out == f"mews-sync {version('mews-sync')}\n"


def test_settings_read_without_dlt_are_the_ones_dlt_reads(tmp_path):
    """The command line reads where the data goes without dlt; dlt must agree."""
    project = tmp_path / "project"
    (project / ".dlt").mkdir(parents=True)
    (project / ".dlt" / "config.toml").write_text(
        '[mews_sync]\nlog_level = "WARNING"\ndestination = "duckdb"\n'
        '[destination.duckdb]\ncredentials = "from_config.duckdb"\n'
    )
    (project / ".dlt" / "secrets.toml").write_text('[mews_sync]\nlog_level = "ERROR"\n')
    script = """
import json, dlt
from dlt.common.pipeline import get_dlt_pipelines_dir
from pipelines import config
keys = ["mews_sync.log_level", "mews_sync.destination", "destination.duckdb.credentials",
        "mews_sync.analytics_file"]
print(json.dumps({
    "dlt": [dlt.config.get(k, str) for k in keys] + [get_dlt_pipelines_dir()],
    "ours": [config.value(k) for k in keys] + [str(config.data_dir() / "pipelines")],
}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith((*SETTINGS_PREFIXES, "DLT_"))}
    env.update(
        PYTHONPATH=str(REPO),
        DLT_PROJECT_DIR=str(project),
        MEWS_SYNC__ANALYTICS_FILE=str(tmp_path / "copy.duckdb"),
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["ours"] == found["dlt"]
    assert found["ours"][:2] == ["ERROR", "duckdb"]  # secrets.toml before config.toml


def test_a_relative_duckdb_path_in_config_toml_is_relative_to_the_project(
    project, tmp_path, monkeypatch
):
    (project / ".dlt" / "config.toml").write_text(
        '[destination.duckdb]\ncredentials = "data/hotel.duckdb"\n'
        '[mews_sync]\nanalytics_file = "shared/hotel_copy.duckdb"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("DLT_PROJECT_DIR", str(project))

    storage = configured_storage()

    assert storage.path == project / "data" / "hotel.duckdb"
    assert storage.analytics_path == project / "shared" / "hotel_copy.duckdb"
    # From the environment (or --path) a relative path stays relative to the current folder.
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", "here.duckdb")
    assert configured_storage().path == elsewhere / "here.duckdb"


# -- broken settings files -------------------------------------------------------------------


@pytest.mark.parametrize("file", ["config.toml", "secrets.toml"])
@pytest.mark.parametrize("command", [["run"], ["status"], ["query", "select 1"]])
def test_a_broken_settings_file_is_exit_2_naming_the_file_and_line(
    project, synced_file, capsys, file, command
):
    database = project / "mews_sync.duckdb"
    database.write_bytes(synced_file.read_bytes())
    broken = project / ".dlt" / file
    broken.write_text('[sources.mews]\nplatform_url = "https://api.mews.com\nstart_date = 1\n')
    before = files_in(project)

    assert main(command) == EXIT_CONFIG

    sentence = one_sentence(capsys.readouterr().err)
    assert str(broken) in sentence and "line 2" in sentence, sentence
    assert files_in(project) == before


def test_dlt_failing_to_read_a_settings_file_gets_the_same_sentence(project):
    from dlt.common.configuration.providers.toml import TomlProviderReadException

    broken = project / ".dlt" / "secrets.toml"
    broken.write_text('[sources.mews]\nclient_token = "a\n')
    error = TomlProviderReadException(
        "secrets.toml", "secrets.toml", [str(project / ".dlt" / "secrets.toml")], "tomlkit: ..."
    )
    wrapped = RuntimeError("extract failed")
    wrapped.__cause__ = error
    code, sentence = explain(wrapped)
    assert code == EXIT_CONFIG
    assert str(broken) in sentence and "line 2" in sentence


# -- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "backfill", "demo", "sandbox", "status", "query"])
def test_every_command_and_option_says_what_it_does(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == EXIT_OK
    parser = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices[command]
    assert parser.description or parser.format_usage()
    assert all(action.help for action in parser._actions), command
    if command == "run":
        assert "watermarks" in capsys.readouterr().out


def test_query_without_sql_says_what_to_give(project, capsys):
    assert main(["query"]) == EXIT_CONFIG
    assert 'e.g. mews-sync query "select' in one_sentence(capsys.readouterr().err)


def test_a_sandbox_port_in_use_is_one_sentence(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["sandbox", "--port", str(port), "--orders", "0"]) == EXIT_CONFIG
    sentence = one_sentence(capsys.readouterr().err)
    assert f"Port {port} is in use" in sentence and "--port 0" in sentence


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_a_long_query_stops_at_once_on_ctrl_c_and_sigterm(tmp_path, stop):
    database = tmp_path / "mews_sync.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("create schema mews")
    before = database.read_bytes()
    endless = "select sum(a.range * b.range) from range(1000000) a, range(1000000) b"
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "query", "--path", str(database), endless],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.5)  # started (about 0.5 s) and well into the query
    assert process.poll() is None, process.communicate()
    stopped_at = time.monotonic()
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - stopped_at < 3
    assert process.returncode == EXIT_INTERRUPTED
    assert one_sentence(stderr) == "mews-sync: interrupted."
    assert database.read_bytes() == before


# -- a DuckDB file that cannot be used, a folder that cannot be written ----------------------


@pytest.fixture
def run_settings(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings for `mews-sync run` in the environment, as an operator sets them; nothing
    listens at the URL (every test here stops before the first request). The DuckDB file."""
    database = project / "mews_sync.duckdb"
    for name, value in {
        "SOURCES__MEWS__PLATFORM_URL": "http://127.0.0.1:9",
        "SOURCES__MEWS__CLIENT_TOKEN": "CT-test",
        "SOURCES__MEWS__ACCESS_TOKEN": "AT-test",
        "DESTINATION__DUCKDB__CREDENTIALS": str(database),
    }.items():
        monkeypatch.setenv(name, value)
    return database


def damaged_files(synced: Path) -> dict[str, bytes]:
    data = synced.read_bytes()
    return {
        "garbage": b"SQLite format 3\x00" + bytes(range(256)) * 40,
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "header only": data[:4096],
    }


@pytest.mark.parametrize("kind", ["garbage", "empty", "truncated", "header only"])
@pytest.mark.parametrize("command", [["run"], ["status"], ["query", "select 1"]])
def test_a_damaged_duckdb_file_is_named_and_left_untouched(
    served_sandbox, synced_file, capsys, kind, command
):
    _, database = served_sandbox
    database.write_bytes(damaged_files(synced_file)[kind])
    before = database.read_bytes()

    assert main(command) == EXIT_CONFIG

    sentence = one_sentence(capsys.readouterr().err)
    assert f"{database} is not a usable DuckDB file" in sentence, sentence
    assert "move it aside or restore it from a backup" in sentence
    assert database.read_bytes() == before


def test_a_file_damaged_after_a_run_wrote_it_is_named_at_the_next_lock(
    synced_file, tmp_path, monkeypatch
):
    """A lock skips the check of a file that is as the last lock left it (recorded in its
    working folder, so for the next run's process too); a file changed meanwhile by anyone
    else is checked again."""
    database = tmp_path / "mews_sync.duckdb"
    database.write_bytes(synced_file.read_bytes())
    storage = DuckDbStorage(database, tmp_path / "mews_sync.analytics.duckdb")
    checks = []
    check = storage_module.check_whole
    monkeypatch.setattr(
        storage_module, "check_whole", lambda *args: checks.append(args) or check(*args)
    )
    with storage.lock():
        pass
    assert len(checks) == 1
    with DuckDbStorage(database, storage.analytics_path).lock():  # as it was left
        pass
    assert len(checks) == 1
    database.write_bytes(database.read_bytes()[: database.stat().st_size // 2])
    before = database.read_bytes()

    with pytest.raises(MewsConfigError) as raised, storage.lock():
        pass

    assert f"{database} is not a usable DuckDB file" in str(raised.value)
    assert database.read_bytes() == before


def test_a_record_of_the_file_that_cannot_be_written_costs_only_a_check(tmp_path):
    """The record of the DuckDB file in its working folder is only a saving: where it can be
    neither read nor written (a folder stands in its place), runs succeed, check the file
    each time, and publish the analysts' copy each time."""
    target = Target(Sandbox.generate(orders=300, seed=67), tmp_path)
    storage = target.storage()
    (storage.working_dir() / FILE_RECORD).mkdir(parents=True)
    target.sync()
    again = target.sync()
    assert again.published == str(storage.analytics_path)  # not known unchanged: copied
    assert_equals_truth(target)


@pytest.mark.parametrize(
    ("setting", "value", "words"),
    [
        ("SOURCES__MEWS__START_DATE", "last tuesday", "START_DATE"),
        ("SOURCES__MEWS__PLATFORM_URL", "api.mews.com", "PLATFORM_URL"),
        ("SOURCES__MEWS__OVERLAP_MINUTES", "-5", "OVERLAP_MINUTES must be 0 or more"),
        ("SOURCES__MEWS__SERVICE_IDS", "[]", "SERVICE_IDS is an empty list: unset it"),
        ("SOURCES__MEWS__NOTE_TYPES", "[]", "NOTE_TYPES is an empty list: unset it"),
        ("SOURCES__MEWS__NOTE_TYPES", '["General", ""]', "NOTE_TYPES must be a JSON list"),
        ("MEWS_SYNC__DUCKDB_MEMORY_LIMIT", "a lot", "DUCKDB_MEMORY_LIMIT must be a size"),
        ("SOURCES__MEWS__RATE_LIMIT_REQUESTS", "-1", "RATE_LIMIT_REQUESTS must be 1 or more"),
    ],
)
def test_a_failed_configuration_check_leaves_nothing_behind(
    run_settings, synced_file, capsys, monkeypatch, setting, value, words
):
    """No lock file, no run record, no dlt working folder: nothing is read or written."""
    database = run_settings
    database.write_bytes(synced_file.read_bytes())
    monkeypatch.setenv(setting, value)
    folder = database.parent
    before = files_in(folder)

    assert main(["run"]) == EXIT_CONFIG

    assert words in one_sentence(capsys.readouterr().err)
    assert files_in(folder) == before
    assert not (folder.parent / "dlt_data").exists()


def test_a_duckdb_file_in_a_folder_this_user_cannot_write_is_one_sentence(synced_file, tmp_path):
    """Exit 2 naming the folder, and nothing written, not even the run record. Root may write
    anywhere: as root the run goes without the capabilities that allow it."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    database = folder / "mews_sync.duckdb"
    database.write_bytes(synced_file.read_bytes())
    folder.chmod(0o555)
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES)}
    env.update(
        PYTHONPATH=str(REPO),
        DLT_DATA_DIR=str(tmp_path / "dlt_data"),
        SOURCES__MEWS__PLATFORM_URL="http://127.0.0.1:9",
        SOURCES__MEWS__CLIENT_TOKEN="CT-test",
        SOURCES__MEWS__ACCESS_TOKEN="AT-test",
        DESTINATION__DUCKDB__CREDENTIALS=str(database),
    )
    as_a_user = []
    if os.geteuid() == 0:
        caps = "-dac_override,-dac_read_search"
        as_a_user = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]
    before = files_in(folder)
    done = subprocess.run(
        [*as_a_user, sys.executable, "-m", "pipelines.cli", "run"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    folder.chmod(0o755)
    assert done.returncode == EXIT_CONFIG, done.stderr
    sentence = one_sentence(done.stderr)
    assert f"The folder {folder} of the DuckDB file is not writable" in sentence
    assert files_in(folder) == before


def test_a_block_missing_mid_query_is_a_damaged_file_too():
    error = duckdb.IOException(
        'IO Error: Could not read enough bytes from file "/srv/mews/mews_sync.duckdb": '
        "attempted to read 262144 bytes from location 2895872"
    )
    wrapped = RuntimeError("load failed")
    wrapped.__cause__ = error
    code, sentence = explain(wrapped)
    assert code == EXIT_CONFIG
    assert sentence.startswith("/srv/mews/mews_sync.duckdb is not a usable DuckDB file")


# -- mistakes that used to succeed silently --------------------------------------------------


@pytest.fixture
def served_sandbox(run_settings, synced_file, monkeypatch) -> Iterator[tuple[Sandbox, Path]]:
    """The sandbox `synced_file` was synced from, served; the settings point at it, with the
    one-enterprise demo token; the DuckDB file is a copy of the synced one."""
    sandbox = Sandbox.generate(orders=300, seed=13)
    database = run_settings
    database.write_bytes(synced_file.read_bytes())
    with serve(sandbox) as url:
        monkeypatch.setenv("SOURCES__MEWS__PLATFORM_URL", url)
        monkeypatch.setenv("SOURCES__MEWS__CLIENT_TOKEN", DEMO_CLIENT_TOKEN)
        monkeypatch.setenv("SOURCES__MEWS__ACCESS_TOKEN", DEMO_ACCESS_TOKEN)
        monkeypatch.setenv("SOURCES__MEWS__START_DATE", "2015-01-01")
        monkeypatch.setenv("SOURCES__MEWS__RATE_LIMIT_REQUESTS", "0")
        yield sandbox, database


def synced_rows(database: Path) -> dict[str, list[tuple]]:
    tables = ("product_service_orders", "service_order_notes", "order_items", "products")
    with duckdb.connect(str(database), read_only=True) as con:
        return {
            t: sorted(con.execute(f"select id, updated_utc from mews.{t}").fetchall())
            for t in tables
        }


def test_duckdb_out_of_memory_is_one_sentence_and_the_next_run_loads_it_all(
    served_sandbox, capsys, monkeypatch
):
    _, database = served_sandbox
    database.unlink()  # a first sync
    monkeypatch.setenv("MEWS_SYNC__DUCKDB_MEMORY_LIMIT", "2MB")

    assert main(["run"]) == EXIT_UNAVAILABLE

    sentence = one_sentence(capsys.readouterr().err)
    assert sentence.startswith("mews-sync: DuckDB ran out of memory while writing the file")
    assert "raise MEWS_SYNC__DUCKDB_MEMORY_LIMIT" in sentence
    monkeypatch.delenv("MEWS_SYNC__DUCKDB_MEMORY_LIMIT")
    assert main(["run"]) == EXIT_OK
    control = database.with_name("control.duckdb")
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(control))
    assert main(["run"]) == EXIT_OK  # the same sandbox, synced in one go
    assert synced_rows(database) == synced_rows(control)
    assert synced_rows(database)["product_service_orders"]


def test_duckdb_out_of_memory_in_the_clean_up_is_one_sentence_and_the_next_run_heals_it(
    served_sandbox, capsys, monkeypatch
):
    """The clean-up after a load runs out of DuckDB's memory: the load is kept, the run stops
    with exit 4, and the next run cleans up before it reads."""
    _, database = served_sandbox
    database.unlink()  # a first sync, whose clean-up after the load hashes every id
    compact, clean_ups = mews_pipeline.compact, []

    def starved_after_the_load(sql_client: Any, destination: str) -> Any:
        clean_ups.append(sql_client)
        if len(clean_ups) > 1:  # the first comes before the run reads
            sql_client.execute_sql("set global memory_limit = '256KB'")
        return compact(sql_client, destination)

    monkeypatch.setattr(mews_pipeline, "compact", starved_after_the_load)

    assert main(["run"]) == EXIT_UNAVAILABLE

    sentence = one_sentence(capsys.readouterr().err)
    assert sentence.startswith("mews-sync: DuckDB ran out of memory while writing the file")
    assert "(default 48MB)" in sentence
    with duckdb.connect(str(database), read_only=True) as con:
        tables = {name for (name,) in con.sql("select table_name from duckdb_tables()").fetchall()}
        [(loaded,)] = con.sql("select count(*) from mews.product_service_orders").fetchall()
        cleaned = 0
        if "_mews_sync_cleaned_loads" in tables:
            [(cleaned,)] = con.sql("select count(*) from mews._mews_sync_cleaned_loads").fetchall()
    assert loaded and cleaned == 0  # loaded, not cleaned up
    monkeypatch.setattr(mews_pipeline, "compact", compact)
    assert main(["run"]) == EXIT_OK
    control = database.with_name("control.duckdb")
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(control))
    assert main(["run"]) == EXIT_OK
    assert synced_rows(database) == synced_rows(control)
    assert synced_rows(database)["product_service_orders"]


@pytest.mark.parametrize("limit", ["a lot", "96", "-1GB"])
def test_a_memory_limit_that_is_not_a_size_is_one_sentence(
    run_settings, capsys, monkeypatch, limit
):
    monkeypatch.setenv("MEWS_SYNC__DUCKDB_MEMORY_LIMIT", limit)
    assert main(["run"]) == EXIT_CONFIG
    assert "MEWS_SYNC__DUCKDB_MEMORY_LIMIT must be a size such as 96MB or 1GB" in one_sentence(
        capsys.readouterr().err
    )


def test_service_ids_mews_does_not_list_for_the_token_are_named_before_syncing(
    served_sandbox, capsys, monkeypatch
):
    sandbox, database = served_sandbox
    first, other = list(sandbox.enterprises())[:2]
    elsewhere = next(s["Id"] for s in sandbox.services() if s["EnterpriseId"] == other["Id"])
    mine = next(s["Id"] for s in sandbox.services() if s["EnterpriseId"] == first["Id"])
    missing = "0b7e4b52-55a1-4c3e-9f0e-2f4e1c9d8a77"
    monkeypatch.setenv("SOURCES__MEWS__SERVICE_IDS", json.dumps([mine, elsewhere, missing]))
    before = database.read_bytes()

    assert main(["run"]) == EXIT_CONFIG

    sentence = one_sentence(capsys.readouterr().err)
    assert elsewhere in sentence and missing in sentence and mine not in sentence
    assert "SOURCES__MEWS__SERVICE_IDS" in sentence
    assert sandbox.log.count(operation="productServiceOrders/getAll") == 0
    assert database.read_bytes() == before


def test_a_configured_bookable_service_is_synced_with_a_warning(
    served_sandbox, capsys, monkeypatch, caplog
):
    sandbox, _ = served_sandbox
    (first,) = list(sandbox.enterprises())[:1]
    bookable = next(
        s
        for s in sandbox.services()
        if s["EnterpriseId"] == first["Id"]
        and (s.get("Data") or {}).get("Discriminator") == "Bookable"
    )
    monkeypatch.setenv("SOURCES__MEWS__SERVICE_IDS", json.dumps([bookable["Id"]]))

    assert main(["run"]) == EXIT_OK

    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(bookable["Id"] in w and "Bookable" in w for w in warnings), warnings


def test_note_types_mews_may_add_later_pass_with_a_warning(served_sandbox, monkeypatch, caplog):
    monkeypatch.setenv("SOURCES__MEWS__NOTE_TYPES", '["General", "Bogus"]')

    assert main(["run"]) == EXIT_OK

    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("Bogus" in w and "SpecialRequest" in w for w in warnings), warnings


def test_an_account_without_orders_gets_every_table_and_view_typed(tmp_path, postgres):
    target = Target(Sandbox.generate(orders=0, seed=2), tmp_path, postgres)
    report = target.sync()

    assert report.read.orders == 0
    types = dict(
        target.rows(
            "select table_name || '.' || column_name, lower(data_type) "
            "from information_schema.columns where table_schema = 'mews'"
        )
    )
    for column, kind in {
        "product_service_orders.id": "varchar",
        "product_service_orders.updated_utc": "timestamp with time zone",
        "product_service_orders.options__owner_checked_in": "boolean",
        "service_order_notes.service_order_id": "varchar",
        "service_order_notes.created_utc": "timestamp with time zone",
        "services.is_active": "boolean",
    }.items():
        assert types.get(column, "missing").replace("character varying", "varchar") == kind
    for view in ("orders_current", "notes_with_orders", "order_activity_daily"):
        assert target.rows(f"select count(*) from mews.{view}") == [(0,)]


# -- a wrong address -------------------------------------------------------------------------


class WebPage(http.server.BaseHTTPRequestHandler):
    """A web server that is not Mews: a page for every POST."""

    def do_POST(self) -> None:
        body = b"<html><body>Welcome to nginx!</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class NoPost(http.server.BaseHTTPRequestHandler):
    """A server that does not take POST at all: 501, as Python's own http.server."""

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def web_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def https_on_an_http_port() -> Iterator[str]:
    with serve(Sandbox.generate(orders=10, seed=1)) as url:
        yield url.replace("http://", "https://")


@contextlib.contextmanager
def nothing_listening() -> Iterator[str]:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def with_the_api_path() -> Iterator[str]:
    yield "https://api.mews.com/api/connector/v1/"


@pytest.mark.parametrize(
    ("where", "words"),
    [
        (nothing_listening, "Nothing accepts connections at 127.0.0.1:{port} (refused)"),
        (https_on_an_http_port, "127.0.0.1:{port} does not answer in TLS"),
        (lambda: web_server(NoPost), "with 501 Not Implemented, so it is not the Mews"),
        (lambda: web_server(WebPage), "with 200 and text/html instead of JSON, so it is not"),
        (with_the_api_path, "must not hold /api/connector/v1 (the client adds it): drop it"),
    ],
    ids=["refused", "https-on-http", "501", "html", "api-path"],
)
def test_a_wrong_address_is_a_configuration_error_said_at_once(
    run_settings, synced_file, capsys, monkeypatch, where, words
):
    database = run_settings
    database.write_bytes(synced_file.read_bytes())
    before = database.read_bytes()
    with where() as url:
        monkeypatch.setenv("SOURCES__MEWS__PLATFORM_URL", url)
        started = time.monotonic()
        code = main(["run"])
        took = time.monotonic() - started

    assert code == EXIT_CONFIG
    sentence = one_sentence(capsys.readouterr().err)
    assert words.format(port=urlsplit(url).port) in sentence, sentence
    assert took < 5
    assert database.read_bytes() == before


def test_a_name_that_does_not_resolve_is_retried_a_few_seconds_then_named(capsys):
    client = MewsClient("http://no-such-host.invalid", "CT", "AT", rate_limit=None)
    started = time.monotonic()
    with pytest.raises(MewsUnavailableError, match=r"Cannot reach no-such-host\.invalid:80"):
        list(client.services())
    assert time.monotonic() - started < 10
    assert client.stats.retries == 2


def test_a_name_that_does_not_resolve_says_retry_later_and_check_the_url(
    run_settings, monkeypatch, capsys
):
    monkeypatch.setenv("SOURCES__MEWS__PLATFORM_URL", "https://no-such-host.invalid")
    assert main(["run"]) == EXIT_UNAVAILABLE
    sentence = one_sentence(capsys.readouterr().err)
    assert "Cannot reach no-such-host.invalid:443" in sentence
    assert "try again later; if it persists, check SOURCES__MEWS__PLATFORM_URL" in sentence


def test_a_refused_connection_once_the_run_has_started_is_retried_as_before():
    with nothing_listening() as url:
        client = MewsClient(url, "CT", "AT", rate_limit=None, max_retries=2, backoff_base=0.01)
        client.stats.reached = True  # an earlier request of this run was answered
        with pytest.raises(MewsUnavailableError, match="still failing after 3 attempts"):
            list(client.services())


def test_a_backfill_of_unchanged_data_says_it_deleted_no_note(tmp_path):
    sandbox = Sandbox.generate(orders=300, seed=17)
    # Mews' clock stands still: the backfills all end in the same second, as quick ones can
    # (the second one once read nothing then, taking the first for an earlier step of it).
    moment = datetime.now(UTC)
    sandbox.clock = lambda: moment
    target = Target(sandbox, tmp_path)
    target.sync()
    first = min(o["UpdatedUtc"] for o in sandbox.orders())

    def everything() -> dict[str, str]:
        return {"backfill_start": first, "backfill_end": datetime.now(UTC).isoformat()}

    # The orders of the range come again, with all their notes: older copies, not deletions.
    report = target.sync("backfill", **everything())

    assert report.removed.superseded_orders == report.read.orders > 0
    assert report.removed.superseded_notes == report.read.notes > 0
    assert report.removed.deleted_notes == 0
    assert (
        f"removed: older copies of {report.read.orders} orders and {report.read.notes} notes "
        "read again; 0 notes deleted in Mews"
    ) in report.summary()
    # A note deleted in Mews is counted as such.
    sandbox.delete_note(sandbox.notes()[0]["Id"])
    report = target.sync("backfill", **everything())
    assert report.removed.deleted_notes == 1
    assert report.record(0)["deleted_notes"] == 1


def test_status_shows_a_run_refused_as_busy_as_skipped_not_as_a_failure(tmp_path, capsys):
    target = Target(Sandbox.generate(orders=100, seed=19), tmp_path)
    target.sync()
    storage = DuckDbStorage.at(target.database)
    report = RunReport(kind="run", where=str(target.database))
    with storage.run_lock("mews_sync"), pytest.raises(SyncBusyError):
        target.sync(report=report)
    (_, busy) = read_runs(storage.runs_path)
    assert (busy["status"], busy["exit_code"]) == ("skipped", EXIT_BUSY)
    assert report.summary().startswith("mews-sync run SKIPPED after ")

    assert main(["status", "--path", target.database]) == EXIT_OK

    screen = capsys.readouterr().out
    assert "last failure: none recorded" in screen
    assert "skipped, another run or a reader held the destination (exit 5): 1, the last run" in (
        screen
    )


def start_sandbox(*args: str, cwd: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """`mews-sync sandbox --port 0 ...` and the lines it printed before serving."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "sandbox", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    lines = [process.stdout.readline()]
    while not lines[-1].startswith("# export") and "--access-token you gave" not in lines[-1]:
        lines.append(process.stdout.readline())
    return process, lines


def test_the_sandbox_prints_settings_to_paste_that_a_run_then_uses(tmp_path):
    process, lines = start_sandbox("--orders", "50", cwd=tmp_path)
    try:
        block = "\n".join(line for line in lines if line.startswith("export "))
        assert DEMO_CLIENT_TOKEN in block and DEMO_PORTFOLIO_ACCESS_TOKEN in block
        assert DEMO_ACCESS_TOKEN in lines[-1]  # the one-enterprise token, commented out
        env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES)}
        env.update(PYTHONPATH=str(REPO), DLT_DATA_DIR=str(tmp_path / "dlt_data"))
        pasted = subprocess.run(
            ["sh", "-c", f"{block}\n{sys.executable} -m pipelines.cli run"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert pasted.returncode == EXIT_OK, pasted.stderr
    assert "read: 50 orders" in pasted.stdout


def test_the_sandbox_never_prints_custom_tokens(tmp_path):
    process, lines = start_sandbox(
        "--orders", "0", "--client-token", "CT-mine", "--access-token", "AT-mine", cwd=tmp_path
    )
    process.send_signal(signal.SIGINT)
    process.wait(timeout=30)
    assert "<the --client-token you gave>" in lines[-2]
    assert not any("CT-mine" in line or "AT-mine" in line for line in lines)


# -- the progress line -----------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def busy_counters() -> tuple[SourceStats, ClientStats]:
    read = SourceStats(windows_total=48, windows=12, order_pages=4000, orders=3_912_345)
    read.notes = 6_254_321
    stats = ClientStats(throttled=12, retries=345, limiter_wait_seconds=1234.0)
    stats.requests.update({"productServiceOrders/getAll": 12_345})
    return read, stats


@pytest.mark.parametrize("width", [20, 40, 79, 99, 200])
def test_the_progress_line_fits_the_terminal_and_cuts_no_word(width):
    read, stats = busy_counters()
    whole = Progress(read, stats, stream=io.StringIO()).line()
    fitted = Progress(read, stats, stream=io.StringIO()).line(width)

    assert len(fitted) <= width
    assert whole.startswith(fitted)
    # It ends where a field (or, when even the bar does not fit, a word) ends.
    rest = whole[len(fitted) :]
    assert rest == "" or rest.startswith((",", " "))
    if width >= 79:
        assert "orders 3,912,345" in fitted


def test_the_progress_line_on_an_80_column_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    read, stats = busy_counters()
    terminal = Terminal()
    with Progress(read, stats, stream=terminal, interval=60):
        pass
    drawn = terminal.getvalue().split("\r")[-1].removesuffix("\x1b[K\n")
    assert drawn == "0:00 [##........]  25% windows 12/48, pages 4000, orders 3,912,345"


def test_a_wait_under_way_shows_first_and_counts_on_a_100_column_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    read, stats = busy_counters()
    stats.limiter_wait_seconds = 0.0
    stats.waiting_since = time.monotonic() - 22.0  # the limiter has waited 22 s so far
    line = Progress(read, stats, stream=io.StringIO()).line(99)
    assert "waiting for the rate limit 22 s, windows 12/48" in line
    assert "rate-limit waits 22 s" in Progress(read, stats, stream=io.StringIO()).line()
    stats.waiting_since = None
    assert "waiting" not in Progress(read, stats, stream=io.StringIO()).line()


def test_the_bar_weighs_recent_windows_more():
    start, end = datetime(2012, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    windows = list(walk_windows(start, end))
    weights = [window_work(w, (start, end)) for w in windows]
    assert sum(weights) == pytest.approx(1.0)
    assert weights[-1] > 50 * weights[0]
    # The newest quarter of the history is 44 % of the bar; the oldest quarter 6 %.
    quarter = len(windows) // 4
    assert sum(weights[-quarter:]) == pytest.approx(0.44, abs=0.02)
    assert sum(weights[:quarter]) == pytest.approx(0.06, abs=0.02)
    read = SourceStats(windows_total=len(windows), windows=len(windows) // 2)
    read.work_total, read.work_done = 1.0, sum(weights[: len(windows) // 2])
    assert " 25% windows 28/56" in Progress(read, ClientStats(), stream=io.StringIO()).line()


def test_a_run_plans_its_work_and_does_all_of_it(tmp_path):
    report = Target(Sandbox.generate(orders=300, seed=23), tmp_path).sync()
    assert report.read.work_total > 0
    assert report.read.work_done == pytest.approx(report.read.work_total)
