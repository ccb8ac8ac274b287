"""Rate limit, injected faults, the request log, concurrency, the loopback server and the CLI."""

import json
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from mews_sandbox import (
    DEMO_ACCESS_TOKEN,
    DEMO_CLIENT_TOKEN,
    DEMO_PORTFOLIO_ACCESS_TOKEN,
    Faults,
    Sandbox,
    SandboxConfig,
    SandboxTransport,
    serve,
)

SERVICES = "services/getAll"
NOTES = "serviceOrderNotes/getAll"
LIMIT = {"Count": 5}


# --- rate limit ------------------------------------------------------------------------------


def test_over_the_rate_limit_is_429_with_retry_after_per_access_token(mews_call: Any) -> None:
    sb = Sandbox(config=SandboxConfig(rate_limit=(3, 30.0)))
    sb.add_token("OTHER-TOKEN")
    for _ in range(3):
        assert mews_call(sb, SERVICES, Limitation=LIMIT).status_code == 200
    refused = mews_call(sb, SERVICES, Limitation=LIMIT)
    assert refused.status_code == 429
    assert 29 <= int(refused.headers["Retry-After"]) <= 30
    assert "Too many requests" in refused.json()["Message"]
    assert refused.json()["RequestId"] == refused.headers["Request-Id"]
    assert mews_call(sb, SERVICES, Limitation=LIMIT, AccessToken="OTHER-TOKEN").status_code == 200
    assert sb.log.count(status=429) == 1
    sb.config.rate_limit = None
    assert mews_call(sb, SERVICES, Limitation=LIMIT).status_code == 200


def test_refused_requests_take_no_slot_in_the_window(mews_call: Any) -> None:
    sb = Sandbox(config=SandboxConfig(rate_limit=(2, 1.0)))
    for _ in range(2):
        assert mews_call(sb, SERVICES, Limitation=LIMIT).status_code == 200
    time.sleep(0.6)
    for _ in range(3):
        refused = mews_call(sb, SERVICES, Limitation=LIMIT)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    time.sleep(0.5)  # the two accepted requests left the window; the refused ones never entered
    assert mews_call(sb, SERVICES, Limitation=LIMIT).status_code == 200
    assert mews_call(sb, SERVICES, Limitation=LIMIT).status_code == 200
    assert mews_call(sb, SERVICES, Limitation=LIMIT).status_code == 429


def test_rate_limit_429s_can_come_without_retry_after_or_with_a_huge_one(
    mews_call: Any,
) -> None:
    sb = Sandbox(config=SandboxConfig(rate_limit=(1, 30.0)))
    assert mews_call(sb, SERVICES, Limitation=LIMIT).status_code == 200
    assert 29 <= int(mews_call(sb, SERVICES, Limitation=LIMIT).headers["Retry-After"]) <= 30
    sb.config.faults = Faults(retry_after_s=3600)
    assert mews_call(sb, SERVICES, Limitation=LIMIT).headers["Retry-After"] == "3600"
    sb.config.faults = Faults(retry_after_header=False)
    refused = mews_call(sb, SERVICES, Limitation=LIMIT)
    assert refused.status_code == 429 and "Retry-After" not in refused.headers
    sb.config.faults = Faults(error_429=1.0, retry_after_s=3600)
    injected = mews_call(sb, SERVICES, Limitation=LIMIT, AccessToken=DEMO_ACCESS_TOKEN)
    assert injected.status_code == 429 and injected.headers["Retry-After"] == "3600"


def test_another_process_can_use_up_the_same_token(mews_call: Any) -> None:
    sb = Sandbox(config=SandboxConfig(rate_limit=(5, 30.0)))
    sb.add_token("OTHER-TOKEN")
    sb.consume_rate_limit(DEMO_PORTFOLIO_ACCESS_TOKEN, 4)
    assert mews_call(sb, SERVICES, Limitation=LIMIT).status_code == 200
    assert mews_call(sb, SERVICES, Limitation=LIMIT).status_code == 429
    assert mews_call(sb, SERVICES, Limitation=LIMIT, AccessToken="OTHER-TOKEN").status_code == 200
    sb.consume_rate_limit("OTHER-TOKEN", 50)  # more than the window holds: refused until they age
    assert mews_call(sb, SERVICES, Limitation=LIMIT, AccessToken="OTHER-TOKEN").status_code == 429
    assert sb.log.count() == 4  # the slots taken were no requests


