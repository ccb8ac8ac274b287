"""Shared by the sandbox tests: POST an operation to a sandbox through its in-process transport."""

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from mews_sandbox import DEMO_ACCESS_TOKEN, DEMO_CLIENT_TOKEN, Sandbox

SandboxCall = Callable[..., httpx.Response]


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
                transport=sandbox.transport(), base_url="http://sandbox"
            )
        body = {
            "ClientToken": DEMO_CLIENT_TOKEN,
            "AccessToken": DEMO_ACCESS_TOKEN,
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
