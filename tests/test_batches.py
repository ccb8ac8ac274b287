"""Tables of orders cut for the notes' requests, and what that saves in requests."""

from __future__ import annotations

import pyarrow as pa
from harness import Target, assert_equals_truth, lagging_sandbox

from sources.mews.batches import WholeBatches

NOTES = "serviceOrderNotes/getAll"


def ids(start: int, stop: int) -> pa.Table:
    return pa.table({"id": [str(i) for i in range(start, stop)]})


def test_batches_are_whole_units_and_the_rest_comes_at_the_end_in_order():
    batches = WholeBatches(rows=25, unit=10)
    out = [*batches.add(ids(0, 12)), *batches.add(ids(12, 20))]
    assert out == []  # under 25 rows: held
    out += batches.add(ids(20, 33))  # 33 held: 30 go, 3 stay
    out += batches.add(ids(33, 40))
    out += batches.rest()
    assert [t.num_rows for t in out] == [30, 10]
    assert pa.concat_tables(out).column("id").to_pylist() == [str(i) for i in range(40)]
    assert list(batches.rest()) == []  # nothing held twice


def test_a_window_s_last_orders_share_a_notes_request_with_the_next_window_s(tmp_path):
    sandbox = lagging_sandbox(orders=6000, seed=3)
    target = Target(sandbox, tmp_path)
    target.sync()
    assert_equals_truth(target)
    sizes = [len(e.body["ServiceOrderIds"]) for e in sandbox.log.entries if e.operation == NOTES]
    # Each walk of notes but the last asks for whole thousands of orders (6,000 orders over
    # some 20 windows of 3 months: a walk per window would ask for a few hundred each).
    first_requests = [s for s in sizes if s < 1000]
    assert len(first_requests) <= 1, sizes
