"""Two syncs against a Mews that answers requests for more than `--limit` items or ids only
after the client's timeout, never with a 408 (issue 20, item 5), scaled down: the client waits
`--timeout` s, Mews stalls `--stall` s (in production 60 s against 70 s).

    python benchmarks/slow_large_requests.py                  # 8,000 orders, 250, 1 s, 1.5 s
    python benchmarks/slow_large_requests.py --orders 20000

Prints, for the first sync and the next one, the timeouts, the requests over the limit Mews
got, the requests in all and the wall time. A first sync may stop (the old client ran out of
smaller pages on some notes): then it prints the error too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).parents[1] / "tests")]

from harness import Target, lagging_sandbox  # noqa: E402

from mews_sandbox import Faults, serve  # noqa: E402
from pipelines.runs import RunReport  # noqa: E402


def over(body: dict, limit: int) -> bool:
    ids = [len(v) for k, v in body.items() if k.endswith("Ids") and isinstance(v, list)]
    return max([(body.get("Limitation") or {}).get("Count", 0), *ids]) > limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=8000)
    parser.add_argument("--limit", type=int, default=250)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--stall", type=float, default=1.5)
    args = parser.parse_args()
    sandbox = lagging_sandbox(orders=args.orders, seed=20)
    sandbox.config.faults = Faults(heavy_count=args.limit, heavy_ids=True, stall_heavy_s=args.stall)
    with tempfile.TemporaryDirectory() as folder, serve(sandbox) as url:
        target = Target(sandbox, Path(folder))
        for name in ("first", "next"):
            sandbox.log.clear()
            report = RunReport(kind="run", where=target.database)
            started = time.monotonic()
            error = ""
            try:
                target.sync(
                    platform_url=url,
                    transport=None,
                    request_timeout_seconds=args.timeout,
                    report=report,
                )
            except Exception as exc:  # noqa: BLE001 - reported
                error = f"  stopped: {type(exc).__name__}: {str(exc)[:120]}"
            seconds = time.monotonic() - started
            time.sleep(args.stall + 0.2)  # the stalled requests are logged when they answer
            heavy = sum(over(e.body, args.limit) for e in sandbox.log.entries)
            print(
                f"{name}: {report.stats.timeouts} timeouts, {heavy} requests over "
                f"{args.limit}, {sum(report.stats.requests.values())} requests, "
                f"{report.read.orders} orders read, {seconds:.1f} s{error}"
            )


if __name__ == "__main__":
    main()
