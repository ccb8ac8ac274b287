"""Benchmark of the pipeline against the sandbox in its own process.

    python benchmarks/bench.py                      # 200,000 and 1,000,000 orders (long)
    python benchmarks/bench.py --orders 200000 --repeats 3 --rate-limited 200000
    python benchmarks/bench.py --orders 200000 --no-postgres

For each size it serves a generated sandbox from a separate process, then runs, side by side
and each in a fresh process (so CPU and peak RSS are the scenario's own):
  bare               an httpx loop making the pipeline's requests and only JSON-decoding the
                     answers: the floor
  pipeline           the first `sync("run")`: the real source into a fresh DuckDB file; the
                     time its `publish()` of the analysts' copy took is reported apart
  pipeline-postgres  the same into a fresh PostgreSQL database (the server's CPU is measured
                     from /proc: the postmaster, its children and the children it reaped)
  naive              dlt with lists of dicts and the default loader, the same requests
  norefresh, refresh no change, the incremental run one simulated day later, with the notes
                     refresh off and at its default (7 days: 1/7 of the history re-read)
  cycle              no change, the incremental run 7 simulated days later: one whole refresh
                     cycle, every stored order re-read once (a day's refresh on average = 1/7)
  cli                `python -m pipelines.cli run` with no change, after a first sync by the
                     same command: process start-up included
  nightly, nightly-postgres
                     then 1% of the orders change, and the incremental run of the next day,
                     on each first sync's file or database
and, with --rate-limited, a backfill against a sandbox enforcing 200 requests / 30 s with
50 ms latency, compared with its floor (requests x 30 / 200 s).

PostgreSQL: the server in MEWS_SYNC_TEST_POSTGRES, else a throwaway cluster started by the
tests' helper (tests/postgres_server.py); --no-postgres leaves it out.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# A scenario of another release (--baseline) imports that release's tree, given as BENCH_TREE.
sys.path.insert(0, os.environ.get("BENCH_TREE") or str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from isolated import isolated_env  # noqa: E402 - a script beside this one

SEED = 7
ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)  # the sandbox's "now": data never newer
START = "2021-01-01T00:00:00Z"
END = "2026-01-01T00:00:00Z"  # the first sync's end
NIGHTLY_END = "2026-01-02T00:00:00Z"  # the nightly sync's end
CYCLE_END = "2026-01-08T00:00:00Z"  # 7 days on: one whole cycle of the notes refresh
# No-change runs of the command line, after its first sync.
CLI_RUNS = int(os.environ.get("BENCH_CLI_RUNS", "3"))
# Each scenario of the pipeline: (its end_date, notes_refresh_days or None for the default).
SYNCS = {
    "pipeline": (END, None),
    "nightly": (NIGHTLY_END, None),
    "norefresh": (NIGHTLY_END, 0),
    "refresh": (NIGHTLY_END, None),
    "cycle": (CYCLE_END, None),
}


# -- the sandbox process ---------------------------------------------------------------------


def serve(orders: int, latency: float, rate_limited: bool, heavier: bool) -> None:
    """Serve a generated sandbox; print its URL; 'mutate N' on stdin changes N orders."""
    import random

    from mews_sandbox import Faults, Sandbox, SandboxConfig
    from mews_sandbox import serve as serve_sandbox  # this function is serve too

    config = SandboxConfig(
        faults=Faults(latency_s=latency),
        rate_limit=(200, 30.0) if rate_limited else None,
        heavier_data=heavier,
    )
    sandbox = Sandbox.generate(orders=orders, seed=SEED, config=config, now=ANCHOR)
    # Changes are stamped an hour after the first sync's end, inside the nightly window.
    sandbox.clock = lambda: datetime(2026, 1, 1, 1, tzinfo=UTC)
    with serve_sandbox(sandbox) as url:
        print(url, flush=True)
        # readline, not iteration: iterating stdin reads ahead and would wait for more lines.
        while line := sys.stdin.readline():
            command, _, amount = line.strip().partition(" ")
            if command == "mutate":
                rng = random.Random(int(amount))
                ids = [o["Id"] for o in rng.sample(sandbox.orders(), int(amount))]
                for order_id in ids:
                    sandbox.update_order(order_id, State="Processed")
                print("mutated", flush=True)
            elif command == "count":
                print(json.dumps(requests_by_operation(sandbox)), flush=True)


def requests_by_operation(sandbox: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in sandbox.log.entries:
        counts[f"{entry.operation} {entry.status}"] = (
            counts.get(f"{entry.operation} {entry.status}", 0) + 1
        )
    sandbox.log.clear()
    return counts


# -- the scenarios, each in its own process --------------------------------------------------


def scenario(name: str, url: str, database: str, workdir: str, rate_limited: bool) -> dict:
    """Run one scenario; `database` is the DuckDB file, or the PostgreSQL database's URL."""
    from mews_sandbox import DEMO_CLIENT_TOKEN, DEMO_PORTFOLIO_ACCESS_TOKEN

    tokens = {"client_token": DEMO_CLIENT_TOKEN, "access_token": DEMO_PORTFOLIO_ACCESS_TOKEN}
    result: dict[str, Any] = {}
    started = time.perf_counter()
    if name == "bare":
        rows = bare_fetch(url, DEMO_CLIENT_TOKEN, DEMO_PORTFOLIO_ACCESS_TOKEN)
    elif name.removesuffix("-postgres") in SYNCS:
        from pipelines.mews_pipeline import sync
        from pipelines.storage import DuckDbStorage, PostgresStorage, Storage

        storage: Storage
        if name.endswith("-postgres"):
            os.environ["DESTINATION__POSTGRES__CREDENTIALS"] = database  # as an operator would
            storage = PostgresStorage.configured()
        else:

            class TimedDuckDbStorage(DuckDbStorage):
                def publish(self) -> str:
                    wall, cpu = time.perf_counter(), time.process_time()
                    try:
                        return super().publish()
                    finally:
                        result["publish_s"] = time.perf_counter() - wall
                        result["publish_cpu"] = time.process_time() - cpu

            storage = TimedDuckDbStorage.at(database)
        end, refresh_days = SYNCS[name.removesuffix("-postgres")]
        report = sync(
            "run",
            storage=storage,
            pipelines_dir=workdir,
            platform_url=url,
            start_date=START,
            end_date=end,
            rate_limit_requests=200 if rate_limited else 0,
            **({} if refresh_days is None else {"notes_refresh_days": refresh_days}),
            **tokens,
        )
        read = report.read
        rows = read.orders + read.notes + read.items + read.products
        result["refreshed_orders"] = report.read.refreshed_orders
        if isinstance(storage, DuckDbStorage):
            result["file_mb"] = storage.path.stat().st_size / 2**20
    elif name == "naive":
        rows = naive_dlt(url, database, workdir, tokens)
    else:
        raise SystemExit(f"unknown scenario {name}")
    return {"wall": time.perf_counter() - started, "rows": rows, **result}


