"""dlt source for Mews product service orders and their notes.

`product_service_orders` walks `productServiceOrders/getAll` in UpdatedUtc windows of at most
three months from a per-service watermark kept in dlt's state; `service_order_notes` fetches the
notes of every page of orders it got; `services` names the services the orders belong to.
`order_items` walks `orderItems/getAll` the same way from watermarks of its own (an item can
change while its order does not), and `products` reads the services' products whole.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from copy import deepcopy
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import dlt
import pyarrow as pa
import pyarrow.compute as pc
from dlt.sources import DltResource

from .batches import WholeBatches, concat
from .client import (
    ClientStats,
    Counters,
    MewsApiError,
    MewsClient,
    MewsConfigError,
    RequestSizes,
    format_utc,
)
from .planning import (
    Planned,
    Window,
    group_by_start,
    leave_as_found,
    mark_finished,
    mark_read,
    mark_step_over,
    parse_state_time,
    parse_utc,
    walk_windows,
    window_work,
    windows_to_read,
)
from .refresh import done_up_to, plan_refresh, sweep_share
from .settings import (
    BACKOFF_BASE_SECONDS,
    DEFAULT_CLIENT,
    DEFAULT_NOTE_TYPES,
    DEFAULT_NOTES_REFRESH_DAYS,
    DEFAULT_OVERLAP,
    DEFAULT_START_DATE,
    LEGACY_SERVICE_TYPES,
    MAX_IDS_PER_REQUEST,
    MAX_ORDERS_PER_LOAD,
    MAX_RETRIES,
    MAX_RETRY_AFTER_SECONDS,
    MAX_SECONDS_PER_LOAD,
    ORDERS_PER_ITEM,
    PAGE_SIZE,
    PRODUCT_SERVICE_DISCRIMINATOR,
    RATE_LIMIT_REQUESTS,
    RATE_LIMIT_SECONDS,
    REQUEST_TIMEOUT_SECONDS,
)
from .steps import WindowPace, step_is_over, window_seconds
from .tables import (
    ENTERPRISE_COLUMNS,
    NOTE_COLUMNS,
    ORDER_COLUMNS,
    ORDER_ITEM_COLUMNS,
    PRODUCT_COLUMNS,
    SERVICE_COLUMNS,
    Column,
    raw_schema,
    to_table,
    with_keys_required,
)

__all__ = [
    "NOTE_MARKER_COLUMN",
    "SourceStats",
    "group_by_start",
    "mews_source",
    "parse_utc",
    "pending_work",
    "walk_windows",
    "window_work",
]

log = logging.getLogger("mews_sync")

# Marks a row of service_order_notes that stands for "this order has no notes now" and is never
# stored: dlt's merge deletes an order's stored notes by `service_order_id` only when the load
# carries a row with that id, and an order whose notes were all deleted has none.
NOTE_MARKER_COLUMN = "_mews_order_without_notes"
# Key of the source state that keeps the request sizes Mews answers in time (RequestSizes.saved).
REQUEST_SIZES_STATE = "request_sizes"


def check_starts(
    start_date: str, start: datetime, backfill: tuple[datetime, datetime] | None, end: datetime
) -> None:
    """Raise if the sync or the backfill starts at or after `end` (Mews' clock as it listed
    the services): nothing can have changed there. Mews' clock, not this machine's, which
    may be wrong."""
    if backfill and backfill[0] >= end:
        raise MewsConfigError(
            f"The backfill --start {format_utc(backfill[0])} is not before Mews' current time "
            f"({format_utc(end)}), so nothing can have changed in it: give a past --start "
            "(and --end)."
        )
    if start >= end:
        raise MewsConfigError(
            f"SOURCES__MEWS__START_DATE {start_date!r} is not before Mews' current time "
            f"({format_utc(end)}): set a past date."
        )


def if_changed(table: pa.Table) -> Iterator[pa.Table]:
    """`table`, a resource's whole table read each run (services, enterprises, products),
    unless it equals the one the resource last yielded (a digest in its own state, which
    commits with the rows it describes, and goes when the resource's table is dropped).
    The first yield is kept even if empty, so that the table exists. Loading an unchanged
    table again changed nothing and was a merge each: 0.1 s of a no-change run's 1.86 s
    (20,000 orders, medians of 7)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    digest = hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
    state = dlt.current.resource_state()
    if state.get("digest") != digest:
        state["digest"] = digest
        yield table


def table_if_unknown(name: str, columns: Sequence[Column]) -> Iterator[pa.Table]:
    """An empty typed table, for a resource that read no row: so that its table, the
    table's columns and the views on them exist before its first row (an account without
    orders yet). Nothing once the pipeline's schema has them all: even an empty table is a
    load of its own (a `_dlt_loads` row; for DuckDB a new analysts' copy), each run."""
    known = dlt.current.source_schema().tables.get(name, {}).get("columns", {})
    if any(not known.get(c.name, {}).get("data_type") for c in columns if c.always):
        yield to_table([], columns)


def latest_by_id() -> dict[str, Any]:
    """The hints of a resource whose rows come again when read again (orders, items): dlt's
    merge keeps the latest read of each id. New dicts each time: dlt may change them."""
    return {
        "write_disposition": {"disposition": "merge", "strategy": "delete-insert"},
        "primary_key": "id",
        "columns": {"updated_utc": {"dedup_sort": "desc"}},
    }


@dataclass
class SourceStats(Counters):
    """What the source read in one run, for the run summary; the notes transformer adds to
    it from worker threads."""

    windows: int = 0
    windows_total: int = 0  # planned, for a progress bar
    # The progress bar's measure of the work, planned and done: the windows' days, each
    # weighted by how recent it is within `work_span` (see `window_work`).
    work_total: float = 0.0
    work_done: float = 0.0
    work_span: tuple[datetime, datetime] | None = None
    order_pages: int = 0
    refreshed_orders: int = 0  # re-read by the notes refresh (with all their notes)
    refresh_ranges: list[tuple[str, str]] = field(default_factory=list)  # UpdatedUtc re-read
    refresh_share: float = 0.0  # of the history this refresh cycle has swept, 0..1
    refresh_days: float = 0.0  # the refresh period (0: off)
    orders: int = 0
    notes: int = 0
    items: int = 0  # order items read (an item read in two windows counts twice)
    products: int = 0
    end: datetime | None = None  # where the windows end: `end_date`, or Mews' clock
    # Tells this run's steps (which share these counters) from other runs, for a backfill.
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class OldestUpdate:
    """The oldest UpdatedUtc of the orders a run read: where the notes refresh begins."""

    def __init__(self) -> None:
        self.moment: datetime | None = None

    def saw(self, moment: datetime | None) -> None:
        if moment is not None and (self.moment is None or moment < self.moment):
            self.moment = moment


@dataclass
class SourceRun:
    """What the resources of one made source share: its client and counters, the services
    it read, and its settings checked; `end` is `end_date`, or Mews' clock when it read the
    services."""

    api: MewsClient
    counts: SourceStats
    services_read: tuple[dict[str, Any], ...]
    service_ids: list[str]  # configured, or those of `services_read`
    enterprise_ids: list[str] | None
    start: datetime
    end: datetime
    read_until: datetime  # `end`, or the end of Mews' current second (see `mews_source`)
    overlap: timedelta
    backfill: Window | None
    note_types: list[str]
    refresh_every: timedelta
    max_orders_per_load: int | None
    max_seconds_per_load: float | None
    pace: WindowPace
    window_seconds: float | None  # the share of a step one window may take
    oldest: OldestUpdate = field(default_factory=OldestUpdate)  # where the refresh begins

    def paced(self, plan: list[Planned]) -> Iterator[Planned]:
        """The planned windows, split to take a share of a step's time at the pace read."""
        for planned in plan:
            for window in self.pace.split(planned.window, self.window_seconds):
                yield replace(planned, window=window)

    def windows_to_read(self, state: dict[str, Any]) -> list[Planned]:
        """A resource's windows of this step, incremental or the backfill's (`planning`)."""
        return windows_to_read(
            state,
            self.service_ids,
            self.start,
            self.end,
            self.overlap,
            self.backfill,
            run_id=self.counts.run_id,
            read_until=self.read_until,
        )

    def mark_read(self, state: dict[str, Any], planned: Planned) -> None:
        """A window was read whole (`planning.mark_read`): watermarks move to `end` at most."""
        mark_read(state, planned, self.end)

    def mark_finished(self, state: dict[str, Any], found: dict[str, Any], read: int) -> None:
        """A resource read its plan to the end (`planning.mark_finished`), having read `read`
        rows; if none, its state stays as it was `found` (`planning.leave_as_found`)."""
        mark_finished(state, self.service_ids, self.end, bool(self.backfill), self.counts.run_id)
        leave_as_found(state, found, read > 0, bool(self.backfill))

    def step_is_over(self, read: int, started: float) -> bool:
        """Whether a step that read `read` rows since `started` has done enough for one load."""
        limit = self.max_orders_per_load
        return bool(limit and read >= limit) or step_is_over(started, self.max_seconds_per_load)


@dlt.source(name="mews", max_table_nesting=0)
def mews_source(
    platform_url: str = dlt.config.value,
    client_token: str = dlt.secrets.value,
    access_token: str = dlt.secrets.value,
    client: str = DEFAULT_CLIENT,
    service_ids: list[str] | None = None,
    enterprise_ids: list[str] | None = None,
    start_date: str = DEFAULT_START_DATE,
    overlap_minutes: float = DEFAULT_OVERLAP.total_seconds() / 60,
    note_types: list[str] | None = None,
    rate_limit_requests: int = RATE_LIMIT_REQUESTS,
    rate_limit_seconds: float = RATE_LIMIT_SECONDS,
    page_size: int = PAGE_SIZE,
    max_orders_per_load: int | None = MAX_ORDERS_PER_LOAD,
    max_seconds_per_load: float | None = MAX_SECONDS_PER_LOAD,
    window_pace: WindowPace | None = None,
    notes_refresh_days: float = DEFAULT_NOTES_REFRESH_DAYS,
    max_retries: int = MAX_RETRIES,
    backoff_seconds: float = BACKOFF_BASE_SECONDS,
    request_timeout_seconds: float = REQUEST_TIMEOUT_SECONDS,
    max_retry_after_seconds: float = MAX_RETRY_AFTER_SECONDS,
    backfill_start: str | None = None,
    backfill_end: str | None = None,
    end_date: str | None = None,
    transport: Any = None,
    stats: ClientStats | None = None,
    source_stats: SourceStats | None = None,
    request_sizes: RequestSizes | None = None,
) -> Sequence[DltResource]:
    """Mews product service orders, their notes and their services.

    Without `service_ids`, every product service (`Additional`, formerly `Orderable`) that
    `services/getAll` lists is synced. With `backfill_start`/`backfill_end`, exactly that
    UpdatedUtc range is reloaded and the incremental watermarks are left as they were.

    Tables: one row per order (its latest version), one per note, and the notes of every
    order read are exactly those Mews returned for it then: dlt merges them so on any
    destination (`pipeline.run(mews_source())` is enough).

    With `max_orders_per_load`, a run stops after the window in which it read that many
    orders, and with `max_seconds_per_load` at a window end about that many seconds after it
    began (windows are split to take a quarter of it, at the pace `window_pace` learned, see
    `steps.py`); it says so in its state (`pending_work(pipeline.state)`), and running it
    again goes on from there. `end_date` (default: Mews' clock when it listed the services,
    kept in `source_stats.end`, which later steps given the same `source_stats` keep; the
    windows then read to the end of that second) ends the sync; `transport` lets tests
    mount the sandbox in-process; `stats` and `source_stats` collect what the API client and
    the source did.
    `request_sizes`: what the run learned so far of the sizes Mews answers in time
    (shared by its steps; `stored_request_sizes` gives what the last run kept); without it
    the orders resource starts from the state when it starts.

    Making the source reads the services (one `services/getAll`), so that a wrong address or
    token, or a configured service Mews does not list, stops a run before it loads anything.
    """
    given_end = parse_utc(end_date, "end_date") if end_date else None
    start = parse_utc(start_date, "SOURCES__MEWS__START_DATE")
    service_ids = check_ids(service_ids, "SOURCES__MEWS__SERVICE_IDS")
    enterprise_ids = check_ids(enterprise_ids, "SOURCES__MEWS__ENTERPRISE_IDS")
    backfill = None
    if backfill_start or backfill_end:
        backfill = (parse_utc(backfill_start, "--start"), parse_utc(backfill_end, "--end"))
        if backfill[0] >= backfill[1]:
            raise MewsConfigError("The backfill --start must be before its --end.")
    overlap = timedelta(minutes=float(overlap_minutes))
    if overlap < timedelta(0):
        raise MewsConfigError(
            "SOURCES__MEWS__OVERLAP_MINUTES must be 0 or more minutes (default 5): how far "
            "before the watermark a run starts reading again."
        )
    refresh_every = timedelta(days=float(notes_refresh_days))
    if refresh_every < timedelta(0):
        raise MewsConfigError(
            "SOURCES__MEWS__NOTES_REFRESH_DAYS must be 0 (off) or a positive number of days."
        )
    types = check_note_types(note_types)
    counts = source_stats if source_stats is not None else SourceStats()
    pace = window_pace if window_pace is not None else WindowPace()
    seconds = window_seconds(max_seconds_per_load) if max_seconds_per_load else None

    api = MewsClient(
        platform_url,
        client_token,
        access_token,
        client,
        transport=transport,
        rate_limit=(rate_limit_requests, rate_limit_seconds) if rate_limit_requests else None,
        page_size=page_size,
        max_retries=max_retries,
        backoff_base=backoff_seconds,
        timeout=request_timeout_seconds,
        max_retry_after_seconds=max_retry_after_seconds,
        stats=stats,
        sizes=request_sizes,
    )

    services_read = read_synced_services(api, service_ids, enterprise_ids)
    # The run ends at Mews' clock, not this machine's: an end after Mews' now would hide the
    # orders Mews then stamps before it from this run and, past the overlap, from the next.
    # Mews' Date header has whole seconds, so the end is the start of the second the run
    # began in; a change stamped later in that second would lie past it, so the windows read
    # to the end of that second, while the watermarks move to the end only: the next run
    # starts at it or before and reads that second again, whatever the overlap. A caller's
    # `end_date` is read exactly. The steps of a run share its end (and `source_stats`).
    end = given_end or counts.end or api.mews_now().replace(microsecond=0)
    read_until = end if given_end else end + timedelta(seconds=1)
    counts.end = end
    check_starts(start_date, start, backfill, end)
    run = SourceRun(
        api=api,
        counts=counts,
        services_read=services_read,
        service_ids=service_ids or [s["Id"] for s in services_read],
        enterprise_ids=enterprise_ids,
        start=start,
        end=end,
        read_until=read_until,
        overlap=overlap,
        backfill=backfill,
        note_types=types,
        refresh_every=refresh_every,
        max_orders_per_load=max_orders_per_load,
        max_seconds_per_load=max_seconds_per_load,
        pace=pace,
        window_seconds=seconds,
    )
    orders = dlt.resource(product_service_orders, **latest_by_id())(run)
    notes = dlt.transformer(
        service_order_notes,
        data_from=orders,
        parallelized=True,
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
        primary_key="id",
        merge_key="service_order_id",
        columns={NOTE_MARKER_COLUMN: {"data_type": "bool", "hard_delete": True}},
    )(run)
    return (
        dlt.resource(services, write_disposition="merge", primary_key="id")(run),
        dlt.resource(enterprises, write_disposition="merge", primary_key="id")(run),
        orders,
        notes,
        dlt.resource(order_items, **latest_by_id())(run),
        dlt.resource(products, write_disposition="merge", primary_key="id")(run),
    )


def read_synced_services(
    api: MewsClient, service_ids: list[str] | None, enterprise_ids: list[str] | None
) -> tuple[dict[str, Any], ...]:
    """The services whose orders this sync reads: configured, or discovered. Read when the
    source is made: a wrong address, refused tokens or a configured service Mews does not
    list stop a run before anything is locked or written."""
    found = [service_row(s) for page in api.services(service_ids, enterprise_ids) for s in page]
    if service_ids:
        check_configured_services(service_ids, found, bool(enterprise_ids))
        return tuple(found)
    return tuple(s for s in found if s["Discriminator"] == PRODUCT_SERVICE_DISCRIMINATOR)


def services(run: SourceRun) -> Iterator[pa.Table]:
    """Yields one table of the synced services: id, enterprise_id, name, discriminator."""
    yield from if_changed(to_table(run.services_read, SERVICE_COLUMNS))


def enterprises(run: SourceRun) -> Iterator[pa.Table]:
    """Yields one table of the enterprises (properties) of the synced services: id, name,
    short_name, chain_name, time_zone_identifier (IANA, for local days)."""
    ids = sorted({s["EnterpriseId"] for s in run.services_read if s["EnterpriseId"]})
    try:
        found = [e for page in run.api.enterprises(ids) for e in page] if ids else []
    except MewsApiError as exc:
        if exc.transient:
            raise
        # A token without access to enterprises/getAll still syncs its orders; the views
        # then show no enterprise names.
        log.warning("enterprise names are not synced: %s", exc)
        found = []
    yield from if_changed(to_table(found, ENTERPRISE_COLUMNS))


def product_service_orders(run: SourceRun) -> Iterator[pa.Table]:
    """Yields typed tables (a few pages each) of the orders updated since each service's
    watermark, or in the backfill's range, then those the notes refresh re-reads."""
    counts = run.counts
    # What this run learns of the sizes Mews answers in time, for its next steps and runs.
    run.api.sizes.keep_in(dlt.current.source_state().setdefault(REQUEST_SIZES_STATE, {}))
    state = dlt.current.resource_state()
    found = deepcopy(state)
    plan = plan_orders(run, state)
    orders_before, step_started = counts.orders, time.monotonic()
    batches = WholeBatches(ORDERS_PER_ITEM, MAX_IDS_PER_REQUEST)
    for planned in run.paced(plan):
        if run.step_is_over(counts.orders - orders_before, step_started):
            # Enough for one load, so a long history loads in steps of bounded memory
            # and a kill loses one step.
            yield from batches.rest()
            mark_step_over(state, bool(run.backfill))
            return
        before = counts.orders
        yield from orders_in(run, planned.services, planned.window, batches)
        if not run.backfill:
            note_oldest_update(state, run.oldest.moment)
        if planned.kind == "refresh":
            counts.add(refreshed_orders=counts.orders - before)
            done_up_to(state["notes_refresh"], planned.window[1], parse_state_time)
        else:
            run.mark_read(state, planned)
    yield from batches.rest()
    read = counts.orders - orders_before
    if not read:
        yield from table_if_unknown("product_service_orders", ORDER_COLUMNS)
    run.mark_finished(state, found, read)
    if "notes_refresh" in state:  # the period as configured now, for `status`
        state["notes_refresh"]["every_days"] = run.refresh_every.total_seconds() / 86_400


def plan_orders(run: SourceRun, state: dict[str, Any]) -> list[Planned]:
    """The order windows of this step: incremental (or the backfill's), then the notes
    refresh's; the first step of a run counts them all for the progress bar."""
    # A backfill leaves the watermarks alone; its own progress is kept apart, so a
    # backfill in steps (or one that was killed) goes on where it stopped.
    plan = run.windows_to_read(state)
    if not run.backfill:
        plan += plan_notes_refresh(run, state, plan)
    counts = run.counts
    if not counts.windows_total and plan:  # the first load of the run plans them all
        counts.windows_total = len(plan)
        span = min(p.window[0] for p in plan), max(p.window[1] for p in plan)
        counts.work_span = span
        counts.work_total = sum(window_work(p.window, span) for p in plan)
    return plan


def note_oldest_update(state: dict[str, Any], oldest: datetime | None) -> None:
    """Keep the oldest UpdatedUtc loaded, where the notes refresh begins."""
    if oldest is None:
        return
    progress = state.setdefault("notes_refresh", {})
    known = progress.get("oldest")
    if not known or oldest < parse_state_time(known):
        progress["oldest"] = format_utc(oldest)


def plan_notes_refresh(run: SourceRun, state: dict[str, Any], plan: list[Planned]) -> list[Planned]:
    """The refresh windows of this run (see `refresh.py`), over services synced before,
    up to where their incremental windows begin."""
    synced = [i for i in run.service_ids if i in state.get("watermarks", {})]
    progress = state.setdefault("notes_refresh", {})
    days = run.refresh_every.total_seconds() / 86_400
    progress["every_days"] = days  # for `status`
    starts = [p.window[0] for p in plan if any(i in synced for i in p.services)]
    horizon = min(starts, default=run.start)
    # From the oldest update loaded, not the start date: years before a hotel's first
    # order would take their share of the period and leave the rest to fewer runs.
    oldest_known = progress.get("oldest")
    begin = max(run.start, parse_state_time(oldest_known)) if oldest_known else run.start
    ranges = plan_refresh(progress, begin, horizon, run.end, run.refresh_every, parse_state_time)
    run.counts.refresh_days = days
    run.counts.refresh_ranges = [(format_utc(a), format_utc(b)) for a, b in ranges]
    run.counts.refresh_share = sweep_share(progress, begin, horizon, parse_state_time)
    return [Planned(synced, w, "refresh") for a, b in ranges for w in walk_windows(a, b)]


def orders_in(
    run: SourceRun, ids: list[str], window: tuple[datetime, datetime], batches: WholeBatches
) -> Iterator[pa.Table]:
    """Tables of the orders of one window, in batches of whole pages."""
    counts = run.counts
    counts.add(windows=1)
    pages = run.api.product_service_orders(
        ids, *window, run.enterprise_ids, item_schema=raw_schema(ORDER_COLUMNS)
    )
    # The client asks for less when a request is too heavy; pages may then come again,
    # and one row per order is kept in the end.
    for page in pages:
        counts.add(order_pages=1, orders=len(page))
        orders = to_table(page, ORDER_COLUMNS)
        run.oldest.saw(pc.min(orders.column("updated_utc")).as_py())
        yield from batches.add(orders)
    if counts.work_span:
        counts.add(work_done=window_work(window, counts.work_span))


def service_order_notes(orders: pa.Table, run: SourceRun) -> pa.Table:
    """Yields the notes of a table of orders: all of them, whenever an order is read, and a
    marker row for each order that has none.

    A note Mews deleted is simply not returned. The merge replaces the stored notes of
    every order in the load (`merge_key`), so it goes; the marker row (never stored) makes
    that true of an order whose notes were all deleted.
    """
    order_ids = orders.column("id")
    pages = run.api.service_order_notes(
        order_ids.to_pylist(),
        run.note_types,
        run.enterprise_ids,
        item_schema=raw_schema(NOTE_COLUMNS),
    )
    # Never no table: the notes' columns then exist, typed, even before the first note.
    tables = [to_table(page, NOTE_COLUMNS) for page in pages] or [to_table([], NOTE_COLUMNS)]
    noted = sum(t.num_rows for t in tables)
    run.counts.add(notes=noted)
    without = pc.filter(
        order_ids,
        pc.invert(pc.is_in(order_ids, concat(tables).column("service_order_id")))
        if noted
        else pa.array([True] * len(order_ids), pa.bool_()),
    )
    markers = pa.table(
        {
            "id": without,
            "service_order_id": without,
            NOTE_MARKER_COLUMN: pa.array([True] * len(without), pa.bool_()),
        }
    )
    notes = [
        t.append_column(NOTE_MARKER_COLUMN, pa.nulls(t.num_rows, pa.bool_())) for t in tables
    ]
    # One item per table of orders: dlt's cost is per item, not per row.
    return with_keys_required(concat([*notes, markers]))


def products(run: SourceRun) -> Iterator[pa.Table]:
    """Yields one table of every product of the synced services, read whole each run
    (default products included): id, service_id, name, category, price, timestamps."""
    ids = [s["Id"] for s in run.services_read]
    found = [product_row(p) for page in run.api.products(ids, run.enterprise_ids) for p in page]
    run.counts.add(products=len(found))
    yield from if_changed(to_table(found, PRODUCT_COLUMNS))


# Items are never deleted in Mews (the documentation has orderItems/cancel, no delete),
# so keeping each item's latest version read is the whole copy.
def order_items(run: SourceRun) -> Iterator[pa.Table]:
    """Yields typed tables of the order items updated (their own UpdatedUtc) since each
    service's item watermark, or in the backfill's range, up to the run's end.

    Its state is its own, kept like the orders': `watermarks` per service, `pending` when
    it stopped after `max_orders_per_load` items, `backfill` progress."""
    state = dlt.current.resource_state()
    found = deepcopy(state)
    read, step_started = 0, time.monotonic()
    for planned in run.windows_to_read(state):
        if run.step_is_over(read, step_started):
            mark_step_over(state, bool(run.backfill))
            return
        for table in items_in(run, planned.services, planned.window):
            read += table.num_rows
            yield table
        run.mark_read(state, planned)
    if not read:
        yield from table_if_unknown("order_items", ORDER_ITEM_COLUMNS)
    run.mark_finished(state, found, read)


def items_in(
    run: SourceRun, ids: list[str], window: tuple[datetime, datetime]
) -> Iterator[pa.Table]:
    """Tables of the items of one window; pages that come again are kept (the merge or
    the compaction keeps one row per item)."""
    batch: list[pa.Table] = []
    pages = run.api.order_items(
        ids, *window, run.enterprise_ids, item_schema=raw_schema(ORDER_ITEM_COLUMNS)
    )
    for page in pages:
        run.counts.add(items=len(page))
        batch.append(to_table(page, ORDER_ITEM_COLUMNS))
        if sum(t.num_rows for t in batch) >= ORDERS_PER_ITEM:
            yield concat(batch)
            batch = []
    if batch:
        yield concat(batch)


def stored_request_sizes(pipeline_state: dict[str, Any]) -> dict[str, Any] | None:
    """What the last run kept of the request sizes Mews answers in time, for
    `RequestSizes.restore`."""
    return pipeline_state.get("sources", {}).get("mews", {}).get(REQUEST_SIZES_STATE)


def pending_work(pipeline_state: dict[str, Any], backfill: bool = False) -> bool:
    """Whether the last run (or backfill) of the source stopped early, after
    `max_orders_per_load` orders or `max_seconds_per_load`, and running it again goes on from
    there."""
    resources = pipeline_state.get("sources", {}).get("mews", {}).get("resources", {})
    orders = resources.get("product_service_orders", {})
    items = resources.get("order_items", {})
    if backfill:
        return any((r.get("backfill") or {}).get("range") for r in (orders, items))
    return bool(orders.get("pending") or items.get("pending"))


def service_row(service: dict[str, Any]) -> dict[str, Any]:
    """A service with its kind and English (or first) name, in current and legacy shapes."""
    data = service.get("Data") if isinstance(service.get("Data"), dict) else {}
    legacy = service.get("Type")
    kind = data.get("Discriminator") or LEGACY_SERVICE_TYPES.get(legacy, legacy)
    names = service.get("Names") if isinstance(service.get("Names"), dict) else {}
    # Names is current, Name deprecated (services.md): Name only when Names has no name.
    name = names.get("en-US") or next(iter(names.values()), None) or service.get("Name")
    return {
        "Id": service.get("Id"),
        "EnterpriseId": service.get("EnterpriseId"),
        "Name": name,
        "Discriminator": kind,
        "IsActive": service.get("IsActive"),
        "CreatedUtc": service.get("CreatedUtc"),
        "UpdatedUtc": service.get("UpdatedUtc"),
    }


def product_row(product: dict[str, Any]) -> dict[str, Any]:
    """A product with its English (or first) name, as services are named; the other name
    maps (ExternalNames, ShortNames, Descriptions) and the options are left out."""
    names = product.get("Names") if isinstance(product.get("Names"), dict) else {}
    name = names.get("en-US") or next(iter(names.values()), None)
    return {c: product.get(c) for c in PRODUCT_FIELDS} | {"Name": name}


PRODUCT_FIELDS = (
    "Id",
    "ServiceId",
    "CategoryId",
    "AccountingCategoryId",
    "IsActive",
    "ChargingMode",
    "PostingMode",
    "Price",
    "CreatedUtc",
    "UpdatedUtc",
)


def check_configured_services(
    service_ids: list[str], found: list[dict[str, Any]], enterprises_configured: bool
) -> None:
    """Raise naming the configured services `services/getAll` did not list (they do not
    exist, or belong to no enterprise of the token); warn of a Bookable one (it takes
    reservations, not these orders)."""
    listed = {str(s["Id"]).lower() for s in found}
    unknown = [i for i in service_ids if i.lower() not in listed]
    if unknown:
        scope = " and SOURCES__MEWS__ENTERPRISE_IDS" if enterprises_configured else ""
        raise MewsConfigError(
            f"SOURCES__MEWS__SERVICE_IDS names services Mews does not list for this token"
            f"{scope}: {', '.join(unknown)}; "
            "check the ids, and that the token covers their enterprise (unset the setting to "
            "sync every product service)."
        )
    for service in found:
        if service["Discriminator"] != PRODUCT_SERVICE_DISCRIMINATOR:
            log.warning(
                "SOURCES__MEWS__SERVICE_IDS names %s (%s), a %s service: it takes "
                "reservations, not product service orders, so it has none to sync",
                service["Id"],
                service["Name"],
                service["Discriminator"],
            )


def check_note_types(value: Any) -> list[str]:
    """The note types to ask for: the documented ones by default; a type Mews documents
    later is sent with a warning; an empty list asks for nothing and is refused."""
    if value is None:
        return list(DEFAULT_NOTE_TYPES)
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, str) and v.strip() for v in value
    ):
        raise MewsConfigError(
            'SOURCES__MEWS__NOTE_TYPES must be a JSON list of note types, e.g. ["General", '
            '"SpecialRequest"].'
        )
    if not value:
        raise MewsConfigError(
            "SOURCES__MEWS__NOTE_TYPES is an empty list: unset it for every documented type "
            f"({', '.join(DEFAULT_NOTE_TYPES)}), or list some."
        )
    types = [v.strip() for v in value]
    if unknown := [t for t in types if t not in DEFAULT_NOTE_TYPES]:
        log.warning(
            "SOURCES__MEWS__NOTE_TYPES: %s not among the documented types (%s); sent as "
            "given, in case Mews added them",
            ", ".join(unknown),
            ", ".join(DEFAULT_NOTE_TYPES),
        )
    return types


def check_ids(value: Any, name: str) -> list[str] | None:
    """None, or a non-empty list of UUIDs, kept as written; anything else is a config error
    naming the setting: Mews takes no empty id list and no id that is not a UUID."""
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, str) and v.strip() for v in value
    ):
        raise MewsConfigError(f'{name} must be a JSON list of ids, e.g. ["ae8da28c-..."].')
    if not value:
        raise MewsConfigError(f"{name} is an empty list: unset it to mean all, or list ids.")
    ids = [v.strip() for v in value]
    for text in ids:
        try:
            uuid.UUID(text)
        except ValueError:
            raise MewsConfigError(
                f"{name} holds {text!r}, which is not a Mews id: ids are UUIDs like "
                "ae8da28c-3a4b-4c5d-8e9f-0a1b2c3d4e5f."
            ) from None
    return ids
