"""End-to-end: the pipeline against the in-process sandbox, compared with the sandbox's truth."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from harness import (
    START_DATE,
    Target,
    assert_equals_truth,
    assert_items_equal_truth,
    change_orders_and_notes,
    lagging_sandbox,
    product_service_ids,
    truth_orders,
)

from mews_sandbox import Sandbox, SandboxConfig, SandboxTransport
from mews_sandbox.app import default_anchor
from pipelines import mews_pipeline
from sources.mews.arrow_pages import ArrowPageReader

ORDERS = "productServiceOrders/getAll"
NOTES = "serviceOrderNotes/getAll"


@pytest.fixture
def sandbox() -> Sandbox:
    return lagging_sandbox(orders=3000, seed=11)


def watermarks(target: Target) -> dict[str, str]:
    state = target.state()
    return state["sources"]["mews"]["resources"]["product_service_orders"]["watermarks"]


def test_first_sync_equals_the_truth_and_names_the_services(sandbox, tmp_path, postgres):
    target = Target(sandbox, tmp_path, postgres)
    report = target.sync()

    assert_equals_truth(target)
    services = target.rows("select id, discriminator from mews.services")
    assert {s for s, _ in services} == product_service_ids(sandbox)
    assert {d for _, d in services} == {"Additional"}
    assert report.read.orders == report.table_rows["product_service_orders"]
    assert report.stats.requests[NOTES] >= 1


def test_a_rerun_after_changes_equals_the_truth_with_far_fewer_requests(
    sandbox, tmp_path, postgres
):
    target = Target(sandbox, tmp_path, postgres)
    target.sync()
    first_run_requests = sandbox.log.count()
    sandbox.log.clear()

    orders = sorted(truth_orders(sandbox))
    with_notes: dict[str, list[str]] = {}
    for note in sandbox.notes(types=["General", "ChannelManager", "SpecialRequest"]):
        order_id = note.get("ServiceOrderId") or note.get("OrderId")
        with_notes.setdefault(order_id, []).append(note["Id"])
    noted = sorted(o for o, ids in with_notes.items() if len(ids) >= 2 and len(ids) < 50)
    sandbox.update_order(orders[0][0], State="Canceled")
    sandbox.add_order(orders[1][1])
    sandbox.add_note(orders[2][0], "Late checkout, please")
    sandbox.update_note(with_notes[noted[0]][0], "Edited text")
    sandbox.delete_note(with_notes[noted[1]][0])
    for note_id in with_notes[noted[2]]:  # an order whose notes are all deleted
        sandbox.delete_note(note_id)

    target.sync()

    assert_equals_truth(target)
    assert sandbox.log.count() * 5 < first_run_requests
    assert sandbox.log.count(operation=NOTES) >= 1


def test_a_rerun_without_changes_changes_nothing_and_reads_one_page(sandbox, tmp_path, postgres):
    target = Target(sandbox, tmp_path, postgres, notes_refresh_days=0)  # refresh: tested apart
    target.sync()
    orders, notes = target.orders(), target.notes()
    sandbox.log.clear()

    report = target.sync()

    assert (target.orders(), target.notes()) == (orders, notes)
    assert report.read.windows == 1  # one window since the watermark
    assert report.stats.requests[ORDERS] <= 2  # its page, and the empty one that ends it
    recent = [o for o in truth_orders(sandbox) if o[4] > datetime.now(UTC) - timedelta(minutes=10)]
    if not recent:  # only orders inside the overlap would be re-read
        assert report.stats.requests[NOTES] == 0


def test_backfill_reloads_the_range_and_leaves_the_state_alone(sandbox, tmp_path, postgres):
    target = Target(sandbox, tmp_path, postgres)
    target.sync()
    before = watermarks(target)
    order_id, _, _, _, updated = truth_orders(sandbox)[len(truth_orders(sandbox)) // 2]
    # A change the incremental run cannot see: UpdatedUtc stays where it was.
    sandbox.update_order(order_id, at=updated, State="Processed")

    target.sync(
        "backfill",
        backfill_start=(updated - timedelta(days=1)).isoformat(),
        backfill_end=(updated + timedelta(days=1)).isoformat(),
    )

    assert target.rows(
        f"select state from mews.product_service_orders where id = '{order_id}'"
    ) == [("Processed",)]
    assert watermarks(target) == before
    assert_equals_truth(target)


def test_state_is_restored_from_duckdb_when_the_working_directory_is_gone(sandbox, tmp_path):
    target = Target(sandbox, tmp_path, notes_refresh_days=0)
    target.sync()
    shutil.rmtree(target.workdir)
    order_id = truth_orders(sandbox)[0][0]
    sandbox.update_order(order_id, State="Canceled")
    sandbox.log.clear()

    report = target.sync()

    assert report.read.windows == 1  # still incremental
    assert_equals_truth(target)


@pytest.mark.parametrize("semantics", ["half_open", "inclusive"])
def test_ties_at_window_edges_load_once_under_both_interval_semantics(sandbox, tmp_path, semantics):
    sandbox.config.interval_semantics = semantics
    updated = [o[4] for o in truth_orders(sandbox)]
    edges = sorted(
        {
            u
            for u in updated
            if u.day == 1 and u.month in (1, 4, 7, 10) and u.time() == datetime.min.time()
        }
    )
    tied = [e for e in edges if updated.count(e) > 1]
    assert tied, "the sandbox should generate ties at quarter boundaries"
    target = Target(sandbox, tmp_path)

    # The first run ends exactly on a tie; the next one starts just before it.
    target.sync(end_date=tied[-1].isoformat())
    target.sync()

    assert_equals_truth(target)


def test_a_late_commit_inside_the_overlap_is_not_lost(sandbox, tmp_path):
    target = Target(sandbox, tmp_path)
    first_end = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    target.sync(end_date=first_end.isoformat())
    order_id = truth_orders(sandbox)[0][0]
    # Committed after the first run, but stamped 2 minutes before its end.
    sandbox.update_order(order_id, at=first_end - timedelta(minutes=2), State="Optional")

    target.sync()

    assert target.rows(
        f"select state from mews.product_service_orders where id = '{order_id}'"
    ) == [("Optional",)]
    assert_equals_truth(target)


def test_discovery_reads_legacy_service_types_too(sandbox, tmp_path):
    sandbox.config.service_shape = "legacy"
    target = Target(sandbox, tmp_path)
    target.sync()
    assert_equals_truth(target)
    assert {d for (d,) in target.rows("select discriminator from mews.services")} == {"Additional"}


def test_configured_services_only_and_a_new_one_gets_its_whole_history(sandbox, tmp_path):
    first, second, *_ = sorted(product_service_ids(sandbox))
    target = Target(sandbox, tmp_path)
    target.sync(service_ids=[first])
    assert {
        s for (s,) in target.rows("select distinct service_id from mews.product_service_orders")
    } == {first}

    target.sync(service_ids=[first, second])

    loaded = [o for o in target.orders() if o[1] in (first, second)]
    assert loaded == truth_orders(sandbox, {first, second})


def test_notes_named_order_id_with_updated_utc_load_the_same(sandbox, tmp_path):
    sandbox.config.note_shape = "current"
    target = Target(sandbox, tmp_path)
    target.sync()
    assert_equals_truth(target)
    assert target.rows("select count(updated_utc) from mews.service_order_notes")[0][0] > 0


def test_new_fields_and_unknown_enum_values_load(sandbox, tmp_path):
    order_id = truth_orders(sandbox)[0][0]
    sandbox.update_order(order_id, State="Waitlisted", LoyaltyTier="Gold")
    target = Target(sandbox, tmp_path)
    target.sync()
    assert target.rows(
        f"select state, loyalty_tier from mews.product_service_orders where id = '{order_id}'"
    ) == [("Waitlisted", "Gold")]
    assert_equals_truth(target)


@pytest.mark.parametrize("overlap_minutes", [5, 0])
def test_changes_made_in_the_second_a_run_starts_are_in_that_run(
    tmp_path, postgres, overlap_minutes
):
    """Mews' Date header has whole seconds, so a run's end is the start of the second it
    began in; a change stamped later in that second (a script's change, then its sync at
    once) used to wait for the next run. Mews' clock stands still at 12:00:00.5 here: both
    runs end at 12:00:00, the changes (orders, notes, order items) are stamped 12:00:00.5,
    and the second run has them, with no overlap too."""
    moment = datetime(2026, 6, 1, 12, 0, 0, 500_000, tzinfo=UTC)
    sandbox = Sandbox.generate(orders=800, seed=29, now=datetime(2026, 6, 1, 11, tzinfo=UTC))
    sandbox.clock = lambda: moment
    target = Target(sandbox, tmp_path, postgres, overlap_minutes=overlap_minutes)
    first = target.sync()
    change_orders_and_notes(sandbox)
    items = sandbox.order_items()
    sandbox.cancel_item(next(i["Id"] for i in items if i["AccountingState"] == "Open"))
    closed = [i for i in items if i["AccountingState"] == "Closed" and i["Type"] == "ProductOrder"]
    sandbox.rebate_item(closed[0]["Id"])
    second = target.sync()
    assert first.read.end == second.read.end == moment.replace(microsecond=0)
    assert_equals_truth(target)
    assert_items_equal_truth(target)
    assert set(watermarks(target).values()) == {"2026-06-01T12:00:00Z"}


def test_a_run_that_finds_nothing_new_loads_nothing_and_the_next_change_is_read(
    tmp_path, postgres
):
    """An hour on, Mews holds nothing new: the run makes its requests, then loads nothing (no
    load, no new state, the watermarks stay), and for DuckDB leaves the file and the analysts'
    copy as they were. The changes made after it are all in the next run, as usual."""
    clock = [datetime(2026, 6, 1, 12, tzinfo=UTC)]
    sandbox = Sandbox.generate(orders=600, seed=31, now=datetime(2026, 6, 1, 11, tzinfo=UTC))
    sandbox.clock = lambda: clock[0]
    target = Target(sandbox, tmp_path, postgres, notes_refresh_days=0)
    target.sync()
    loads, marks = target.rows("select count(*) from mews._dlt_loads"), watermarks(target)
    storage = target.storage()
    files = None if postgres else [Path(target.database), storage.analytics_path]
    before = [(f.stat().st_ino, f.read_bytes()) for f in files or []]

    clock[0] += timedelta(hours=1)
    requests = len(sandbox.log.entries)
    quiet = target.sync()

    assert len(sandbox.log.entries) > requests  # Mews was asked
    assert (quiet.read.orders, quiet.read.notes, quiet.read.items) == (0, 0, 0)
    assert target.rows("select count(*) from mews._dlt_loads") == loads
    assert watermarks(target) == marks
    assert quiet.table_rows["product_service_orders"] == len(truth_orders(sandbox))
    if files:
        assert [(f.stat().st_ino, f.read_bytes()) for f in files] == before
        assert quiet.published.endswith("unchanged (nothing new was loaded)")

    change_orders_and_notes(sandbox)
    clock[0] += timedelta(hours=1)
    changed = target.sync()
    assert_equals_truth(target)
    assert set(watermarks(target).values()) == {"2026-06-01T14:00:00Z"}
    if files:
        assert changed.published == str(storage.analytics_path)
        with duckdb.connect(str(storage.analytics_path), read_only=True) as copy:
            rows = copy.execute("select id, state from mews.product_service_orders").fetchall()
        assert sorted(rows) == sorted((o[0], o[2]) for o in truth_orders(sandbox))


def test_a_sandbox_made_in_an_hours_first_second_is_read_whole_by_a_sync_then(tmp_path):
    """CI once failed so: data generated at 21:00:00.x was stamped up to 21:00:00, the second
    a sync started then ends at and leaves to the next run. The default `now` is the hour that
    began at least 2 s earlier, so a test's first sync reads everything its sandbox holds."""
    moment = datetime(2026, 12, 3, 21, 0, 0, 500_000, tzinfo=UTC)
    sandbox = Sandbox.generate(orders=1500, seed=23, now=default_anchor(moment))
    sandbox.clock = lambda: moment
    assert max(o["UpdatedUtc"] for o in sandbox.orders()) == "2026-12-03T20:00:00Z"
    target = Target(sandbox, tmp_path)
    target.sync()
    assert_equals_truth(target)


