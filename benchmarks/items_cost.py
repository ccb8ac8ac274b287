"""What order items and products cost: this release against the release before them, side by
side on the same sandbox, a first sync and then a nightly with 1 % of the orders changed.

    python benchmarks/items_cost.py --orders 200000
    python benchmarks/items_cost.py --orders 200000 --previous dd5245c

Each run is `python -m pipelines.cli run` of one release (the previous one from `git archive`)
in a process of its own, into a DuckDB file of its own, the client-side rate limit off; its CPU
and peak RSS come from wait4, its requests from the sandbox's log. The sandbox keeps the real
clock, so both releases end their windows at the same moment.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from bench import release_tree, run_process  # noqa: E402 - a script beside this one
from isolated import isolated_env  # noqa: E402

from mews_sandbox import (  # noqa: E402
    DEMO_CLIENT_TOKEN,
    DEMO_PORTFOLIO_ACCESS_TOKEN,
    Sandbox,
    serve,
)

# Runs the command and prints its CPU and peak RSS: the run is forked from this small process,
# not from the benchmark's (which holds the sandbox), whose pages a child's peak RSS counts.
MEASURED = """
import json, resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}))
sys.exit(code)
"""


def sync(tree: Path, url: str, folder: Path, sandbox: Sandbox) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    env = isolated_env(tree, folder, folder / "bench.duckdb")
    env.update(
        SOURCES__MEWS__PLATFORM_URL=url,
        SOURCES__MEWS__CLIENT_TOKEN=DEMO_CLIENT_TOKEN,
        SOURCES__MEWS__ACCESS_TOKEN=DEMO_PORTFOLIO_ACCESS_TOKEN,
        SOURCES__MEWS__START_DATE="2021-01-01",
        SOURCES__MEWS__RATE_LIMIT_REQUESTS="0",
        MEWS_SYNC__LOG_LEVEL="WARNING",
        RUNTIME__DLTHUB_TELEMETRY="false",
    )
    sandbox.log.clear()
    command = [sys.executable, "-c", MEASURED, sys.executable, "-m", "pipelines.cli", "run"]
    done = run_process(command, env, cwd=folder)
    if done["status"] != 0:
        raise SystemExit(f"the run of {tree} failed:\n{done['output']}")
    done.update(json.loads(done["output"].strip().splitlines()[-1]))
    done["requests"] = Counter(e.operation for e in sandbox.log.entries)
    return done


def row(label: str, done: dict) -> str:
    requests = sum(done["requests"].values())
    return (
        f"  {label:<28} {requests:>6,} requests ({done['requests'].get('orderItems/getAll', 0)} "
        f"orderItems, {done['requests'].get('products/getAll', 0)} products), "
        f"CPU {done['cpu']:6.1f} s, peak RSS {done['rss_mb']:5.0f} MB, "
        f"wall {done['process_wall']:6.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--previous", default="dd5245c", help="the release before items")
    args = parser.parse_args()
    sandbox = Sandbox.generate(orders=args.orders, seed=7)
    lines = [f"{args.orders:,} orders, DuckDB, this release against {args.previous}"]
    with tempfile.TemporaryDirectory() as tmp, serve(sandbox) as url:
        folder = Path(tmp)
        trees = {"previous": release_tree(args.previous, folder), "this": REPO}
        first = {name: sync(tree, url, folder / name, sandbox) for name, tree in trees.items()}
        changed = random.Random(1).sample(sandbox.orders(), args.orders // 100)
        for order in changed:
            sandbox.update_order(order["Id"], State="Processed")
        nightly = {name: sync(tree, url, folder / name, sandbox) for name, tree in trees.items()}
    for label, runs in (("first sync", first), (f"nightly, {len(changed):,} changed", nightly)):
        lines.append(label)
        lines += [row(name, done) for name, done in runs.items()]
        extra = {
            key: (runs["this"][key] - runs["previous"][key]) / (args.orders / 1000)
            for key in ("cpu", "rss_mb")
        }
        more = sum(runs["this"]["requests"].values()) - sum(runs["previous"]["requests"].values())
        lines.append(
            f"  per 1,000 orders, this - previous: {more / (args.orders / 1000):+.2f} requests, "
            f"{extra['cpu'] * 1000:+.0f} ms CPU, {extra['rss_mb'] * 1000:+.0f} KB peak RSS"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
