"""The sandbox: state, request handling (bytes in, status/headers/bytes out), rules and faults."""

import json
import math
import random
import re
import threading
import time
import uuid
from bisect import bisect_left, bisect_right
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from operator import attrgetter
from typing import Any, Generic, Literal, NamedTuple, TypeVar

from mews_sandbox import data
from mews_sandbox.data import Item, Note, NoteShape, Order, Price, Service, ServiceShape

DEMO_CLIENT_TOKEN = "E0D439EE522F44368DC78E1BFB03710C-D24FB11DBE31D4621C4817E028D9E1D"
# The seeds' sample AccessToken: Mews' public demo property, one enterprise (the first).
DEMO_ACCESS_TOKEN = "C66EF7B239D24632943D115EDE9CB810-EA00F8FD8294692C940F6B5A8F9453D"
# The sandbox's own, same format: a portfolio token covering every enterprise.
DEMO_PORTFOLIO_ACCESS_TOKEN = "86C4F9A426792C7909D70D3D53DF6531-727F95D5830C482AE4C9951800E0782"

API_PREFIX = "/api/connector/v1/"
GET_ORDERS = "productServiceOrders/getAll"
ADD_ORDER = "orders/add"
GET_NOTES = "serviceOrderNotes/getAll"
ADD_NOTES = "serviceOrderNotes/add"
UPDATE_NOTES = "serviceOrderNotes/update"
DELETE_NOTES = "serviceOrderNotes/delete"
GET_SERVICES = "services/getAll"
GET_ENTERPRISES = "enterprises/getAll"
GET_ORDER_ITEMS = "orderItems/getAll"
GET_PRODUCTS = "products/getAll"
OPERATIONS = frozenset({GET_ORDERS, ADD_ORDER, GET_NOTES, ADD_NOTES, UPDATE_NOTES, DELETE_NOTES,
                        GET_SERVICES, GET_ENTERPRISES, GET_ORDER_ITEMS, GET_PRODUCTS})
MAX_ITEMS = 1000
MAX_ACCOUNT_IDS = 100  # orderItems/getAll's AccountIds
# orderItems/getAll needs at least one of these. The page's introduction names seven; its
# table marks all ten "required if no other filter is provided": the sandbox takes the ten.
ORDER_ITEM_ID_FILTERS = ("OrderItemIds", "ServiceOrderIds", "ServiceIds", "BillIds", "AccountIds")
ORDER_ITEM_INTERVALS = ("CreatedUtc", "UpdatedUtc", "ConsumedUtc", "CanceledUtc", "ClosedUtc")
MAX_INTERVAL_MONTHS = 3
DEFAULT_NOTE_TYPES = frozenset({"General", "ChannelManager"})
SERVICE_TYPES = {"Bookable": True, "Additional": False}  # ServiceType filter -> bookable
RESULT_CACHE_SIZE = 32
# Method names, not bound methods: those would tie the sandbox in a reference cycle, and a
# dropped sandbox of a million orders would wait for the cyclic GC instead of going at once.
_HANDLERS = {GET_ORDERS: "_get_orders", ADD_ORDER: "_add_order", GET_NOTES: "_get_notes",
             ADD_NOTES: "_add_notes", UPDATE_NOTES: "_update_notes",
             DELETE_NOTES: "_delete_notes", GET_SERVICES: "_get_services",
             GET_ENTERPRISES: "_get_enterprises", GET_ORDER_ITEMS: "_get_order_items",
             GET_PRODUCTS: "_get_products"}

Window = tuple[float, float]  # (StartUtc, EndUtc) as epoch seconds
IntervalLimit = Literal["calendar", "strict", "days90"]
Scope = frozenset[str]  # enterprise ids a request may see


@dataclass
class Faults:
    """Injected failures, all off by default. One seeded RNG: the same requests fail alike."""

    seed: int = 0
    """Seed of the fault RNG; new Faults settings restart its sequence."""
    latency_s: float = 0.0
    """Seconds added to every request, outside the lock (slow, not serialized)."""
    error_500: float = 0.0
    """Share of requests answered 500."""
    error_408: float = 0.0
    """Share of requests answered 408 at once."""
    error_429: float = 0.0
    """Share of requests answered 429 (with Retry-After: 1 unless switched off)."""
    retry_after_header: bool = True
    """Every 429, injected or from the rate limit, carries Retry-After (the docs: it can be
    missing). Unlike the faults above, for every operation."""
    retry_after_s: int | None = None
    """Announce this Retry-After on every 429 instead of the true wait (rate limit) or 1
    (injected), e.g. 3600: a client should cap what it waits."""
    drop: float = 0.0
    """Share of requests whose connection is dropped without an answer."""
    heavy_count: int | None = None
    """getAll requests with Limitation.Count above this are "too heavy": 408 at once, or a
    stall (below)."""
    heavy_ids: bool = False
    """Requests with an id list (ServiceOrderIds, ServiceIds, ...) longer than heavy_count are
    too heavy as well: a Mews that is slow on many ids, not only on large pages."""
    stall_heavy_s: float | None = None
    """Too heavy requests stall this many seconds (outside the lock), then answer, instead of
    a quick 408: longer than a client's timeout, they never answer in time."""
    stall_then_408: bool = False
    """After the stall, answer 408 instead of the normal answer."""
    malformed_json: float = 0.0
    """Share of 200 answers whose body is cut in half."""
    only_operations: set[str] | None = None
    """Inject faults into these operations only (None: every operation)."""


@dataclass
class SandboxConfig:
    """What the documentation leaves open or has changed, and the failures to inject. The
    defaults follow the current documentation; failure modes are off."""

    interval_semantics: Literal["half_open", "inclusive"] = "half_open"
    """Time filters: half-open Start <= X < End (today's docs) or inclusive (an older page)."""
    interval_limit: IntervalLimit = "calendar"
    """How "max length 3 months" is counted: End <= Start + 3 calendar months ("calendar"),
    End < Start + 3 calendar months ("strict"), or End - Start <= 90 days ("days90")."""
    note_shape: NoteShape = "current"
    """Notes with OrderId + UpdatedUtc (current docs) or the seed's ServiceOrderId and no
    UpdatedUtc."""
    service_shape: ServiceShape = "current"
    """Services with Names + Data.Discriminator (current) or the older Name + Type."""
    legacy_values: bool = False
    """Generated orders use older enum values: some Enquired beside Inquired, no RoomingList
    CommanderOrigin. Read by Sandbox.generate (it shapes the data, not the answers)."""
    null_note_text: float = 0.02
    """Share of generated notes whose Text is null (the spec makes no note field required).
    Read by Sandbox.generate."""
    heavier_data: bool = False
    """Generated data of the heavier shape: about 2 notes per order, three order fields and one
    note field the pipeline does not know (see data.generate). Read by Sandbox.generate."""
    rate_limit: tuple[int, float] | None = None
    """(requests, seconds): a sliding window per AccessToken; 429 beyond it. Mews: (200, 30)."""
    faults: Faults = field(default_factory=Faults)
    """Injected failures."""
    notes_bump_order: bool = True
    """A note change bumps its order's UpdatedUtc (undocumented; plausible, so on)."""
    strict_ids: bool = False
    """Validate id lists and ids as the spec declares them: an empty list is a 400 (minItems 1;
    lenient: no filter), and so is an id or Limitation.Cursor that is no UUID (format uuid)."""
    short_pages: float = 0.0
    """Share of pages that come back short although older items follow, as from a server that
    filters after paging: a walk must go on to an empty page (null Cursor), not stop early."""
    updated_utc_required: bool = False
    """productServiceOrders/getAll refuses a request without UpdatedUtc (one seed says so; the
    current docs make it optional)."""
    date_header: bool = True
    """Every answer carries a Date header from `Sandbox.clock`, as Mews' do (HTTP/1.1 asks it
    of every server with a clock); off: none, as behind a proxy that drops it."""
    items_bump_order: bool = False
    """An order item change (close_bill, cancel_item, rebate_item, reprice_item) bumps its
    order's UpdatedUtc (undocumented). Off by default, unlike notes: nothing of the order
    itself changes when a bill closes, and off is the harder reading for a client, which must
    then find changed items by their own UpdatedUtc, not through their orders."""


