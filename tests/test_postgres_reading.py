"""status and query on PostgreSQL read through dlt's SQL client, read-only."""

from __future__ import annotations

import socket

from harness import Target, lagging_sandbox, one_sentence

from mews_sandbox import DEMO_CLIENT_TOKEN, DEMO_PORTFOLIO_ACCESS_TOKEN, Sandbox, serve
from pipelines.cli import EXIT_CONFIG, EXIT_OK, EXIT_UNAVAILABLE, main
from pipelines.runs import read_runs
from pipelines.storage import PostgresStorage


def test_status_and_query_read_postgres(tmp_path, monkeypatch, capsys, postgres_credentials):
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", postgres_credentials)
    monkeypatch.setenv("MEWS_SYNC__DESTINATION", "postgres")
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt_data"))
    sandbox = lagging_sandbox(orders=300, seed=81)
    target = Target(sandbox, tmp_path, postgres_credentials)
    target.sync()
    capsys.readouterr()

    assert main(["query", "select count(*) as orders from orders_current"]) == EXIT_OK
    assert "300" in capsys.readouterr().out
    assert main(["query", "delete from product_service_orders"]) == EXIT_CONFIG
    assert "read-only" in one_sentence(capsys.readouterr().err)
    assert target.rows("select count(*) from mews.product_service_orders") == [(300,)]

    assert main(["status"]) == EXIT_OK
    screen = capsys.readouterr().out
    assert "postgresql://" in screen and "secret" not in screen  # never the password
    assert f"mews.{'product_service_orders':<24} {300:>10,}" in screen


def test_a_run_that_cannot_reach_postgresql_is_recorded_and_status_shows_it(
    tmp_path, monkeypatch, capsys, caplog
):
    with socket.socket() as free:  # a port nothing listens on: a typo in the port
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    monkeypatch.setenv("MEWS_SYNC__DESTINATION", "postgres")
    monkeypatch.setenv(
        "DESTINATION__POSTGRES__CREDENTIALS", f"postgresql://mews:secret@127.0.0.1:{port}/hotel"
    )
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt_data"))  # nothing made there yet
    monkeypatch.setenv("SOURCES__MEWS__CLIENT_TOKEN", DEMO_CLIENT_TOKEN)
    monkeypatch.setenv("SOURCES__MEWS__ACCESS_TOKEN", DEMO_PORTFOLIO_ACCESS_TOKEN)
    monkeypatch.setenv("SOURCES__MEWS__RATE_LIMIT_REQUESTS", "0")
    with serve(Sandbox.generate(orders=20, seed=5)) as url:
        monkeypatch.setenv("SOURCES__MEWS__PLATFORM_URL", url)
        assert main(["run"]) == EXIT_UNAVAILABLE

    sentence = one_sentence(capsys.readouterr().err)
    assert f"Cannot connect to PostgreSQL at postgresql://mews@127.0.0.1:{port}/hotel" in sentence
    assert "could not record" not in caplog.text
    (run,) = read_runs(PostgresStorage.configured().runs_path)
    assert (run["status"], run["exit_code"], run["error"]) == ("failed", 4, sentence[11:])

    assert main(["status"]) == EXIT_UNAVAILABLE  # what it shows is only the run records
    screen = capsys.readouterr().out
    assert "Cannot connect to PostgreSQL" in screen and "Traceback" not in screen
    assert "last failure: run started" in screen and "exit 4" in screen
    assert "secret" not in screen
