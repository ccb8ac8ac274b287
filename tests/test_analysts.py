"""For analysts and operators: the SQL views against the sandbox's truth, `query`, `status`,
the run record, the run summary and the progress line."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from harness import (
    START_DATE,
    Target,
    one_sentence,
    product_service_ids,
    service_name,
    truth_notes,
    truth_orders,
    utc,
)

from mews_sandbox import DEMO_PORTFOLIO_ACCESS_TOKEN, Sandbox, SandboxTransport
from pipelines.cli import EXIT_BUSY, EXIT_CONFIG, EXIT_OK, EXIT_REFUSED, main, recorded_sync
from pipelines.compaction import Compacted
from pipelines.progress import Progress
from pipelines.runs import RunReport, read_runs
from pipelines.status import month_start, run_lines
from pipelines.storage import DuckDbStorage
from pipelines.views import view_files
from sources.errors import MewsError, counted
from sources.mews import SourceStats
from sources.mews.client import ClientStats, format_utc

A_WHILE_AGO = format_utc(datetime.now(UTC).replace(microsecond=0) - timedelta(days=60))


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Target:
    """One sandbox synced once into DuckDB; the tests below only read it."""
    sandbox = Sandbox.generate(orders=2000, seed=7)
    target = Target(sandbox, tmp_path_factory.mktemp("analysts"))
    target.sync()
    return target


def view(target: Target, sql: str, timezone: str = "Pacific/Kiritimati") -> list[tuple]:
    """Rows of a query on the views, in a session far from UTC, to show days are cut in UTC."""
    with duckdb.connect(target.database, read_only=True) as con:
        con.execute(f"set TimeZone = '{timezone}'")
        return sorted(con.execute(sql).fetchall())


def truth_services(sandbox: Sandbox) -> dict[str, dict[str, Any]]:
    return {s["Id"]: s for s in sandbox.services()}


def note_counts(sandbox: Sandbox) -> Counter[str]:
    return Counter(n[1] for n in truth_notes(sandbox))


def api_orders(sandbox: Sandbox) -> list[dict[str, Any]]:
    ids = product_service_ids(sandbox)
    return [o for o in sandbox.orders() if o["ServiceId"] in ids]


# -- the SQL models --------------------------------------------------------------------------


def test_every_model_says_which_question_it_answers():
    views = view_files()
    assert len(views) >= 4  # orders_current, notes_with_orders, the two daily activities
    for path in views:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("-- ") and first.endswith("?"), path.name


def test_orders_current_has_every_order_with_service_enterprise_and_note_count(synced):
    sandbox = synced.sandbox
    services, notes = truth_services(sandbox), note_counts(sandbox)
    expected = sorted(
        (
            o["Id"],
            o["Number"],
            o["State"],
            o["ServiceId"],
            service_name(services[o["ServiceId"]]),
            services[o["ServiceId"]]["EnterpriseId"],
            notes[o["Id"]],
        )
        for o in api_orders(sandbox)
    )
    rows = view(
        synced,
        "select id, number, state, service_id, service_name, enterprise_id, note_count "
        "from mews.orders_current",
    )
    assert rows == expected
    assert {r[6] for r in rows} >= {0, 1, 2}  # orders without notes are there, with 0


def test_notes_with_orders_has_every_note_with_its_order_and_service(synced):
    sandbox = synced.sandbox
    services = truth_services(sandbox)
    orders = {o["Id"]: o for o in api_orders(sandbox)}
    expected = sorted(
        (
            note_id,
            note_type,
            text,
            order_id,
            orders[order_id]["Number"],
            orders[order_id]["State"],
            service_name(services[orders[order_id]["ServiceId"]]),
            services[orders[order_id]["ServiceId"]]["EnterpriseId"],
        )
        for note_id, order_id, text, note_type in truth_notes(sandbox)
    )
    rows = view(
        synced,
        "select note_id, note_type, text, order_id, order_number, order_state, service_name, "
        "enterprise_id from mews.notes_with_orders",
    )
    assert rows == expected


def test_order_activity_daily_counts_created_updated_cancelled_per_utc_day_and_state(synced):
    events: Counter[tuple] = Counter()
    for o in api_orders(synced.sandbox):
        for event, field in (("created", "CreatedUtc"), ("updated", "UpdatedUtc")):
            events[(utc(o[field]).date(), o["State"], event)] += 1
        if o["CancelledUtc"]:
            events[(utc(o["CancelledUtc"]).date(), o["State"], "cancelled")] += 1
    expected = sorted(
        (day, state, events[(day, state, "created")], events[(day, state, "updated")],
         events[(day, state, "cancelled")])
        for day, state in {(d, s) for d, s, _ in events}
    )  # fmt: skip

    for timezone in ("Pacific/Kiritimati", "America/Anchorage"):
        rows = view(
            synced,
            "select day, state, orders_created, orders_last_updated, orders_cancelled "
            "from mews.order_activity_daily",
            timezone,
        )
        assert rows == expected, timezone
    assert sum(r[4] for r in rows) > 0


# -- query -----------------------------------------------------------------------------------


def test_query_prints_a_table_with_unqualified_names(synced, capsys):
    code = main(
        ["query", "--path", synced.database, "select count(*) as orders from orders_current"]
    )
    out = capsys.readouterr().out
    assert code == EXIT_OK
    header, rule, row, count = out.splitlines()
    assert (header.strip(), set(rule), int(row), count) == (
        "orders",
        {"-"},
        len(truth_orders(synced.sandbox)),
        "(1 row)",
    )


def test_query_aligns_columns_caps_rows_and_says_so(synced, capsys):
    sql = "select state, count(*) as orders from product_service_orders group by state"
    assert main(["query", "--path", synced.database, "--max-rows", "2", sql]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("|")[0].strip() == "state"
    edges = {lines[0].index("|"), lines[1].index("+"), lines[2].index("|"), lines[3].index("|")}
    assert len(edges) == 1  # one column edge for all rows
    assert lines[2].rstrip().split("|")[1].startswith(" ")  # numbers are right-aligned
    assert len(lines) == 5 and "more not shown" in lines[-1]


def test_query_from_a_file_as_csv_gives_every_row(synced, capsys, tmp_path):
    sql_file = tmp_path / "q.sql"
    sql_file.write_text("select id, note_count from mews.orders_current order by id")
    assert main(["query", "--path", synced.database, "--file", str(sql_file), "--csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    notes = note_counts(synced.sandbox)
    assert rows[0] == ["id", "note_count"]
    assert rows[1:] == sorted([o[0], str(notes[o[0]])] for o in truth_orders(synced.sandbox))


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("selec 1", "syntax error"),
        ("select * from no_such_table", "no_such_table does not exist"),
        ("drop view orders_current", "read-only"),
        ("delete from product_service_orders", "read-only"),
    ],
)
def test_a_bad_or_writing_query_is_one_sentence_and_exit_2(synced, capsys, sql, words):
    before = synced.rows("select count(*) from mews.orders_current")

    code = main(["query", "--path", synced.database, sql])

    assert code == EXIT_CONFIG
    assert words in one_sentence(capsys.readouterr().err)
    assert synced.rows("select count(*) from mews.orders_current") == before


def test_query_without_a_duckdb_file_says_what_to_do(tmp_path, capsys):
    code = main(["query", "--path", str(tmp_path / "none.duckdb"), "select 1"])
    assert code == EXIT_CONFIG
    assert "run `mews-sync run` first" in one_sentence(capsys.readouterr().err)
    assert not (tmp_path / "none.duckdb").exists()


def test_query_reads_the_analysts_copy_while_a_run_writes(synced, capsys):
    storage = DuckDbStorage.at(synced.database)
    assert storage.analytics_path.is_file()
    with storage.lock():
        code = main(["query", "--path", synced.database, "select count(*) from orders_current"])
    assert code == EXIT_OK
    assert f"{len(synced.orders())}" in capsys.readouterr().out


def test_without_an_analysts_copy_query_waits_its_turn_while_a_run_writes(synced, capsys, tmp_path):
    storage = DuckDbStorage.at(synced.database)
    aside = storage.analytics_path.rename(tmp_path / "aside.duckdb")
    try:
        with storage.lock():
            code = main(["query", "--path", synced.database, "select 1"])
    finally:
        aside.rename(storage.analytics_path)
    assert code == EXIT_BUSY
    assert "try again" in one_sentence(capsys.readouterr().err)


def test_a_reader_of_the_analysts_copy_never_blocks_a_run_and_then_sees_the_new_data(synced):
    storage = DuckDbStorage.at(synced.database)
    order_id = synced.orders()[0][0]
    count = "select count(*) from mews.product_service_orders"
    with duckdb.connect(str(storage.analytics_path), read_only=True) as reader:
        (before,) = reader.execute(count).fetchone()
        moment = datetime.now(UTC) - timedelta(seconds=30)  # before this run's end
        synced.sandbox.update_order(order_id, State="Canceled", at=moment)
        synced.sandbox.add_order(synced.orders()[0][1], at=moment)
        report = synced.sync()  # exits cleanly although the reader holds the copy
        assert reader.execute(count).fetchone() == (before,)  # its view stays consistent
    assert report.published == str(storage.analytics_path)
    with duckdb.connect(str(storage.analytics_path), read_only=True) as fresh:
        assert fresh.execute(count).fetchone() == (before + 1,)
        assert fresh.execute(
            "select state from mews.orders_current where id = ?", [order_id]
        ).fetchone() == ("Canceled",)
    assert not list(storage.analytics_path.parent.glob(".*.duckdb.*"))  # no temporary left


def test_a_run_does_not_start_while_another_process_holds_the_working_file(synced):
    before = Path(synced.database).read_bytes()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1], "
            "read_only=True); print('open', flush=True); sys.stdin.read()",
            synced.database,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(MewsError, match="Another process has .* open"):
            synced.sync()
    finally:
        holder.communicate("")
    assert Path(synced.database).read_bytes() == before


# -- status, run records and the summary -----------------------------------------------------


def recorded(target: Target, **overrides: Any) -> RunReport:
    """A sync through the CLI's path (summary printed, run recorded), in-process."""
    args = {
        "platform_url": "http://sandbox.local",
        "client_token": target.sandbox.client_token,
        "access_token": DEMO_PORTFOLIO_ACCESS_TOKEN,
        "transport": SandboxTransport(target.sandbox),
        "start_date": START_DATE,
        "rate_limit_requests": 0,
        **overrides,
    }
    return recorded_sync(
        "run", storage=DuckDbStorage.at(target.database), pipelines_dir=str(target.workdir), **args
    )