def bare_fetch(url: str, client_token: str, access_token: str) -> int:
    """The floor: the same requests (orders, their notes, order items, products), with httpx
    and json only."""
    import httpx

    from sources.mews import parse_utc, walk_windows

    rows = 0
    with httpx.Client(base_url=url + "/api/connector/v1", timeout=60) as http:

        def pages(operation: str, key: str, filters: dict) -> Any:
            cursor = None
            while True:
                limitation = {"Count": 1000, **({"Cursor": cursor} if cursor else {})}
                body = {
                    "ClientToken": client_token,
                    "AccessToken": access_token,
                    "Client": "bench",
                    **filters,
                    "Limitation": limitation,
                }
                data = json.loads(http.post("/" + operation, json=body).content)
                if data[key]:
                    yield data[key]
                cursor = data.get("Cursor")
                if len(data[key]) < 1000 or not cursor:
                    return

        services = [s for page in pages("services/getAll", "Services", {}) for s in page]
        ids = [
            s["Id"] for s in services if (s.get("Data") or {}).get("Discriminator") == "Additional"
        ]
        for start, end in walk_windows(parse_utc(START, "start"), parse_utc(END, "end")):
            interval = {
                "StartUtc": start.isoformat().replace("+00:00", "Z"),
                "EndUtc": end.isoformat().replace("+00:00", "Z"),
            }
            for page in pages(
                "productServiceOrders/getAll",
                "ProductServiceOrders",
                {"ServiceIds": ids, "UpdatedUtc": interval},
            ):
                rows += len(page)
                note_filter = {
                    "ServiceOrderIds": [o["Id"] for o in page],
                    "Types": ["General", "ChannelManager", "SpecialRequest"],
                }
                for notes in pages("serviceOrderNotes/getAll", "ServiceOrderNotes", note_filter):
                    rows += len(notes)
            items = {"ServiceIds": ids, "UpdatedUtc": interval}
            for page in pages("orderItems/getAll", "OrderItems", items):
                rows += len(page)
        products = {"ServiceIds": ids, "IncludeDefault": True}
        rows += sum(len(page) for page in pages("products/getAll", "Products", products))
    return rows


