"""A local, faithful stand-in for the parts of the Mews Connector API this project uses.

`SandboxTransport(sandbox)` answers in-process (httpx.Client(transport=..., base_url=...));
`with serve(sandbox) as base_url:` over loopback HTTP. They import the app, never the reverse."""

from mews_sandbox.app import (
    DEMO_ACCESS_TOKEN,
    DEMO_CLIENT_TOKEN,
    DEMO_PORTFOLIO_ACCESS_TOKEN,
    Faults,
    LoggedRequest,
    RequestLog,
    Sandbox,
    SandboxConfig,
    SandboxResponse,
)
from mews_sandbox.server import SandboxTransport, serve, serve_forever

__all__ = [
    "DEMO_ACCESS_TOKEN",
    "DEMO_CLIENT_TOKEN",
    "DEMO_PORTFOLIO_ACCESS_TOKEN",
    "Faults",
    "LoggedRequest",
    "RequestLog",
    "Sandbox",
    "SandboxConfig",
    "SandboxResponse",
    "SandboxTransport",
    "serve",
    "serve_forever",
]
