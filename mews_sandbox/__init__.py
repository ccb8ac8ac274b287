"""A local, faithful stand-in for the parts of the Mews Connector API this project uses."""

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
]
