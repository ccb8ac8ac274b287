"""Hotel groups: properties with a token, a state and run records each, loading one destination
at the same time (real CLI processes, the sandbox over loopback HTTP, DuckDB and PostgreSQL)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from harness import Target, assert_equals_truth, one_sentence, product_service_ids
from test_reliability import CLIENT_TOKEN, REPO, cli, cli_env

from mews_sandbox import Faults, Sandbox, serve
from pipelines.failures import EXIT_BUSY, EXIT_OK
from pipelines.runs import read_runs
from pipelines.storage import DuckDbStorage

PROPERTIES = ("old_town", "riverside", "airport")


def group(sandbox: Sandbox) -> dict[str, str]:
    """Property -> enterprise id; each property gets a token covering its enterprise only."""
    enterprises = sorted(e["Id"] for e in sandbox.enterprises())
    covered = dict(zip(PROPERTIES, enterprises, strict=True))
    for name, enterprise in covered.items():
        sandbox.add_token(token_of(name), [enterprise])
    return covered


def token_of(name: str) -> str:
    return f"AT-{name.upper()}-SECRET"


def group_env(tmp_path: Path, url: str, postgres: str | None, **overrides: str) -> dict[str, str]:
    """One environment for the whole group: each property's token under its own section,
    no plain SOURCES__MEWS__ACCESS_TOKEN."""
    env = cli_env(tmp_path, url, SOURCES__MEWS__ACCESS_TOKEN=None, **overrides)
    env.pop("SOURCES__MEWS__ACCESS_TOKEN", None)
    for name in PROPERTIES:
        env[f"{name.upper()}__SOURCES__MEWS__ACCESS_TOKEN"] = token_of(name)
    if postgres:
        env.update(MEWS_SYNC__DESTINATION="postgres", DESTINATION__POSTGRES__CREDENTIALS=postgres)
    return env


def start(env: dict[str, str], name: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run", "--property", name],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_all(env: dict[str, str], cwd: Path, names: tuple[str, ...] = PROPERTIES) -> None:
    processes = {name: start(env, name, cwd) for name in names}
    for name, process in processes.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == EXIT_OK, f"{name}: {err}"
        assert CLIENT_TOKEN not in out + err and token_of(name) not in out + err


def change_everything(sandbox: Sandbox, rng: random.Random) -> set[str]:
    """Orders changed, notes added, edited and deleted, every note of some orders deleted, in
    every enterprise; returns the ids of the orders touched."""
    touched: set[str] = set()
    orders = sandbox.orders()
    by_order: dict[str, list[str]] = {}
    for note in sandbox.notes():
        by_order.setdefault(note.get("OrderId") or note.get("ServiceOrderId"), []).append(
            note["Id"]
        )
    for order in rng.sample(orders, 30):
        sandbox.update_order(order["Id"], State="Confirmed", Notes=f"changed {rng.random()}")
        touched.add(order["Id"])
    for order in rng.sample(orders, 20):
        sandbox.add_note(order["Id"], f"new note {rng.random()}")
        touched.add(order["Id"])
    noted = [o for o in by_order if len(by_order[o]) >= 2]
    for order_id in rng.sample(noted, 10):
        sandbox.update_note(by_order[order_id][0], "edited")
        sandbox.delete_note(by_order[order_id][1])
        touched.add(order_id)
    for order_id in rng.sample([o for o in by_order if o not in touched], 10):
        for note_id in by_order[order_id]:
            sandbox.delete_note(note_id)  # every note of the order
        touched.add(order_id)
    # A run ends its windows at Mews' clock rounded down to the second: a change in the second
    # the next run starts is that run's next run's. These runs must see all of them.
    time.sleep(1.05 - datetime.now(UTC).microsecond / 1e6)
    return touched


def runs_path(tmp_path: Path, postgres: str | None, data_dir: str = "dlt_data") -> Path:
    """The run records the CLI processes wrote (for PostgreSQL, in their DLT_DATA_DIR)."""
    if not postgres:
        return DuckDbStorage.at(tmp_path / "mews_sync.duckdb").runs_path
    (path,) = (tmp_path / data_dir).glob("mews_sync/postgres-*/runs.jsonl")
    return path


def services_of(sandbox: Sandbox, enterprise: str) -> set[str]:
    return {s["Id"] for s in sandbox.services() if s["EnterpriseId"] == enterprise}


def wait_for_orders_request(sandbox: Sandbox, services: set[str], after: int) -> None:
    """Until the sandbox has answered an orders request for these services (a run under
    way), among its requests after the first `after`."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for entry in sandbox.log.entries[after:]:
            asked = set(entry.body.get("ServiceIds") or [])
            if entry.operation == "productServiceOrders/getAll" and asked & services:
                return
        time.sleep(0.01)
    raise AssertionError("the run never asked for its orders")