# --- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("faults", "status"),
    [
        (Faults(error_500=1.0), 500),
        (Faults(error_408=1.0), 408),
        (Faults(error_429=1.0), 429),
    ],
)
def test_injected_errors(mews_call: Any, faults: Faults, status: int) -> None:
    sb = Sandbox(config=SandboxConfig(faults=faults))
    response = mews_call(sb, SERVICES, Limitation=LIMIT)
    assert response.status_code == status
    assert response.json()["Message"] and response.headers["Request-Id"]
    assert sb.log.entries[-1].status == status
    if status == 429:
        assert response.headers["Retry-After"] == "1"


def test_an_injected_429_can_come_without_retry_after(mews_call: Any) -> None:
    sb = Sandbox(config=SandboxConfig(faults=Faults(error_429=1.0, retry_after_header=False)))
    response = mews_call(sb, SERVICES, Limitation=LIMIT)
    assert response.status_code == 429 and "Retry-After" not in response.headers


def test_a_dropped_connection_raises_in_process_and_is_logged_as_0(mews_call: Any) -> None:
    sb = Sandbox(config=SandboxConfig(faults=Faults(drop=1.0)))
    with pytest.raises(httpx.RemoteProtocolError):
        mews_call(sb, SERVICES, Limitation=LIMIT)
    assert sb.log.count(operation=SERVICES, status=0) == 1


def test_malformed_json_is_a_200_with_a_truncated_body(mews_call: Any) -> None:
    sb = Sandbox()
    whole = mews_call(sb, SERVICES, Limitation=LIMIT).content
    sb.config.faults = Faults(malformed_json=1.0)
    response = mews_call(sb, SERVICES, Limitation=LIMIT)
    assert response.status_code == 200
    assert whole.startswith(response.content) and len(response.content) < len(whole)
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_heavy_requests_get_408(mews_call: Any) -> None:
    sb = Sandbox(config=SandboxConfig(faults=Faults(heavy_count=100)))
    assert mews_call(sb, SERVICES, Limitation={"Count": 101}).status_code == 408
    assert mews_call(sb, SERVICES, Limitation={"Count": 100}).status_code == 200
    heavy_notes = mews_call(sb, NOTES, ServiceOrderIds=["x"], Limitation={"Count": 1000})
    assert heavy_notes.status_code == 408
    assert "fewer" in heavy_notes.json()["Message"]


def test_with_heavy_ids_a_long_id_list_is_heavy_too(mews_call: Any) -> None:
    ids = [f"o{i}" for i in range(101)]
    pages = Sandbox(config=SandboxConfig(faults=Faults(heavy_count=100)))
    assert mews_call(pages, NOTES, ServiceOrderIds=ids, Limitation=LIMIT).status_code == 200
    both = Sandbox(config=SandboxConfig(faults=Faults(heavy_count=100, heavy_ids=True)))
    assert mews_call(both, NOTES, ServiceOrderIds=ids, Limitation=LIMIT).status_code == 408
    assert mews_call(both, NOTES, ServiceOrderIds=ids[:100], Limitation=LIMIT).status_code == 200
    assert mews_call(both, SERVICES, Limitation={"Count": 101}).status_code == 408


@pytest.mark.parametrize("then_408", [False, True])
def test_heavy_requests_can_stall_and_then_answer(mews_call: Any, then_408: bool) -> None:
    faults = Faults(heavy_count=100, stall_heavy_s=0.4, stall_then_408=then_408)
    sb = Sandbox.generate(orders=300, seed=1, config=SandboxConfig(faults=faults))
    assert Faults().stall_heavy_s is None and not Faults().stall_then_408
    answers: list[httpx.Response] = []
    started = time.perf_counter()
    heavy = threading.Thread(
        target=lambda: answers.append(mews_call(sb, SERVICES, Limitation={"Count": 101}))
    )
    heavy.start()
    time.sleep(0.1)
    quick_started = time.perf_counter()
    assert mews_call(sb, SERVICES, Limitation={"Count": 100}).status_code == 200
    assert time.perf_counter() - quick_started < 0.2  # the stall holds no lock
    heavy.join()
    assert time.perf_counter() - started >= 0.4  # never a quick 408
    [answer] = answers
    if then_408:
        assert answer.status_code == 408 and "fewer" in answer.json()["Message"]
    else:
        assert answer.status_code == 200 and len(answer.json()["Services"]) == 18


