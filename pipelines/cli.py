"""`mews-sync`: the command line of the pipeline.

Exit codes (for schedulers):
  0  success
  2  bad command line or configuration: a person must act. Also a wrong address (nothing
     listens there, no TLS on an https:// port, a server that is not the Mews API), a
     settings file that is not TOML, unknown SERVICE_IDS, a damaged DuckDB file or a folder
     it cannot write
  3  the Mews API refused the request (bad tokens, permissions, a rejected request) or answered
     something unusable: a person must act
  4  the Mews API is unavailable, rate limiting or failing after every retry, or could not
     be reached at a run's start (a name that does not resolve): retry later
  5  another run (or another process, a reader) holds the destination: the run was skipped,
     retry later
  1  an unexpected error (a bug): the traceback is printed; please report it
  130  stopped by Ctrl-C or SIGTERM: the next run goes on from the last completed load
"""

from __future__ import annotations

# Only what every command needs is imported here: dlt alone costs about a second, and
# `--help`, `--version`, `status` and `query` (of a DuckDB file) never import it. Each command
# imports the rest itself.
import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from pipelines.failures import (
    EXIT_BUG,
    EXIT_BUSY,
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    INTERRUPTED,
    explain,
    raised_by,
)
from sources.errors import MewsConfigError, counted

if TYPE_CHECKING:
    from pipelines.runs import RunReport
    from pipelines.status import Reader
    from pipelines.storage import Storage

__all__ = [
    "EXIT_BUG",
    "EXIT_BUSY",
    "EXIT_CONFIG",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNAVAILABLE",
    "main",
    "recorded_sync",
]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

DEMO_ORDERS = 2000
DEMO_PIPELINE = "mews_demo"  # the demo's dlt pipeline: marks a file as the demo's own
# The question a revenue manager asks first: what did each service earn last month?
DEMO_QUERY = """select service_name as service, currency, cast(sum(items) as bigint) as items,
    cast(sum(gross_value) as decimal(18, 2)) as gross_revenue
from mews.revenue_daily
where day >= date_trunc('month', current_date) - interval '1 month'
    and day < date_trunc('month', current_date)
group by all order by gross_revenue desc limit 5"""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one sentence and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"mews-sync: {message} (see mews-sync --help)\n")