def test_fields_the_pipeline_does_not_know_arrive_as_columns_equal_to_the_api(
    tmp_path, postgres
):
    """The heavier data shape: three order fields and one note field outside the known
    columns, on every page; each is a column, typed as its values, equal to what Mews sent."""
    sandbox = Sandbox.generate(orders=1500, seed=23, config=SandboxConfig(heavier_data=True))
    target = Target(sandbox, tmp_path, postgres=postgres)
    target.sync(page_size=200)
    assert_equals_truth(target)
    orders = target.rows(
        "select id, external_identifier, consumed_utc, quantity from mews.product_service_orders"
    )
    assert sorted(orders) == sorted(
        (o["Id"], o["ExternalIdentifier"], o["ConsumedUtc"], o["Quantity"])
        for o in sandbox.orders()
        if o["ServiceId"] in product_service_ids(sandbox)
    )
    assert any(consumed for _, _, consumed, _ in orders)  # ISO texts, kept as Mews sent them
    notes = target.rows("select id, is_private from mews.service_order_notes")
    expected = {n["Id"]: n["IsPrivate"] for n in sandbox.notes()}
    assert {note_id: private for note_id, private in notes} == {
        note_id: expected[note_id] for note_id, _ in notes
    }
    assert {private for _, private in notes} == {True, False}


