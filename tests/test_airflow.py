"""The Airflow recipe (docs/scheduling/airflow_dag.py) run by a real Airflow 3: `airflow dags
test` in a throwaway AIRFLOW_HOME, against the sandbox over loopback HTTP, into PostgreSQL.

Airflow lives in a virtual environment of its own (it pins many packages the project's own
environment must not get): MEWS_SYNC_TEST_AIRFLOW names its `airflow` command, by default
.venv-airflow/bin/airflow in the repository, which .ci/run creates.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from harness import (
    START_DATE,
    Target,
    assert_equals_truth,
    assert_items_equal_truth,
    change_orders_and_notes,
    lagging_sandbox,
    one_sentence,
)
from test_properties import PROPERTIES, group, token_of

from mews_sandbox import DEMO_PORTFOLIO_ACCESS_TOKEN, Sandbox, serve

REPO = Path(__file__).resolve().parent.parent
DAG_FILE = REPO / "docs" / "scheduling" / "airflow_dag.py"
AIRFLOW = Path(os.environ.get("MEWS_SYNC_TEST_AIRFLOW") or REPO / ".venv-airflow/bin/airflow")
INSTALL = (
    "python3.11 -m venv .venv-airflow && .venv-airflow/bin/pip install "
    '"apache-airflow==3.*" -e . -c constraints.txt'
)
TIMEOUT = 600  # seconds for one `airflow` command: a task Airflow retried would wait longer
SHUTDOWN_GRACE_SECONDS = 60  # after the DAG run finished: the shutdown took 1-2 s when it ended
DAG_RUN_FINISHED = re.compile(r"DagRun Finished: .*?\bstate=(\w+)")


def airflow_command() -> Path:
    """The `airflow` command, or the test fails (never skips) saying how to install it."""
    if not os.access(AIRFLOW, os.X_OK):
        pytest.fail(
            f"Airflow 3 is not installed at {AIRFLOW}: run `{INSTALL}` in the repository (as "
            ".ci/run does) or set MEWS_SYNC_TEST_AIRFLOW to an Airflow 3 `airflow` command.",
            pytrace=False,
        )
    return AIRFLOW


def airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [str(airflow_command()), *args],
            env=env,
            cwd=env["AIRFLOW_HOME"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as late:
        ran_over(env, args, late.stdout, late.stderr)


def ran_over(env: dict[str, str], args: tuple[str, ...], stdout: Any, stderr: Any) -> NoReturn:
    """Fail with what Airflow and each task had written by then, to tell a task that hung
    from a machine that crawled."""
    home = Path(env["AIRFLOW_HOME"])
    logs = sorted((home / "logs").rglob("*.log")) + sorted(home.glob("*.log"))
    written = [f"{path.relative_to(home)}:\n{path.read_text()[-1500:]}" for path in logs]
    output = [tail(stdout), tail(stderr), *written]
    pytest.fail(f"airflow {' '.join(args)} ran over {TIMEOUT} s:\n" + "\n".join(output))


def tail(output: str | bytes | None) -> str:
    text = output.decode(errors="replace") if isinstance(output, bytes) else output or ""
    return text[-3000:]


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment of an Airflow of its own: a fresh AIRFLOW_HOME with its SQLite database
    migrated, the recipe alone in its dags folder, no example DAGs; nothing of the caller's
    environment but PATH and HOME."""
    home = tmp_path_factory.mktemp("airflow")
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(DAG_FILE, dags)
    env = {
        "PATH": f"{AIRFLOW.parent}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", str(home)),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    migrated = airflow(env, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    yield env


PARSE = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("airflow_dag", sys.argv[1])
recipe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe)
dag = recipe.mews_sync()
print(sorted(dag.task_ids), "sync mapped:", dag.task_dict["sync"].is_mapped)
print(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2:])))
"""


def test_the_dag_file_parses_with_no_settings_no_network_and_nothing_heavy(airflow_env):
    """The scheduler parses the file often: it must read no setting, reach nothing, and
    leave dlt and mews-sync unimported (the properties are asked for at run time)."""
    python = str(airflow_command().parent / "python")
    heavy = ["dlt", "pipelines", "sources", "mews_sandbox", "duckdb", "pyarrow", "psycopg2"]
    env = {**airflow_env, "SOURCES__MEWS__PLATFORM_URL": "http://127.0.0.1:9"}  # nothing there
    parsed = subprocess.run(
        [python, "-c", PARSE, str(DAG_FILE), *heavy],
        env=env,
        cwd=airflow_env["AIRFLOW_HOME"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )

    assert parsed.returncode == 0, parsed.stderr[-3000:]
    assert parsed.stdout.splitlines() == ["['properties', 'sync'] sync mapped: True", "[]"]


@pytest.fixture(scope="module")
def airflow_with_executor(airflow_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Airflow as deployed: its API server (the execution API that task processes report to)
    and LocalExecutor, which runs each task in a process of its own, mapped tasks side by
    side, as Celery or Kubernetes workers would."""
    port = free_port()
    env = {
        **airflow_env,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
    }
    command = [str(airflow_command()), "api-server", "--apps", "execution", "--workers", "1"]
    log = Path(env["AIRFLOW_HOME"]) / "api-server.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=env["AIRFLOW_HOME"],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_listening(port, server, log)
        yield env
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_listening(port: int, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 180  # about 15 s on an idle machine
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"airflow api-server stopped:\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"airflow api-server did not listen within 180 s:\n{log.read_text()[-3000:]}")


def write_settings(project: Path, settings: dict[str, dict[str, object]], file: str) -> None:
    """A TOML file of `.dlt/` from sections of strings, numbers and lists of them."""
    folder = project / ".dlt"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for section, values in settings.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    (folder / file).write_text("\n".join(lines) + "\n", encoding="utf-8")


def toml_value(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def operator_setup(
    project: Path, sandbox: Sandbox, url: str, postgres_url: str, properties: list[str]
) -> None:
    """`.dlt/` as an operator writes it for the workers: the properties and what they share
    in config.toml; the ClientToken, each property's AccessToken and PostgreSQL's password in
    secrets.toml."""
    write_settings(
        project,
        {
            "mews_sync": {"destination": "postgres", "properties": properties},
            "sources.mews": {
                "platform_url": url,
                "start_date": START_DATE,
                "rate_limit_requests": 0,
            },
        },
        "config.toml",
    )
    tokens = {f"{name}.sources.mews": {"access_token": token_of(name)} for name in properties}
    write_settings(
        project,
        {
            "sources.mews": {"client_token": sandbox.client_token},
            **tokens,
            "destination.postgres": {"credentials": postgres_url},
        },
        "secrets.toml",
    )


def dags_test(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`airflow dags test --use-executor mews_sync`, stopped if Airflow's LocalExecutor hangs
    in its shutdown once the DAG run has finished and its state is recorded (an unbounded join
    of a worker, apache/airflow#67870; seen twice in full runs of the suite, each time in the
    run where one task fails). Nothing of the DAG is left to test by then: the result is then
    the run's state, 0 for success and 1 otherwise, as the command would have exited."""
    args = ("dags", "test", "--use-executor", "mews_sync")
    folder = Path(tempfile.mkdtemp(dir=env["AIRFLOW_HOME"]))

    def output() -> tuple[str, str]:
        return (folder / "out").read_text(), (folder / "err").read_text()

    with open(folder / "out", "w") as out, open(folder / "err", "w") as err:
        command = [str(airflow_command()), *args]
        process = subprocess.Popen(
            command, env=env, cwd=env["AIRFLOW_HOME"], stdout=out, stderr=err,
            start_new_session=True,  # the executor's workers too are stopped with it
        )
        started, finished = time.monotonic(), None
        while process.poll() is None:
            time.sleep(0.5)
            now = time.monotonic()
            if finished is None and dag_run_state("".join(output())):
                finished = now
            if now - started > TIMEOUT or (finished and now - finished > SHUTDOWN_GRACE_SECONDS):
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                if now - started > TIMEOUT:
                    ran_over(env, args, *output())
                code = 0 if dag_run_state("".join(output())) == "success" else 1
                return subprocess.CompletedProcess(command, code, *output())
    return subprocess.CompletedProcess(command, process.returncode, *output())


def dag_run_state(output: str) -> str | None:
    """The state Airflow logged for the DAG run as it finished ("success", "failed")."""
    found = DAG_RUN_FINISHED.search(output)
    return found.group(1) if found else None


def task_logs(env: dict[str, str]) -> dict[str, str]:
    """The task logs of every run so far, by `run_id=.../task_id=.../[map_index=N/]attempt=K`."""
    root = Path(env["AIRFLOW_HOME"]) / "logs" / "dag_id=mews_sync"
    return {str(log.relative_to(root)): log.read_text() for log in sorted(root.rglob("*.log"))}


def time_span(log: str) -> tuple[str, str]:
    """When a task's log (JSON lines) starts and ends."""
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    return lines[0]["timestamp"], lines[-1]["timestamp"]


def what_happened(run: subprocess.CompletedProcess[str], env: dict[str, str]) -> str:
    """For a failed assertion: the end of the command's output and of each task's log."""
    logs = "".join(f"\n{name}:\n{text[-2000:]}" for name, text in task_logs(env).items())
    return run.stdout[-2000:] + run.stderr[-2000:] + logs


def test_airflow_3_loads_each_property_in_a_task_of_its_own_into_one_postgres_database(
    airflow_with_executor, tmp_path, postgres_credentials
):
    sandbox = lagging_sandbox(orders=600, seed=47)
    group(sandbox)  # a token per property, each covering one enterprise
    project = tmp_path / "project"
    env = {
        **airflow_with_executor,
        "DLT_PROJECT_DIR": str(project),  # where the workers find .dlt/, as documented
        "DLT_DATA_DIR": str(tmp_path / "dlt_data"),
        # An Airflow Variable dlt would read if its Airflow secrets provider were on: services
        # Mews does not have, a configuration error that would fail every task.
        "AIRFLOW_VAR_DLT_SECRETS_TOML": f'[sources.mews]\nservice_ids = ["{uuid.uuid4()}"]\n',
    }
    target = Target(sandbox, tmp_path, postgres_credentials)
    with serve(sandbox) as url:
        operator_setup(project, sandbox, url, postgres_credentials, list(PROPERTIES))
        first = dags_test(env)
        assert first.returncode == 0, what_happened(first, env)
        assert_equals_truth(target)
        assert_items_equal_truth(target)
        spans = [
            time_span(text) for name, text in task_logs(env).items() if "task_id=sync/" in name
        ]
        assert len(spans) == 3
        assert max(start for start, _ in spans) < min(end for _, end in spans)  # side by side

        change_orders_and_notes(sandbox)
        # A fourth property, listed from this run on, whose token Mews refuses (exit 3).
        operator_setup(project, sandbox, url, postgres_credentials, [*PROPERTIES, "closed"])
        second = dags_test(env)

    assert second.returncode == 1 and dag_run_state(second.stdout + second.stderr) == "failed"
    assert_equals_truth(target)  # the three others loaded
    assert_items_equal_truth(target)
    assert target.rows("select count(*) from mews.orders_current") == [(601,)]
    logs = task_logs(env)
    (closed,) = [name for name in logs if "task_id=sync/map_index=3/" in name]
    assert closed.endswith("attempt=1.log")  # failed at once: no retry
    assert "AirflowFailException" in logs[closed] and "answered 401" in logs[closed]
    everything = (
        first.stdout + first.stderr + second.stdout + second.stderr + "".join(logs.values())
    )
    for secret in [sandbox.client_token, *map(token_of, [*PROPERTIES, "closed"])]:
        assert secret not in everything


def test_the_cli_reads_airflow_variables_only_when_asked_to(airflow_env, tmp_path):
    """In an environment with Airflow, dlt's Airflow secrets provider makes a no-change run
    about twice as slow; `mews-sync` turns it off unless PROVIDERS__ENABLE_AIRFLOW_SECRETS says."""
    sandbox = lagging_sandbox(orders=50, seed=48)
    token = f'[sources.mews]\naccess_token = "{DEMO_PORTFOLIO_ACCESS_TOKEN}"\n'
    mews_sync = str(airflow_command().parent / "mews-sync")
    with serve(sandbox) as url:
        env = {
            **airflow_env,
            "DLT_PROJECT_DIR": str(tmp_path),  # no .dlt/ there
            "DLT_DATA_DIR": str(tmp_path / "dlt_data"),
            "SOURCES__MEWS__PLATFORM_URL": url,
            "SOURCES__MEWS__CLIENT_TOKEN": sandbox.client_token,
            "SOURCES__MEWS__START_DATE": START_DATE,
            "SOURCES__MEWS__RATE_LIMIT_REQUESTS": "0",
            "DESTINATION__DUCKDB__CREDENTIALS": str(tmp_path / "mews_sync.duckdb"),
            "AIRFLOW_VAR_DLT_SECRETS_TOML": token,  # the AccessToken only there
        }
        run = [mews_sync, "run"]
        off = subprocess.run(run, env=env, cwd=tmp_path, capture_output=True, text=True)
        on = subprocess.run(
            run,
            env={**env, "PROVIDERS__ENABLE_AIRFLOW_SECRETS": "true"},
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )

    assert off.returncode == 2
    assert "SOURCES__MEWS__ACCESS_TOKEN" in one_sentence(off.stderr)
    assert on.returncode == 0, on.stderr[-3000:]
    assert "product_service_orders 50" in on.stdout
