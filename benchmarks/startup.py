"""Start-up time of the `mews-sync` command, side by side with a bare Python.

    python benchmarks/startup.py            # medians of 5 runs each
    python benchmarks/startup.py --runs 9
    python benchmarks/startup.py --repo /tmp/before   # another checkout, e.g. an older commit

Each command runs in a fresh process, from a scratch folder with no .dlt/ and dlt's data
folder in it, so that nothing of the machine's own configuration is read. `status` and
`query` read a DuckDB file that `mews-sync demo` made there first (not timed): the same tables,
run records and analysts' copy as after a real run. Targets (issue 13, on the 2-core
development machine): --help and --version under 0.3 s, status and query under 0.6 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from isolated import isolated_env  # a script beside this one

REPO = Path(__file__).resolve().parent.parent
TARGETS = {"--help": 0.3, "--version": 0.3, "status": 0.6, 'query "select 1"': 0.6}


def mews_sync(repo: Path) -> list[str]:
    """The installed console script beside this Python (for this checkout), else the module."""
    script = Path(sys.executable).parent / "mews-sync"
    if repo == REPO and script.exists():
        return [str(script)]
    return [sys.executable, "-m", "pipelines.cli"]


def seconds(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True)
    return time.perf_counter() - started, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per command (default 5)")
    parser.add_argument(
        "--repo", type=Path, default=REPO, help="the checkout to measure (default: this one)"
    )
    args = parser.parse_args()
    repo = args.repo.resolve()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        env = isolated_env(repo, folder, folder / "mews_sync.duckdb")
        cli = mews_sync(repo)
        made = subprocess.run(
            [*cli, "demo", "--orders", "500", "--path", str(folder / "mews_sync.duckdb")],
            env=env,
            cwd=folder,
            capture_output=True,
            text=True,
        )
        if made.returncode:
            sys.exit(f"mews-sync demo failed:\n{made.stderr}")
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "--help": [*cli, "--help"],
            "--version": [*cli, "--version"],
            "status": [*cli, "status"],
            'query "select 1"': [*cli, "query", "select 1"],
        }
        results: dict[str, list[float]] = {name: [] for name in commands}
        codes: dict[str, set[int]] = {name: set() for name in commands}
        for _ in range(args.runs):  # interleaved: a noisy moment touches every command alike
            for name, command in commands.items():
                took, code = seconds(command, env, folder)
                results[name].append(took)
                codes[name].add(code)
    bare = statistics.median(results["python -c pass"])
    print(
        f"{repo}: medians of {args.runs} runs, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cores"
    )
    print(f"{'command':<20} {'median s':>9} {'- python':>9} {'target s':>9}  exit")
    for name, times in results.items():
        median = statistics.median(times)
        target = f"{TARGETS[name]:.1f}" if name in TARGETS else ""
        exits = ",".join(map(str, sorted(codes[name])))
        print(f"{name:<20} {median:>9.3f} {median - bare:>9.3f} {target:>9}  {exits}")


if __name__ == "__main__":
    main()