def test_pages_with_and_without_a_new_field_load_together_all_decoded_by_arrow(
    sandbox, tmp_path, monkeypatch
):
    """A field the API added (text, an ISO time, an object) keeps its pages on the Arrow path;
    one sync holds pages with and without it, and the field arrives as columns."""
    order_id = truth_orders(sandbox)[0][0]
    sandbox.update_order(
        order_id, LoyaltyTier="Gold", ConsumedUtc="2026-01-03T00:00:00Z", Price={"Net": 9.5}
    )
    by_arrow: list[bool] = []
    read = ArrowPageReader.read

    def recording(self, body):
        page = read(self, body)
        by_arrow.append(page is not None)
        return page

    monkeypatch.setattr(ArrowPageReader, "read", recording)
    target = Target(sandbox, tmp_path)
    target.sync(page_size=50)
    assert by_arrow and all(by_arrow)
    assert target.rows(
        "select id, loyalty_tier, consumed_utc, price__net from mews.product_service_orders "
        "where loyalty_tier is not null"
    ) == [(order_id, "Gold", "2026-01-03T00:00:00Z", 9.5)]
    assert_equals_truth(target)


def test_timestamps_and_booleans_are_typed(sandbox, tmp_path):
    target = Target(sandbox, tmp_path)
    target.sync()
    types = dict(
        target.rows(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'mews' and table_name = 'product_service_orders'"
        )
    )
    for name in ("created_utc", "updated_utc", "cancelled_utc"):
        assert types[name].startswith("TIMESTAMP"), name
    for name in ("options__owner_checked_in", "options__connector_check_in"):
        assert types[name] == "BOOLEAN", name


