"""`python tests/kill_at.py STEP NTH SIGNAL mews-sync-args...`: the `mews-sync` command, sent
SIGNAL (KILL or TERM, for real, by itself) when dlt begins its NTH `normalize` or `load` step,
or (`load-job`) once NTH jobs of a load completed (their rows are in the destination, the load
is not), or (`state-job`) once the job writing the state ran, before dlt noted it: for the
tests of what the next run makes of a load a killed run left behind, at a moment a timer
could not hit."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from dlt.common.destination.client import RunnableLoadJob
from dlt.load.load import Load
from dlt.pipeline.pipeline import Pipeline

from pipelines.cli import main

STOP = signal.SIGKILL


def kill() -> None:
    os.kill(os.getpid(), STOP)


def killed_at_call(method: Callable[..., Any], nth: int) -> Callable[..., Any]:
    calls = 0

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == nth:
            kill()
        return method(*args, **kwargs)

    return wrapped


def killed_after_jobs(complete_jobs: Callable[..., Any], nth: int) -> Callable[..., Any]:
    completed = 0

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        nonlocal completed
        running, finalized, error = complete_jobs(*args, **kwargs)
        completed += len(finalized)
        if completed >= nth:
            kill()
        return running, finalized, error

    return wrapped


def killed_after_state_job(release: Callable[..., Any]) -> Callable[..., Any]:
    """`RunnableLoadJob._release`, called once a job ran, before dlt notes that it did."""

    def wrapped(job: RunnableLoadJob, *args: Any) -> None:
        if job.job_id().startswith("_dlt_pipeline_state."):
            kill()
        release(job, *args)

    return wrapped


if __name__ == "__main__":
    step, nth, name, *args = sys.argv[1:]
    STOP = signal.Signals[f"SIG{name}"]
    if step == "state-job":
        RunnableLoadJob._release = killed_after_state_job(RunnableLoadJob._release)
    elif step == "load-job":
        Load.complete_jobs = killed_after_jobs(Load.complete_jobs, int(nth))
    else:
        setattr(Pipeline, step, killed_at_call(getattr(Pipeline, step), int(nth)))
    sys.exit(main(args))