def test_a_stall_longer_than_the_client_timeout_is_a_read_timeout_over_loopback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sb = Sandbox(config=SandboxConfig(faults=Faults(heavy_count=10, stall_heavy_s=1.0)))
    body = {
        "ClientToken": DEMO_CLIENT_TOKEN,
        "AccessToken": DEMO_ACCESS_TOKEN,
        "Client": "t",
        "Limitation": {"Count": 11},
    }
    with serve(sb) as url, httpx.Client(base_url=url, timeout=0.2) as client:
        started = time.perf_counter()
        with pytest.raises(httpx.ReadTimeout):
            client.post("/api/connector/v1/services/getAll", json=body)
        assert time.perf_counter() - started < 0.8
        body["Limitation"] = LIMIT
        assert client.post("/api/connector/v1/services/getAll", json=body).status_code == 200
        time.sleep(1.0)  # the stalled request answers late, to nobody, without a traceback
        assert sb.log.count(SERVICES, 200) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_an_invalid_limitation_is_a_400_before_it_is_heavy(mews_call: Any) -> None:
    sb = Sandbox(config=SandboxConfig(faults=Faults(heavy_count=100)))
    assert mews_call(sb, SERVICES, Limitation={"Count": 5000}).status_code == 400
    assert mews_call(sb, SERVICES, Limitation=["not", "an", "object"]).status_code == 400


def test_an_unexpected_sandbox_error_is_a_500_with_details(mews_call: Any) -> None:
    sb = Sandbox()
    sb.clock = lambda: datetime(2026, 1, 1)  # naive: the sandbox cannot use it
    target = next(
        s for s in sb.services() if s["Data"]["Discriminator"] == "Additional" and s["IsActive"]
    )
    response = mews_call(
        sb, "orders/add", EnterpriseId=target["EnterpriseId"], ServiceId=target["Id"], AccountId="a"
    )
    assert response.status_code == 500
    assert response.json()["Message"] == "Unexpected error."
    assert "timezone-aware" in response.json()["Details"]
    assert sb.log.count("orders/add", 500) == 1


def test_faults_can_be_limited_to_some_operations(mews_call: Any) -> None:
    sb = Sandbox(config=SandboxConfig(faults=Faults(error_500=1.0, only_operations={NOTES})))
    assert mews_call(sb, SERVICES, Limitation=LIMIT).status_code == 200
    assert mews_call(sb, NOTES, ServiceOrderIds=["x"], Limitation=LIMIT).status_code == 500


def test_latency_is_added_per_request(mews_call: Any) -> None:
    sb = Sandbox(config=SandboxConfig(faults=Faults(latency_s=0.05)))
    started = time.perf_counter()
    assert mews_call(sb, SERVICES, Limitation=LIMIT).status_code == 200
    assert time.perf_counter() - started >= 0.05


def _statuses(seed: int, mews_call: Any) -> list[int]:
    sb = Sandbox(config=SandboxConfig(faults=Faults(seed=seed, error_500=0.3, error_408=0.2)))
    return [mews_call(sb, SERVICES, Limitation=LIMIT).status_code for _ in range(40)]


def test_faults_are_reproducible_from_their_seed(mews_call: Any) -> None:
    first = _statuses(4, mews_call)
    assert first == _statuses(4, mews_call)
    assert {200, 500, 408} == set(first)
    assert first != _statuses(5, mews_call)


# --- request log -----------------------------------------------------------------------------


def test_the_log_keeps_every_request_without_tokens(mews_call: Any) -> None:
    sb = Sandbox()
    started = time.time()
    mews_call(sb, SERVICES, Limitation=LIMIT)
    mews_call(sb, SERVICES, Limitation={"Count": 0})
    mews_call(sb, SERVICES, Limitation=LIMIT, AccessToken="a-secret-that-is-wrong")
    mews_call(sb, "", _path="/api/connector/v1/nothing")
    entries = sb.log.entries
    assert [(e.operation, e.status) for e in entries] == [
        (SERVICES, 200),
        (SERVICES, 400),
        (SERVICES, 401),
        ("/api/connector/v1/nothing", 404),
    ]
    assert entries[0].body == {
        "ClientToken": "***",
        "AccessToken": "***",
        "Client": "sandbox-tests 1.0",
        "Limitation": LIMIT,
    }
    assert all(started <= e.at <= time.time() for e in entries)
    logged = repr(entries)
    secrets = (
        DEMO_CLIENT_TOKEN,
        DEMO_ACCESS_TOKEN,
        DEMO_PORTFOLIO_ACCESS_TOKEN,
        "a-secret-that-is-wrong",
    )
    for secret in secrets:
        assert secret not in logged
    assert sb.log.count() == 4 and sb.log.count(SERVICES) == 3
    assert sb.log.count(status=400) == 1 and sb.log.count(SERVICES, 200) == 1
    sb.log.clear()
    assert sb.log.entries == [] and sb.log.count() == 0