def test_the_working_folder_keeps_no_load_files_once_loaded(sandbox, tmp_path, postgres):
    target = Target(sandbox, tmp_path, postgres)
    target.sync()
    sandbox.add_note(sorted(truth_orders(sandbox))[0][0], "Late checkout, please")
    target.sync()

    assert_equals_truth(target)
    assert target.workdir is not None
    loaded = list(target.workdir.glob("*/load/loaded/*"))
    assert len(loaded) >= 2  # the two runs' packages, each with its schema and state only
    assert not list(target.workdir.glob("*/load/loaded/*/*_jobs/*"))


def test_two_duckdb_files_on_one_machine_keep_their_own_state(tmp_path, monkeypatch):
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt_data"))
    hotels = [Sandbox.generate(orders=300, seed=seed) for seed in (21, 22)]
    targets = [Target(hotel, tmp_path / f"hotel{i}") for i, hotel in enumerate(hotels)]
    for target in targets:
        target.workdir = None  # the working directory dlt picks for the file
    for _ in range(2):  # alternate, so that one file's local state could leak into the other
        for target in targets:
            target.sync()
            assert_equals_truth(target)
    assert len(list((tmp_path / "dlt_data" / "mews_sync").iterdir())) == 2


def test_a_long_history_loads_in_steps_each_committed_with_its_state(sandbox, tmp_path, postgres):
    target = Target(sandbox, tmp_path, postgres, notes_refresh_days=0)
    target.sync(max_orders_per_load=500)

    assert_equals_truth(target)
    (loads,) = target.rows("select count(*) from mews._dlt_loads where status = 0")[0]
    assert loads >= len(truth_orders(sandbox)) // 1000  # several steps, not one load
    sandbox.log.clear()
    assert target.sync().read.windows == 1  # the steps left a complete state


