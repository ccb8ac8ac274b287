"""The notes refresh: every order's notes re-read at least once every N days, whatever Mews does.

Mews does not document whether adding, editing or deleting a note bumps its order's
`UpdatedUtc`. If it does not, the incremental sync never sees such a change. So each run also
re-reads a slice of the history it has already loaded, orders and with them all their notes
(which also finds deleted notes), sweeping the UpdatedUtc timeline from the start date up to
where the incremental windows begin. The slice is the share of N days that passed since the
last run, so hourly and nightly schedules both finish a sweep within N days. An order that
changes meanwhile moves into the incremental windows and is read there.

The notes API cannot list by time alone: it needs order ids, which only an orders read gives.
Reading the orders costs one request per 1000 orders besides the notes' own (1 + their pages).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .client import format_utc

Range = tuple[datetime, datetime]


def plan_refresh(
    progress: dict[str, Any],
    start: datetime,
    horizon: datetime,
    end: datetime,
    every: timedelta,
    parse: Any,
) -> list[Range]:
    """The UpdatedUtc ranges this run re-reads, and `progress` (the state) moved past them.

    `horizon` is where this run's incremental windows begin: everything after it is read
    anyway. Ranges a run planned but did not finish (it stopped after a step) stay in
    `progress["todo"]` and come first. The first run only starts the clock: it read
    everything.
    """
    todo = [(parse(a), parse(b)) for a, b in progress.get("todo", [])]
    last = progress.get("last_run")
    progress["last_run"] = format_utc(end)
    progress.setdefault("position", format_utc(start))
    progress.setdefault("cycle_started", format_utc(end))
    if every <= timedelta(0) or horizon <= start or last is None:
        return todo
    share = min(1.0, max(0.0, (end - parse(last)) / every))
    advance = (horizon - start) * share
    position = min(max(parse(progress.get("position") or format_utc(start)), start), horizon)
    reach = position + advance
    if reach < horizon:
        todo.append((position, reach))
    else:  # the sweep reaches the horizon: a new cycle starts from the start date
        if position < horizon:
            todo.append((position, horizon))
        reach = start + (reach - horizon)
        progress["cycle_started"] = format_utc(end)
        if reach > start:
            todo.append((start, reach))
    progress["position"] = format_utc(reach)
    progress["todo"] = [[format_utc(a), format_utc(b)] for a, b in todo if b > a]
    return [(a, b) for a, b in todo if b > a]


def done_up_to(progress: dict[str, Any], moment: datetime, parse: Any) -> None:
    """Record that the first range still to do is re-read up to `moment`."""
    todo = progress.get("todo") or []
    if not todo:
        return
    if parse(todo[0][1]) <= moment:
        todo.pop(0)
    else:
        todo[0][0] = format_utc(moment)


def sweep_share(progress: dict[str, Any], start: datetime, horizon: datetime, parse: Any) -> float:
    """How far this cycle's sweep has come, 0..1 of the history, for people."""
    if not progress.get("position") or horizon <= start:
        return 0.0
    return min(1.0, max(0.0, (parse(progress["position"]) - start) / (horizon - start)))