# --- concurrency -----------------------------------------------------------------------------


def test_concurrent_reads_and_writes_stay_consistent() -> None:
    sb = Sandbox.generate(orders=500, seed=3)
    services = [s["Id"] for s in sb.services()]
    order_ids = [o["Id"] for o in sb.orders()]
    notes_before = len(sb.notes())
    statuses: list[int] = []
    lock = threading.Lock()
    auth = {
        "ClientToken": DEMO_CLIENT_TOKEN,
        "AccessToken": DEMO_PORTFOLIO_ACCESS_TOKEN,
        "Client": "t",
    }
    window = {"StartUtc": "2025-01-01T00:00:00Z", "EndUtc": "2025-04-01T00:00:00Z"}

    def work(worker: int) -> None:
        with httpx.Client(transport=SandboxTransport(sb), base_url="http://sandbox") as client:
            for i in range(20):
                if i % 2:
                    response = client.post(
                        "/api/connector/v1/serviceOrderNotes/add",
                        json={
                            **auth,
                            "ServiceOrderNotes": [
                                {"ServiceOrderId": order_ids[worker * 20 + i], "Text": "t"}
                            ],
                        },
                    )
                else:
                    response = client.post(
                        "/api/connector/v1/productServiceOrders/getAll",
                        json={
                            **auth,
                            "ServiceIds": services,
                            "UpdatedUtc": window,
                            "Limitation": {"Count": 50},
                        },
                    )
                with lock:
                    statuses.append(response.status_code)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 160
    assert len(sb.notes()) == notes_before + 80
    assert sb.log.count() == 160


# --- the real HTTP server ----------------------------------------------------------------------


def test_round_trip_over_loopback_http() -> None:
    sb = Sandbox.generate(orders=100, seed=4)
    auth = {
        "ClientToken": DEMO_CLIENT_TOKEN,
        "AccessToken": DEMO_PORTFOLIO_ACCESS_TOKEN,
        "Client": "t",
    }
    target = next(
        s for s in sb.services() if s["Data"]["Discriminator"] == "Additional" and s["IsActive"]
    )
    with serve(sb) as url, httpx.Client(base_url=url) as client:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)

        def post(operation: str, **fields: Any) -> httpx.Response:
            return client.post(f"/api/connector/v1/{operation}", json={**auth, **fields})

        added = post(
            "orders/add",
            EnterpriseId=target["EnterpriseId"],
            ServiceId=target["Id"],
            AccountId="acc-1",
            Notes="First note",
        )
        assert added.status_code == 200 and added.http_version == "HTTP/1.1"
        assert added.headers.get("Connection", "keep-alive") != "close"
        order_id = added.json()["OrderId"]
        note = post(
            "serviceOrderNotes/add",
            ServiceOrderNotes=[{"ServiceOrderId": order_id, "Text": "Second note"}],
        ).json()["ServiceOrderNotes"][0]
        first = post(NOTES, ServiceOrderIds=[order_id], Limitation={"Count": 10}).json()
        assert [n["Text"] for n in first["ServiceOrderNotes"]] == ["Second note", "First note"]
        assert (
            post(
                "serviceOrderNotes/update",
                ServiceOrderNoteUpdates=[{"Id": note["Id"], "Text": {"Value": "Second, edited"}}],
            ).status_code
            == 200
        )
        assert (
            post(
                "serviceOrderNotes/update",
                ServiceOrderNoteUpdates=[
                    {"ServiceOrderNoteId": first["Cursor"], "Text": "First, edited"}
                ],
            ).status_code
            == 200
        )
        edited = post(NOTES, ServiceOrderIds=[order_id], Limitation={"Count": 10}).json()
        assert [n["Text"] for n in edited["ServiceOrderNotes"]] == [
            "Second, edited",
            "First, edited",
        ]
        assert post("serviceOrderNotes/delete", ServiceOrderNoteIds=[note["Id"]]).json() == {}
        remaining = post(NOTES, ServiceOrderIds=[order_id], Limitation={"Count": 10}).json()
        assert [n["Text"] for n in remaining["ServiceOrderNotes"]] == ["First, edited"]
        orders = post(
            "productServiceOrders/getAll",
            ServiceIds=[target["Id"]],
            ProductServiceOrderIds=[order_id],
            Limitation={"Count": 1},
            UpdatedUtc={"StartUtc": "2000-01-01T00:00:00Z", "EndUtc": "2000-01-01T00:00:00Z"},
        ).json()
        assert orders == {"ProductServiceOrders": [], "Cursor": None}
        [truth] = [o for o in sb.orders() if o["Id"] == order_id]
        shown = datetime.fromisoformat(truth["UpdatedUtc"])  # whole seconds of a precise time
        orders = post(
            "productServiceOrders/getAll",
            ServiceIds=[target["Id"]],
            ProductServiceOrderIds=[order_id],
            Limitation={"Count": 1},
            UpdatedUtc={
                "StartUtc": truth["UpdatedUtc"],
                "EndUtc": (shown + timedelta(seconds=1)).isoformat(),
            },
        ).json()
        assert orders == {"ProductServiceOrders": [truth], "Cursor": order_id}

        assert client.post("/api/connector/v1/Services/getAll", json=auth).status_code == 404
        assert client.get("/api/connector/v1/services/getAll").status_code == 405
        assert client.head("/api/connector/v1/services/getAll").status_code == 405
        bad = client.post("/api/connector/v1/services/getAll", content=b"{nope")
        assert bad.status_code == 400 and bad.json()["Message"]
        assert post(SERVICES, Limitation=LIMIT).status_code == 200  # the connection still works
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{url}/api/connector/v1/services/getAll", json=auth, timeout=2)