def test_a_backfill_in_steps_still_leaves_the_state_alone(sandbox, tmp_path):
    target = Target(sandbox, tmp_path)
    target.sync()
    before = watermarks(target)
    for order in sandbox.orders()[::7]:  # changes only a backfill can see
        sandbox.update_order(
            order["Id"], at=datetime.fromisoformat(order["UpdatedUtc"]), State="Optional"
        )

    target.sync(
        "backfill",
        backfill_start=START_DATE,
        backfill_end=datetime.now(UTC).isoformat(),
        max_orders_per_load=400,
    )

    assert watermarks(target) == before
    assert_equals_truth(target)


class ChangingDuringTheSync(httpx.BaseTransport):
    """The sandbox's transport, changing the first order it returns right after returning it:
    the order then comes again in a later window of the same load."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox
        self.inner = SandboxTransport(sandbox)
        self.changed: str | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if self.changed is None and request.url.path.endswith(ORDERS):
            response.read()
            orders = response.json().get("ProductServiceOrders") or []
            if orders:
                self.changed = orders[0]["Id"]
                self.sandbox.update_order(self.changed, State="Processed")
        return response


def test_an_order_changed_during_the_sync_keeps_only_its_latest_version(
    sandbox, tmp_path, postgres
):
    target = Target(sandbox, tmp_path, postgres)
    transport = ChangingDuringTheSync(sandbox)

    target.sync(transport=transport)

    assert transport.changed is not None
    assert_equals_truth(target)
    assert target.rows(
        f"select state from mews.product_service_orders where id = '{transport.changed}'"
    ) == [("Processed",)]


def test_a_run_killed_between_its_load_and_the_clean_up_is_healed_by_the_next(
    sandbox, tmp_path, monkeypatch, postgres
):
    target = Target(sandbox, tmp_path, postgres, notes_refresh_days=0)
    target.sync()
    with_notes: dict[str, list[str]] = {}
    for note in sandbox.notes(types=["General", "ChannelManager", "SpecialRequest"]):
        with_notes.setdefault(note.get("ServiceOrderId") or note.get("OrderId"), []).append(
            note["Id"]
        )
    order_id = next(o for o, ids in with_notes.items() if len(ids) >= 2)
    sandbox.update_order(order_id, State="Processed")
    sandbox.delete_note(with_notes[order_id][0])

    clean_up = mews_pipeline.compact
    calls: list[str] = []

    def killed_after_the_load(client: Any, destination: str) -> Any:
        calls.append(destination)
        if len(calls) == 1:
            return clean_up(client, destination)  # the one before reading
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(mews_pipeline, "compact", killed_after_the_load)
        with pytest.raises(KeyboardInterrupt):
            target.sync()
        # The load landed and the clean-up did not: the order is there twice, the note still is.
        assert target.rows(
            f"select count(*) from mews.product_service_orders where id = '{order_id}'"
        ) == [(2,)]
    sandbox.log.clear()
    target.sync(overlap_minutes=0)

    assert sandbox.log.count(operation=NOTES) == 0
    assert_equals_truth(target)


def test_a_duckdb_load_takes_one_file_at_a_time_and_arrow_allocates_as_duckdb_does(
    sandbox, tmp_path, monkeypatch
):
    import dlt
    import pyarrow as pa

    workers: list[int] = []
    load = dlt.Pipeline.load

    def spy(self, *args, **kwargs):
        workers.append(kwargs.get("workers", 20))
        return load(self, *args, **kwargs)

    monkeypatch.setattr(dlt.Pipeline, "load", spy)
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    target = Target(sandbox, tmp_path, None)
    target.sync()

    assert_equals_truth(target)
    assert workers and set(workers) == {1}
    before = pa.system_memory_pool().bytes_allocated()
    array = pa.array(range(100_000))
    assert pa.system_memory_pool().bytes_allocated() >= before + array.nbytes


def test_arrow_keeps_the_memory_pool_an_operator_chose(monkeypatch):
    import pyarrow as pa

    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    mews_pipeline.share_freed_memory()
    before = pa.system_memory_pool().bytes_allocated()
    pa.array(range(100_000))
    assert pa.system_memory_pool().bytes_allocated() == before


# Arrow's own allocations (here the parquet and json readers') go to the pool Arrow chose as
# it was imported, whatever `pa.set_memory_pool` chose later: only the environment moves them.
ARROW_AT_WORK = """
import io, json, pipelines.mews_pipeline as m, pyarrow as pa, pyarrow.json as pj
import pyarrow.parquet as pq
m.share_freed_memory()
table = pa.table({"id": [str(i) for i in range(100_000)]})
file = io.BytesIO()
pq.write_table(table, file)
pq.read_table(io.BytesIO(file.getvalue()))
pj.read_json(io.BytesIO(b"\\n".join(b'{"a": %d}' % i for i in range(50_000))))
mimalloc = pa.mimalloc_memory_pool().max_memory()
print(json.dumps([pa.default_memory_pool().backend_name, mimalloc]))
"""


@pytest.mark.parametrize("chosen", [None, "mimalloc"])
def test_all_of_arrow_allocates_with_the_c_library_in_a_process_of_the_pipeline(chosen):
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if chosen:
        env["ARROW_DEFAULT_MEMORY_POOL"] = chosen
    done = subprocess.run(
        [sys.executable, "-c", ARROW_AT_WORK], env=env, capture_output=True, text=True, check=True
    )
    backend, in_mimalloc = json.loads(done.stdout)

    if chosen:
        assert backend == "mimalloc" and in_mimalloc > 0
    else:
        assert backend == "system" and in_mimalloc == 0


# Blocks malloc maps (mallinfo2's hblkhd) around `share_freed_memory`: a freed 16 MB block
# raises glibc's threshold for mapping, so that a 4 MB block then comes from the heap, whose
# freed memory glibc keeps; after `share_freed_memory` a 12 MB block (more than the heap has
# free) is mapped, and unmapped when freed, where glibc would have grown the heap.
FREED_BLOCKS = """
import ctypes, json, pipelines.mews_pipeline as m

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
mb = 1 << 20