def shown(watermark: str) -> str:
    """A watermark as the status screen shows it."""
    return "  " + watermark.replace("T", " ").replace("Z", " UTC")


@pytest.fixture
def operated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Target:
    """A file two runs synced: every service up to a while ago, then one service up to now,
    and a third run that Mews refused."""
    sandbox = Sandbox.generate(orders=2000, seed=8)
    target = Target(sandbox, tmp_path)
    first = sorted(product_service_ids(sandbox))[0]
    recorded(target, end_date=A_WHILE_AGO)
    recorded(target, service_ids=[first])
    with pytest.raises(Exception, match="401"):  # dlt wraps the MewsApiError
        recorded(target, access_token="AT-SECRET-not-valid")
    target.printed = capsys.readouterr().out  # type: ignore[attr-defined]
    return target


def test_every_run_is_recorded_beside_the_duckdb_file_without_tokens(operated):
    runs = read_runs(DuckDbStorage.at(operated.database).runs_path)
    assert [(r["status"], r["exit_code"]) for r in runs] == [
        ("ok", EXIT_OK),
        ("ok", EXIT_OK),
        ("failed", EXIT_REFUSED),
    ]
    assert runs[0]["orders"] == runs[0]["table_rows"]["product_service_orders"] > 0
    assert "401" in runs[2]["error"]
    text = Path(operated.database + ".runs.jsonl").read_text()
    assert "AT-SECRET" not in text and operated.sandbox.client_token not in text
    out = operated.printed
    assert out.count("finished in") == 2 and out.count("FAILED after") == 1