def test_small_answers_over_loopback_wait_for_no_delayed_ack() -> None:
    sb = Sandbox()
    body = {
        "ClientToken": DEMO_CLIENT_TOKEN,
        "AccessToken": DEMO_PORTFOLIO_ACCESS_TOKEN,
        "Client": "t",
        "Limitation": {"Count": 2},
    }
    with serve(sb) as url, httpx.Client(base_url=url) as client:
        client.post("/api/connector/v1/services/getAll", json=body)
        started = time.perf_counter()
        for _ in range(40):
            client.post("/api/connector/v1/services/getAll", json=body)
        # With Nagle's algorithm each answer waited ~40 ms for the client's delayed ACK (1.8 s
        # in all); without it, ~1.5 ms each.
        assert time.perf_counter() - started < 0.8


def test_loopback_drops_and_malformed_bodies() -> None:
    sb = Sandbox(config=SandboxConfig(faults=Faults(drop=1.0)))
    body = {
        "ClientToken": DEMO_CLIENT_TOKEN,
        "AccessToken": DEMO_ACCESS_TOKEN,
        "Client": "t",
        "Limitation": LIMIT,
    }
    with serve(sb) as url, httpx.Client(base_url=url) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/api/connector/v1/services/getAll", json=body)
        assert sb.log.count(status=0) == 1
        sb.config.faults = Faults(malformed_json=1.0)
        response = client.post("/api/connector/v1/services/getAll", json=body)
        assert response.status_code == 200
        assert int(response.headers["Content-Length"]) == len(response.content)
        with pytest.raises(json.JSONDecodeError):
            response.json()


def test_the_cli_serves_with_custom_tokens_it_never_prints() -> None:
    code = (
        "from mews_sandbox.server import run_cli; "
        "run_cli(0, 50, 3, 'client-secret-x', 'access-secret-y')"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        block = "".join(process.stdout.readline() for _ in range(3))  # the lines to paste
        assert "secret" not in line + block
        assert "the --client-token you gave" in block and "the --access-token you gave" in block
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, line
        url = f"{match.group()}/api/connector/v1/services/getAll"
        custom = {
            "ClientToken": "client-secret-x",
            "AccessToken": "access-secret-y",
            "Client": "t",
            "Limitation": LIMIT,
        }
        assert httpx.post(url, json=custom).status_code == 200
        for token in (DEMO_ACCESS_TOKEN, DEMO_PORTFOLIO_ACCESS_TOKEN):
            assert httpx.post(url, json={**custom, "AccessToken": token}).status_code == 401
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert "secret" not in stderr
