"""The PostgreSQL server the tests load into: the one in MEWS_SYNC_TEST_POSTGRES, else a
throwaway cluster started for the session (initdb into a temp directory, pg_ctl on a free port
of 127.0.0.1, password authentication, no fsync), and a fresh database per test."""

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2

ENV_VAR = "MEWS_SYNC_TEST_POSTGRES"
DEBIAN_BIN_DIRS = "/usr/lib/postgresql/*/bin"
USER, PASSWORD = "mews", "secret"
OS_USER = "postgres"  # PostgreSQL refuses to run as root; as root we run it as this user
OR_EXISTING = f"or set {ENV_VAR} to the URL of a server with a superuser"


class PostgresUnavailable(Exception):
    """No server could be found or started; the message is one sentence saying what to do."""


@contextlib.contextmanager
def running_server() -> Iterator[str]:
    """The base URL (database `postgres`, a superuser) of the server for this session."""
    existing = os.environ.get(ENV_VAR)
    if existing:
        try:
            psycopg2.connect(existing).close()
        except psycopg2.Error as error:
            first_line = str(error).strip().splitlines()[0]
            raise PostgresUnavailable(f"Cannot connect to {ENV_VAR}: {first_line}.") from None
        yield existing
    else:
        with throwaway_cluster() as url:
            yield url


def find_bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl: from PATH, else Debian's, newest version first."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    debian = [Path(d) for d in glob.glob(DEBIAN_BIN_DIRS) if Path(d).parent.name.isdigit()]
    candidates += sorted(debian, key=lambda d: int(d.parent.name), reverse=True)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


@contextlib.contextmanager
def throwaway_cluster(settings: str = "") -> Iterator[str]:
    """A cluster of its own; `settings` are more lines of postgresql.conf (a benchmark's
    pg_stat_statements)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable(
            f"The tests need PostgreSQL, but no initdb/pg_ctl is on PATH or in {DEBIAN_BIN_DIRS}: "
            f"install it (Debian: apt-get install postgresql) {OR_EXISTING}."
        )
    as_root = os.geteuid() == 0
    if as_root:
        try:
            owner = pwd.getpwnam(OS_USER)
        except KeyError:
            raise PostgresUnavailable(
                f"The tests run as root, which PostgreSQL refuses, and there is no OS user "
                f"{OS_USER} to run it as: create one (apt-get install postgresql does) "
                f"{OR_EXISTING}."
            ) from None

    base = Path(tempfile.mkdtemp(prefix="mews-pg-"))  # short: the socket path has a length limit
    data, log, pwfile = base / "data", base / "server.log", base / "pwfile"
    pwfile.write_text(PASSWORD)
    if as_root:
        for path in (base, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def run(program: str, *arguments: str) -> None:
        as_postgres = ["runuser", "-u", OS_USER, "--"] if as_root else []
        command = [*as_postgres, str(bin_dir / program), *arguments]
        done = subprocess.run(
            command, cwd=base, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            details = (done.stdout + done.stderr).strip()
            if log.exists():
                details += "\n" + log.read_text(errors="replace").strip()
            raise PostgresUnavailable(
                f"The throwaway PostgreSQL's {program} exited {done.returncode}:\n{details}"
            )

    try:
        run(
            "initdb", "-D", str(data), "-U", USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
            "--encoding=UTF8", "--no-locale", "--no-sync",
        )  # fmt: skip
        port = free_port()
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {port}\n"
                f"unix_socket_directories = '{base}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n" + settings
            )
        run("pg_ctl", "-D", str(data), "-l", str(log), "-w", "start")
        try:
            yield f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres"
        finally:
            run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def create_database(server_url: str) -> tuple[str, str]:
    """(name, connection URL) of a new, empty database with a unique name."""
    name = f"mews_test_{uuid.uuid4().hex[:12]}"
    execute(server_url, f'CREATE DATABASE "{name}"')
    return name, urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


def drop_database(server_url: str, name: str) -> None:
    execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def execute(url: str, sql: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
    with contextlib.closing(psycopg2.connect(url)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql)