def test_a_bug_is_recorded_by_its_type_only(tmp_path, monkeypatch):
    def explode(database: str) -> None:
        raise RuntimeError("whatever a bug's message holds")

    monkeypatch.setattr("pipelines.mews_pipeline.apply_views", explode)
    target = Target(Sandbox.generate(orders=200, seed=9), tmp_path)
    with pytest.raises(RuntimeError):
        recorded(target)
    (run,) = read_runs(DuckDbStorage.at(target.database).runs_path)
    assert (run["exit_code"], run["error"]) == (
        1,
        "unexpected RuntimeError (a bug; see the traceback)",
    )


def test_status_shows_watermark_sets_runs_rows_and_a_monthly_chart(operated, capsys):
    sandbox = operated.sandbox
    services = truth_services(sandbox)
    first = sorted(product_service_ids(sandbox))[0]

    assert main(["status", "--path", operated.database]) == EXIT_OK
    screen = capsys.readouterr().out

    marks = operated.state()["sources"]["mews"]["resources"]["product_service_orders"]
    marks = marks["watermarks"]
    newest = marks[first]
    assert set(marks.values()) == {newest, A_WHILE_AGO}
    lines = screen.splitlines()
    newest_line = next(i for i, line in enumerate(lines) if line.startswith(shown(newest)))
    assert "1 service:" in lines[newest_line]
    assert service_name(services[first]) in lines[newest_line + 1]
    old_line = next(i for i, line in enumerate(lines) if line.startswith(shown(A_WHILE_AGO)))
    assert f"{len(marks) - 1} services:" in lines[old_line]

    assert f"Runs recorded in {operated.database}.runs.jsonl: 3" in screen
    assert "last success: run started" in screen
    assert "last failure: run started" in screen and "exit 3" in screen
    runs = read_runs(DuckDbStorage.at(operated.database).runs_path)
    assert f"read {runs[1]['orders']} orders" in screen
    assert runs[2]["error"] in " ".join(screen.split())  # wrapped on screen

    for table, rows in runs[1]["table_rows"].items():
        assert f"mews.{table}" in screen and f"{rows:,}" in screen

    now = datetime.now(UTC)
    months = [month_start(now, back) for back in range(11, -1, -1)]
    stored = operated.orders()
    expected = Counter(o[4].astimezone(UTC).strftime("%Y-%m") for o in stored)
    chart = dict(re.findall(r"^  (\d{4}-\d{2}) #* +([\d,]+)", screen, re.MULTILINE))
    assert list(chart) == [f"{m:%Y-%m}" for m in months]
    assert {m: int(n.replace(",", "")) for m, n in chart.items()} == {m: expected[m] for m in chart}
    assert sum(expected[m] for m in chart) > 0


