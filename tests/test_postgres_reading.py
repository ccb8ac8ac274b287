"""status and query on PostgreSQL read through dlt's SQL client, read-only."""

from __future__ import annotations

from harness import Target, lagging_sandbox, one_sentence

from pipelines.cli import EXIT_CONFIG, EXIT_OK, main


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