def naive_dlt(url: str, database: str, workdir: str, tokens: dict[str, str]) -> int:
    """What a first dlt pipeline would do: lists of dicts, the default loader."""
    import dlt

    from sources.mews import parse_utc, walk_windows
    from sources.mews.client import MewsClient
    from sources.mews.settings import DEFAULT_NOTE_TYPES

    api = MewsClient(url, tokens["client_token"], tokens["access_token"], rate_limit=None)
    services = [s for page in api.services() for s in page]
    ids = [s["Id"] for s in services if (s.get("Data") or {}).get("Discriminator") == "Additional"]

    @dlt.resource(write_disposition="merge", primary_key="Id")
    def product_service_orders() -> Any:
        for window in walk_windows(parse_utc(START, "start"), parse_utc(END, "end")):
            yield from api.product_service_orders(ids, *window)

    @dlt.transformer(data_from=product_service_orders, write_disposition="merge", primary_key="Id")
    def service_order_notes(orders: list[dict]) -> Any:
        yield from api.service_order_notes([o["Id"] for o in orders], DEFAULT_NOTE_TYPES)

    pipeline = dlt.pipeline(
        "bench_naive",
        destination=dlt.destinations.duckdb(database),
        dataset_name="mews",
        pipelines_dir=workdir,
    )
    pipeline.run([product_service_orders, service_order_notes])
    counts = pipeline.last_trace.last_normalize_info.row_counts
    return counts.get("product_service_orders", 0) + counts.get("service_order_notes", 0)


# -- the driver ------------------------------------------------------------------------------


