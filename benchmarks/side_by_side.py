"""The pipeline layer's own cost, this tree against an earlier commit, side by side (issue 21).

    python benchmarks/side_by_side.py --orders 200000 --previous 547f0e4 --repeats 3
    python benchmarks/side_by_side.py --previous 547f0e4 --this HEAD   # HEAD as committed

On one sandbox (bench.py's), interleaved so that drift on a noisy machine hits both alike:
the bare httpx+json loop (the floor), the first sync (`pipeline`, bench.py's scenario) of each
tree, then `python -m pipelines.cli run` with no change after a first sync by the command line
of each tree, and `python -c "import dlt"` (the start-up floor of the command line). Prints the
medians of CPU and wall and the ratios the issue targets: pipeline CPU / bare CPU at most 1.5,
a no-change run's wall at most 2x that of importing dlt.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import bench  # noqa: E402 - a script beside this one
from isolated import isolated_env  # noqa: E402
from items_cost import release_tree  # noqa: E402


def first_sync(tree: Path, url: str, folder: Path) -> dict:
    """bench.py's `pipeline` scenario of `tree`, in a fresh process."""
    folder.mkdir(parents=True)
    command = [
        sys.executable,
        str(tree / "benchmarks" / "bench.py"),
        "scenario",
        "pipeline",
        url,
        str(folder / "bench.duckdb"),
        str(folder / "dlt"),
        "0",
    ]
    env = {
        **os.environ,
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "PYTHONPATH": str(tree),
        "DLT_DATA_DIR": str(folder / "dlt_data"),
    }
    done = bench.run_process(command, env)
    if done["status"] != 0:
        raise SystemExit(f"the first sync of {tree} failed")
    return done


def cli_run(tree: Path, env: dict[str, str], folder: Path) -> dict:
    """`python -m pipelines.cli run` of `tree` in `folder`."""
    done = bench.run_process([sys.executable, "-m", "pipelines.cli", "run"], env, cwd=folder)
    if done["status"] != 0:
        raise SystemExit(f"mews-sync run of {tree} failed:\n{done['output']}")
    return done


def cli_env(tree: Path, url: str, folder: Path) -> dict[str, str]:
    env = bench.cli_env(url, folder)
    env.update(isolated_env(tree, folder, folder / "cli.duckdb"))
    return env


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--previous", default="547f0e4")
    parser.add_argument("--this", help="a commit to measure instead of the working tree")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trees = {
            "previous": release_tree(args.previous, folder / "trees"),
            "this": release_tree(args.this, folder / "trees") if args.this else REPO,
        }
        sandbox = bench.SandboxProcess(args.orders)
        runs: dict[str, list[dict]] = {}
        try:
            bench.measure("bare", sandbox.url, folder / "warm-up")
            for repeat in range(args.repeats):
                runs.setdefault("bare", []).append(
                    bench.measure("bare", sandbox.url, folder / f"bare{repeat}")
                )
                for name, tree in trees.items():
                    runs.setdefault(f"pipeline {name}", []).append(
                        first_sync(tree, sandbox.url, folder / f"{name}{repeat}")
                    )
            envs = {}
            for name, tree in trees.items():
                (folder / f"cli-{name}").mkdir()
                envs[name] = cli_env(tree, sandbox.url, folder / f"cli-{name}")
                cli_run(tree, envs[name], folder / f"cli-{name}")  # the first sync
            for _ in range(args.repeats):
                runs.setdefault("import dlt", []).append(
                    bench.run_process([sys.executable, "-c", "import dlt"], envs["this"])
                )
                for name, tree in trees.items():
                    runs.setdefault(f"cli {name}", []).append(
                        cli_run(tree, envs[name], folder / f"cli-{name}")
                    )
        finally:
            sandbox.close()
    print(f"{args.orders:,} orders, DuckDB, this tree against {args.previous} "
          f"(median of {args.repeats})")
    for label, done in runs.items():
        wall = "process_wall" if "process_wall" in done[0] else "wall"
        each = ", ".join(f"{r['cpu']:.2f}" for r in done)
        print(
            f"  {label:<20} CPU {median(done, 'cpu'):6.2f} s ({each}), "
            f"wall {median(done, wall):6.2f} s"
        )
    for name in trees:
        ratio = median(runs[f"pipeline {name}"], "cpu") / median(runs["bare"], "cpu")
        start = median(runs[f"cli {name}"], "process_wall")
        start /= median(runs["import dlt"], "process_wall")
        print(f"  {name}: pipeline CPU / bare CPU = {ratio:.2f}; "
              f"no-change run wall / import dlt wall = {start:.2f}")


if __name__ == "__main__":
    main()
