"""The sandbox over real HTTP (loopback) and as an in-process httpx transport."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx

from mews_sandbox.app import (
    DEMO_ACCESS_TOKEN,
    DEMO_CLIENT_TOKEN,
    DEMO_PORTFOLIO_ACCESS_TOKEN,
    Sandbox,
)


class SandboxTransport(httpx.BaseTransport):
    """Calls the sandbox directly: no sockets, same answers, safe across threads."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self._sandbox.handle(request.method, request.url.path, request.read())
        if answer.status == 0:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request)
        return httpx.Response(answer.status, headers=answer.headers, content=answer.body,
                              request=request)


def _handler_class(sandbox: Sandbox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real client expects
        # Headers and body went out in two writes; with Nagle's algorithm on, the second
        # waited for the client's delayed ACK of the first: ~40 ms per small answer.
        disable_nagle_algorithm = True
        timeout = 60  # an idle keep-alive connection does not hold its thread forever

        def _answer(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = 0  # the empty body then gets the 400 for malformed JSON
            body = self.rfile.read(length) if length > 0 else b""
            answer = sandbox.handle(self.command, urlsplit(self.path).path, body)
            if answer.status == 0:  # a dropped connection: close without a word
                self.close_connection = True
                return
            try:
                # Not send_response, which adds a Date from this machine's clock: the answer
                # has the sandbox's own (or none, as its config says).
                self.send_response_only(answer.status)
                self.send_header("Server", self.version_string())
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up (its timeout, during a stall): nobody to answer.
                self.close_connection = True

        do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the sandbox keeps its own request log

    return Handler


def _server(sandbox: Sandbox, host: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), _handler_class(sandbox))
    server.daemon_threads = True
    return server


@contextmanager
def serve(sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve in a background thread; yields the base URL. Port 0 picks a free port."""
    server = _server(sandbox, host, port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def serve_forever(sandbox: Sandbox, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve in the foreground until Ctrl-C."""
    _run(_server(sandbox, host, port))


def _run(server: ThreadingHTTPServer) -> None:
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def run_cli(port: int, orders: int, seed: int, client_token: str | None,
            access_token: str | None) -> None:
    """For `mews-sync sandbox`: generate, say where and how to point mews-sync at it, serve
    until Ctrl-C. Custom tokens replace the demo ones (a custom AccessToken covers every
    enterprise); they are never printed. The demo ones are Mews' public demo tokens (from its
    documentation, the sandbox's portfolio token in their format): printed, to copy."""
    sandbox = Sandbox.generate(orders=orders, seed=seed)
    if client_token:
        sandbox.client_token = client_token
    if access_token:
        sandbox.remove_token(DEMO_ACCESS_TOKEN)
        sandbox.remove_token(DEMO_PORTFOLIO_ACCESS_TOKEN)
        sandbox.add_token(access_token)
    server = _server(sandbox, "127.0.0.1", port)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"Mews sandbox at {url} ({orders} orders, seed {seed}); Ctrl-C stops. To point "
          "mews-sync at it, paste:", flush=True)
    print(sandbox_settings(url, client_token, access_token), flush=True)
    _run(server)


def sandbox_settings(url: str, client_token: str | None, access_token: str | None) -> str:
    """The environment variables that point mews-sync at the sandbox, as shell lines."""
    lines = [f"export SOURCES__MEWS__PLATFORM_URL={url}"]
    if client_token:
        lines.append("export SOURCES__MEWS__CLIENT_TOKEN='<the --client-token you gave>'")
    else:
        lines.append(f"export SOURCES__MEWS__CLIENT_TOKEN={DEMO_CLIENT_TOKEN}")
    if access_token:
        lines.append("export SOURCES__MEWS__ACCESS_TOKEN='<the --access-token you gave>'")
    else:
        lines += [
            f"export SOURCES__MEWS__ACCESS_TOKEN={DEMO_PORTFOLIO_ACCESS_TOKEN}  # all enterprises",
            "# or Mews' demo AccessToken, which covers one enterprise as in Mews' own demo:",
            f"# export SOURCES__MEWS__ACCESS_TOKEN={DEMO_ACCESS_TOKEN}",
        ]
    return "\n".join(lines)