@dataclass(frozen=True)
class LoggedRequest:
    operation: str
    status: int  # 0: the connection was dropped without an answer
    body: dict[str, Any]
    at: float


class RequestLog:
    def __init__(self) -> None:
        self._entries: list[LoggedRequest] = []
        self._lock = threading.Lock()

    @property
    def entries(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._entries)

    def append(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._entries.append(entry)

    def count(self, operation: str | None = None, status: int | None = None) -> int:
        return sum(1 for e in self.entries
                   if (operation is None or e.operation == operation)
                   and (status is None or e.status == status))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass(frozen=True)
class SandboxResponse:
    status: int  # 0: drop the connection without answering
    headers: dict[str, str]
    body: bytes


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


# --- request validation -------------------------------------------------------------------

def _string_set(payload: dict[str, Any], name: str, *, required: bool = False,
                most: int = MAX_ITEMS) -> frozenset[str] | None:
    """An array of strings, at most `most`. An empty array is taken as absent (no filter)."""
    value = payload.get(name)
    if value is None or value == []:
        if required:
            raise _bad(f"{name} is required.")
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(f"{name} must be an array of strings.")
    if len(value) > most:
        raise _bad(f"{name} can contain at most {most} items.")
    return frozenset(value)


def _limitation(payload: dict[str, Any]) -> tuple[int, str | None]:
    limitation = payload.get("Limitation")
    if not isinstance(limitation, dict):
        raise _bad("Limitation is required.")
    count = limitation.get("Count")
    if type(count) is not int or not 1 <= count <= MAX_ITEMS:
        raise _bad(f"Limitation.Count must be an integer from 1 to {MAX_ITEMS}.")
    cursor = limitation.get("Cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise _bad("Invalid Cursor.")
    return count, cursor


def _longest_id_list(payload: dict[str, Any]) -> int:
    """The length of the longest id list of a request (0 for none)."""
    lists = [v for k, v in payload.items() if k.endswith("Ids") and isinstance(v, list)]
    return max(map(len, lists), default=0)


def _parse_utc(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise _bad(f"{name} is required (ISO 8601, UTC).")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _bad(f"{name} is not an ISO 8601 date and time: {value!r}.") from None
    if parsed.tzinfo is None or parsed.utcoffset():
        raise _bad(f"{name} must be in UTC (e.g. 2023-04-01T00:00:00Z): {value!r}.")
    return parsed


def _too_long(start: datetime, end: datetime, limit: IntervalLimit) -> bool:
    if limit == "days90":
        return end - start > timedelta(days=90)
    longest = data.add_months(start, MAX_INTERVAL_MONTHS)
    return end >= longest if limit == "strict" else end > longest


def _interval(payload: dict[str, Any], name: str, limit: IntervalLimit, *,
              required: bool = False) -> Window | None:
    value = payload.get(name)
    if value is None:
        if required:
            raise _bad(f"{name} is required.")
        return None
    if not isinstance(value, dict):
        raise _bad(f"{name} must be an object with StartUtc and EndUtc.")
    start = _parse_utc(value.get("StartUtc"), f"{name}.StartUtc")
    end = _parse_utc(value.get("EndUtc"), f"{name}.EndUtc")
    if start > end:
        raise _bad(f"{name}.StartUtc must not be after {name}.EndUtc.")
    # Every interval these operations take is limited to 3 months, however that is counted.
    if _too_long(start, end, limit):
        raise _bad(f"{name} interval must not be longer than {MAX_INTERVAL_MONTHS} months.")
    return start.timestamp(), end.timestamp()


def _optional_str(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is not None and not isinstance(value, str):
        raise _bad(f"{name} must be a string.")
    return value


def _items(payload: dict[str, Any], name: str, *, required: bool) -> list[dict[str, Any]]:
    value = payload.get(name)
    if value is None:
        if required:
            raise _bad(f"{name} is required.")
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _bad(f"{name} must be an array of objects.")
    if required and not value:
        raise _bad(f"{name} must not be empty.")
    if len(value) > MAX_ITEMS:
        raise _bad(f"{name} can contain at most {MAX_ITEMS} items.")
    return value


class _WantedItem(NamedTuple):
    """An item orders/add asks for."""

    product_id: str | None  # None: a custom item
    name: str
    category_id: str | None
    count: int
    unit: Price


def _tax_rates(enterprise: data.Enterprise) -> dict[str, float]:
    return dict(data.TAX_RATES[enterprise.Country])


def _unit_amount(value: Any, name: str, enterprise: data.Enterprise) -> Price:
    """Amount parameters: the enterprise's currency, one tax code of its country, and
    GrossValue where it prices gross, NetValue where net. One tax code, as the documentation
    requires with GrossValue; the sandbox's prices have one tax rate, so it asks for one with
    NetValue as well."""
    if not isinstance(value, dict):
        raise _bad(f"{name} must be an object.")
    if value.get("Currency") != enterprise.currency:
        raise _bad(f"{name}.Currency must be {enterprise.currency}, the enterprise's.")
    codes, rates = value.get("TaxCodes"), _tax_rates(enterprise)
    if not isinstance(codes, list) or len(codes) != 1 or codes[0] not in rates:
        raise _bad(f"{name}.TaxCodes must be one of {sorted(rates)}.")
    field_name = "GrossValue" if enterprise.Pricing == "Gross" else "NetValue"
    number = value.get(field_name)
    if type(number) not in (int, float):
        raise _bad(f"{name}.{field_name} is required ({enterprise.Pricing} pricing).")
    return data.make_price(enterprise.currency, number, (codes[0], rates[codes[0]]),
                           enterprise.Pricing == "Gross")


def _count(value: Any, name: str, default: int | None = None) -> int:
    if value is None and default is not None:
        return default
    if type(value) is not int or value < 1:
        raise _bad(f"{name} must be a positive integer.")
    return value


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(f"{name} is required (at least 1 character).")
    return value


# --- filtering and paging -----------------------------------------------------------------

def _within(ts: float, window: Window, inclusive: bool) -> bool:
    start, end = window
    if ts < start:
        return False
    return ts <= end if inclusive or start == end else ts < end


def _slice_bounds(keys: list[float], window: Window, inclusive: bool) -> tuple[int, int]:
    start, end = window
    if inclusive or start == end:
        return bisect_left(keys, start), bisect_right(keys, end)
    return bisect_left(keys, start), bisect_left(keys, end)


_seq = attrgetter("seq")
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
T = TypeVar("T")
R = TypeVar("R", Order, Item)


class _ByUpdated(Generic[R]):
    """Records sorted by UpdatedUtc, so that a window's are found by bisection. Take a record
    out before its UpdatedUtc changes and put it back after."""

    def __init__(self, records: Iterable[R]) -> None:
        self._records = sorted(records, key=attrgetter("UpdatedUtc"))
        self._keys = [r.UpdatedUtc for r in self._records]

    def add(self, record: R) -> None:
        i = bisect_right(self._keys, record.UpdatedUtc)
        self._keys.insert(i, record.UpdatedUtc)
        self._records.insert(i, record)

    def remove(self, record: R) -> None:
        lo = bisect_left(self._keys, record.UpdatedUtc)
        hi = bisect_right(self._keys, record.UpdatedUtc)
        i = self._records.index(record, lo, hi)
        del self._keys[i], self._records[i]

    def within(self, window: Window, inclusive: bool) -> list[R]:
        lo, hi = _slice_bounds(self._keys, window, inclusive)
        return self._records[lo:hi]


def _redact(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: "***" if k in ("ClientToken", "AccessToken") else v for k, v in payload.items()}


def _headers(request_id: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"Content-Type": "application/json; charset=utf-8", "Request-Id": request_id,
            **(extra or {})}


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- the sandbox --------------------------------------------------------------------------

class Sandbox:
    """A Mews Connector API stand-in. All state is guarded by one lock: handlers run on many
    threads, and a page of 1000 orders takes milliseconds, so finer locking buys nothing."""

    def __init__(self, config: SandboxConfig | None = None, *,
                 dataset: data.Dataset | None = None, seed: int = 0) -> None:
        self.config = config or SandboxConfig()
        self.clock: Callable[[], datetime] = _utcnow  # Mews' clock: changes, Date headers
        # Changes are stamped this long before `clock`: a transaction stamped when it began
        # that commits later (what a sync's overlap is for).
        self.commit_delay = timedelta(0)
        self.client_token = DEMO_CLIENT_TOKEN
        self.log = RequestLog()
        self._lock = threading.RLock()
        self._tokens: dict[str, frozenset[str] | None] = {DEMO_PORTFOLIO_ACCESS_TOKEN: None}
        self._rng = random.Random(f"sandbox-runtime-{seed}")  # ids created at run time
        self._profile_id = data.new_id(self._rng)  # the "user" behind Connector API writes
        self._hits: dict[str, deque[float]] = {}  # rate limit: request times per token
        self._faults_seen: Faults | None = None
        self._fault_rng = random.Random(0)
        self._results: OrderedDict[Hashable, list[Any]] = OrderedDict()
        # Without a data set: the enterprises and services, but no orders or notes.
        ds = dataset or data.generate(0, seed, default_anchor())
        self._enterprises = {e.Id: e for e in ds.enterprises}
        self._tokens[DEMO_ACCESS_TOKEN] = frozenset({ds.enterprises[0].Id})
        self._services = {s.Id: s for s in ds.services}
        self._orders = ds.orders  # index == seq
        self._orders_by_id = {o.Id: o for o in ds.orders}
        self._orders_by_updated = _ByUpdated(ds.orders)
        self._notes_by_id = {n.Id: n for n in ds.notes}  # deleted notes stay, as tombstones
        self._notes_by_order: dict[str, list[Note]] = {}
        for note in ds.notes:
            self._notes_by_order.setdefault(note.OrderId, []).append(note)
        self._products = {p.Id: p for p in ds.products}
        self._items_seed = f"items-{seed}"
        # Order items are made on first use (_items_ready): 1.65 per order would cost every
        # sandbox, a benchmark's million orders included, time and memory it may never need.
        self._items: list[Item] | None = None  # index == seq
        self._items_by_id: dict[str, Item] = {}
        self._items_by_order: dict[str, list[Item]] = {}
        self._items_by_updated: _ByUpdated[Item] = _ByUpdated([])

    @classmethod
    def generate(cls, orders: int = 1000, seed: int = 0, config: SandboxConfig | None = None,
                 now: datetime | None = None) -> "Sandbox":
        """Deterministic: the same orders, seed and `now` give identical data. `now` defaults
        to the hour that began at least 2 s ago, so nothing generated lies in the future or in
        the second a run started now ends at."""
        config = config or SandboxConfig()
        with data.paused_gc():
            dataset = data.generate(orders, seed, now or default_anchor(),
                                    legacy_values=config.legacy_values,
                                    null_note_text=config.null_note_text,
                                    heavier=config.heavier_data)
            return cls(config, dataset=dataset, seed=seed)

    # --- tokens -------------------------------------------------------------------------

    def add_token(self, access_token: str, enterprise_ids: list[str] | None = None) -> None:
        """`enterprise_ids=None`: a portfolio token covering every enterprise."""
        with self._lock:
            self._tokens[access_token] = None if enterprise_ids is None else frozenset(
                enterprise_ids)

    def remove_token(self, access_token: str) -> None:
        with self._lock:
            self._tokens.pop(access_token, None)

    def _scope(self, access_token: str) -> Scope:
        enterprise_ids = self._tokens[access_token]
        return frozenset(self._enterprises) if enterprise_ids is None else enterprise_ids

    # --- truth, in API shape ------------------------------------------------------------

    def orders(self) -> list[dict[str, Any]]:
        """Every product service order, oldest created first."""
        with self._lock:
            return [data.order_to_api(o) for o in self._orders]

    def notes(self, types: list[str] | None = None) -> list[dict[str, Any]]:
        """Every note that is not deleted, of the given types (None: all types)."""
        with self._lock:
            shape = self.config.note_shape
            return [data.note_to_api(n, shape) for n in self._notes_by_id.values()
                    if not n.deleted and (types is None or n.Type in types)]

    def services(self) -> list[dict[str, Any]]:
        with self._lock:
            shape = self.config.service_shape
            return [data.service_to_api(s, shape) for s in self._services.values()]

    def enterprises(self) -> list[dict[str, Any]]:
        with self._lock:
            return [data.enterprise_to_api(e) for e in self._enterprises.values()]

    def products(self) -> list[dict[str, Any]]:
        """Every product, default products included."""
        with self._lock:
            return [data.product_to_api(p) for p in self._products.values()]

    def order_items(self) -> list[dict[str, Any]]:
        """Every order item, oldest created first (none is ever removed: canceled items
        stay, Canceled)."""
        with self._lock:
            return [data.item_to_api(i) for i in self._items_ready()]

    # --- mutations through Python -------------------------------------------------------

    def add_order(self, service_id: str, *, at: datetime | None = None,
                  product_orders: list[dict[str, Any]] | None = None, **fields: Any) -> str:
        """`product_orders` as orders/add takes them ({"ProductId", "Count", "UnitAmount"});
        None: one unit of one of the service's products, drawn; []: no items."""
        with self._lock:
            service = self._services[service_id]
            if service.bookable:
                raise ValueError(f"service {service_id} is bookable: it takes reservations")
            if product_orders is None:
                offered = [p for p in self._products.values()
                           if p.ServiceId == service_id and not p.default]
                product_orders = [{"ProductId": offered[int(self._rng.random() * len(offered))].Id}]
            try:
                wanted = self._wanted_items(service, {"ProductOrders": product_orders})
            except ApiError as error:
                raise ValueError(error.message) from None
            fields.setdefault("AccountId", data.new_id(self._rng))
            ts = self._ts(at)
            order = self._new_order(service_id, ts, fields)
            self._new_items(order, wanted, ts, ts, None)
            return order.Id

    def close_bill(self, item_ids: Iterable[str], *, at: datetime | None = None) -> str:
        """Close these Open items on a new bill: Closed, with its BillId and ClosedUtc. Returns
        the bill's id."""
        with self._lock:
            items = [self._item(i, "Open") for i in item_ids]
            ts, bill_id = self._ts(at), data.new_id(self._rng)
            for item in items:
                self._change_item(item, ts, AccountingState="Closed", BillId=bill_id,
                                  ClosedUtc=ts)
            return bill_id

    def cancel_item(self, item_id: str, *, at: datetime | None = None) -> None:
        """Cancel an Open or Inactive item (a closed one is rebated instead)."""
        with self._lock:
            item = self._item(item_id, "Open", "Inactive")
            ts = self._ts(at)
            self._change_item(item, ts, AccountingState="Canceled", CanceledUtc=ts)

    def rebate_item(self, item_id: str, *, at: datetime | None = None) -> str:
        """Add a ProductOrderRebate item taking back the whole of an Open or Closed product
        item: its negative, pointing at it. The rebated item itself does not change. Returns
        the rebate's id."""
        with self._lock:
            item = self._item(item_id, "Open", "Closed")
            if item.Type != "ProductOrder":
                raise ValueError(f"order item {item_id} is no product order: nothing to rebate")
            ts = self._ts(at)
            items = self._items_ready()
            rebate = data.rebate(item, len(items), data.new_id(self._rng), ts)
            self._add_item(rebate, ts)
            return rebate.Id

    def reprice_item(self, item_id: str, unit_price: float, *,
                     at: datetime | None = None) -> None:
        """A new unit price for an Open or Inactive item, in its enterprise's pricing: the
        gross value where prices include taxes, else the net value."""
        with self._lock:
            item = self._item(item_id, "Open", "Inactive")
            enterprise = self._enterprises[item.EnterpriseId]
            code = item.unit.TaxCode
            price = data.make_price(item.unit.Currency, unit_price,
                                    (code, _tax_rates(enterprise)[code]),
                                    enterprise.Pricing == "Gross")
            self._change_item(item, self._ts(at), unit=price)

    def update_order(self, order_id: str, *, at: datetime | None = None, **fields: Any) -> None:
        with self._lock:
            order = self._orders_by_id[order_id]
            ts = self._ts(at)
            if (fields.get("State") == "Canceled" and order.CancelledUtc is None
                    and "CancelledUtc" not in fields):
                fields["CancelledUtc"] = ts  # generated cancelled orders carry it too
            self._update_order(order, {"UpdatedUtc": ts, **fields})

    def rename(self, record_id: str, name: str, *, at: datetime | None = None) -> None:
        """Rename a service, an enterprise or a product (in each of its languages), as staff
        do in Mews."""
        with self._lock:
            ts = self._ts(at)
            if record_id in self._products:
                product = self._products[record_id]
                product.Names = {language: name for language in product.Names}
                product.UpdatedUtc = ts
            elif record_id in self._services:
                self._services[record_id].Name = name
                self._services[record_id].UpdatedUtc = ts
            else:
                self._enterprises[record_id].Name = name
                self._enterprises[record_id].UpdatedUtc = ts
            self._changed()

    def add_note(self, order_id: str, text: str, type: str = "General", *,
                 at: datetime | None = None) -> str:
        with self._lock:
            return self._new_note(self._orders_by_id[order_id], _text_or_raise(text), type,
                                  self._ts(at)).Id

    def update_note(self, note_id: str, text: str, *, at: datetime | None = None) -> None:
        with self._lock:
            self._edit_note(self._live_note(note_id), _text_or_raise(text), self._ts(at))

    def delete_note(self, note_id: str) -> None:
        with self._lock:
            self._delete_note(self._live_note(note_id), self._ts(None))

    def _item(self, item_id: str, *states: str) -> Item:
        self._items_ready()
        item = self._items_by_id[item_id]
        if item.AccountingState not in states:
            raise ValueError(f"order item {item_id} is {item.AccountingState}, "
                             f"not {' or '.join(states)}")
        return item

    def _live_note(self, note_id: str) -> Note:
        note = self._notes_by_id[note_id]
        if note.deleted:
            raise KeyError(note_id)
        return note

    # --- state changes (callers hold the lock) --------------------------------------------

    def _ts(self, at: datetime | None) -> float:
        ts = data.to_ts(at if at is not None else self.clock() - self.commit_delay)
        assert ts is not None
        return ts

    def _changed(self) -> None:
        self._results.clear()  # every cached filter result may be stale now

    @staticmethod
    def _assign(order: Order, fields: dict[str, Any]) -> None:
        """Set fields by API name. A name the API does not have (yet) becomes an extra field
        of the order: that is how a test makes a new field appear."""
        if "Id" in fields:
            raise ValueError("an order's Id cannot change")
        values = {name: data.to_ts(value) if name in data.TIMESTAMP_FIELDS else value
                  for name, value in fields.items()}  # converted first: all or nothing
        if "Options" in values:
            values["Options"] = {**order.Options, **values["Options"]}  # shared: never mutate
        extra = {name: values.pop(name) for name in list(values)
                 if name not in data.ORDER_FIELDS}
        if extra:
            order.extra = {**(order.extra or {}), **extra}
        for name, value in values.items():
            setattr(order, name, value)
        order.json = None

    def _new_order(self, service_id: str, ts: float, fields: dict[str, Any]) -> Order:
        self._items_ready()  # made from the orders before this one, which brings its own
        order = Order(
            seq=len(self._orders), Id=data.new_id(self._rng), ServiceId=service_id,
            AccountId="", AccountType="Customer", CreatorProfileId=self._profile_id,
            UpdaterProfileId=self._profile_id, BookerId=None, Number=str(len(self._orders) + 1),
            State="Confirmed", Origin="Connector", CommanderOrigin=None, OriginDetails=None,
            CreatedUtc=ts, UpdatedUtc=ts, CancelledUtc=None, VoucherId=None,
            BusinessSegmentId=None, LinkedReservationId=None,
            Options=dict.fromkeys(data.OPTION_NAMES, False))
        self._assign(order, fields)
        self._orders.append(order)
        self._orders_by_id[order.Id] = order
        self._orders_by_updated.add(order)
        self._changed()
        return order

    def _update_order(self, order: Order, fields: dict[str, Any]) -> None:
        self._orders_by_updated.remove(order)
        try:
            self._assign(order, fields)
        finally:
            self._orders_by_updated.add(order)
        self._changed()

    def _bump(self, order_id: str, ts: float, switched_on: bool) -> None:
        """A change of something of the order's bumps the order when the switch says so."""
        if switched_on:
            self._update_order(self._orders_by_id[order_id], {"UpdatedUtc": ts})

    def _new_note(self, order: Order, text: str, note_type: str, ts: float) -> Note:
        note = Note(seq=len(self._notes_by_id), Id=data.new_id(self._rng), OrderId=order.Id,
                    Text=text, Type=note_type, CreatedUtc=ts, UpdatedUtc=ts)
        self._notes_by_id[note.Id] = note
        self._notes_by_order.setdefault(order.Id, []).append(note)
        self._bump(order.Id, ts, self.config.notes_bump_order)
        self._changed()
        return note

    def _edit_note(self, note: Note, text: str, ts: float) -> None:
        note.Text, note.UpdatedUtc = text, ts
        self._bump(note.OrderId, ts, self.config.notes_bump_order)
        self._changed()

    def _delete_note(self, note: Note, ts: float) -> None:
        note.deleted = True
        self._bump(note.OrderId, ts, self.config.notes_bump_order)
        self._changed()

    def _items_ready(self) -> list[Item]:
        """The order items, made from the orders as they are at first use: right after
        generate(), the same seed gives the same items. At 200,000 orders: 333,000 items,
        1.7 to 2.1 s of CPU and 165 MB more (generate() itself: 2.9 to 3.8 s, 265 MB)."""
        if self._items is None:
            with data.paused_gc():
                self._items = data.generate_items(self._orders, list(self._products.values()),
                                                  random.Random(self._items_seed))
                self._items_by_id = {i.Id: i for i in self._items}
                for item in self._items:
                    self._items_by_order.setdefault(item.order.Id, []).append(item)
                self._items_by_updated = _ByUpdated(self._items)  # sorted once, not per item
        return self._items

    def _index_item(self, item: Item) -> None:
        assert self._items is not None and item.seq == len(self._items)
        self._items.append(item)
        self._items_by_id[item.Id] = item
        self._items_by_order.setdefault(item.order.Id, []).append(item)
        self._items_by_updated.add(item)

    def _add_item(self, item: Item, ts: float) -> None:
        self._index_item(item)
        self._bump(item.order.Id, ts, self.config.items_bump_order)
        self._changed()

    def _change_item(self, item: Item, ts: float, **fields: Any) -> None:
        self._items_by_updated.remove(item)
        for name, value in fields.items():
            setattr(item, name, value)
        item.UpdatedUtc = ts
        self._items_by_updated.add(item)
        self._bump(item.order.Id, ts, self.config.items_bump_order)
        self._changed()

    def _new_items(self, order: Order, wanted: list["_WantedItem"], ts: float, consumed: float,
                   bill_id: str | None) -> None:
        """The items of a new order, created with it: they do not bump it."""
        items = self._items_ready()
        enterprise_id = self._services[order.ServiceId].EnterpriseId
        for product_id, name, category_id, count, unit in wanted:
            self._index_item(Item(
                seq=len(items), Id=data.new_id(self._rng), order=order,
                EnterpriseId=enterprise_id,
                Type="ProductOrder" if product_id else "CustomItem", product_id=product_id,
                BillingName=name, AccountingCategoryId=category_id, UnitCount=count, unit=unit,
                AccountingState="Open", CreatedUtc=ts, UpdatedUtc=ts, ConsumedUtc=consumed,
                BillId=bill_id))
        self._changed()

    # --- HTTP -----------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: bytes) -> SandboxResponse:
        """Answer one request. Thread-safe. Status 0 means: drop the connection."""
        request_id = str(uuid.uuid4())
        operation = path[len(API_PREFIX):] if path.startswith(API_PREFIX) else path
        payload: dict[str, Any] = {}
        try:
            if operation not in OPERATIONS:
                operation = path
                raise ApiError(404, f"No operation at {path!r}.")
            if method != "POST":
                raise ApiError(405, "Every operation is a POST.", {"Allow": "POST"})
            payload = _parse_body(body)
            faults = self.config.faults
            faulty = faults.only_operations is None or operation in faults.only_operations
            if faulty and faults.latency_s:
                time.sleep(faults.latency_s)  # outside the lock: slow, not serialized
            with self._lock:
                admitted = self._admit(operation, payload, faults, faulty)
            if isinstance(admitted, SandboxResponse):
                response = admitted
            else:
                scope, stall = admitted
                if stall:  # outside the lock: other requests go on meanwhile
                    time.sleep(stall)
                    if faults.stall_then_408:
                        raise ApiError(408, "The request is too heavy: ask for fewer items.")
                with self._lock:
                    response = self._answer(operation, payload, scope, request_id, faults,
                                            faulty)
        except ApiError as error:
            response = SandboxResponse(
                error.status, _headers(request_id, error.headers),
                _dumps({"Message": error.message, "RequestId": request_id}))
        except Exception as error:  # a sandbox bug: answer as the real API would, with a clue
            response = SandboxResponse(500, _headers(request_id), _dumps({
                "Message": "Unexpected error.", "RequestId": request_id,
                "Details": f"{type(error).__name__}: {error}"}))
        if response.status and self.config.date_header:
            # Whole seconds, cut (not rounded), as HTTP servers format them.
            response.headers["Date"] = format_datetime(self.clock().astimezone(UTC), usegmt=True)
        self.log.append(LoggedRequest(operation, response.status, _redact(payload), time.time()))
        return response

    def _admit(self, operation: str, payload: dict[str, Any], faults: Faults,
               faulty: bool) -> tuple[Scope, float] | SandboxResponse:
        """Tokens, rate limit and drawn faults: the token's scope and how many seconds a heavy
        request stalls (0: none), or the answer when a dropped connection was drawn."""
        if payload.get("ClientToken") != self.client_token:
            raise ApiError(401, "Invalid ClientToken.")
        token = payload.get("AccessToken")
        if not isinstance(token, str) or token not in self._tokens:
            raise ApiError(401, "Invalid AccessToken.")
        client = payload.get("Client")
        if not isinstance(client, str) or not client:
            raise _bad("Client is required.")
        # LanguageCode and CultureCode go together; one without the other is not refused:
        # "otherwise, default values will be used" (requests.md). The sandbox has one language.
        self._take_slot(token)
        stall = 0.0
        if faulty:
            if (dropped := self._roll_fault(faults)) is not None:
                return dropped
            if faults.heavy_count is not None and operation.endswith("/getAll"):
                count, _ = _limitation(payload)  # an invalid Limitation is a 400 first
                ids = _longest_id_list(payload) if faults.heavy_ids else 0
                if max(count, ids) > faults.heavy_count:
                    if faults.stall_heavy_s is None:
                        raise ApiError(408, "The request is too heavy: ask for fewer items.")
                    stall = faults.stall_heavy_s
        return self._scope(token), stall

    def _answer(self, operation: str, payload: dict[str, Any], scope: Scope, request_id: str,
                faults: Faults, faulty: bool) -> SandboxResponse:
        body = getattr(self, _HANDLERS[operation])(payload, scope)
        if faulty and faults.malformed_json and self._fault_rng.random() < faults.malformed_json:
            body = body[:len(body) // 2]
        return SandboxResponse(200, _headers(request_id), body)

    def _take_slot(self, token: str) -> None:
        """Sliding window per AccessToken. A refused request takes no slot: a client that
        waits Retry-After seconds gets through, however often it asked meanwhile."""
        if self.config.rate_limit is None:
            return
        limit, window = self.config.rate_limit
        now = time.monotonic()
        hits = self._hits.setdefault(token, deque())
        while hits and hits[0] <= now - window:
            hits.popleft()
        if len(hits) >= limit:
            retry_after = max(1, math.ceil(hits[0] + window - now))
            raise ApiError(429, f"Too many requests: at most {limit} per {window:g} seconds.",
                           self._retry_after(retry_after))
        hits.append(now)

    def _retry_after(self, seconds: int) -> dict[str, str]:
        faults = self.config.faults
        if not faults.retry_after_header:
            return {}
        return {"Retry-After": str(faults.retry_after_s or seconds)}

    def consume_rate_limit(self, access_token: str, n: int) -> None:
        """Take n slots of the token's rate limit window now, as another process sharing the
        token would (Mews counts per AccessToken)."""
        with self._lock:
            self._hits.setdefault(access_token, deque()).extend([time.monotonic()] * n)

    def _roll_fault(self, faults: Faults) -> SandboxResponse | None:
        """Raise a drawn fault; return the "drop" answer; None when no fault was drawn."""
        if faults is not self._faults_seen:  # new settings: restart their random sequence
            self._faults_seen, self._fault_rng = faults, random.Random(faults.seed)
        if not (faults.drop or faults.error_500 or faults.error_408 or faults.error_429):
            return None
        roll = self._fault_rng.random()
        if (roll := roll - faults.drop) < 0:
            return SandboxResponse(0, {}, b"")
        if (roll := roll - faults.error_500) < 0:
            raise ApiError(500, "Unexpected error (injected fault).")
        if (roll := roll - faults.error_408) < 0:
            raise ApiError(408, "Request timeout (injected fault).")
        if roll - faults.error_429 < 0:
            raise ApiError(429, "Too many requests (injected fault).", self._retry_after(1))
        return None

    # --- operations (callers hold the lock) -------------------------------------------------

    def _ids(self, payload: dict[str, Any], name: str, *, required: bool = False,
             most: int = MAX_ITEMS) -> frozenset[str] | None:
        """An id list. Strict: the spec's minItems 1 and format uuid, else a 400."""
        if self.config.strict_ids and payload.get(name) == []:
            raise _bad(f"{name} must contain at least 1 item.")
        ids = _string_set(payload, name, required=required, most=most)
        if ids and self.config.strict_ids:
            for value in ids:
                self._id(value, name)
        return ids

    def _id(self, value: T, name: str) -> T:
        if self.config.strict_ids and isinstance(value, str) and not _UUID.fullmatch(value):
            raise _bad(f"{name} must be a UUID: {value!r}.")
        return value

    def _optional_id(self, payload: dict[str, Any], name: str) -> str | None:
        return self._id(_optional_str(payload, name), name)

    def _visible_enterprises(self, payload: dict[str, Any], scope: Scope) -> Scope:
        wanted = self._ids(payload, "EnterpriseIds")
        # Ids outside the token's scope are ignored rather than refused (undocumented).
        return scope if wanted is None else scope & wanted

    def _visible_order(self, order_id: Any, scope: Scope) -> Order | None:
        order = self._orders_by_id.get(order_id) if isinstance(order_id, str) else None
        if order is None or self._services[order.ServiceId].EnterpriseId not in scope:
            return None  # what a token cannot see does not exist for it
        return order

    def _visible_note(self, note_id: Any, scope: Scope) -> Note | None:
        note = self._notes_by_id.get(note_id) if isinstance(note_id, str) else None
        if note is None or note.deleted or not self._visible_order(note.OrderId, scope):
            return None
        return note

    def _cursor_seq(self, items: dict[str, Any], cursor: str | None) -> int | None:
        """The cursor item is looked up among all items, not only the filtered ones, so
        paging goes on where it was even if the cursor item changed meanwhile."""
        if cursor is None:
            return None
        self._id(cursor, "Limitation.Cursor")
        item = items.get(cursor)
        if item is None:
            raise _bad("Invalid Cursor.")
        return item.seq

    def _cached(self, key: Hashable, build: Callable[[], list[Any]]) -> list[Any]:
        """Filter results by seq, kept until the next change: later pages cost O(page)."""
        found = self._results.get(key)
        if found is None:
            found = self._results[key] = build()
            if len(self._results) > RESULT_CACHE_SIZE:
                self._results.popitem(last=False)
        else:
            self._results.move_to_end(key)
        return found

    def _page(self, items: list[T], cursor_seq: int | None, count: int) -> list[T]:
        """`items` ascend by seq; a page runs newest to oldest, strictly older than the cursor."""
        end = len(items) if cursor_seq is None else bisect_left(items, cursor_seq, key=_seq)
        start = max(0, end - count)
        share = self.config.short_pages
        if share and start > 0 and count > 1:
            # Seeded by the page's place in the walk, so a retried request gets the same page.
            # Its oldest items are left out; the next page, older than the last one shown,
            # begins with them: short, yet nothing is lost.
            rng = random.Random(f"short-page-{cursor_seq}-{count}")
            if rng.random() < share:
                start = end - 1 - int(rng.random() * (count - 1))  # 1 to count - 1 items
        return items[start:end][::-1]

    def _inclusive(self) -> bool:
        return self.config.interval_semantics == "inclusive"

    def _get_orders(self, payload: dict[str, Any], scope: Scope) -> bytes:
        count, cursor = _limitation(payload)
        service_ids = self._ids(payload, "ServiceIds", required=True)
        assert service_ids is not None
        enterprises = self._visible_enterprises(payload, scope)
        services = frozenset(i for i in service_ids
                             if i in self._services and self._services[i].EnterpriseId
                             in enterprises)
        order_ids = self._ids(payload, "ProductServiceOrderIds")
        account_ids = self._ids(payload, "AccountIds")
        reservation_ids = self._ids(payload, "LinkedReservationIds")
        states = _string_set(payload, "States")
        window = _interval(payload, "UpdatedUtc", self.config.interval_limit,
                           required=self.config.updated_utc_required)
        cursor_seq = self._cursor_seq(self._orders_by_id, cursor)
        inclusive = self._inclusive()

        def build() -> list[Order]:
            candidates: Iterator[Order] | list[Order]
            if order_ids is not None:
                candidates = (o for i in order_ids if (o := self._orders_by_id.get(i)))
            elif window is not None:
                candidates = self._orders_by_updated.within(window, inclusive)
            else:
                candidates = self._orders
            found = [o for o in candidates
                     if o.ServiceId in services
                     and (account_ids is None or o.AccountId in account_ids)
                     and (reservation_ids is None or o.LinkedReservationId in reservation_ids)
                     and (states is None or o.State in states)
                     and (window is None or _within(o.UpdatedUtc, window, inclusive))]
            found.sort(key=_seq)
            return found

        key = (GET_ORDERS, services, order_ids, account_ids, reservation_ids, states, window,
               inclusive)
        page = self._page(self._cached(key, build), cursor_seq, count)
        parts = []
        for order in page:
            if order.json is None:
                order.json = data.order_json(order)
            parts.append(order.json)
        return b"".join((b'{"ProductServiceOrders":[', b",".join(parts), b'],"Cursor":',
                         _dumps(page[-1].Id if page else None), b"}"))

    def _get_notes(self, payload: dict[str, Any], scope: Scope) -> bytes:
        count, cursor = _limitation(payload)
        order_ids = self._ids(payload, "ServiceOrderIds", required=True)
        assert order_ids is not None
        note_ids = self._ids(payload, "ServiceOrderNoteIds")
        enterprises = self._visible_enterprises(payload, scope)
        window = _interval(payload, "UpdatedUtc", self.config.interval_limit)
        types = _string_set(payload, "Types") or DEFAULT_NOTE_TYPES
        cursor_seq = self._cursor_seq(self._notes_by_id, cursor)
        inclusive = self._inclusive()

        def build() -> list[Note]:
            found = [n for i in order_ids if self._visible_order(i, enterprises)
                     for n in self._notes_by_order.get(i, ())
                     if not n.deleted and n.Type in types
                     and (note_ids is None or n.Id in note_ids)
                     and (window is None or _within(n.UpdatedUtc, window, inclusive))]
            found.sort(key=_seq)
            return found

        key = (GET_NOTES, order_ids, note_ids, enterprises, window, types, inclusive)
        page = self._page(self._cached(key, build), cursor_seq, count)
        shape = self.config.note_shape
        return _dumps({"ServiceOrderNotes": [data.note_to_api(n, shape) for n in page],
                       "Cursor": page[-1].Id if page else None})

    def _get_services(self, payload: dict[str, Any], scope: Scope) -> bytes:
        count, cursor = _limitation(payload)
        service_ids = self._ids(payload, "ServiceIds")
        enterprises = self._visible_enterprises(payload, scope)
        service_type = _optional_str(payload, "ServiceType")
        if service_type is not None and service_type not in SERVICE_TYPES:
            raise _bad(f"Invalid ServiceType {service_type!r}.")
        window = _interval(payload, "UpdatedUtc", self.config.interval_limit)
        cursor_seq = self._cursor_seq(self._services, cursor)
        inclusive = self._inclusive()
        found = [s for s in self._services.values()
                 if s.EnterpriseId in enterprises
                 and (service_ids is None or s.Id in service_ids)
                 and (service_type is None or SERVICE_TYPES[service_type] == s.bookable)
                 and (window is None or _within(s.UpdatedUtc, window, inclusive))]
        page = self._page(found, cursor_seq, count)
        shape = self.config.service_shape
        return _dumps({"Services": [data.service_to_api(s, shape) for s in page],
                       "Cursor": page[-1].Id if page else None})

    def _get_enterprises(self, payload: dict[str, Any], scope: Scope) -> bytes:
        count, cursor = _limitation(payload)
        enterprises = self._visible_enterprises(payload, scope)
        external_ids = _string_set(payload, "ExternalIdentifiers")
        updated = _interval(payload, "UpdatedUtc", self.config.interval_limit)
        linked = _interval(payload, "LinkedUtc", self.config.interval_limit)
        cursor_seq = self._cursor_seq(self._enterprises, cursor)
        inclusive = self._inclusive()
        found = [e for e in self._enterprises.values()
                 if e.Id in enterprises
                 and external_ids is None  # no sandbox enterprise has an ExternalIdentifier
                 and (updated is None or _within(e.UpdatedUtc, updated, inclusive))
                 and (linked is None or _within(e.LinkedUtc, linked, inclusive))]
        page = self._page(found, cursor_seq, count)
        return _dumps({"Enterprises": [data.enterprise_to_api(e) for e in page],
                       "Cursor": page[-1].Id if page else None})

    def _get_products(self, payload: dict[str, Any], scope: Scope) -> bytes:
        count, cursor = _limitation(payload)
        service_ids = self._ids(payload, "ServiceIds", required=True)
        assert service_ids is not None
        product_ids = self._ids(payload, "ProductIds")
        enterprises = self._visible_enterprises(payload, scope)
        window = _interval(payload, "UpdatedUtc", self.config.interval_limit)
        include_default = payload.get("IncludeDefault")
        if include_default is None:  # documented: true when ProductIds are given, else false
            include_default = product_ids is not None
        if not isinstance(include_default, bool):
            raise _bad("IncludeDefault must be true or false.")
        cursor_seq = self._cursor_seq(self._products, cursor)
        inclusive = self._inclusive()
        found = [p for p in self._products.values()
                 if p.ServiceId in service_ids and p.EnterpriseId in enterprises
                 and (product_ids is None or p.Id in product_ids)
                 and (include_default or not p.default)
                 and (window is None or _within(p.UpdatedUtc, window, inclusive))]
        page = self._page(found, cursor_seq, count)
        # CustomerProducts: "products offered specifically to customers"; the sandbox has none.
        return _dumps({"Products": [data.product_to_api(p) for p in page],
                       "CustomerProducts": [], "Cursor": page[-1].Id if page else None})

    def _get_order_items(self, payload: dict[str, Any], scope: Scope) -> bytes:
        count, cursor = _limitation(payload)
        if payload.get("Currency") is not None:  # converted amounts are no truth to keep
            raise _bad("Currency: the sandbox converts no amounts; leave Currency out.")
        ids = tuple(self._ids(payload, name, most=MAX_ACCOUNT_IDS if name == "AccountIds"
                              else MAX_ITEMS) for name in ORDER_ITEM_ID_FILTERS)
        windows = tuple((name, window) for name in ORDER_ITEM_INTERVALS
                        if (window := _interval(payload, name, self.config.interval_limit)))
        if not windows and all(i is None for i in ids):
            raise _bad(f"At least one of {', '.join(ORDER_ITEM_ID_FILTERS + ORDER_ITEM_INTERVALS)}"
                       " must be specified.")
        states = _string_set(payload, "AccountingStates")
        types = _string_set(payload, "Types")
        enterprises = self._visible_enterprises(payload, scope)
        self._items_ready()
        cursor_seq = self._cursor_seq(self._items_by_id, cursor)
        inclusive = self._inclusive()
        key = (GET_ORDER_ITEMS, ids, windows, states, types, enterprises, inclusive)
        page = self._page(self._cached(key, lambda: self._find_items(
            ids, windows, states, types, enterprises)), cursor_seq, count)
        return b"".join((b'{"OrderItems":[', b",".join(data.item_json(i) for i in page),
                         b'],"Cursor":', _dumps(page[-1].Id if page else None), b"}"))

    def _find_items(self, ids: tuple[frozenset[str] | None, ...],
                    windows: tuple[tuple[str, Window], ...], states: frozenset[str] | None,
                    types: frozenset[str] | None, enterprises: Scope) -> list[Item]:
        """The items that pass every filter, by seq; looked for through the narrowest index."""
        item_ids, order_ids, service_ids, bill_ids, account_ids = ids
        inclusive = self._inclusive()
        updated = dict(windows).get("UpdatedUtc")
        candidates: Iterable[Item]
        if item_ids is not None:
            candidates = (i for n in item_ids if (i := self._items_by_id.get(n)))
        elif order_ids is not None:
            candidates = (i for n in order_ids for i in self._items_by_order.get(n, ()))
        elif updated is not None:
            candidates = self._items_by_updated.within(updated, inclusive)
        else:
            candidates = self._items or ()
        found = [i for i in candidates
                 if i.EnterpriseId in enterprises
                 and (order_ids is None or i.order.Id in order_ids)
                 and (service_ids is None or i.order.ServiceId in service_ids)
                 and (bill_ids is None or i.BillId in bill_ids)
                 and (account_ids is None or i.order.AccountId in account_ids)
                 and (states is None or i.AccountingState in states)
                 and (types is None or i.Type in types)
                 and all((ts := getattr(i, name)) is not None and _within(ts, window, inclusive)
                         for name, window in windows)]
        found.sort(key=_seq)
        return found

    def _add_order(self, payload: dict[str, Any], scope: Scope) -> bytes:
        service_id = self._optional_id(payload, "ServiceId")
        if not service_id:
            raise _bad("ServiceId is required.")
        service = self._services.get(service_id)
        if service is None or service.EnterpriseId not in scope:
            raise _bad(f"Invalid ServiceId {service_id!r}.")
        enterprise_id = self._optional_id(payload, "EnterpriseId")
        if len(scope) > 1:  # "required with a Portfolio Access Token, ignored otherwise"
            if not enterprise_id:
                raise _bad("EnterpriseId is required with a portfolio access token.")
            if enterprise_id != service.EnterpriseId:
                raise _bad("ServiceId does not belong to EnterpriseId.")
        if service.bookable:
            raise ApiError(403, f"Service {service.Name!r} is bookable: it takes reservations.")
        if not service.IsActive:  # a business rule, as for bookable services (undocumented)
            raise ApiError(403, f"Service {service.Name!r} is not active.")
        account_id = (self._optional_id(payload, "AccountId")
                      or self._optional_id(payload, "CustomerId"))
        if not account_id:
            raise _bad("AccountId (or the deprecated CustomerId) is required.")
        wanted = self._wanted_items(service, payload)
        consumed = None
        if payload.get("ConsumptionUtc") is not None:
            consumed = _parse_utc(payload["ConsumptionUtc"], "ConsumptionUtc").timestamp()
        notes = _optional_str(payload, "Notes")
        bill_id = self._optional_id(payload, "BillId")
        fields = {"AccountId": account_id,
                  "BusinessSegmentId": self._optional_id(payload, "BusinessSegmentId"),
                  "LinkedReservationId": self._optional_id(payload, "LinkedReservationId")}
        ts = self._ts(None)
        order = self._new_order(service.Id, ts, fields)
        self._new_items(order, wanted, ts, ts if consumed is None else consumed, bill_id)
        if notes:
            self._new_note(order, notes, "General", ts)
        return _dumps({"OrderId": order.Id, "ChargeId": data.new_id(self._rng)})

    def _wanted_items(self, service: Service, payload: dict[str, Any]) -> list[_WantedItem]:
        """The ProductOrders (products of the service) and Items (custom) of orders/add."""
        enterprise = self._enterprises[service.EnterpriseId]
        wanted = []
        for i, asked in enumerate(_items(payload, "ProductOrders", required=False)):
            name, product_id = f"ProductOrders[{i}]", asked.get("ProductId")
            if not isinstance(product_id, str):
                raise _bad(f"{name}.ProductId is required.")
            product = self._products.get(product_id)
            if product is None or product.ServiceId != service.Id:
                raise _bad(f"{name}.ProductId is not a product of service {service.Name!r}.")
            unit = product.Price
            if asked.get("UnitAmount") is not None:
                unit = _unit_amount(asked["UnitAmount"], f"{name}.UnitAmount", enterprise)
            wanted.append(_WantedItem(product.Id, product.Names["en-US"],
                                      product.AccountingCategoryId,
                                      _count(asked.get("Count"), f"{name}.Count", 1), unit))
        for i, asked in enumerate(_items(payload, "Items", required=False)):
            name = f"Items[{i}]"
            wanted.append(_WantedItem(
                None, _text(asked.get("Name"), f"{name}.Name"),
                self._id(_optional_str(asked, "AccountingCategoryId"), name),
                _count(asked.get("UnitCount"), f"{name}.UnitCount"),
                _unit_amount(asked.get("UnitAmount"), f"{name}.UnitAmount", enterprise)))
        return wanted

    def _notes_answer(self, notes: list[Note]) -> bytes:
        shape = self.config.note_shape
        return _dumps({"ServiceOrderNotes": [data.note_to_api(n, shape) for n in notes]})

    def _add_notes(self, payload: dict[str, Any], scope: Scope) -> bytes:
        additions = []
        for i, item in enumerate(_items(payload, "ServiceOrderNotes", required=True)):
            order_id = self._id(item.get("ServiceOrderId"), f"ServiceOrderNotes[{i}]")
            order = self._visible_order(order_id, scope)
            if order is None:
                raise _bad(f"ServiceOrderNotes[{i}].ServiceOrderId is not a known order.")
            additions.append((order, _text(item.get("Text"), f"ServiceOrderNotes[{i}].Text")))
        ts = self._ts(None)  # validate everything first: a request applies wholly or not at all
        return self._notes_answer([self._new_note(order, text, "General", ts)
                                   for order, text in additions])

    def _update_notes(self, payload: dict[str, Any], scope: Scope) -> bytes:
        updates = []
        for i, item in enumerate(_items(payload, "ServiceOrderNoteUpdates", required=True)):
            # The seed's sample sends {"Id", "Text": {"Value"}}; its table, {"ServiceOrderNoteId",
            # "Text": "..."}. Both are taken.
            note_id = item.get("Id") or item.get("ServiceOrderNoteId")
            note = self._visible_note(self._id(note_id, f"ServiceOrderNoteUpdates[{i}]"), scope)
            if note is None:
                raise _bad(f"ServiceOrderNoteUpdates[{i}]: unknown service order note.")
            text = item.get("Text")
            if isinstance(text, dict):
                text = text.get("Value")
            updates.append((note, _text(text, f"ServiceOrderNoteUpdates[{i}].Text")))
        ts = self._ts(None)
        for note, text in updates:
            self._edit_note(note, text, ts)
        return self._notes_answer([note for note, _ in updates])

    def _delete_notes(self, payload: dict[str, Any], scope: Scope) -> bytes:
        note_ids = self._ids(payload, "ServiceOrderNoteIds", required=True)
        assert note_ids is not None
        notes = []
        for note_id in sorted(note_ids):
            note = self._visible_note(note_id, scope)
            if note is None:
                raise _bad(f"ServiceOrderNoteIds: unknown service order note {note_id!r}.")
            notes.append(note)
        ts = self._ts(None)
        for note in notes:
            self._delete_note(note, ts)
        return b"{}"


def default_anchor(now: datetime | None = None) -> datetime:
    """The hour that began at least 2 s before `now` (default: this machine's clock). A run
    ends its windows at Mews' clock rounded down to the second and leaves what is stamped in
    that second to the next run; data generated at the very start of an hour, stamped with
    that hour, would otherwise be in the second a sync started right after ends at (CI once
    failed so)."""
    earlier = (now or datetime.now(UTC)) - timedelta(seconds=2)
    return earlier.replace(minute=0, second=0, microsecond=0)


def _parse_body(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError:  # includes UnicodeDecodeError
        raise _bad("The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise _bad("The request body must be a JSON object.")
    return payload


def _text_or_raise(text: str) -> str:
    if not isinstance(text, str) or not text:
        raise ValueError("a note text needs at least 1 character")
    return text