def test_status_while_a_run_writes_shows_the_analysts_copy(operated, capsys):
    with DuckDbStorage.at(operated.database).lock():
        assert main(["status", "--path", operated.database]) == EXIT_OK
    screen = capsys.readouterr().out
    assert "read from the analysts' copy" in screen, screen
    rows = f"mews.{'product_service_orders':<24} {len(operated.orders()):>10,}"
    assert rows in screen, screen


def test_without_an_analysts_copy_status_while_a_run_writes_shows_the_records_only(
    operated, capsys
):
    storage = DuckDbStorage.at(operated.database)
    storage.analytics_path.unlink()
    with storage.lock():
        assert main(["status", "--path", operated.database]) == EXIT_BUSY
    screen = capsys.readouterr().out
    assert "A run is writing the DuckDB file now" in screen
    assert "last failure: run started" in screen
    assert "Rows per table" not in screen


def test_status_without_a_duckdb_file_says_what_to_do(tmp_path, capsys):
    assert main(["status", "--path", str(tmp_path / "none.duckdb")]) == EXIT_CONFIG
    assert "run `mews-sync run` first" in one_sentence(capsys.readouterr().err)


def test_a_bad_log_level_in_the_config_is_one_sentence(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MEWS_SYNC__LOG_LEVEL", "LOUD")
    assert main(["status", "--path", str(tmp_path / "none.duckdb")]) == EXIT_CONFIG
    assert "log level" in one_sentence(capsys.readouterr().err)


def test_the_summary_has_windows_pages_requests_retries_429s_rows_and_duration():
    report = RunReport(kind="run", where="x.duckdb", seconds=61.25)
    report.read = SourceStats(windows=48, order_pages=17, orders=2000, notes=3104)
    report.stats = ClientStats(
        retries=3,
        throttled=2,
        heavy=1,
        limiter_wait_seconds=4.0,
        short_pages=5,
        end_probes=9,
        timeouts=1,
        too_long_windows=1,
    )
    report.stats.requests.update({"productServiceOrders/getAll": 50, "services/getAll": 1})
    report.table_rows = {"product_service_orders": 2000, "service_order_notes": 3104}

    text = report.summary()

    assert len(text.splitlines()) <= 8
    for words in (
        "finished in 61.2 s",
        "2000 orders in 17 pages over 48 windows, 3104 notes",
        "requests: 51 (productServiceOrders/getAll 50, services/getAll 1)",
        "retries: 3, rate-limited (429): 2, too heavy (408): 1",
        "product_service_orders 2000, service_order_notes 3104",
        "waited for the rate limit: 4.0 s",
        "short pages: 5 (+9 end probes), timeouts: 1, 3-month limit learned: yes",
    ):
        assert words in text
    report.error = "Mews answered 503"
    assert report.summary().startswith("mews-sync run FAILED after 61.2 s: Mews answered 503")
    record = json.loads(json.dumps(report.record(4)))
    assert record["error"] == "Mews answered 503"
    assert (record["short_pages"], record["end_probes"], record["timeouts"]) == (5, 9, 1)
    assert record["too_long_windows"] == 1


def test_counts_of_one_are_singular_in_the_summary_and_status(tmp_path):
    report = RunReport(kind="run", where="x.duckdb", seconds=1.0)
    report.read = SourceStats(
        windows=1,
        order_pages=1,
        orders=1,
        notes=1,
        items=1,
        products=1,
        refresh_days=1.0,
        refreshed_orders=1,
    )
    report.stats = ClientStats(retries=1, throttled=1, end_probes=1)
    report.stats.requests.update({"productServiceOrders/getAll": 1})
    report.removed = Compacted(superseded_orders=1, superseded_notes=1, deleted_notes=1)
    report.table_rows = {"product_service_orders": 500}  # 2 * 500 / 1000 a day: 1 request

    text = report.summary()
    for words in (
        "read: 1 order in 1 page over 1 window, 1 note, 1 order item, 1 product",
        "(+1 end probe)",
        "older copies of 1 order and 1 note read again; 1 note deleted in Mews",
        "notes refresh (every 1 day): re-read 1 order updated",
        "about 1 request a day",
    ):
        assert words in text
    screen = "\n".join(
        run_lines(DuckDbStorage.at(tmp_path / "x.duckdb"), [report.record(0)], report.started)
    )
    read = "read 1 order in 1 page over 1 window, 1 note, 1 order item; 1 request, 1 retry, 1 429"
    assert read in screen
    assert "1 orders" not in text + screen and "1 requests" not in text + screen
    assert [counted(n, "retry") for n in (0, 2)] == ["0 retries", "2 retries"]
    assert counted(1000, "day", ",") == "1,000 days" and counted(0.6, "day", ".0f") == "1 day"


# -- progress --------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_source_plans_its_windows_up_front(synced):
    report = synced.sync()  # nothing changed: one window per service set
    assert report.read.windows_total == report.read.windows >= 1


def test_progress_draws_a_bar_on_a_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    read, stats = SourceStats(windows_total=48), ClientStats()
    terminal = Terminal()
    with Progress(read, stats, stream=terminal, interval=0.01) as progress:
        read.add(windows=12, order_pages=40, orders=39_000)
        stats.requests.update({"productServiceOrders/getAll": 52})
        stats.throttled = 1
        assert progress.line().startswith("0:00 [##........]  25% windows 12/48, pages 40,")
        for _ in range(100):
            if "orders 39,000" in terminal.getvalue():
                break
            time.sleep(0.01)
    drawn = terminal.getvalue()
    assert drawn.startswith("\r0:00 [") and drawn.endswith("\n")
    assert "requests 52" in drawn and "429s 1" in drawn


def test_progress_logs_plain_lines_when_not_on_a_terminal(caplog):
    read, stats = SourceStats(windows_total=4), ClientStats()
    stream = io.StringIO()
    with (
        caplog.at_level(logging.INFO, logger="mews_sync.progress"),
        Progress(read, stats, stream=stream, interval=0.01, log_every=0.02),
    ):
        read.add(windows=1)
        for _ in range(100):
            if caplog.records:
                break
            time.sleep(0.01)
    assert stream.getvalue() == ""
    assert "progress: 0:00 [" in caplog.records[0].getMessage()
    assert "windows 1/4" in caplog.text
