"""Measure the sandbox at scale: `python -m mews_sandbox.bench [ORDERS]` (default 1,000,000).

Prints generation time and peak memory, then the time to answer pages of 1000 orders
(through Sandbox.handle: request parsing, filtering, paging and response bytes included).
"""

import json
import resource
import sys
import time
from datetime import UTC, datetime
from statistics import median

from mews_sandbox.app import DEMO_CLIENT_TOKEN, DEMO_PORTFOLIO_ACCESS_TOKEN, Sandbox

PATH = "/api/connector/v1/productServiceOrders/getAll"


def _walk(sb: Sandbox, request: dict, pages: int) -> list[float]:
    """Milliseconds per page for the first `pages` pages of `request`."""
    timings, cursor = [], None
    for _ in range(pages):
        limitation = {"Count": 1000} if cursor is None else {"Count": 1000, "Cursor": cursor}
        body = json.dumps({**request, "Limitation": limitation}).encode()
        started = time.perf_counter()
        answer = sb.handle("POST", PATH, body)
        timings.append((time.perf_counter() - started) * 1000)
        assert answer.status == 200, answer.body
        cursor = json.loads(answer.body)["Cursor"]
        if cursor is None:
            break
    return timings


def main(orders: int) -> None:
    started = time.perf_counter()
    sb = Sandbox.generate(orders=orders, seed=7, now=datetime(2026, 1, 1, tzinfo=UTC))
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"generate({orders:,}): {seconds:.1f} s, peak RSS {peak_mb:,.0f} MB, "
          f"{len(sb._notes_by_id):,} notes")

    base = {"ClientToken": DEMO_CLIENT_TOKEN, "AccessToken": DEMO_PORTFOLIO_ACCESS_TOKEN,
            "Client": "bench",
            "ServiceIds": [s["Id"] for s in sb.services()]}
    quarter = {**base, "UpdatedUtc": {"StartUtc": "2025-07-01T00:00:00Z",
                                      "EndUtc": "2025-10-01T00:00:00Z"}}
    for label, request in (("3-month UpdatedUtc window", quarter), ("no window", base)):
        sb.config.updated_utc_required = "UpdatedUtc" in request
        cold = _walk(sb, request, 20)
        warm = _walk(sb, request, 20)  # the same pages again: filter result and JSON cached
        print(f"{label}: first page {cold[0]:.1f} ms; next 19 pages median "
              f"{median(cold[1:]):.1f} ms, max {max(cold[1:]):.1f} ms; the same 20 pages again "
              f"median {median(warm):.1f} ms")
    order_ids = [o.Id for o in sb._orders[-1000:]]
    notes = json.dumps({**base, "ServiceOrderIds": order_ids, "Limitation": {"Count": 1000}})
    started = time.perf_counter()
    answer = sb.handle("POST", "/api/connector/v1/serviceOrderNotes/getAll", notes.encode())
    assert answer.status == 200
    print(f"notes of 1000 orders, first page: {(time.perf_counter() - started) * 1000:.1f} ms")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS after serving: {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
