"""Where the time goes: a scenario of `bench.py` under cProfile, every thread included.

    python benchmarks/profile_run.py pipeline --orders 200000   # the first sync into DuckDB
    python benchmarks/profile_run.py cli --orders 200000        # a no-change `mews-sync run`

Serves the same generated sandbox as `bench.py` from its own process (warmed up as there),
then runs the scenario in a fresh process with a profiler in each thread (dlt fetches notes
in worker threads), merges them and prints the top functions by own and by cumulative time;
the stats stay in --output for `python -m pstats`. `--timer wall` (the default) is cProfile's
own clock; `--timer cpu` counts each thread's CPU time, so waiting on a lock or a socket costs
nothing, but that clock costs about a microsecond a call, which inflates code making many
small calls. For `cli`, a first sync by the command line comes first (not profiled), then
`pipelines.cli.main(["run"])` runs profiled with the settings `bench.py` gives it, in its
folder. cProfile slows Python code about twofold and native code hardly: read the shares, not
the seconds. `--timer steps` (cli only) runs no profiler: it prints the wall seconds of
importing dlt and the pipeline, of `pipelines.cli.main(["run"])` after that, and of each main
step in it (summed over its calls; a step inside another counts in both), for `--repeats N`
runs, each in a fresh process; then the wall of three `python -c "import dlt"` processes.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 - the benchmark's sandbox, scenarios and settings


def profiled(work: Any, output: Path, top: int, timer: str) -> None:
    """Run `work()` with a cProfile.Profile in this thread and in every thread it starts."""
    profiles: list[cProfile.Profile] = []
    clock = time.thread_time if timer == "cpu" else time.perf_counter

    def start_in_thread(*_: Any) -> None:
        profile = cProfile.Profile(clock)
        profiles.append(profile)  # list.append is atomic
        profile.enable()  # replaces this hook in the new thread

    main_profile = cProfile.Profile(clock)
    threading.setprofile(start_in_thread)
    main_profile.enable()
    try:
        work()
    finally:
        main_profile.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
    stats = pstats.Stats(main_profile)
    for profile in profiles:
        profile.disable()  # of a thread that ended or idles; its records stay
        profile.create_stats()
        if profile.stats:  # type: ignore[attr-defined]
            stats.add(profile)
    stats.dump_stats(output)
    print(f"main thread and {len(profiles)} other thread(s); stats in {output}")
    for order in ("tottime", "cumulative"):
        stats.sort_stats(order).print_stats(top)


# The steps `--timer steps` times, each under its function's name.
STEPS: dict[bench.Step, str] = {
    step: step[2]
    for step in [
        ("dlt.pipeline.pipeline", "Pipeline", name)
        for name in ("sync_destination", "extract", "normalize", "load")
    ]
    + [
        ("pipelines.mews_pipeline", None, name)
        for name in ("last_request_sizes", "build_pipeline", "mews_source", "clean_up", "compact")
    ]
    + [
        ("pipelines.mews_pipeline", None, "apply_views"),
        ("pipelines.storage", "DuckDbStorage", "publish"),
        ("pipelines.storage", None, "open_duckdb_file"),
    ]
}


def timed_steps(work: Any) -> None:
    """Run `work()` with a wall timer on each of STEPS; print them, the largest first."""
    seconds: dict[str, float] = {}

    @contextmanager
    def timed(name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started

    with timed("import"):  # dlt, DuckDB, Arrow and the pipeline
        bench.around_steps(STEPS, timed)
    with timed("run"):
        work()
    ranked = sorted(seconds.items(), key=lambda item: -item[1])
    print(" ".join(f"{name} {value:.3f}" for name, value in ranked))


def run(scenario: str, url: str, folder: Path, top: int, output: Path, timer: str) -> None:
    """In the profiled process."""
    if timer == "steps" and scenario == "cli":
        from pipelines.cli import main as cli  # dlt and the pipeline come with STEPS

        os.environ.clear()
        os.environ.update(bench.cli_env(url, folder / "cli"))
        os.chdir(folder / "cli")
        timed_steps(lambda: cli(["run"]))
        return
    if scenario == "pipeline":
        (folder / "pipeline").mkdir()
        database, workdir = folder / "pipeline" / "bench.duckdb", folder / "pipeline" / "dlt"
        profiled(
            lambda: print(bench.scenario("pipeline", url, str(database), str(workdir), False)),
            output,
            top,
            timer,
        )
    else:
        from pipelines.cli import main as cli

        os.environ.clear()
        os.environ.update(bench.cli_env(url, folder / "cli"))
        os.chdir(folder / "cli")
        profiled(lambda: cli(["run"]), output, top, timer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["pipeline", "cli"])
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--top", type=int, default=30, help="functions to print per order")
    parser.add_argument("--timer", choices=["wall", "cpu", "steps"], default="wall")
    parser.add_argument("--repeats", type=int, default=1, help="runs, with --timer steps")
    parser.add_argument("--output", type=Path, help="the stats file (default: SCENARIO.prof)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sandbox = bench.SandboxProcess(args.orders)
        try:
            bench.measure("bare", sandbox.url, folder / "warm-up")  # as bench.py does
            if args.scenario == "cli":
                bench.bench_cli(sandbox, folder, 0, before=False)  # the first sync, not profiled
            command = [
                sys.executable,
                __file__,
                "_run",
                args.scenario,
                sandbox.url,
                tmp,
                str(args.top),
                str((args.output or Path(f"{args.scenario}.prof")).resolve()),
                args.timer,
            ]
            env = {
                **os.environ,
                "RUNTIME__DLTHUB_TELEMETRY": "false",
                "PYTHONPATH": str(bench.REPO),
            }
            for _ in range(args.repeats if args.timer == "steps" else 1):
                subprocess.run(command, env=env, check=True)
            if args.timer == "steps":
                walls = [done["process_wall"] for done in bench.import_dlt_walls(3)]
                print("import dlt:", ", ".join(f"{wall:.2f} s" for wall in walls))
        finally:
            sandbox.close()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_run":
        run(
            sys.argv[2],
            sys.argv[3],
            Path(sys.argv[4]),
            int(sys.argv[5]),
            Path(sys.argv[6]),
            sys.argv[7],
        )
    else:
        main()
