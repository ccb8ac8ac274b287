"""Shared by the sandbox tests: POST an operation to a sandbox through its in-process transport."""

import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import postgres_server as pg
import pytest

from mews_sandbox import DEMO_CLIENT_TOKEN, DEMO_PORTFOLIO_ACCESS_TOKEN, Sandbox, SandboxTransport

# The shared checks (harness.assert_equals_truth...) show what differs when they fail; the
# tests import harness only after this.
pytest.register_assert_rewrite("harness")

SandboxCall = Callable[..., httpx.Response]


@pytest.fixture(scope="session", autouse=True)
def dlt_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """dlt's data folder (its pipelines, our PostgreSQL runs' records) in a temporary folder,
    for every test and the processes they start: never the machine's own (/var/dlt as
    root, ~/.dlt), where the suite once left a folder per PostgreSQL database it made."""
    before = os.environ.get("DLT_DATA_DIR")
    os.environ["DLT_DATA_DIR"] = str(tmp_path_factory.mktemp("dlt_data"))
    yield
    if before is None:
        os.environ.pop("DLT_DATA_DIR", None)
    else:
        os.environ["DLT_DATA_DIR"] = before


@pytest.fixture
def mews_call() -> Iterator[SandboxCall]:
    """`mews_call(sandbox, "services/getAll", Limitation={"Count": 10})`: the demo tokens and
    Client are added unless given; `_path` overrides the URL path, `_raw` sends raw bytes."""
    clients: dict[Sandbox, httpx.Client] = {}

    def call(
        sandbox: Sandbox,
        operation: str,
        *,
        _path: str | None = None,
        _raw: bytes | None = None,
        **fields: Any,
    ) -> httpx.Response:
        client = clients.get(sandbox)
        if client is None:
            client = clients[sandbox] = httpx.Client(
                transport=SandboxTransport(sandbox), base_url="http://sandbox"
            )
        body = {
            "ClientToken": DEMO_CLIENT_TOKEN,
            "AccessToken": DEMO_PORTFOLIO_ACCESS_TOKEN,
            "Client": "sandbox-tests 1.0",
            **fields,
        }
        path = _path or f"/api/connector/v1/{operation}"
        if _raw is not None:
            return client.post(path, content=_raw)
        return client.post(path, json=body)

    yield call
    for client in clients.values():
        client.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Base URL (database `postgres`, a superuser) of a PostgreSQL server: MEWS_SYNC_TEST_POSTGRES,
    else a throwaway cluster for the session. No server is a failure, never a skip."""
    try:
        with pg.running_server() as url:
            yield url
    except pg.PostgresUnavailable as error:
        raise pytest.fail.Exception(str(error), pytrace=False) from None  # = pytest.fail


@pytest.fixture
def postgres_credentials(postgres_server: str) -> Iterator[str]:
    """`postgresql://user:password@127.0.0.1:port/dbname` of a fresh, empty database (dlt's
    DESTINATION__POSTGRES__CREDENTIALS format), dropped after the test."""
    name, url = pg.create_database(postgres_server)
    yield url
    pg.drop_database(postgres_server, name)


@pytest.fixture(params=["duckdb", "postgres"])
def postgres(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """Each test that takes it runs on DuckDB (None) and on a fresh PostgreSQL database (its
    URL, also in DESTINATION__POSTGRES__CREDENTIALS, as an operator would set it)."""
    if request.param == "duckdb":
        return None
    url = request.getfixturevalue("postgres_credentials")
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", url)
    return url
