"""Which UpdatedUtc windows a resource reads in a run, and what its state says once it has
read them: pure functions of the state, the settings and the run's end, testable without
HTTP.

Orders and order items walk the same way, each from watermarks of its own (per service) in
its resource's state: from a little before each service's watermark (`overlap`), or from the
start date for a service never synced, up to the run's end; or, in a backfill, the backfill's
range from where an earlier step of it stopped. The orders add the notes refresh's windows
(see `refresh.py`). A watermark (or a backfill's progress) moves only to the end of a window
read whole: pages inside a window come in an undocumented order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pendulum

from .client import MewsConfigError, format_utc
from .settings import MAX_WINDOW_MONTHS

Window = tuple[datetime, datetime]  # [start, end) of UpdatedUtc


@dataclass(frozen=True)
class Planned:
    """One window to read, of some services, and why: `incremental` moves their watermarks,
    `backfill` the backfill's progress, `refresh` the notes refresh's."""

    services: list[str]
    window: Window
    kind: Literal["incremental", "backfill", "refresh"] = "incremental"


def windows_to_read(
    state: dict[str, Any],
    service_ids: list[str],
    start: datetime,
    end: datetime,
    overlap: timedelta,
    backfill: Window | None = None,
    run_id: str = "",
    read_until: datetime | None = None,
) -> list[Planned]:
    """The windows a resource reads this run (before the notes refresh's), and its state
    made ready to record them (`mark_read`). `run_id` tells the steps of one run (of a
    backfill) from another run. The windows read up to `read_until` (default `end`; the
    source passes the end of Mews' current second), which may pass `end`: the watermarks
    still move to `end` at most. A backfill reads to its own end if that comes first."""
    until = read_until or end
    if backfill:
        begin = backfill_begin(state, backfill, run_id)
        if begin is None:
            return []
        return [
            Planned(service_ids, w, "backfill")
            for w in walk_windows(begin, min(backfill[1], until))
        ]
    watermarks = state.setdefault("watermarks", {})
    groups = group_by_start(service_ids, watermarks, start, overlap)
    return [Planned(group, w) for g, group in groups.items() for w in walk_windows(g, until)]


def mark_read(state: dict[str, Any], planned: Planned, end: datetime | None = None) -> None:
    """Record that `planned` was read whole: its services' watermarks, or the backfill's
    progress, move to its end, or to the run's `end` if the window passed it (the notes
    refresh records its own, `refresh.done_up_to`)."""
    moment = format_utc(min(planned.window[1], end) if end else planned.window[1])
    if planned.kind == "backfill":
        state["backfill"]["done_to"] = moment
    elif planned.kind == "incremental":
        for service_id in planned.services:
            state["watermarks"][service_id] = moment


def mark_step_over(state: dict[str, Any], backfill: bool) -> None:
    """A step ended before the plan did: the state says there is more (`pending_work`), so
    the next step goes on from there (a backfill's own progress says so)."""
    if not backfill:
        state["pending"] = True


def mark_finished(
    state: dict[str, Any],
    service_ids: list[str],
    end: datetime,
    backfill: bool,
    run_id: str = "",
) -> None:
    """Record a plan read to its end. A backfill notes the run it finished in, so that the
    steps another resource still needs in the same run do not read its range again; else
    every service is covered up to `end`, also those whose windows were all empty."""
    state.pop("pending", None)
    if backfill:
        state["backfill"] = {"done_in_run": run_id}
    else:
        for service_id in service_ids:
            state["watermarks"][service_id] = format_utc(end)


def leave_as_found(
    state: dict[str, Any], found: dict[str, Any], read: bool, backfill: bool
) -> None:
    """A resource that read its plan to the end and read nothing leaves its state as it
    `found` it (a deep copy made before planning): its watermarks stay where they were and
    the next run reads from there, which is exact. An unchanged state is not loaded, so a
    run that finds nothing new loads nothing, and the DuckDB file stays as it was. Not so
    for a backfill, whose progress is its own, nor after a step that stopped early
    (`pending`), whose next step must know it has finished."""
    if read or backfill or found.get("pending"):
        return
    state.clear()
    state.update(found)


def backfill_begin(state: dict[str, Any], backfill: Window, run_id: str) -> datetime | None:
    """Where a resource's backfill goes on: where a step (or a killed run) of the same range
    stopped, or its start; None when an earlier step of this run (`run_id`) finished it, so
    that the steps another resource (orders, items) still needs do not read it again. Not
    the run's end: two runs can end in the same second of Mews' clock, and the second then
    read nothing (CI once failed so)."""
    progress = state.get("backfill") or {}
    if run_id and progress.get("done_in_run") == run_id:
        return None
    wanted = [format_utc(backfill[0]), format_utc(backfill[1])]
    begin = (
        parse_state_time(progress["done_to"])
        if progress.get("range") == wanted and progress.get("done_to")
        else backfill[0]
    )
    state["backfill"] = {"range": wanted, "done_to": format_utc(begin)}
    return begin


def walk_windows(start: datetime, end: datetime) -> Iterator[Window]:
    """Consecutive [start, end) windows of at most MAX_WINDOW_MONTHS calendar months."""
    while start < end:
        stop = min(pendulum.instance(start).add(months=MAX_WINDOW_MONTHS), end)
        yield start, stop
        start = stop


def group_by_start(
    service_ids: list[str], watermarks: dict[str, str], start: datetime, overlap: timedelta
) -> dict[datetime, list[str]]:
    """Services grouped by where their sync starts: a little before their watermark, or at
    `start` for a service never synced (so a newly discovered service gets its history)."""
    groups: dict[datetime, list[str]] = {}
    for service_id in service_ids:
        mark = watermarks.get(service_id)
        begin = max(start, parse_state_time(mark) - overlap) if mark else start
        groups.setdefault(begin, []).append(service_id)
    return dict(sorted(groups.items()))


def window_work(window: Window, span: Window) -> float:
    """A window's share of a run's work, for the progress bar: its length, each moment
    weighted by how recent it is in `span` (0 at its start, 1 at its end), since most orders
    sit in recent windows: the newest quarter of a history counts for 44 % of the bar. The
    windows of a span add up to 1."""
    whole = (span[1] - span[0]).total_seconds()
    if whole <= 0:
        return 1.0
    begin, end = ((moment - span[0]).total_seconds() / whole for moment in window)
    return max(0.0, end * end - begin * begin)


def parse_state_time(value: str) -> datetime:
    """A time the state keeps (ISO 8601 UTC, as `format_utc` writes it)."""
    return parse_utc(value, "state")


def parse_utc(value: str | datetime | None, name: str) -> datetime:
    """An aware UTC datetime from ISO 8601 text (a date alone means midnight UTC); a
    configuration error naming the setting `name` otherwise."""
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise MewsConfigError(
                f"{name} {value!r} is not a date: use ISO 8601, e.g. 2024-01-31 or "
                "2024-01-31T00:00:00Z."
            ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
