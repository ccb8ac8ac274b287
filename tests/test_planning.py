"""The planner: which windows a resource reads and what its state says after, without HTTP."""

from copy import deepcopy
from datetime import UTC, datetime, timedelta

from sources.mews.planning import (
    Planned,
    leave_as_found,
    mark_finished,
    mark_read,
    mark_step_over,
    windows_to_read,
)

START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2024, 12, 1, tzinfo=UTC)
FIVE_MINUTES = timedelta(minutes=5)


def test_a_first_run_reads_from_the_start_in_windows_of_three_months():
    state: dict = {}
    plan = windows_to_read(state, ["a", "b"], START, END, FIVE_MINUTES)
    assert [p.window[0].month for p in plan] == [1, 4, 7, 10]
    assert plan[-1].window[1] == END
    assert {tuple(p.services) for p in plan} == {("a", "b")}
    assert all(p.kind == "incremental" for p in plan)


def test_each_service_goes_on_a_little_before_its_own_watermark():
    state = {"watermarks": {"a": "2024-11-01T00:00:00Z"}}
    plan = windows_to_read(state, ["a", "b"], START, END, FIVE_MINUTES)
    first = {}
    for planned in plan:
        first.setdefault(tuple(planned.services), planned.window[0])
    assert first == {("a",): datetime(2024, 10, 31, 23, 55, tzinfo=UTC), ("b",): START}
    assert plan[0] == Planned(["b"], (START, datetime(2024, 4, 1, tzinfo=UTC)))


def test_watermarks_move_only_to_the_end_of_a_window_read_and_to_the_end_when_finished():
    state: dict = {}
    plan = windows_to_read(state, ["a", "b"], START, END, FIVE_MINUTES)
    mark_read(state, plan[0])
    assert state["watermarks"] == {"a": "2024-04-01T00:00:00Z", "b": "2024-04-01T00:00:00Z"}
    mark_step_over(state, backfill=False)
    assert state["pending"] is True
    mark_finished(state, ["a", "b", "c"], END, backfill=False)
    assert "pending" not in state
    assert set(state["watermarks"].values()) == {"2024-12-01T00:00:00Z"}


def finished(found: dict, read: bool, backfill: bool = False) -> dict:
    """The state a resource leaves after reading its whole plan, `read` rows or none."""
    state = deepcopy(found)
    for planned in windows_to_read(state, ["a", "b"], START, END, FIVE_MINUTES):
        mark_read(state, planned)
    mark_finished(state, ["a", "b"], END, backfill)
    leave_as_found(state, found, read, backfill)
    return state


def test_a_resource_that_read_nothing_leaves_its_state_as_it_found_it():
    """Its watermarks stay, so the next run reads from there (exact), and an unchanged
    state is not loaded again: a run that finds nothing new loads nothing."""
    found = {"watermarks": {"a": "2024-11-01T00:00:00Z"}, "notes_refresh": {"position": "x"}}
    assert finished(found, read=False) == found
    assert finished({}, read=False) == {}  # an account without orders yet: from the start


def test_a_resource_that_read_something_or_ended_a_step_or_a_backfill_records_it():
    found = {"watermarks": {"a": "2024-11-01T00:00:00Z"}}
    marks = {"a": "2024-12-01T00:00:00Z", "b": "2024-12-01T00:00:00Z"}
    assert finished(found, read=True)["watermarks"] == marks
    # The step before stopped early: this one says the plan is done, though it read nothing.
    assert finished({**found, "pending": True}, read=False) == {"watermarks": marks}
    after_backfill = finished(found, read=False, backfill=True)
    assert after_backfill["backfill"] == {"done_in_run": ""}


def test_a_backfill_in_steps_goes_on_where_it_stopped_and_leaves_the_watermarks_alone():
    state = {"watermarks": {"a": "2024-11-01T00:00:00Z"}}
    backfill = (datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 9, 1, tzinfo=UTC))
    plan = windows_to_read(state, ["a"], START, END, FIVE_MINUTES, backfill, run_id="r1")
    assert plan[0].window[0] == backfill[0] and plan[-1].window[1] == backfill[1]
    mark_read(state, plan[0])
    mark_step_over(state, backfill=True)
    assert "pending" not in state  # a backfill's progress says so itself
    again = windows_to_read(state, ["a"], START, END, FIVE_MINUTES, backfill, run_id="r1")
    assert again[0].window[0] == plan[0].window[1]
    mark_finished(state, ["a"], END, backfill=True, run_id="r1")
    assert windows_to_read(state, ["a"], START, END, FIVE_MINUTES, backfill, run_id="r1") == []
    assert state["watermarks"] == {"a": "2024-11-01T00:00:00Z"}


def test_a_backfill_run_again_reads_its_range_again_even_ending_in_the_same_second():
    """Only the steps of the run that finished a backfill skip it: another run, though it
    ends at the same moment of Mews' clock, reads the whole range."""
    backfill = (datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 9, 1, tzinfo=UTC))
    state: dict = {}
    windows_to_read(state, ["a"], START, END, FIVE_MINUTES, backfill, run_id="r1")
    mark_finished(state, ["a"], END, backfill=True, run_id="r1")
    plan = windows_to_read(state, ["a"], START, END, FIVE_MINUTES, backfill, run_id="r2")
    assert plan[0].window[0] == backfill[0] and plan[-1].window[1] == backfill[1]


def test_a_backfill_ending_in_the_future_reads_up_to_now():
    now = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
    backfill = (datetime(2024, 5, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    plan = windows_to_read(
        {}, ["a"], START, now, FIVE_MINUTES, backfill, read_until=now + timedelta(seconds=1)
    )
    assert plan[-1].window[1] == now + timedelta(seconds=1)