def rename_in_each_property(sandbox: Sandbox, enterprises: dict[str, str]) -> dict[str, str]:
    """Renames each property's enterprise and one of its services and products (tables each
    property reads whole, loaded again only when they change); returns id -> new name."""
    renamed = {}
    for name, enterprise in enterprises.items():
        service = sorted(services_of(sandbox, enterprise) & product_service_ids(sandbox))[0]
        product = next(p["Id"] for p in sandbox.products() if p["ServiceId"] == service)
        for record, kind in ((enterprise, "hotel"), (service, "spa"), (product, "late checkout")):
            renamed[record] = f"{name} {kind}"
            sandbox.rename(record, renamed[record])
    return renamed


def assert_names_equal(target: Target, renamed: dict[str, str]) -> None:
    """The renames are in the tables, and the tables read whole hold one row per record."""
    for table in ("services", "enterprises", "products"):
        ids = [row[0] for row in target.rows(f"select id from mews.{table}")]
        assert len(ids) == len(set(ids)), f"duplicate {table}"
    names = dict(target.rows("select id, name from mews.enterprises"))
    names |= dict(target.rows("select id, name from mews.services"))
    names |= dict(target.rows("select id, name from mews.products"))
    assert {record: names.get(record) for record in renamed} == renamed


def test_three_properties_load_one_destination_at_once(tmp_path, postgres):
    sandbox = Sandbox.generate(orders=3000, seed=21)
    sandbox.client_token = CLIENT_TOKEN
    sandbox.config.faults = Faults(latency_s=0.2)  # reading lasts longer than a start-up
    enterprises = group(sandbox)
    with serve(sandbox) as url:
        # Exactly the changes: no overlap, no notes refresh (changes are stamped after a run).
        env = group_env(
            tmp_path,
            url,
            postgres,
            SOURCES__MEWS__OVERLAP_MINUTES="0",
            SOURCES__MEWS__NOTES_REFRESH_DAYS="0",
        )
        run_all(env, tmp_path)
        target = Target(sandbox, tmp_path, postgres)
        assert_equals_truth(target)
        # The properties read Mews at the same time: each one's requests overlap in time
        # with every other's.
        firsts, lasts = {}, {}
        for entry in sandbox.log.entries:
            for name, enterprise in enterprises.items():
                if set(entry.body.get("ServiceIds") or []) & services_of(sandbox, enterprise):
                    firsts.setdefault(name, entry.at)
                    lasts[name] = entry.at
        for one in PROPERTIES:
            for other in PROPERTIES:
                assert firsts[one] < lasts[other], (one, other, firsts, lasts)

        renamed = rename_in_each_property(sandbox, enterprises)
        touched = change_everything(sandbox, random.Random(7))
        sandbox.config.faults = Faults(latency_s=0.05)  # long enough to be killed mid-run
        before = len(sandbox.log.entries)
        processes = {name: start(env, name, tmp_path) for name in PROPERTIES}
        wait_for_orders_request(sandbox, services_of(sandbox, enterprises["airport"]), before)
        processes["airport"].send_signal(signal.SIGKILL)
        for name, process in processes.items():
            process.communicate(timeout=300)
            assert process.returncode == (-signal.SIGKILL if name == "airport" else EXIT_OK)
        sandbox.config.faults = Faults()
        run_all(env, tmp_path, ("airport",))
        assert_equals_truth(target)
        assert_names_equal(target, renamed)

    runs = read_runs(runs_path(tmp_path, postgres))
    assert {r["property"] for r in runs} == set(PROPERTIES)
    for name, enterprise in enterprises.items():
        services = services_of(sandbox, enterprise)
        mine = {o["Id"] for o in sandbox.orders() if o["ServiceId"] in services}
        last = [r for r in runs if r["property"] == name][-1]
        # A property's rerun read its own changes, and nothing of the others'.
        assert last["orders"] <= len(touched & mine), (name, last)
        assert len(touched & mine) > 0