class VersionAction(argparse.Action):
    """`--version`: the installed version, looked up only when asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any):
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> NoReturn:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("mews-sync")
        except PackageNotFoundError:
            number = "unknown (not installed: pip install -e .)"
        print(f"mews-sync {number}")
        parser.exit(EXIT_OK)


RUN_HELP = """Read what changed in Mews since the last run (the watermarks kept in the
destination) up to now, load it, and re-create the views. The first run reads the whole
history from SOURCES__MEWS__START_DATE, in steps. Settings come from the environment
(SOURCES__MEWS__PLATFORM_URL, ..._CLIENT_TOKEN, ..._ACCESS_TOKEN, ...), else .dlt/secrets.toml
and .dlt/config.toml; see the README. A summary is printed at the end; a second run on the
same destination stops at once with exit 5."""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="mews-sync",
        description="Keep a DuckDB copy of Mews product service orders and their notes.",
        epilog="Exit codes: 0 ok, 2 configuration (also a wrong address or a damaged DuckDB "
        "file), 3 API refused, 4 API unavailable (retry later), 5 another run is busy "
        "(skipped), 1 bug, 130 stopped (Ctrl-C, SIGTERM).",
    )
    parser.add_argument("--version", action=VersionAction)
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        help="how much to log on stderr (default: MEWS_SYNC__LOG_LEVEL or log_level under "
        "[mews_sync] in .dlt/config.toml, else INFO)",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    run = commands.add_parser(
        "run", help="incremental sync from the stored state up to now", description=RUN_HELP
    )
    backfill = commands.add_parser(
        "backfill", help="reload orders updated in [start, end), leaving the state alone"
    )
    backfill.add_argument("--start", required=True, help="ISO 8601 date or time, UTC")
    backfill.add_argument("--end", required=True, help="ISO 8601 date or time, UTC (exclusive)")
    for command in (run, backfill):
        command.add_argument(
            "--property",
            help="the property (its own token, state and records) to load: its settings are "
            "PROPERTY__SOURCES__MEWS__... first (default: MEWS_SYNC__PROPERTY, else none)",
        )
    demo = commands.add_parser("demo", help="sync a bundled sandbox into a local DuckDB file")
    demo.add_argument("--orders", type=int, default=DEMO_ORDERS, help="orders to generate")
    demo.add_argument("--path", default="mews_demo.duckdb", help="the DuckDB file to create")
    sandbox = commands.add_parser(
        "sandbox",
        help="serve a local Mews API sandbox (Ctrl-C stops)",
        description="Serve a generated Mews Connector API on http://127.0.0.1:PORT until "
        "Ctrl-C, and print the environment variables that point mews-sync at it.",
    )
    sandbox.add_argument(
        "--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080; 0: a free one)"
    )
    sandbox.add_argument(
        "--orders", type=int, default=10_000, help="orders to generate (default 10000)"
    )
    sandbox.add_argument(
        "--seed", type=int, default=1, help="the same seed generates the same data (default 1)"
    )
    sandbox.add_argument(
        "--client-token", help="ClientToken to accept instead of Mews' public demo one"
    )
    sandbox.add_argument(
        "--access-token",
        help="AccessToken to accept (it covers every enterprise) instead of Mews' demo ones",
    )
    status = commands.add_parser(
        "status", help="watermarks, last runs, rows per table and orders per month"
    )
    status.add_argument("--path", help="the DuckDB file (default: as configured for runs)")
    status.add_argument(
        "--property", help="one property in full (default: every property at a glance)"
    )
    query = commands.add_parser("query", help="print the result of a SQL query as a table")
    query.add_argument("sql", nargs="?", help="the SQL; tables resolve in the mews dataset")
    query.add_argument("-f", "--file", help="read the SQL from this file instead")
    query.add_argument("--path", help="the DuckDB file (default: as configured for runs)")
    query.add_argument("--max-rows", type=int, default=100, help="rows to print (default 100)")
    query.add_argument("--csv", action="store_true", help="print CSV, every row, whole values")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    loads = args.command in ("run", "backfill", "demo")
    # A nightly job on a closed network: dlt's anonymous telemetry stays off unless asked for.
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    # Where Airflow is installed, dlt also looks every setting up in Airflow's Variables: a
    # no-change run took 4.3-4.8 s instead of 1.7 s (on a shared 2-core machine: 6.6-8.7 s
    # against 3.0-3.9 s, as fast as without Airflow). mews-sync's settings are not kept there;
    # PROVIDERS__ENABLE_AIRFLOW_SECRETS=true turns it back on.
    os.environ.setdefault("PROVIDERS__ENABLE_AIRFLOW_SECRETS", "false")
    # dlt holds back a first Ctrl-C or SIGTERM during its normalize and load steps and may then
    # drop it, so a stop request could let a long first sync go on. A stop ends the run at once
    # instead: what is loaded stays, and the next run finishes a load left behind.
    os.environ.setdefault("RUNTIME__INTERCEPT_SIGNALS", "false")
    signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    signal.signal(signal.SIGINT, stop_like_ctrl_c)
    try:
        setup_logging(args.log_level)
        if loads:
            freeze_imported_objects()
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"mews-sync: {INTERRUPTED if loads else 'interrupted.'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - turned into one sentence and an exit code
        code, sentence = explain(exc)
        if code == EXIT_BUG:
            raise
        print(f"mews-sync: {sentence}", file=sys.stderr)
        return code


def freeze_imported_objects() -> None:
    """Import what a load needs, then keep its objects out of the garbage collector's sight.

    dlt and the rest leave about 93,000 objects that live as long as the process. Python's
    collector walked them all at each full collection and at every one of its collections at
    exit: 0.4 s of a 1.8 s no-change run (medians of 7, 20,000 orders). Frozen (`gc.freeze`,
    as Python's documentation suggests after start-up), they are never collected; what a run
    creates after this is collected as before."""
    import gc

    import pipelines.mews_pipeline  # noqa: F401 - dlt, httpx, pyarrow and the source

    gc.freeze()


def stop_like_ctrl_c(signum: int, frame: FrameType | None) -> NoReturn:
    """Ctrl-C, and SIGTERM (systemd stopping the unit at its timeout, `kill`), stop a run at
    once: every wait of every thread ends (`sources.stop`), the run is recorded as
    interrupted, and the next run finishes a load this one left behind."""
    from sources.stop import STOPPING

    STOPPING.set()
    raise KeyboardInterrupt


def setup_logging(level: str | None) -> None:
    """Log on stderr at the level from the command line, else from dlt's config, else INFO.
    Reads the settings files first (without dlt): one that is not TOML is named here."""
    from pipelines import config

    config.check_settings_files()
    level = level or str(config.value("mews_sync.log_level") or "INFO").upper()
    if level not in LOG_LEVELS:
        raise MewsConfigError(f"The log level must be one of {', '.join(LOG_LEVELS)}.")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "dlt"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def run_command(args: argparse.Namespace) -> int:
    recorded_sync("run", property=args.property)
    return EXIT_OK


def backfill_command(args: argparse.Namespace) -> int:
    recorded_sync(
        "backfill", property=args.property, backfill_start=args.start, backfill_end=args.end
    )
    return EXIT_OK


def recorded_sync(kind: str, storage: Storage | None = None, **sync_args: Any) -> RunReport:
    """Sync (which records the run), then print the summary, failed runs' too."""
    from pipelines.mews_pipeline import sync
    from pipelines.runs import RunReport
    from pipelines.storage import configured_storage

    storage = storage or configured_storage()
    report = RunReport(kind=kind, where=storage.where)
    try:
        sync(kind, storage=storage, report=report, **sync_args)
    except BaseException:
        if report.error is not None:  # it got as far as the destination: say what it did
            # Flushed now, so that in a shared log the summary comes before the error sentence.
            print(report.summary(), flush=True)
        raise
    print(report.summary())
    return report


def demo_command(args: argparse.Namespace) -> int:
    import tempfile

    import duckdb

    from mews_sandbox import DEMO_CLIENT_TOKEN, DEMO_PORTFOLIO_ACCESS_TOKEN, Sandbox, serve
    from pipelines.lock import file_lock
    from pipelines.storage import DuckDbStorage

    if args.orders < 1:
        raise MewsConfigError("--orders must be at least 1.")
    storage = DuckDbStorage.at(args.path)
    database = storage.path
    if database.exists():
        # Checked before the lock, so a refused path gets no lock file beside it; and again
        # under it, so the file cannot change hands between the check and the delete.
        refuse_unless_demo_file(database)
        busy = f"Another mews-sync process is using {database}; wait for it to finish."
        with file_lock(storage.lock_path, busy):  # never while a run or a query has the file
            refuse_unless_demo_file(database)
            database.unlink()  # the demo's own file: the demo starts it afresh
            Path(f"{database}.wal").unlink(missing_ok=True)
            storage.runs_path.unlink(missing_ok=True)
            storage.analytics_path.unlink(missing_ok=True)
    orders = counted(args.orders, "order")
    print(f"Generating a sandbox with {orders} and serving it on loopback...")
    sandbox = Sandbox.generate(orders=args.orders, seed=1)
    with serve(sandbox) as url, tempfile.TemporaryDirectory() as workdir:
        report = recorded_sync(
            "demo",
            storage=storage,
            property=DEMO_PIPELINE,
            pipelines_dir=workdir,
            platform_url=url,
            client_token=DEMO_CLIENT_TOKEN,
            access_token=DEMO_PORTFOLIO_ACCESS_TOKEN,
            start_date="2015-01-01",
            rate_limit_requests=0,
        )
    print("\nRows per table:")
    for table, rows in report.table_rows.items():
        print(f"  mews.{table:<24} {rows:>8}")
    print(f"\nDuckDB file: {database}")
    print(f"\nSample query:\n{DEMO_QUERY}\n")
    with duckdb.connect(str(database), read_only=True) as con:
        print(con.sql(DEMO_QUERY))
    return EXIT_OK


def refuse_unless_demo_file(database: Path) -> None:
    """Raise unless `database` is a DuckDB file whose only loads came from `mews-sync demo`
    (its dlt state names the demo's pipeline and no other): the demo replaces nothing else."""
    import duckdb

    try:
        with duckdb.connect(str(database), read_only=True) as con:
            names = con.execute(
                "select distinct pipeline_name from mews._dlt_pipeline_state"
            ).fetchall()
    except duckdb.Error:
        names = []  # not DuckDB, damaged, or no dlt state: not the demo's
    if names != [(DEMO_PIPELINE,)]:
        raise MewsConfigError(
            f"{database} exists and was not made by `mews-sync demo`, which never replaces "
            "such a file: give another --path."
        )


def sandbox_command(args: argparse.Namespace) -> int:
    import errno

    from mews_sandbox.server import run_cli

    if args.orders < 0 or not 0 <= args.port < 65536:
        raise MewsConfigError("--orders must be >= 0 and --port between 0 and 65535.")
    try:
        run_cli(args.port, args.orders, args.seed, args.client_token, args.access_token)
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
            raise
        why = "is in use" if exc.errno == errno.EADDRINUSE else "needs root"
        raise MewsConfigError(
            f"Port {args.port} {why}: give another --port (--port 0 picks a free one)."
        ) from None
    return EXIT_OK


def status_command(args: argparse.Namespace) -> int:
    from pipelines.properties import check_property
    from pipelines.status import status_screen
    from pipelines.storage import configured_storage

    property = check_property(args.property, "--property") if args.property else None
    screen, code = status_screen(configured_storage(args.path), property)
    print(screen)
    return code


def query_command(args: argparse.Namespace) -> int:
    import csv

    from pipelines.status import first_line, format_table, reading
    from pipelines.storage import configured_storage

    if args.sql is None and args.file is None:
        raise MewsConfigError(
            'Give the SQL to run, e.g. mews-sync query "select count(*) from orders_current", '
            "or a file of it with --file."
        )
    if args.sql is not None and args.file is not None:
        raise MewsConfigError("Give the SQL either as an argument or with --file, not both.")
    if args.max_rows < 1:
        raise MewsConfigError("--max-rows must be at least 1.")
    try:
        sql = args.sql if args.file is None else Path(args.file).read_text(encoding="utf-8")
    except OSError as exc:
        raise MewsConfigError(f"Cannot read {args.file}: {exc.strerror}.") from None

    def run_query() -> tuple[list[str], list[Any]]:
        result = reader.cursor(sql)
        columns = [d[0] for d in result.description or []]
        return columns, result.fetchall() if args.csv else result.fetchmany(args.max_rows + 1)

    with reading(configured_storage(args.path)) as reader:
        try:
            columns, rows = interruptible(reader, run_query)
        except Exception as exc:  # noqa: BLE001 - DuckDB's or PostgreSQL's refusal of the SQL
            if not raised_by(exc, "duckdb", "psycopg2"):
                raise
            raise MewsConfigError(f"The query failed: {first_line(exc)}") from None
    if not columns:
        print("(the statement returned no rows)")
    elif args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        print(format_table(columns, rows[: args.max_rows], more=len(rows) > args.max_rows))
    return EXIT_OK


def interruptible(reader: Reader, work: Callable[[], Any]) -> Any:
    """`work()` (a query) in a thread of its own, so that Ctrl-C or SIGTERM stops it at once:
    DuckDB runs a statement without letting Python handle a signal until it ends, so the main
    thread waits, gets the KeyboardInterrupt, and interrupts the statement."""
    import threading

    outcome: dict[str, Any] = {}
    # An Event, not Thread.join: a join that a signal interrupts can wrongly say the thread
    # has ended (Python 3.11), and the connection would then be closed under the query.
    done = threading.Event()

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="mews-query", daemon=True).start()
    try:
        while not done.wait(0.2):
            pass
    except KeyboardInterrupt:
        reader.interrupt()
        done.wait(5)  # DuckDB stops within milliseconds; never wait long for it
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


COMMANDS = {
    "run": run_command,
    "backfill": backfill_command,
    "demo": demo_command,
    "sandbox": sandbox_command,
    "status": status_command,
    "query": query_command,
}

if __name__ == "__main__":
    sys.exit(main())