def run_process(command: list[str], env: dict[str, str], cwd: Path | None = None) -> dict:
    """Run a command in a fresh process: its wall time (start-up included), its own CPU and
    peak RSS (from wait4), and what it printed."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, cwd=cwd, text=True)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    return {
        "process_wall": time.perf_counter() - started,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
        "status": status,
        "output": output,
    }


def measure(
    name: str,
    url: str,
    folder: Path,
    rate_limited: bool = False,
    database: str | None = None,
    server: int | None = None,
) -> dict:
    """Run one scenario in a fresh process; its own CPU and peak RSS come from wait4. With
    `server` (the postmaster's pid), the PostgreSQL server's CPU meanwhile too. A name ending
    in BEFORE runs the scenario of the release in BASELINE_TREE (--baseline)."""
    folder.mkdir(parents=True, exist_ok=True)
    tree = BASELINE_TREE if name.endswith(BEFORE) else REPO
    command = [
        sys.executable,
        __file__,
        "scenario",
        name.removesuffix(BEFORE),
        url,
        database or str(folder / "bench.duckdb"),
        str(folder / "dlt"),
        "1" if rate_limited else "0",
    ]
    env = {
        **os.environ,
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "PYTHONPATH": str(tree),
        "BENCH_TREE": str(tree),
        "DLT_DATA_DIR": str(folder / "dlt_data"),  # run records of a PostgreSQL destination
    }
    server_before = process_tree_cpu(server) if server else None
    done = run_process(command, env)
    if done["status"] != 0:
        raise SystemExit(f"scenario {name} failed (status {done['status']})")
    result = json.loads(done["output"].strip().splitlines()[-1])
    result.update(cpu=done["cpu"], rss_mb=done["rss_mb"])
    if server and server_before is not None:
        time.sleep(1)  # the run's backends exit after it and are reaped by the postmaster
        after = process_tree_cpu(server)
        result["server_cpu"] = after - server_before if after is not None else None
    return result


# --baseline: the release to compare with, side by side ("before"), from `git archive`.
BEFORE = "@before"
BASELINE_TREE = REPO
BASELINE_COMMIT = ""


def release_tree(commit: str, folder: Path) -> Path:
    """The files of `commit`, for PYTHONPATH."""
    tree = folder / commit
    tree.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


Step = tuple[str, str | None, str]  # (module, class or None, function)


def around_steps(steps: dict[Step, str], around: Callable[[str], Any]) -> None:
    """Run each of `steps` inside the context manager `around(label)` from now on: how the
    measuring scripts time or sample a run's steps without changing its code."""
    import importlib

    def wrapped(function: Any, label: str) -> Any:
        def step(*args: Any, **kwargs: Any) -> Any:
            with around(label):
                return function(*args, **kwargs)

        return step

    for (module_name, class_name, name), label in steps.items():
        module = importlib.import_module(module_name)
        owner = getattr(module, class_name) if class_name else module
        setattr(owner, name, wrapped(getattr(owner, name), label))


def import_dlt_walls(runs: int) -> list[dict]:
    """`python -c "import dlt"`, the wall a run's start-up is compared with."""
    env = {**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false"}
    return [run_process([sys.executable, "-c", "import dlt"], env) for _ in range(runs)]


# -- PostgreSQL ------------------------------------------------------------------------------


def postgres_helper() -> Any:
    """The tests' throwaway-PostgreSQL helper, tests/postgres_server.py (not a package)."""
    spec = importlib.util.spec_from_file_location(
        "postgres_server", REPO / "tests" / "postgres_server.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def postgres_server(wanted: bool) -> Iterator[str | None]:
    """The URL of a superuser on a PostgreSQL server (the tests'), or None without one."""
    if not wanted:
        yield None
        return
    with postgres_helper().running_server() as url:
        yield url


def postmaster_pid(url: str) -> int | None:
    """The server's postmaster, as the parent of a backend; None if it is not on this machine
    (then its CPU is not counted)."""
    import psycopg2

    with contextlib.closing(psycopg2.connect(url)) as connection, connection.cursor() as cursor:
        cursor.execute("select pg_backend_pid()")
        (backend,) = cursor.fetchone()
        try:
            return int(stat_fields(backend)[1])
        except OSError:
            return None


def stat_fields(pid: int | str) -> list[str]:
    """/proc/PID/stat after the command's name: [state, ppid, ..., utime (11), stime (12),
    cutime (13), cstime (14), ...]."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree_cpu(pid: int) -> float | None:
    """CPU seconds of a process, its live children and the children it has reaped."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        total = sum(int(f) for f in stat_fields(pid)[11:15])
    except OSError:
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pid:
            continue
        try:
            fields = stat_fields(entry)
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def database_mb(url: str) -> float:
    import psycopg2

    with contextlib.closing(psycopg2.connect(url)) as connection, connection.cursor() as cursor:
        cursor.execute("select pg_database_size(current_database())")
        (size,) = cursor.fetchone()
    return size / 2**20


# -- the command line, start-up included -----------------------------------------------------


def cli_env(url: str, folder: Path, tree: Path = REPO) -> dict[str, str]:
    """The environment of `mews-sync run` (of the release in `tree`) against the sandbox at
    `url`, with its DuckDB file and dlt's data folder in `folder`, and nothing of this
    machine's own settings."""
    from mews_sandbox import DEMO_CLIENT_TOKEN, DEMO_PORTFOLIO_ACCESS_TOKEN

    env = isolated_env(tree, folder, folder / "cli.duckdb")
    env.update(
        SOURCES__MEWS__PLATFORM_URL=url,
        SOURCES__MEWS__CLIENT_TOKEN=DEMO_CLIENT_TOKEN,
        SOURCES__MEWS__ACCESS_TOKEN=DEMO_PORTFOLIO_ACCESS_TOKEN,
        SOURCES__MEWS__START_DATE=START,
        SOURCES__MEWS__RATE_LIMIT_REQUESTS="0",
        MEWS_SYNC__LOG_LEVEL="WARNING",
    )
    return env


def bench_cli(
    sandbox: SandboxProcess, folder: Path, runs: int, before: bool
) -> tuple[dict[str, list[dict]], dict[str, dict[str, int]]]:
    """`python -m pipelines.cli run` as a scheduler starts it, from a folder of its own with
    the settings in the environment: a first sync, then `runs` runs with no change, of this
    release and (`before`) of the baseline, interleaved with `python -c "import dlt"`.
    Returns those runs by name ("cli", "cli@before", "import dlt") and the requests of the
    last of each release by name."""
    trees = {"cli": REPO, **({"cli" + BEFORE: BASELINE_TREE} if before else {})}
    envs = {}
    for name, tree in trees.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        envs[name] = cli_env(sandbox.url, folder / name, tree)
    command = [sys.executable, "-m", "pipelines.cli", "run"]
    results: dict[str, list[dict]] = {name: [] for name in (*trees, "import dlt")}
    requests: dict[str, dict[str, int]] = {}
    for repeat in range(runs + 1):
        for name in trees:
            done = run_process(command, envs[name], cwd=folder / name)
            if done["status"] != 0:
                raise SystemExit(f"{name} failed (status {done['status']}):\n{done['output']}")
            if repeat:  # the first is the first sync
                results[name].append(done)
            requests[name] = sandbox.requests()
        if repeat:
            results["import dlt"] += import_dlt_walls(1)
    return results, requests


class SandboxProcess:
    def __init__(
        self, orders: int, latency: float = 0.0, rate_limited: bool = False, heavier: bool = False
    ):
        command = [
            sys.executable,
            __file__,
            "serve",
            str(orders),
            str(latency),
            "1" if rate_limited else "0",
            "1" if heavier else "0",
        ]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()

    def ask(self, line: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def requests(self) -> dict[str, int]:
        return json.loads(self.ask("count"))

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


def median(results: list[dict], key: str) -> float | None:
    values = [r[key] for r in results if r.get(key) is not None]
    return statistics.median(values) if values else None


def row(label: str, results: list[dict], requests: dict[str, int], wall_key: str = "wall") -> str:
    wall = median(results, wall_key) or 0.0
    cpu = median(results, "cpu") or 0.0
    rss = median(results, "rss_mb") or 0.0
    server = median(results, "server_cpu")
    rows = results[0].get("rows")
    total = sum(requests.values())
    return (
        f"| {label} | {wall:.1f} | {cpu:.1f} | {'-' if server is None else f'{server:.1f}'} | "
        f"{rss:.0f} | {f'{rows / wall:,.0f}' if rows else '-'} | "
        f"{'-' if rows is None else f'{rows:,}'} | {total} |"
    )


def bench_heavier(orders: int, repeats: int, folder: Path) -> list[str]:
    """The first sync and its floor on the heavier data shape (about 2 notes per order, three
    order fields and one note field the pipeline does not know), interleaved."""
    sandbox = SandboxProcess(orders, heavier=True)
    names = ["bare", *with_before(["pipeline"], BASELINE_COMMIT != "")]
    results: dict[str, list[dict]] = {name: [] for name in names}
    requests: dict[str, dict[str, int]] = {}
    try:
        measure("bare", sandbox.url, folder / "warm-up")
        sandbox.requests()
        for repeat in range(repeats):
            for name in results:
                results[name].append(measure(name, sandbox.url, folder / f"{name}{repeat}"))
                requests[name] = sandbox.requests()
                shutil.rmtree(folder / f"{name}{repeat}")
    finally:
        sandbox.close()
    lines = [
        f"\n### {orders:,} orders, heavier shape (median of {repeats})\n",
        "| scenario | wall s | CPU s | server CPU s | peak RSS MB | rows/s | rows (orders, notes, "
        "items, products) | requests |",
        "|---|---|---|---|---|---|---|---|",
        row("bare (floor)", results["bare"], requests["bare"]),
    ]
    for name in names[1:]:
        tag = f" (before: {BASELINE_COMMIT})" if name.endswith(BEFORE) else ""
        lines.append(row("pipeline (DuckDB)" + tag, results[name], requests[name]))
    for name in names[1:]:
        tag = f" (before: {BASELINE_COMMIT})" if name.endswith(BEFORE) else ""
        ratio = cpu_of(results, name) / cpu_of(results, "bare")
        lines.append(f"{'' if tag else chr(10)}pipeline CPU / bare CPU = {ratio:.2f}{tag}")
    return lines


def bench_pages(repeats: int = 7, rounds: int = 50) -> list[str]:
    """CPU per page of 1,000 orders, decoded and typed as the source does, with and without
    three fields the pipeline does not know, and the general way for comparison; and per
    page of 1,000 order items (the sandbox's items of its first orders) the same two ways."""
    import orjson

    from mews_sandbox import Sandbox, SandboxConfig
    from sources.mews.arrow_pages import ArrowPageReader
    from sources.mews.tables import ORDER_COLUMNS, ORDER_ITEM_COLUMNS, raw_schema, to_table

    orders, items = "ProductServiceOrders", "OrderItems"

    def page(heavier: bool) -> bytes:
        sandbox = Sandbox.generate(
            orders=1000, seed=SEED, config=SandboxConfig(heavier_data=heavier), now=ANCHOR
        )
        return orjson.dumps({orders: sandbox.orders(), "Cursor": "c"})

    def item_page() -> bytes:
        sandbox = Sandbox.generate(orders=1000, seed=SEED, now=ANCHOR)
        return orjson.dumps({items: sandbox.order_items()[:1000], "Cursor": "c"})

    def arrow(body: bytes, key: str, columns: list) -> None:
        reader = ArrowPageReader(key, raw_schema(columns))
        for _ in range(rounds):  # one reader per walk, as the client keeps one per operation
            decoded = reader.read(body)
            assert decoded is not None
            to_table(decoded[key], columns)

    def general(body: bytes, key: str, columns: list) -> None:
        for _ in range(rounds):
            to_table(orjson.loads(body)[key], columns)

    bodies = {
        "known fields only": (page(False), orders, ORDER_COLUMNS),
        "three added fields": (page(True), orders, ORDER_COLUMNS),
        "order items": (item_page(), items, ORDER_ITEM_COLUMNS),
    }
    timings: dict[str, list[float]] = {}
    for _ in range(repeats):  # interleaved
        for label, page_of in bodies.items():
            for way, decode in (("Arrow", arrow), ("general", general)):
                started = time.process_time()
                decode(*page_of)
                ms = (time.process_time() - started) * 1000 / rounds
                timings.setdefault(f"{label}, {way}", []).append(ms)
    ms = {label: statistics.median(values) for label, values in timings.items()}
    lines = [
        f"\n### A page of 1,000 orders or items, decoded and typed (CPU ms, median of {repeats} x "
        f"{rounds})\n",
        "| page | bytes | Arrow | general way |",
        "|---|---|---|---|",
    ]
    for label, (body, _, _) in bodies.items():
        lines.append(
            f"| {label} | {len(body):,} | {ms[f'{label}, Arrow']:.2f} | "
            f"{ms[f'{label}, general']:.2f} |"
        )
    ratio = ms["three added fields, Arrow"] / ms["known fields only, Arrow"]
    lines.append(f"\nadded fields / known only (Arrow) = {ratio:.2f}")
    return lines


def bench_size(
    orders: int, repeats: int, naive: bool, folder: Path, postgres: str | None, before: bool
) -> list[str]:
    sandbox = SandboxProcess(orders)
    helper = postgres_helper() if postgres else None
    server = postmaster_pid(postgres) if postgres else None
    loads = ["pipeline"] + (["pipeline-postgres"] if postgres else [])
    names = ["bare", *with_before(loads, before)] + (["naive"] if naive else [])
    results: dict[str, list[dict]] = {n: [] for n in names}
    requests: dict[str, dict[str, int]] = {}
    databases: dict[str, tuple[str, str]] = {}  # each first sync's PostgreSQL database, by folder
    refresh = ("norefresh", "refresh", "cycle")
    nightly = with_before(["nightly"] + (["nightly-postgres"] if postgres else []), before)
    results.update({n: [] for n in (*refresh, *nightly)})
    load = [os.getloadavg()[0]]
    try:
        measure("bare", sandbox.url, folder / "warm-up")  # the sandbox caches each order's JSON
        sandbox.requests()
        for repeat in range(repeats):
            # Interleaved, so drift on a noisy machine hits all alike; the slow naive baseline
            # runs once.
            for name in names if repeat == 0 else [n for n in names if n != "naive"]:
                where = f"{name}{repeat}"
                if "postgres" in name:
                    assert helper is not None and postgres is not None
                    databases[where] = helper.create_database(postgres)
                result = measure_in(name, sandbox.url, folder / where, databases, server)
                results[name].append(result)
                requests[name] = sandbox.requests()
        # No change yet: the incremental runs with and without the notes refresh, each on a
        # copy of a first sync (the copy's analysts' file is left out: publish replaces it).
        for repeat in range(repeats):
            for name in refresh:
                copy = folder / f"{name}{repeat}"
                shutil.copytree(
                    folder / f"pipeline{repeat}",
                    copy,
                    ignore=shutil.ignore_patterns("*.analytics.duckdb"),
                )
                results[name].append(measure(name, sandbox.url, copy))
                requests[name] = sandbox.requests()
                shutil.rmtree(copy)
        cli, cli_requests = bench_cli(sandbox, folder / "cli", CLI_RUNS, before)
        shutil.rmtree(folder / "cli")
        results.update(cli)
        requests.update(cli_requests)
        # Last, since it changes the data: 1% of the orders change, then the nightly run on
        # each first sync.
        sandbox.ask(f"mutate {orders // 100}")
        for repeat in range(repeats):
            for name in nightly:
                first = name.replace("nightly", "pipeline") + str(repeat)
                result = measure_in(name, sandbox.url, folder / first, databases, server)
                results[name].append(result)
                requests[name] = sandbox.requests()
    finally:
        sandbox.close()
        if helper is not None and postgres is not None:
            for database, _ in databases.values():
                helper.drop_database(postgres, database)
    load.append(os.getloadavg()[0])
    return report_size(orders, repeats, naive, results, requests, server, load)


def with_before(names: list[str], before: bool) -> list[str]:
    """Each scenario, followed by the baseline's (--baseline)."""
    return [n for name in names for n in ((name, name + BEFORE) if before else (name,))]


def measure_in(
    name: str, url: str, folder: Path, databases: dict[str, tuple[str, str]], server: int | None
) -> dict:
    """`measure`, into the PostgreSQL database made for `folder` (counting the server's
    CPU), if there is one."""
    if folder.name not in databases:
        return measure(name, url, folder)
    database = databases[folder.name][1]
    result = measure(name, url, folder, database=database, server=server)
    result["database_mb"] = database_mb(database)
    return result


def report_size(
    orders: int,
    repeats: int,
    naive: bool,
    results: dict[str, list[dict]],
    requests: dict[str, dict[str, int]],
    server: int | None,
    load: list[float],
) -> list[str]:
    changed = orders // 100
    labels = {
        "bare": "bare (floor)",
        "pipeline": "pipeline (DuckDB)",
        "pipeline-postgres": "pipeline-postgres",
        "naive": "naive dlt (once)",
        "norefresh": "no change, next day, refresh off",
        "refresh": "no change, next day, refresh 7 days",
        "cycle": "no change, 7 days on: a whole refresh cycle",
        "nightly": f"nightly (DuckDB), {changed:,} changed",
        "nightly-postgres": f"nightly-postgres, {changed:,} changed",
        "cli": f"`python -m pipelines.cli run`, no change (median of {CLI_RUNS})",
        "import dlt": '`python -c "import dlt"`',
    }
    lines = [
        f"\n### {orders:,} orders (median of {repeats}; load average {load[0]:.1f} before, "
        f"{load[1]:.1f} after)\n",
        "| scenario | wall s | CPU s | server CPU s | peak RSS MB | rows/s | rows (orders, notes, "
        "items, products) | requests |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, label in labels.items():
        for each in (name, name + BEFORE):
            if not results.get(each):
                continue
            walls = "process_wall" if name in ("cli", "import dlt") else "wall"
            tag = f" (before: {BASELINE_COMMIT})" if each.endswith(BEFORE) else ""
            lines.append(row(label + tag, results[each], requests.get(each, {}), walls))
    lines.append(
        "\nwall s is timed inside the scenario's process (imports included, not Python's "
        "start-up), the command line's from outside; CPU s and peak RSS are the scenario's "
        "process; server CPU s is PostgreSQL's (postmaster, its children and the children it "
        "reaped, from /proc)"
    )
    lines += ratios(results, server)
    if naive:
        naive_ratio = cpu_of(results, "naive") / cpu_of(results, "pipeline")
        lines.append(f"naive CPU / pipeline CPU = {naive_ratio:.2f}")
    for name in ("pipeline", "nightly", "refresh", "cycle"):
        published = results[name]
        lines.append(
            f"publish() in {name}: {median(published, 'publish_s') or 0:.2f} s wall, "
            f"{median(published, 'publish_cpu') or 0:.2f} s CPU, DuckDB file "
            f"{median(published, 'file_mb') or 0:.0f} MB"
        )
    for name in ("refresh", "cycle"):
        extra_cpu = cpu_of(results, name) - cpu_of(results, "norefresh")
        extra_requests = sum(requests[name].values()) - sum(requests["norefresh"].values())
        days = 7 if name == "cycle" else 1
        lines.append(
            f"refresh over {days} day(s) ({name} - norefresh): {extra_requests} requests, "
            f"{extra_cpu:.1f} s CPU, {median(results[name], 'refreshed_orders'):,.0f} orders "
            f"re-read; per day {extra_requests / days:.0f} requests, {extra_cpu / days:.2f} s CPU"
        )
    for name in ("bare", "pipeline", "norefresh", "refresh", "cycle", "cli", "nightly"):
        lines.append(f"{name} requests: {json.dumps(requests[name])}")
    return lines


def cpu_of(results: dict[str, list[dict]], name: str) -> float:
    return median(results[name], "cpu") or 0.0


def ratios(results: dict[str, list[dict]], server: int | None) -> list[str]:
    """The issue's targets: CPU against the floor's (PostgreSQL's with the server's), the
    no-change command line's wall against `import dlt`'s; this release's and the baseline's."""
    bare = cpu_of(results, "bare")
    dlt_wall = median(results["import dlt"], "process_wall") or 0.0
    lines = []
    for suffix in ("", BEFORE):
        if not results.get("pipeline" + suffix):
            continue
        tag = f" (before: {BASELINE_COMMIT})" if suffix else ""
        lines.append(
            f"\npipeline CPU / bare CPU = {cpu_of(results, 'pipeline' + suffix) / bare:.2f}{tag}"
        )
        if results.get("pipeline-postgres" + suffix):
            pg = results["pipeline-postgres" + suffix]
            own = cpu_of(results, "pipeline-postgres" + suffix)
            total = own + (median(pg, "server_cpu") or 0)
            lines.append(
                f"pipeline-postgres CPU / bare CPU = {own / bare:.2f} "
                f"(with the server's{'' if server else ', not on this machine'}: "
                f"{total / bare:.2f}); database {median(pg, 'database_mb') or 0:.0f} MB{tag}"
            )
        cli_wall = median(results["cli" + suffix], "process_wall") or 0.0
        lines.append(f"no-change run wall / import dlt wall = {cli_wall / dlt_wall:.2f}{tag}")
    return lines


def bench_rate_limited(orders: int, folder: Path) -> list[str]:
    sandbox = SandboxProcess(orders, latency=0.05, rate_limited=True)
    try:
        result = measure("pipeline", sandbox.url, folder / "rate_limited", rate_limited=True)
        requests = sandbox.requests()
    finally:
        sandbox.close()
    total = sum(requests.values())
    floor = total * 30 / 200
    throttled = sum(n for k, n in requests.items() if k.endswith(" 429"))
    return [
        f"\n### Rate limited: {orders:,} orders, 200 requests / 30 s, 50 ms latency\n",
        f"wall {result['wall']:.1f} s for {total} requests; floor {floor:.1f} s; "
        f"ratio {result['wall'] / floor:.3f}; 429s: {throttled}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, nargs="*", default=[200_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--large-repeats",
        type=int,
        default=1,
        help="repeats above 200,000 orders (default 1: a first sync of 1,000,000 takes minutes)",
    )
    parser.add_argument(
        "--baseline",
        metavar="COMMIT",
        help="also run the release at COMMIT (git archive) side by side, as 'before'",
    )
    parser.add_argument(
        "--naive-max-orders",
        type=int,
        default=200_000,
        help="skip the naive baseline above this size (it needs GBs)",
    )
    parser.add_argument(
        "--rate-limited",
        type=int,
        default=0,
        metavar="ORDERS",
        help="also run the rate-limited scenario with this many orders",
    )
    parser.add_argument(
        "--heavier",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the first sync on the heavier data shape, at each size (default)",
    )
    parser.add_argument(
        "--postgres",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also load into PostgreSQL (default; MEWS_SYNC_TEST_POSTGRES, else a throwaway "
        "server)",
    )
    args = parser.parse_args()
    import platform

    lines = [
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}"
    ]
    lines += bench_pages()
    with tempfile.TemporaryDirectory() as tmp, postgres_server(args.postgres) as postgres:
        if args.baseline:
            global BASELINE_TREE, BASELINE_COMMIT
            BASELINE_TREE = release_tree(args.baseline, Path(tmp) / "baseline")
            BASELINE_COMMIT = args.baseline
        for orders in args.orders:
            repeats = args.repeats if orders <= 200_000 else args.large_repeats
            folder = Path(tmp) / str(orders)
            naive = orders <= args.naive_max_orders
            lines += bench_size(orders, repeats, naive, folder, postgres, bool(args.baseline))
            shutil.rmtree(folder)
            if args.heavier:
                lines += bench_heavier(orders, repeats, Path(tmp) / f"{orders}-heavier")
            print("\n".join(lines), flush=True)
        if args.rate_limited:
            lines += bench_rate_limited(args.rate_limited, Path(tmp) / "rate")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1", sys.argv[5] == "1")
    elif len(sys.argv) > 1 and sys.argv[1] == "scenario":
        print(json.dumps(scenario(*sys.argv[2:6], rate_limited=sys.argv[6] == "1")))
    else:
        main()