def test_properties_with_nothing_new_load_nothing_and_one_with_a_change_loads_it(
    tmp_path, postgres
):
    """Mews' clock stands still: the group's second round finds nothing new, and adds no
    load (and on DuckDB keeps the analysts' copy); a change in one property's orders is then
    loaded by that property's run alone, and the copy has it."""
    sandbox = Sandbox.generate(orders=900, seed=61, now=datetime(2026, 6, 1, 11, tzinfo=UTC))
    sandbox.clock = lambda: datetime(2026, 6, 1, 12, tzinfo=UTC)
    sandbox.client_token = CLIENT_TOKEN
    enterprises = group(sandbox)
    target = Target(sandbox, tmp_path, postgres)
    copy = DuckDbStorage.at(target.database).analytics_path
    with serve(sandbox) as url:
        env = group_env(tmp_path, url, postgres)
        run_all(env, tmp_path)
        loads = target.rows("select load_id from mews._dlt_loads order by 1")
        inode = None if postgres else copy.stat().st_ino
        run_all(env, tmp_path)
        assert target.rows("select load_id from mews._dlt_loads order by 1") == loads
        assert postgres or copy.stat().st_ino == inode

        services = services_of(sandbox, enterprises["riverside"])
        changed = next(o["Id"] for o in sandbox.orders() if o["ServiceId"] in services)
        sandbox.update_order(changed, State="Processed")
        run_all(env, tmp_path)
    assert len(target.rows("select load_id from mews._dlt_loads")) == len(loads) + 1
    assert_equals_truth(target)
    if not postgres:
        target.database = str(copy)  # the analysts' copy equals the truth too
        assert_equals_truth(target)


def test_a_second_run_of_the_same_property_is_skipped_but_another_property_is_not(tmp_path):
    sandbox = Sandbox.generate(orders=200, seed=22)
    sandbox.client_token = CLIENT_TOKEN
    group(sandbox)
    with serve(sandbox) as url:
        env = group_env(tmp_path, url, None)
        storage = DuckDbStorage.at(tmp_path / "mews_sync.duckdb")
        with storage.run_lock("old_town"):
            busy = cli(env, "run", "--property", "old_town", cwd=tmp_path)
            other = cli(env, "run", "--property", "riverside", cwd=tmp_path)
    assert busy.returncode == EXIT_BUSY
    assert "Another mews-sync run of property old_town" in one_sentence(busy.stderr)
    assert other.returncode == EXIT_OK, other.stderr


def test_a_load_waits_for_another_propertys_load_a_bounded_time(tmp_path):
    sandbox = Sandbox.generate(orders=200, seed=23)
    sandbox.client_token = CLIENT_TOKEN
    group(sandbox)
    with serve(sandbox) as url:
        env = group_env(tmp_path, url, None, MEWS_SYNC__LOAD_WAIT_SECONDS="1")
        storage = DuckDbStorage.at(tmp_path / "mews_sync.duckdb")
        with storage.lock():  # another property loading, for longer than the bound
            started = time.monotonic()
            busy = cli(env, "run", "--property", "old_town", cwd=tmp_path)
            waited = time.monotonic() - started
        assert busy.returncode == EXIT_BUSY
        assert "busy for over 1 s" in one_sentence(busy.stderr)
        assert not (tmp_path / "mews_sync.duckdb").exists()  # it never wrote
        env["MEWS_SYNC__LOAD_WAIT_SECONDS"] = "60"
        process = start(env, "old_town", tmp_path)
        with storage.lock():
            time.sleep(3)  # it reads Mews meanwhile, then waits for the lock
        out, err = process.communicate(timeout=120)
    assert process.returncode == EXIT_OK, err
    assert waited < 30


def test_settings_resolve_per_property_with_the_plain_ones_as_fallback(tmp_path):
    sandbox = Sandbox.generate(orders=300, seed=24)
    sandbox.client_token = CLIENT_TOKEN
    enterprises = group(sandbox)
    with serve(sandbox) as url:
        env = group_env(tmp_path, url, None)
        # old_town's own start date; the others fall back to the plain one.
        env["OLD_TOWN__SOURCES__MEWS__START_DATE"] = "2099-01-01"
        late = cli(env, "run", "--property", "old_town", cwd=tmp_path)
        assert late.returncode == 2 and "START_DATE" in one_sentence(late.stderr)
        del env["OLD_TOWN__SOURCES__MEWS__START_DATE"]
        env["MEWS_SYNC__PROPERTY"] = "riverside"
        assert cli(env, "run", cwd=tmp_path).returncode == EXIT_OK
    target = Target(sandbox, tmp_path)
    riverside = services_of(sandbox, enterprises["riverside"])
    assert {o[1] for o in target.orders()} <= riverside
    assert len(target.orders()) == sum(1 for o in sandbox.orders() if o["ServiceId"] in riverside)


