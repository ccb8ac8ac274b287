"""Benchmark of a hotel group: three properties, each with its own token and the sandbox
enforcing Mews' limit (200 requests / 30 s) on each, first sync one after another against all
three at once, into one DuckDB file and one PostgreSQL database.

    python benchmarks/group.py --orders 200000
    python benchmarks/group.py --orders 60000 --no-postgres

The sandbox (three enterprises, 5:3:2 of the orders) is served over loopback from this
process, with 50 ms of latency per request; each run is `mews-sync run --property NAME` in a
process of its own. One after another, each property loads into a fresh destination alone;
at once, all three load into one fresh destination. The target: the parallel wall at most
1.25x the slowest single property's, and the tables equal to the sandbox's truth.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))
from bench import postgres_helper, postgres_server  # noqa: E402 - scripts beside this one
from isolated import isolated_env  # noqa: E402

from mews_sandbox import DEMO_CLIENT_TOKEN, Faults, Sandbox, SandboxConfig, serve  # noqa: E402

PROPERTIES = ("old_town", "riverside", "airport")
LIMIT = (200, 30.0)  # Mews' limit per AccessToken
LATENCY = 0.05


def group_env(url: str, folder: Path, phase: str, postgres: str | None) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    env = isolated_env(REPO, folder, folder / "group.duckdb")
    env.update(
        SOURCES__MEWS__PLATFORM_URL=url,
        SOURCES__MEWS__CLIENT_TOKEN=DEMO_CLIENT_TOKEN,
        SOURCES__MEWS__START_DATE="2021-01-01",
        RUNTIME__DLTHUB_TELEMETRY="false",
    )
    for name in PROPERTIES:
        env[f"{name.upper()}__SOURCES__MEWS__ACCESS_TOKEN"] = token(name, phase)
    if postgres:
        env.update(MEWS_SYNC__DESTINATION="postgres", DESTINATION__POSTGRES__CREDENTIALS=postgres)
    return env


def token(name: str, phase: str) -> str:
    """A token of its own per property and phase: no phase starts with a window in use."""
    return f"AT-{name}-{phase}"


def start(env: dict[str, str], name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run", "--property", name],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], name: str) -> None:
    out, err = process.communicate()
    if process.returncode:
        raise SystemExit(f"{name} failed ({process.returncode}):\n{out}\n{err}")


def count_rows(env: dict[str, str], postgres: str | None) -> tuple[int, int]:
    """(order rows, distinct order ids) in the destination."""
    sql = "select count(*), count(distinct id) from mews.product_service_orders"
    if postgres:
        import psycopg2

        with psycopg2.connect(postgres) as con, con.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone()
    import duckdb

    with duckdb.connect(env["DESTINATION__DUCKDB__CREDENTIALS"], read_only=True) as con:
        return con.execute(sql).fetchone()


def bench(sandbox: Sandbox, url: str, folder: Path, postgres: str | None) -> list[str]:
    helper = postgres_helper() if postgres else None
    singles: dict[str, float] = {}
    for name in PROPERTIES:
        database = helper.create_database(postgres)[1] if helper else None
        env = group_env(url, folder / f"single-{name}", "single", database)
        began = time.monotonic()
        finish(start(env, name), name)
        singles[name] = time.monotonic() - began
    database = helper.create_database(postgres)[1] if helper else None
    env = group_env(url, folder / "together", "together", database)
    began = time.monotonic()
    processes = {name: start(env, name) for name in PROPERTIES}
    for name, process in processes.items():
        finish(process, name)
    together = time.monotonic() - began
    rows, ids = count_rows(env, database)
    expected = len(sandbox.orders())
    slowest = max(singles.values())
    where = "PostgreSQL" if postgres else "DuckDB"
    return [
        f"{where}: one after another "
        + ", ".join(f"{n} {s:.1f} s" for n, s in singles.items())
        + f" (sum {sum(singles.values()):.1f} s); all three at once {together:.1f} s",
        f"  at once / slowest single = {together / slowest:.2f} (target <= 1.25); "
        f"orders {rows:,} rows, {ids:,} ids, the sandbox has {expected:,}: "
        + ("equal" if rows == ids == expected else "NOT EQUAL"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--no-postgres", dest="postgres", action="store_false")
    args = parser.parse_args()
    config = SandboxConfig(rate_limit=LIMIT, faults=Faults(latency_s=LATENCY))
    sandbox = Sandbox.generate(orders=args.orders, seed=7, config=config)
    sandbox.client_token = DEMO_CLIENT_TOKEN
    enterprises = sorted(e["Id"] for e in sandbox.enterprises())
    for phase in ("single", "together"):
        for name, enterprise in zip(PROPERTIES, enterprises, strict=True):
            sandbox.add_token(token(name, phase), [enterprise])
    lines = [f"{args.orders:,} orders, 3 properties, {LIMIT[0]} requests / {LIMIT[1]:g} s each"]
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve(sandbox) as url,
        postgres_server(args.postgres) as postgres,
    ):
        print(lines[0], flush=True)
        for line in bench(sandbox, url, Path(tmp) / "duckdb", None):
            print(line, flush=True)
        if postgres:
            for line in bench(sandbox, url, Path(tmp) / "postgres", postgres):
                print(line, flush=True)


if __name__ == "__main__":
    main()