def mapped_while_held(size):
    block = libc.malloc(size)
    mapped = libc.mallinfo2().hblkhd
    libc.free(block)
    return mapped

libc.free(libc.malloc(16 * mb))
before = mapped_while_held(4 * mb)
m.share_freed_memory()
after = mapped_while_held(12 * mb)
print(json.dumps([before, after]))
"""


def test_a_run_gives_freed_large_blocks_back_to_the_system():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    assert mews_pipeline.glibc()  # the C library of every machine this project runs on
    done = subprocess.run(
        [sys.executable, "-c", FREED_BLOCKS], env=env, capture_output=True, text=True, check=True
    )
    before, after = json.loads(done.stdout)

    assert before < 4 << 20 and after >= 12 << 20


def as_duckdb_says(size: str) -> str:
    """A memory limit as DuckDB's `current_setting` shows it (48MB: 45.7 MiB)."""
    connection = duckdb.connect()
    connection.execute(f"set memory_limit = '{size}'")
    return connection.execute("select current_setting('memory_limit')").fetchone()[0]


def test_duckdb_loads_and_cleans_up_in_48_mb(sandbox, tmp_path, monkeypatch):
    import dlt

    limits: list[tuple[str, str]] = []
    load, compact = dlt.Pipeline.load, mews_pipeline.compact
    asked = "select current_setting('memory_limit')"

    def loading(self, *args, **kwargs):
        with self.sql_client() as client:  # the connection the load borrows
            limits.append(("load", client.execute_sql(asked)[0][0]))
            return load(self, *args, **kwargs)

    def compacting(client, destination):
        limits.append(("clean-up", client.execute_sql(asked)[0][0]))
        return compact(client, destination)

    monkeypatch.setattr(dlt.Pipeline, "load", loading)
    monkeypatch.setattr(mews_pipeline, "compact", compacting)
    target = Target(sandbox, tmp_path, None, max_orders_per_load=1000)
    target.sync()

    assert_equals_truth(target)
    assert [kind for kind, _ in limits].count("load") >= 2
    assert {limit for _, limit in limits} == {as_duckdb_says("48MB")}, limits
