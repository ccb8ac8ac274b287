"""Peak RSS of a first sync, and in which phase it is reached.

    python benchmarks/memory_peak.py --orders 200000 --repeats 3
    python benchmarks/memory_peak.py --orders 200000 --variant pool=ARROW_DEFAULT_MEMORY_POOL=system
    python benchmarks/memory_peak.py --orders 1000000 --heavier --postgres

Serves a generated sandbox once from its own process (bench.py's `SandboxProcess`) and runs
bench.py's `pipeline` scenario (or `pipeline-postgres`) of this tree in a fresh process per
run, each variant (an environment setting, `name=VAR=value,VAR=value`; `base` has none) in
turn, so they are measured side by side. Peak RSS and CPU come from wait4; with --sample the
run also reads its own VmRSS every 0.2 s and reports the highest in each phase (extract,
normalize, load, compaction, views, publish).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
import bench  # noqa: E402 - a script beside this one

PHASES = {  # (module, class or None, function): the phase a call of it is
    ("dlt", "Pipeline", "extract"): "extract",
    ("dlt", "Pipeline", "normalize"): "normalize",
    ("dlt", "Pipeline", "load"): "load",
    ("pipelines.mews_pipeline", None, "compact"): "compaction",
    ("pipelines.mews_pipeline", None, "apply_views"): "views",
    ("pipelines.storage", "DuckDbStorage", "publish"): "publish",
}


def vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sampled(name: str, url: str, folder: Path, database: str) -> dict:
    """Run the scenario with a thread noting the highest VmRSS of each phase."""
    phase = ["other"]  # before, between and after dlt's steps
    peaks: dict[str, float] = {}

    @contextmanager
    def phased(label: str) -> Iterator[None]:
        outer, phase[0] = phase[0], label
        try:
            yield
        finally:
            phase[0] = outer

    bench.around_steps(PHASES, phased)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            rss = vm_rss_mb()
            peaks[phase[0]] = max(peaks.get(phase[0], 0.0), rss)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = bench.scenario(name, url, database, str(folder / "dlt"), rate_limited=False)
    finally:
        done.set()
        thread.join()
    return {**result, "phases": {k: round(v) for k, v in peaks.items()}}


def run(
    name: str, url: str, folder: Path, env: dict[str, str], sample: bool, database: str
) -> dict:
    """One run of the scenario in a fresh process, `env` added to the environment."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, __file__, "child", name, url, str(folder), database]
    command += ["1" if sample else "0"]
    environment = {
        **os.environ,
        **env,
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "PYTHONPATH": str(REPO),
        "DLT_DATA_DIR": str(folder / "dlt_data"),
    }
    done = bench.run_process(command, environment)
    if done["status"] != 0:
        print(f"{name} failed (status {done['status']})", file=sys.stderr)
        return {"failed": True, "wall": 0.0, "cpu": done["cpu"], "rss_mb": done["rss_mb"]}
    result = json.loads(done["output"].strip().splitlines()[-1])
    return {**result, "cpu": done["cpu"], "rss_mb": done["rss_mb"]}


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    label, _, settings = text.partition("=")
    env = dict(s.split("=", 1) for s in settings.split(",") if s)
    return label, env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--heavier", action="store_true", help="the heavier data shape")
    parser.add_argument("--postgres", action="store_true", help="into PostgreSQL instead")
    parser.add_argument("--sample", action="store_true", help="the highest VmRSS per phase")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=VAR=V,...")
    parser.add_argument("--url", help="a sandbox already served (bench.py serve), not a new one")
    args = parser.parse_args()
    variants = dict(parse_variant(v) for v in args.variant or ["base="])
    name = "pipeline-postgres" if args.postgres else "pipeline"
    results: dict[str, list[dict]] = {label: [] for label in variants}
    sandbox = None if args.url else bench.SandboxProcess(args.orders, heavier=args.heavier)
    url = args.url or sandbox.url
    helper = bench.postgres_helper() if args.postgres else None
    with tempfile.TemporaryDirectory() as tmp, bench.postgres_server(args.postgres) as server:
        try:
            if sandbox:
                bench.measure("bare", url, Path(tmp) / "warm-up")  # the sandbox's caches
            for repeat in range(args.repeats):
                for label, env in variants.items():  # interleaved
                    folder = Path(tmp) / f"{label}{repeat}"
                    database = str(folder / "bench.duckdb")
                    if helper is not None and server is not None:
                        database = helper.create_database(server)[1]
                    result = run(name, url, folder, env, args.sample, database)
                    results[label].append(result)
                    print(label, json.dumps(result), flush=True)
        finally:
            if sandbox:
                sandbox.close()
    shape = "heavier" if args.heavier else "today's"
    print(f"\n{args.orders:,} orders, {shape} shape, {name}, median of {args.repeats}")
    for label, runs in results.items():
        rss = statistics.median(r["rss_mb"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        wall = statistics.median(r["wall"] for r in runs)
        each = ", ".join(f"{r['rss_mb']:.0f}" for r in runs)
        print(
            f"  {label:<12} peak RSS {rss:5.0f} MB  CPU {cpu:6.1f} s  wall {wall:6.1f} s  "
            f"(RSS each: {each})"
        )
        for r in runs:
            if "phases" in r:
                print("    highest VmRSS by phase, MB:", json.dumps(r["phases"]))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        scenario, url, folder, database, sample = sys.argv[2:7]
        if sample == "1":
            outcome = sampled(scenario, url, Path(folder), database)
        else:
            outcome = bench.scenario(scenario, url, database, str(Path(folder) / "dlt"), False)
        print(json.dumps(outcome))
    else:
        main()
