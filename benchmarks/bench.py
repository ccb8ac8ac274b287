"""Benchmark of the pipeline against the sandbox in its own process.

    python benchmarks/bench.py                      # 200,000 and 1,000,000 orders (long)
    python benchmarks/bench.py --orders 200000 --repeats 3 --rate-limited 200000

For each size it serves a generated sandbox from a separate process, then runs, side by side
and each in a fresh process (so CPU and peak RSS are the scenario's own):
  bare      an httpx loop making the pipeline's requests and only JSON-decoding the answers
  pipeline  the first `sync("run")`: the real source into a fresh DuckDB file
  naive     dlt with lists of dicts and the default loader, the same requests
  nightly   then 1% of the orders change, and the incremental `sync("run")` of the next day
and, with --rate-limited, a backfill against a sandbox enforcing 200 requests / 30 s with
50 ms latency, compared with its floor (requests x 30 / 200 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SEED = 7
ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)  # the sandbox's "now": data never newer
START = "2021-01-01T00:00:00Z"
END = "2026-01-01T00:00:00Z"  # the first sync's end
NIGHTLY_END = "2026-01-02T00:00:00Z"  # the nightly sync's end


# -- the sandbox process ---------------------------------------------------------------------


def serve(orders: int, latency: float, rate_limited: bool) -> None:
    """Serve a generated sandbox; print its URL; 'mutate N' on stdin changes N orders."""
    import random

    from mews_sandbox import Faults, Sandbox, SandboxConfig
    from mews_sandbox import serve as serve_sandbox  # this function is serve too

    config = SandboxConfig(
        faults=Faults(latency_s=latency), rate_limit=(200, 30.0) if rate_limited else None
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
    from mews_sandbox import DEMO_CLIENT_TOKEN, DEMO_PORTFOLIO_ACCESS_TOKEN

    tokens = {"client_token": DEMO_CLIENT_TOKEN, "access_token": DEMO_PORTFOLIO_ACCESS_TOKEN}
    started = time.perf_counter()
    if name == "bare":
        rows = bare_fetch(url, DEMO_CLIENT_TOKEN, DEMO_PORTFOLIO_ACCESS_TOKEN)
    elif name in ("pipeline", "nightly"):
        from pipelines.mews_pipeline import sync
        from pipelines.storage import DuckDbStorage

        report = sync(
            "run",
            storage=DuckDbStorage.at(database),
            pipelines_dir=workdir,
            platform_url=url,
            start_date=START,
            end_date=END if name == "pipeline" else NIGHTLY_END,
            rate_limit_requests=200 if rate_limited else 0,
            **tokens,
        )
        rows = report.read.orders + report.read.notes
    elif name == "naive":
        rows = naive_dlt(url, database, workdir, tokens)
    else:
        raise SystemExit(f"unknown scenario {name}")
    return {"wall": time.perf_counter() - started, "rows": rows}


def bare_fetch(url: str, client_token: str, access_token: str) -> int:
    """The floor: the same requests, with httpx and json only."""
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


def measure(name: str, url: str, folder: Path, rate_limited: bool = False) -> dict:
    """Run one scenario in a fresh process; its own CPU and peak RSS come from wait4."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        __file__,
        "scenario",
        name,
        url,
        str(folder / "bench.duckdb"),
        str(folder / "dlt"),
        "1" if rate_limited else "0",
    ]
    env = {**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false", "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"scenario {name} failed (status {status})")
    result = json.loads(output.strip().splitlines()[-1])
    result.update(cpu=usage.ru_utime + usage.ru_stime, rss_mb=usage.ru_maxrss / 1024)
    return result


class SandboxProcess:
    def __init__(self, orders: int, latency: float = 0.0, rate_limited: bool = False):
        command = [
            sys.executable,
            __file__,
            "serve",
            str(orders),
            str(latency),
            "1" if rate_limited else "0",
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


def row(label: str, results: list[dict], requests: dict[str, int]) -> str:
    wall = statistics.median(r["wall"] for r in results)
    cpu = statistics.median(r["cpu"] for r in results)
    rss = statistics.median(r["rss_mb"] for r in results)
    rows = results[0]["rows"]
    total = sum(requests.values())
    return (
        f"| {label} | {wall:.1f} | {cpu:.1f} | {rss:.0f} | {rows / wall:,.0f} | {rows:,} | "
        f"{total} |"
    )


def bench_size(orders: int, repeats: int, naive: bool, folder: Path) -> list[str]:
    sandbox = SandboxProcess(orders)
    names = ["bare", "pipeline"] + (["naive"] if naive else [])
    results: dict[str, list[dict]] = {n: [] for n in names}
    requests: dict[str, dict[str, int]] = {}
    nightly: list[dict] = []
    try:
        measure("bare", sandbox.url, folder / "warm-up")  # the sandbox caches each order's JSON
        sandbox.requests()
        for repeat in range(repeats):
            # Interleaved, so drift on a noisy machine hits all alike; the slow naive baseline
            # runs once.
            for name in names if repeat == 0 else [n for n in names if n != "naive"]:
                results[name].append(measure(name, sandbox.url, folder / f"{name}{repeat}"))
                requests[name] = sandbox.requests()
        # Last, since it changes the data: 1% of the orders change, then the nightly run.
        sandbox.ask(f"mutate {orders // 100}")
        nightly.append(measure("nightly", sandbox.url, folder / f"pipeline{repeats - 1}"))
        requests["nightly"] = sandbox.requests()
    finally:
        sandbox.close()
    lines = [
        f"\n### {orders:,} orders (median of {repeats})\n",
        "| scenario | wall s | CPU s | peak RSS MB | rows/s | rows (orders+notes) | requests |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        lines.append(row(name, results[name], requests[name]))
    lines.append(row(f"nightly, {orders // 100:,} changed", nightly, requests["nightly"]))
    cpu = {n: statistics.median(r["cpu"] for r in results[n]) for n in names}
    lines.append(f"\npipeline CPU / bare CPU = {cpu['pipeline'] / cpu['bare']:.2f}")
    if naive:
        lines.append(f"naive CPU / pipeline CPU = {cpu['naive'] / cpu['pipeline']:.2f}")
    for name in ("pipeline", "nightly"):
        lines.append(f"{name} requests: {json.dumps(requests[name])}")
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
    parser.add_argument("--orders", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
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
    args = parser.parse_args()
    import platform

    lines = [
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}"
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for orders in args.orders:
            repeats = args.repeats if orders <= 200_000 else 1
            lines += bench_size(
                orders, repeats, orders <= args.naive_max_orders, Path(tmp) / str(orders)
            )
            print("\n".join(lines), flush=True)
        if args.rate_limited:
            lines += bench_rate_limited(args.rate_limited, Path(tmp) / "rate")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1")
    elif len(sys.argv) > 1 and sys.argv[1] == "scenario":
        print(json.dumps(scenario(*sys.argv[2:6], rate_limited=sys.argv[6] == "1")))
    else:
        main()