@pytest.mark.parametrize("name", ["Old-Town", "1st", "a__b", ""])
def test_a_bad_property_name_is_one_sentence(tmp_path, name):
    env = cli_env(tmp_path, "http://unused.invalid")
    result = cli(env, "run", "--property", name, cwd=tmp_path)
    if name == "":  # empty: no property, the default pipeline (here: an unreachable URL)
        assert result.returncode != EXIT_OK
        return
    assert result.returncode == 2
    assert "is not a property name" in one_sentence(result.stderr)


def test_status_shows_every_property_at_a_glance_and_one_in_full(tmp_path):
    sandbox = Sandbox.generate(orders=300, seed=25)
    sandbox.client_token = CLIENT_TOKEN
    group(sandbox)
    with serve(sandbox) as url:
        env = group_env(tmp_path, url, None)
        run_all(env, tmp_path)
        sandbox.remove_token(token_of("airport"))
        failed = cli(env, "run", "--property", "airport", cwd=tmp_path)
        assert failed.returncode == 3
        glance = cli(env, "status", cwd=tmp_path)
        full = cli(env, "status", "--property", "riverside", cwd=tmp_path)
    assert glance.returncode == EXIT_OK, glance.stderr
    for name in PROPERTIES:
        assert f"  {name}: orders loaded up to" in glance.stdout, glance.stdout
    airport = glance.stdout.split("  airport:")[1].split("\n  ")[1]
    assert "last failure: run started" in airport and "exit 3" in airport
    assert full.returncode == EXIT_OK, full.stderr
    assert "Property riverside:" in full.stdout and "Watermarks" in full.stdout
    assert "riverside info" in full.stdout


def test_a_file_and_a_database_of_the_previous_release_upgrade_in_place(tmp_path, postgres):
    previous = tmp_path / "previous"
    previous.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "dd5245c"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(previous)], input=archive, check=True)
    sandbox = Sandbox.generate(orders=1500, seed=26)
    sandbox.client_token = CLIENT_TOKEN
    sandbox.add_token("AT-SECRET-b42d5e86")
    with serve(sandbox) as url:
        env = cli_env(
            tmp_path, url, SOURCES__MEWS__OVERLAP_MINUTES="0", SOURCES__MEWS__NOTES_REFRESH_DAYS="0"
        )
        if postgres:
            env["MEWS_SYNC__DESTINATION"] = "postgres"
            env["DESTINATION__POSTGRES__CREDENTIALS"] = postgres
        old = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "run"],
            env={**env, "PYTHONPATH": str(previous)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert old.returncode == EXIT_OK, old.stderr
        touched = change_everything(sandbox, random.Random(8))
        requests = len(sandbox.log.entries)
        env["DLT_DATA_DIR"] = str(tmp_path / "another_machine")  # no local state either
        new = cli(env, "run", cwd=tmp_path)
        assert new.returncode == EXIT_OK, new.stderr
        # Orders and notes (the order items are new: their first run reads their history).
        incremental = sum(
            1
            for e in sandbox.log.entries[requests:]
            if e.operation in ("productServiceOrders/getAll", "serviceOrderNotes/getAll")
        )
    target = Target(sandbox, tmp_path, postgres)
    assert_equals_truth(target)
    last = read_runs(runs_path(tmp_path, postgres, "another_machine"))[-1]
    assert last["orders"] <= len(touched) and last["property"] is None
    assert incremental < 20, incremental  # no full re-read (that takes over 40 requests)


def test_a_portfolio_property_loads_beside_a_single_enterprise_one(tmp_path):
    sandbox = Sandbox.generate(orders=600, seed=27)
    sandbox.client_token = CLIENT_TOKEN
    first, second, third = sorted(e["Id"] for e in sandbox.enterprises())
    sandbox.add_token(token_of("old_town"), [first, second])  # a portfolio of two
    sandbox.add_token(token_of("riverside"), [third])
    with serve(sandbox) as url:
        env = group_env(tmp_path, url, None)
        run_all(env, tmp_path, ("old_town", "riverside"))
        change_everything(sandbox, random.Random(9))
        run_all(env, tmp_path, ("old_town", "riverside"))
    assert_equals_truth(Target(sandbox, tmp_path))
