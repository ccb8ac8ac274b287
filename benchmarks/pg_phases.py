"""Where a first sync into PostgreSQL spends its CPU, the client's and the server's, by phase.

    python benchmarks/pg_phases.py --orders 200000 --repeats 3

Serves `bench.py`'s sandbox, starts a throwaway PostgreSQL with pg_stat_statements, then runs
interleaved, each in a fresh process: `bare` (the floor) and `pipeline-postgres` (the first
sync into a fresh database), the latter with each phase timed: the client's CPU
(process_time, every thread) and the server's (its process tree, from /proc) across dlt's
extract, normalize and load, the compaction, the views and the row counts. With --statements,
the server's slowest statements of the last run (pg_stat_statements: their time, not CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 - the benchmark's sandbox, scenarios and settings

STATEMENTS_CONF = "shared_preload_libraries = 'pg_stat_statements'\n"


PHASES: dict[bench.Step, str] = {
    ("dlt", "Pipeline", "extract"): "extract",
    ("dlt", "Pipeline", "normalize"): "normalize",
    ("dlt", "Pipeline", "load"): "load",
    ("dlt", "Pipeline", "sync_destination"): "sync_destination",
    ("pipelines.mews_pipeline", None, "compact"): "compaction",
    ("pipelines.mews_pipeline", None, "apply_views"): "views",
    ("pipelines.mews_pipeline", None, "count_rows"): "count_rows",
}


def instrumented(url: str, database: str, workdir: str, server: int) -> dict:
    """In the scenario's process: `bench.scenario("pipeline-postgres")` with its phases timed."""
    phases: dict[str, list[float]] = {}

    @contextmanager
    def timed(phase: str) -> Iterator[None]:
        cpu, served = time.process_time(), bench.process_tree_cpu(server) or 0.0
        try:
            yield
        finally:
            spent = phases.setdefault(phase, [0.0, 0.0])
            spent[0] += time.process_time() - cpu
            spent[1] += (bench.process_tree_cpu(server) or 0.0) - served

    bench.around_steps(PHASES, timed)
    cpu, served = time.process_time(), bench.process_tree_cpu(server) or 0.0
    result = bench.scenario("pipeline-postgres", url, database, workdir, False)
    time.sleep(0.5)
    result["phases"] = phases
    served = (bench.process_tree_cpu(server) or 0.0) - served
    result["in_process"] = [time.process_time() - cpu, served]
    return result


def run_instrumented(url: str, folder: Path, database: str, server: int) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, __file__, "_run", url, database, str(folder / "dlt"), str(server)]
    env = {
        **os.environ,
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "PYTHONPATH": str(bench.REPO),
        "DLT_DATA_DIR": str(folder / "dlt_data"),
    }
    before = bench.process_tree_cpu(server) or 0.0
    done = bench.run_process(command, env)
    if done["status"] != 0:
        raise SystemExit(f"pipeline-postgres failed (status {done['status']})")
    time.sleep(1)  # the backends exit and are reaped
    result = json.loads(done["output"].strip().splitlines()[-1])
    result.update(cpu=done["cpu"], server_cpu=(bench.process_tree_cpu(server) or 0.0) - before)
    return result


def statements(url: str, top: int) -> list[str]:
    import contextlib

    import psycopg2

    with contextlib.closing(psycopg2.connect(url)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select total_exec_time / 1000, calls, rows, left(regexp_replace(query, '\\s+', ' ',"
            " 'g'), 150) from pg_stat_statements order by total_exec_time desc limit %s",
            (top,),
        )
        return [f"{s:7.2f} s {calls:6} calls {rows:9} rows  {q}" for s, calls, rows, q in cursor]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--statements", type=int, default=0, help="slowest statements to show")
    args = parser.parse_args()
    helper = bench.postgres_helper()
    runs: dict[str, list[dict]] = {"bare": [], "pipeline-postgres": []}
    with (
        tempfile.TemporaryDirectory() as tmp,
        helper.throwaway_cluster(STATEMENTS_CONF) as server_url,
    ):
        helper.execute(server_url, "create extension if not exists pg_stat_statements")
        server = bench.postmaster_pid(server_url)
        assert server is not None
        sandbox = bench.SandboxProcess(args.orders)
        try:
            bench.measure("bare", sandbox.url, Path(tmp) / "warm-up")
            for repeat in range(args.repeats):
                runs["bare"].append(bench.measure("bare", sandbox.url, Path(tmp) / f"bare{repeat}"))
                name, database = helper.create_database(server_url)
                helper.execute(server_url, "select pg_stat_statements_reset()")
                folder = Path(tmp) / f"pg{repeat}"
                runs["pipeline-postgres"].append(
                    run_instrumented(sandbox.url, folder, database, server)
                )
                helper.drop_database(server_url, name)
                print(json.dumps(runs["pipeline-postgres"][-1]), flush=True)
            lines = statements(server_url, args.statements) if args.statements else []
        finally:
            sandbox.close()
    report(runs, args.orders, lines)


def report(runs: dict[str, list[dict]], orders: int, lines: list[str]) -> None:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    bare = med([r["cpu"] for r in runs["bare"]])
    pg = runs["pipeline-postgres"]
    client, server = med([r["cpu"] for r in pg]), med([r["server_cpu"] for r in pg])
    print(f"\n{orders:,} orders, median of {len(pg)}; load average {os.getloadavg()[0]:.1f}")
    print(f"bare CPU {bare:.2f} s; pipeline-postgres client {client:.2f} s, server {server:.2f} s")
    print(f"(client + server) / bare = {(client + server) / bare:.2f}")
    print("| phase | client CPU s | server CPU s |\n|---|---|---|")
    for phase in pg[0]["phases"]:
        spent = [r["phases"].get(phase, [0.0, 0.0]) for r in pg]
        print(f"| {phase} | {med([s[0] for s in spent]):.2f} | {med([s[1] for s in spent]):.2f} |")
    inside = [r["in_process"] for r in pg]
    client, server = med([s[0] for s in inside]), med([s[1] for s in inside])
    print(f"| whole sync() | {client:.2f} | {server:.2f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_run":
        url, database, workdir, server = sys.argv[2:6]
        print(json.dumps(instrumented(url, database, workdir, int(server))))
    else:
        main()
