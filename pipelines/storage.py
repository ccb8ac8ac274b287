"""Where the tables go: a DuckDB file (the default) or a PostgreSQL database.

Each kind says how dlt reaches it, where dlt's working folder and the run records live, how
two runs are kept apart, and what a run does for analysts when it has finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pipelines import config
from pipelines.config import data_dir
from pipelines.lock import SyncBusyError, advisory_lock, file_lock
from sources.errors import MewsConfigError, MewsUnavailableError

DATASET_NAME = "mews"
DEFAULT_DUCKDB_FILE = "mews_sync.duckdb"
DESTINATIONS = ("duckdb", "postgres")
# The load and the clean-up would otherwise let DuckDB take most of the machine's memory; past
# its limit DuckDB spills to disk. DuckDB fills its limit with blocks it has written, so the
# limit is most of what a load or a clean-up adds to the process. 48 MB: at that limit the
# clean-up's delete of superseded notes ran out of memory ("failed to allocate data of size
# 16.0 MiB") on the heavier shape at 1,000,000 orders until it hashed the ids and took them a
# quarter at a time (`compaction.ID_KEY`, `ID_SLICES`). Peak RSS of a first sync of 1,000,000
# orders, 96 MB and mimalloc before, 48 MB with the memory settings of
# `mews_pipeline.share_freed_memory` after (benchmarks/memory_peak.py): 336 -> 255 MB, heavier
# shape 344 -> 268 MB (docs/performance.md, "Peak RSS").
# Insertion order means nothing here. One thread: on 200,000 orders the load took 2.7 s of
# CPU and 1.5 s of wall with it, 4.3 s and 2.9 s with two.
DUCKDB_LOAD_CONFIG = {"memory_limit": "48MB", "preserve_insertion_order": False, "threads": 1}
MEMORY_LIMIT_SETTING = "mews_sync.duckdb_memory_limit"  # MEWS_SYNC__DUCKDB_MEMORY_LIMIT
MEMORY_LIMIT = re.compile(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)
# How the source's Arrow tables go into PostgreSQL: csv files, each loaded by COPY (see
# `postgres_copy`, and docs/performance.md for what it costs).
POSTGRES_ARROW_FILE_FORMAT = "csv"
RUNS_SUFFIX = ".runs.jsonl"
# In the DuckDB file's working folder: the file as the last write lock left it, and as it was
# when the analysts' copy was last published (`DuckDbStorage.as_left`).
FILE_RECORD = "duckdb_file.json"
LOCK_SUFFIX = ".lock"
ANALYTICS_SUFFIX = ".analytics.duckdb"


@dataclass(frozen=True)
class DuckDbStorage:
    """One DuckDB file, written by one run at a time, with an analysts' copy beside it."""

    path: Path
    analytics_path: Path
    kind = "duckdb"
    loader_file_format = None  # dlt's choice (parquet for the source's Arrow tables)
    # The load files removed once loaded: dlt keeps them in its working folder otherwise, 92
    # MB after a first sync of 200,000 orders and more every night, for ever.
    dlt_settings: ClassVar[dict[str, str]] = {"LOAD__DELETE_COMPLETED_JOBS": "true"}
    # One table's file at a time: DuckDB loads each with one thread anyway, and files loaded
    # side by side each hold their own buffers (peak RSS of a first sync of 200,000 orders
    # 365 -> 345 MB, CPU 27.0 -> 25.2 s, medians of 2; see docs/performance.md).
    load_workers = 1

    @classmethod
    def at(cls, path: str | Path, analytics: str | Path | None = None) -> DuckDbStorage:
        file = Path(path).expanduser().resolve()
        if file.stem == DATASET_NAME:
            # DuckDB names the catalog after the file; one equal to the dataset confuses its
            # binder.
            raise MewsConfigError(
                f"Name the DuckDB file something other than {file.name}, e.g. mews_sync.duckdb "
                "(DESTINATION__DUCKDB__CREDENTIALS)."
            )
        default = file.with_name(file.name.removesuffix(".duckdb") + ANALYTICS_SUFFIX)
        copy = Path(analytics).expanduser().resolve() if analytics else default
        if copy == file:
            raise MewsConfigError(
                "MEWS_SYNC__ANALYTICS_FILE must differ from the DuckDB file the runs write."
            )
        return cls(file, copy)

    @property
    def where(self) -> str:
        return str(self.path)

    @property
    def runs_path(self) -> Path:
        return self.path.with_name(self.path.name + RUNS_SUFFIX)

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + LOCK_SUFFIX)

    def working_dir(self) -> Path:
        """dlt's working folder for this file: one per file, so two files synced on one machine
        (two hotels, a test copy) never share local state. Outside dlt's `pipelines/` folder,
        where `dlt pipeline --list` would show it under a name that is not the pipeline's."""
        digest = hashlib.sha256(str(self.path).encode()).hexdigest()[:10]
        return data_dir() / "mews_sync" / f"{self.path.stem}-{digest}"

    def dlt_destination(self) -> Any:
        import dlt
        from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

        settings = {**DUCKDB_LOAD_CONFIG, "memory_limit": duckdb_memory_limit()}
        credentials = DuckDbCredentials(str(self.path), global_config=settings)
        return dlt.destinations.duckdb(credentials=credentials)

    def check(self) -> None:
        """Raise a configuration error if the file's folder cannot take it (nor its lock file
        and run records); checked before anything is written."""
        folder = self.path.parent
        if not folder.is_dir():
            raise MewsConfigError(
                f"The folder {folder} of the DuckDB file does not exist: create it, or point "
                "DESTINATION__DUCKDB__CREDENTIALS elsewhere."
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise MewsConfigError(
                f"The folder {folder} of the DuckDB file is not writable by this user: make it "
                "writable, or point DESTINATION__DUCKDB__CREDENTIALS elsewhere."
            )
        duckdb_memory_limit()  # a size DuckDB reads

    def run_lock_path(self, pipeline_name: str) -> Path:
        return self.path.with_name(f"{self.path.name}.{pipeline_name}{LOCK_SUFFIX}")

    @contextmanager
    def run_lock(self, pipeline_name: str) -> Iterator[None]:
        """One run of a property at a time: a second one finds this taken and is skipped."""
        self.check()
        busy = (
            f"Another mews-sync run {of_property(pipeline_name)}is using {self.path}; this one "
            "was skipped: wait for it to finish."
        )
        with file_lock(self.run_lock_path(pipeline_name), busy):
            yield

    @contextmanager
    def lock(self, wait: float = 0.0) -> Iterator[None]:
        """The file's write lock (DuckDB has one writer at a time), waiting at most `wait`
        seconds for another property's load, then a check that the file can be written."""
        self.check()
        # `query` and `status` read the analysts' copy; only while there is none yet do they
        # read this file, under the same lock, shared.
        busy = (
            f"Another mews-sync run kept {self.path} busy for over {wait:.0f} s (or, until a "
            "run has published the analysts' copy, a `mews-sync query` or `status` reading "
            "it); wait for it to finish (MEWS_SYNC__LOAD_WAIT_SECONDS sets how long a run "
            "waits)."
            if wait
            else f"Another mews-sync run is loading into {self.path}; wait for it to finish."
        )
        with file_lock(self.lock_path, busy, wait=wait):
            # A file nobody has written since the last lock left it need not be checked
            # again: the check took 80-100 ms of a no-change run's 1.2 s at 200,000 orders.
            held = open_duckdb_file(self.path, self.as_left().get("left"))
            try:
                yield
            finally:
                if held is not None:
                    held.close()  # DuckDB writes what its WAL holds into the file
                    self.keep_as_left(left=file_version(self.path))

    def as_left(self) -> dict[str, Any]:
        """What the runs recorded of the file (FILE_RECORD): `left`, its version
        (`file_version`) as the last write lock left it; `published`, its version and the
        analysts' copy's when the copy was last made. Empty if unreadable: then the file is
        checked and published again."""
        try:
            record = json.loads((self.working_dir() / FILE_RECORD).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def keep_as_left(self, **changes: Any) -> None:
        """Update the record (`as_left`), written whole or not at all. Only a saving: if it
        cannot be written, the next run checks and publishes the file again."""
        record = {**self.as_left(), **changes}
        path = self.working_dir() / FILE_RECORD
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(record), encoding="utf-8")
            os.replace(temporary, path)
        except OSError:  # a record left older names versions the file no longer has
            with suppress(OSError):
                temporary.unlink(missing_ok=True)

    def is_published(self) -> bool:
        """Whether the analysts' copy is the database as it is now (under the write lock):
        neither the file nor the copy changed since the copy was made, and DuckDB's WAL,
        where a load's writes wait until the file is checkpointed, is empty. So a run that
        loaded nothing (nothing new in Mews) re-creates no view and copies nothing: the copy
        took 1.2 s of a no-change run at 1,000,000 orders."""
        made = self.as_left().get("published") or {}
        wal = self.path.with_name(self.path.name + ".wal")
        return (
            self.analytics_path.exists()
            and made.get("copy") == file_version(self.analytics_path)
            and made.get("file") == file_version(self.path)
            and (not wal.exists() or wal.stat().st_size == 0)
        )

    def publish(self) -> str:
        """Replace the analysts' copy with the file as the run left it, atomically: a reader
        of the old copy keeps a consistent view, a reader opening it now gets the new one,
        and neither ever holds the file the next run writes. Returns the copy's path, for
        people; one already equal to the file (`is_published`) is left as it is."""
        import duckdb

        if self.is_published():
            return f"{self.analytics_path}, unchanged (nothing new was loaded)"
        # Opened as dlt opens it (its settings come after): it shares the database `lock` holds.
        with duckdb.connect(str(self.path)) as con:
            con.execute("checkpoint")  # everything in the file itself, nothing in a WAL
        temporary = self.analytics_path.with_name(f".{self.analytics_path.name}.{os.getpid()}")
        try:
            with open(self.path, "rb") as source, open(temporary, "wb") as copy:
                shutil.copyfileobj(source, copy, 1 << 20)
                copy.flush()
                os.fsync(copy.fileno())
            os.replace(temporary, self.analytics_path)
            made = {"file": file_version(self.path), "copy": file_version(self.analytics_path)}
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise MewsConfigError(
                f"Could not publish the analysts' copy {self.analytics_path}: "
                f"{exc.strerror or exc}; check MEWS_SYNC__ANALYTICS_FILE and free space."
            ) from None
        directory = os.open(self.analytics_path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power loss
        finally:
            os.close(directory)
        self.keep_as_left(published=made)
        return str(self.analytics_path)


def duckdb_memory_limit() -> str:
    """MEWS_SYNC__DUCKDB_MEMORY_LIMIT (`duckdb_memory_limit` under [mews_sync]), else 48MB."""
    limit = config.value(MEMORY_LIMIT_SETTING)
    if limit is None:
        return DUCKDB_LOAD_CONFIG["memory_limit"]
    if not isinstance(limit, str) or not MEMORY_LIMIT.fullmatch(limit.strip()):
        raise MewsConfigError(
            "MEWS_SYNC__DUCKDB_MEMORY_LIMIT must be a size such as 96MB or 1GB."
        )
    return limit.strip()


def file_version(path: Path) -> list[int]:
    """What tells a file changed, as JSON keeps it: its inode, size, modification and
    status change times (a file restored with its old mtime still has a new ctime)."""
    stat = path.stat()
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def open_duckdb_file(path: Path, left: list[int] | None) -> Any | None:
    """`check_duckdb_file`, unless the file is as the caller `left` it (`file_version`): then
    only opened."""
    import duckdb

    if left is not None and path.exists() and left == file_version(path):
        try:
            return duckdb.connect(str(path))
        except duckdb.Error:
            pass  # the check says what is wrong
    return check_duckdb_file(path)


def check_duckdb_file(path: Path) -> Any | None:
    """Raise one clear sentence if the DuckDB file at `path` is damaged or held by another
    process; never changes the file (a new, empty one is left for dlt to create).

    Returns a connection to the file, to be closed when the write lock is released: while it
    is open, the connections dlt opens and closes for each step and statement (a dozen a run)
    share the open database instead of opening the file again and checkpointing it as each
    closes (a connect, insert and close: 13 ms instead of 104 ms, 1.5 ms of CPU instead of 30,
    measured on a 3M-row file)."""
    import duckdb

    if not path.exists():
        return None
    if path.stat().st_size == 0:
        raise damaged(path, "it is empty")
    try:
        # Read-only first: on a file that is not DuckDB's, opening it for writing could
        # write to it.
        with duckdb.connect(str(path), read_only=True) as con:
            check_whole(con, path)
        # Nobody else has it open. Opened as dlt opens its connections (its settings come
        # after, SET GLOBAL), which DuckDB requires of connections sharing one database.
        return duckdb.connect(str(path))
    except duckdb.Error as exc:
        text = str(exc)
        if "Could not set lock" in text or "Conflicting lock" in text:
            raise SyncBusyError(
                f"Another process has {path} open (a BI tool, a notebook, `duckdb "
                "-readonly`?): close it and try again; analysts should read the analytics copy "
                "instead."
            ) from None
        raise damaged(path, text.strip().splitlines()[0]) from None


# A DuckDB file: three 4 KiB headers, then its blocks, each of the block size.
DUCKDB_HEADERS_BYTES = 3 * 4096


def check_whole(con: Any, path: Path) -> None:
    """Raise if the DuckDB file open on `con` ends before a block its tables are stored in
    (truncated: DuckDB opens it, and fails only when a query reaches a missing block). Reads
    only the tables' storage metadata (some 30 ms)."""
    ((block_size,),) = con.execute(
        "select block_size from pragma_database_size() where database_name = current_database()"
    ).fetchall()
    tables = con.execute(
        "select schema_name, table_name from duckdb_tables() "
        "where database_name = current_database()"
    ).fetchall()
    if not tables:
        return
    # One statement for all tables: a query each cost twice as long.
    each = " union all ".join(
        f"select max(block_id) as block from pragma_storage_info({sql_text(qualified(t))}) "
        "where persistent"
        for t in tables
    )
    ((last,),) = con.execute(f"select max(block) from ({each})").fetchall()
    needed = DUCKDB_HEADERS_BYTES + block_size * ((-1 if last is None else last) + 1)
    size = path.stat().st_size
    if size < needed:
        raise damaged(path, f"truncated: {size:,} bytes, its tables need {needed:,}")


def qualified(names: tuple[str, ...]) -> str:
    """The dotted name, each part quoted for SQL: "schema"."table"."""
    return ".".join('"' + name.replace('"', '""') + '"' for name in names)


def sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def damaged(path: Path, why: str) -> MewsConfigError:
    return MewsConfigError(
        f"{path} is not a usable DuckDB file ({why}): it was left untouched; move it "
        "aside or restore it from a backup, then run again."
    )


@dataclass(frozen=True)
class PostgresStorage:
    """A PostgreSQL database, credentials from dlt's DESTINATION__POSTGRES__CREDENTIALS."""

    host: str
    port: int
    database: str
    username: str
    kind = "postgres"
    # The source's Arrow tables go in by COPY of csv files (see `postgres_copy`); dlt's own
    # rows (its state) by INSERT statements.
    loader_file_format = POSTGRES_ARROW_FILE_FORMAT
    load_workers = 20  # dlt's default: the server loads the tables' files side by side
    # The csv files written plain, and removed once loaded rather than kept in dlt's loaded
    # packages: gzip took 9.7 s of the 13.8 s normalize of 50,000 orders (cProfile).
    dlt_settings: ClassVar[dict[str, str]] = {
        "NORMALIZE__DATA_WRITER__DISABLE_COMPRESSION": "true",
        "LOAD__DELETE_COMPLETED_JOBS": "true",
    }

    @classmethod
    def configured(cls) -> PostgresStorage:
        credentials = postgres_credentials()
        return cls(
            credentials.host or "localhost",
            int(credentials.port or 5432),
            credentials.database or "",
            credentials.username or "",
        )

    @property
    def where(self) -> str:  # never the password
        return f"postgresql://{self.username}@{self.host}:{self.port}/{self.database}"

    def check(self) -> None:
        """Nothing to check before connecting: the lock says whether the server is there."""

    def working_dir(self) -> Path:
        digest = hashlib.sha256(f"{self.where}/{DATASET_NAME}".encode()).hexdigest()[:10]
        return data_dir() / "mews_sync" / f"postgres-{self.database}-{digest}"

    @property
    def runs_path(self) -> Path:
        return self.working_dir() / "runs.jsonl"

    def dlt_destination(self) -> Any:
        from pipelines.postgres_copy import exact_postgres

        return exact_postgres(credentials=postgres_credentials())

    @contextmanager
    def run_lock(self, pipeline_name: str) -> Iterator[None]:
        """One run of a property at a time: a second one finds this taken and is skipped."""
        busy = (
            f"Another mews-sync run {of_property(pipeline_name)}is loading into {self.where} "
            f"(dataset {DATASET_NAME}); this one was skipped."
        )
        name = f"mews_sync:{self.where}/{DATASET_NAME}/{pipeline_name}"
        with self.connection() as connection, advisory_lock(connection, name, busy):
            yield

    @contextmanager
    def lock(self, wait: float = 0.0) -> Iterator[None]:
        """The dataset's write lock, held while one run loads and cleans up, waiting at most
        `wait` seconds for another property's load: dlt's merge staging tables and the
        clean-up are the dataset's, not a property's. (The whole-run lock of releases before
        properties, so a run of one of those is waited for too.)"""
        busy = (
            f"Another mews-sync run kept {self.where} (dataset {DATASET_NAME}) busy for over "
            f"{wait:.0f} s; this one stopped: try again later (MEWS_SYNC__LOAD_WAIT_SECONDS "
            "sets how long a run waits)."
        )
        name = f"mews_sync:{self.where}/{DATASET_NAME}"
        with self.connection() as connection, advisory_lock(connection, name, busy, wait):
            yield

    def connect(self) -> Any:
        """A psycopg2 connection, or one sentence saying why there is none (a wrong port, a
        server that is down)."""
        import psycopg2

        try:
            return psycopg2.connect(postgres_credentials().to_native_representation())
        except psycopg2.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MewsUnavailableError(
                f"Cannot connect to PostgreSQL at {self.where}: {first}. Check "
                "DESTINATION__POSTGRES__CREDENTIALS and that the server is up."
            ) from None

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A connection of its own (autocommit) for advisory locks, closed at the end."""
        connection = self.connect()
        connection.autocommit = True
        self.working_dir().mkdir(parents=True, exist_ok=True)
        try:
            yield connection
        finally:
            connection.close()

    def is_published(self) -> bool:
        """Never: analysts read the database itself, so the views are re-created each run."""
        return False

    def publish(self) -> None:
        """Analysts read the database itself: PostgreSQL lets them read while a run writes."""
        return None


def of_property(pipeline_name: str) -> str:
    """'of property NAME ' for a run of a property, '' for the single default pipeline."""
    from pipelines.properties import DEFAULT_PIPELINE

    return "" if pipeline_name == DEFAULT_PIPELINE else f"of property {pipeline_name} "


def postgres_credentials() -> Any:
    """dlt's PostgreSQL credentials, resolved from its configuration (env, secrets.toml)."""
    import dlt
    from dlt.destinations.impl.postgres.configuration import PostgresCredentials

    credentials = dlt.secrets.get("destination.postgres.credentials", PostgresCredentials)
    if credentials is None:
        raise MewsConfigError(
            "MEWS_SYNC__DESTINATION is postgres but DESTINATION__POSTGRES__CREDENTIALS is not "
            "set: give it as postgresql://user:password@host:5432/database."
        )
    return credentials


Storage = DuckDbStorage | PostgresStorage


def configured_storage(duckdb_file: str | None = None) -> Storage:
    """The destination from MEWS_SYNC__DESTINATION (or `destination` under [mews_sync]):
    `duckdb` (default; the file from DESTINATION__DUCKDB__CREDENTIALS) or `postgres`.

    Read without dlt (see `pipelines.config`), so that `status` and `query` start quickly. A
    relative path in a settings file is relative to the project folder (the one holding
    `.dlt/`), in the environment or on the command line to the current folder.
    """
    analytics = config.path_setting("mews_sync.analytics_file")
    if duckdb_file:
        return DuckDbStorage.at(duckdb_file, analytics)
    kind = str(config.value("mews_sync.destination") or "duckdb").strip().lower()
    if kind not in DESTINATIONS:
        raise MewsConfigError(
            f"MEWS_SYNC__DESTINATION must be one of {', '.join(DESTINATIONS)}, not {kind!r}."
        )
    if kind == "postgres":
        return PostgresStorage.configured()
    file = config.path_setting("destination.duckdb.credentials") or DEFAULT_DUCKDB_FILE
    return DuckDbStorage.at(file, analytics)
