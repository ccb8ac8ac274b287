"""The notes refresh: whatever Mews does with an order's UpdatedUtc when its notes change, every
order's notes are re-read at least once every SOURCES__MEWS__NOTES_REFRESH_DAYS."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from harness import Target, assert_equals_truth, lagging_sandbox, notes_by_order, truth_notes

from pipelines.status import status_screen
from pipelines.storage import DuckDbStorage
from sources.mews import parse_utc
from sources.mews.refresh import plan_refresh

START = datetime(2015, 1, 1, tzinfo=UTC)


def parse(value: str) -> datetime:
    return parse_utc(value, "state")


@pytest.mark.parametrize(
    ("every", "step"),
    [(timedelta(days=7), timedelta(days=1)), (timedelta(days=1), timedelta(hours=1))],
)
def test_a_schedule_sweeps_the_whole_history_within_the_refresh_period(every, step):
    progress: dict = {}
    first = datetime(2026, 6, 1, tzinfo=UTC)
    assert plan_refresh(progress, START, first, first, every, parse) == []  # the first run
    covered: list[tuple[datetime, datetime]] = []
    now = first
    while now < first + every:
        now += step
        horizon = now - timedelta(minutes=5)  # where the incremental windows begin
        ranges = plan_refresh(progress, START, horizon, now, every, parse)
        progress["todo"] = []  # the run re-read them
        covered += ranges
    # Everything loaded by the first run is re-read within the period (what came later was
    # read by the incremental windows of the runs since).
    covered.sort()
    reach = START
    for begin, end in covered:
        assert begin <= reach, "a gap in the sweep"
        reach = max(reach, end)
    assert reach >= first - timedelta(minutes=5)


def test_an_unfinished_refresh_range_is_read_by_the_next_run_first():
    progress: dict = {}
    day = datetime(2026, 6, 1, tzinfo=UTC)
    plan_refresh(progress, START, day, day, timedelta(days=7), parse)
    planned = plan_refresh(progress, START, day, day + timedelta(days=1), timedelta(days=7), parse)
    # A run stopped (after a step) before re-reading them: they come first next time.
    again = plan_refresh(progress, START, day, day + timedelta(days=2), timedelta(days=7), parse)
    assert again[: len(planned)] == planned
    assert again[len(planned)][0] == planned[-1][1]


def changed_notes_without_bumping(sandbox):
    """Add, edit and delete notes, the order's UpdatedUtc left alone (the undocumented case)."""
    by_order = notes_by_order(sandbox)
    several = sorted(o for o, ids in by_order.items() if len(ids) >= 2)
    sandbox.add_note(several[0], "Allergic to nuts")
    sandbox.update_note(by_order[several[1]][0], "Edited by reception")
    sandbox.delete_note(by_order[several[2]][0])
    for note_id in by_order[several[3]]:
        sandbox.delete_note(note_id)


@pytest.mark.parametrize(
    ("days", "runs", "step"),
    # A whole period each: 3 nightly runs of a 3-day refresh, 3 runs 2 hours apart of 6 hours.
    [(3, 3, timedelta(days=1)), (0.25, 3, timedelta(hours=2))],
    ids=["nightly", "several-a-day"],
)
def test_notes_changed_without_bumping_their_order_are_loaded_within_the_period(
    tmp_path, days, runs, step
):
    sandbox = lagging_sandbox(orders=800, seed=31)
    sandbox.config.notes_bump_order = False
    target = Target(sandbox, tmp_path / "refreshed", notes_refresh_days=days)
    control = Target(sandbox, tmp_path / "not-refreshed", notes_refresh_days=0)
    now = datetime.now(UTC).replace(microsecond=0)
    for t in (target, control):
        t.sync(end_date=now.isoformat())
    changed_notes_without_bumping(sandbox)

    reports = [target.sync(end_date=(now + step * k).isoformat()) for k in range(1, runs + 1)]
    control.sync(end_date=(now + step * runs).isoformat())

    assert_equals_truth(target)
    assert control.notes() != truth_notes(sandbox)  # without the refresh they stay stale
    refreshed = [r.read.refreshed_orders for r in reports]
    assert sum(refreshed) >= len(target.orders())  # every order once, over the period
    assert max(refreshed) < len(target.orders())  # spread over the runs, not all at once
    assert f"notes refresh (every {days:g} days): re-read" in reports[-1].summary()
    assert re.search(r"about (1 request|\d+ requests) a day", reports[-1].summary())
    screen, _ = status_screen(DuckDbStorage.at(target.database))
    assert f"at least every {days:g} days" in screen
    assert re.search(r"about (1 extra request|\d+ extra requests) a day", screen)
