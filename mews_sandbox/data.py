"""The sandbox's records, their API shapes, and deterministic generation of a data set.

Timestamps are epoch seconds. Generated ones are whole seconds; a change keeps the clock's
microseconds, as a real server does, so it is never stamped earlier than it happened (which
would hide it from a client whose last window ended in that same second). The API shows
whole seconds; filters compare the precise value.
"""

import calendar
import gc
import json
import random
import time
import uuid
from bisect import bisect_right
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

NoteShape = Literal["seed", "current"]
ServiceShape = Literal["current", "legacy"]

DAY = 86_400
# The last state is "Inquired" again today; with legacy values it is the older spelling
# "Enquired", so that old data mixes both. Same weights either way: the same draws.
ORDER_STATES = ("Processed", "Confirmed", "Canceled", "Inquired", "Started", "Optional",
                "Requested", "Inquired")
LEGACY_ORDER_STATES = (*ORDER_STATES[:-1], "Enquired")
ORDER_STATE_WEIGHTS = (45, 20, 12, 6, 5, 5, 4, 3)
ORIGINS = ("Distributor", "ChannelManager", "Commander", "Import", "Connector", "Navigator")
ORIGIN_WEIGHTS = (30, 25, 25, 2, 10, 8)
LEGACY_COMMANDER_ORIGINS = ("InPerson", "Channel", "Phone", "Email", "Website", "Message",
                            "CallCenter")
COMMANDER_ORIGINS = (*LEGACY_COMMANDER_ORIGINS, "RoomingList")  # added 2026-01
CHANNELS = ("Booking.com", "Expedia", "Airbnb", "Hotelbeds")
ADDITIONAL_SERVICES = ("Breakfast", "Parking", "Spa", "Airport transfer", "City tour",
                       "Late checkout", "Minibar")
# Name, ShortName, TimeZoneIdentifier, country, DefaultLanguageCode, Pricing, currency. Zones
# with and without daylight saving time, east and west of UTC.
ENTERPRISE_PROFILES = (
    ("Hotel Aurora Prague", "Aurora PRG", "Europe/Prague", "CZ", "cs-CZ", "Gross", "CZK"),
    ("Harbour View Honolulu", "Harbour HNL", "Pacific/Honolulu", "US", "en-US", "Net", "USD"),
    ("Alpine Lodge Innsbruck", None, "Europe/Vienna", "AT", "de-AT", "Gross", "EUR"),
)
# Tax rates by country: (code, rate) of the reduced and the standard rate.
TAX_RATES = {
    "CZ": (("CZ-2024-R", 0.12), ("CZ-2024-S", 0.21)),
    "US": (("US-HI-GET", 0.04712), ("US-HI-GET", 0.04712)),
    "AT": (("AT-2016-R", 0.10), ("AT-2016-S", 0.20)),
}
PRICE_FACTOR = {"CZK": 25.0, "USD": 1.1, "EUR": 1.0}  # catalogue prices are in EUR
# Products of each Additional service: English name, short name, classification, reduced tax
# rate, price in EUR. Prices have cents, and net values from a gross price have four decimals
# (3.5 / 1.12 = 3.125, 12.5 / 1.12 = 11.1607): sums of floats are not sums of decimals.
PRODUCT_CATALOGUE: dict[str, tuple[tuple[str, str, str | None, bool, float], ...]] = {
    "Breakfast": (("Continental breakfast", "CONT", "Food", True, 12.5),
                  ("Breakfast buffet", "BUFF", "Food", True, 18.9),
                  ("Kids breakfast", "KIDS", "Food", True, 7.45)),
    "Parking": (("Parking spot per day", "PARK", None, False, 15.0),
                ("Garage per day", "GAR", None, False, 22.5),
                ("EV charging", "EV", None, False, 9.99)),
    "Spa": (("Massage 60 min", "MAS60", "Wellness", False, 79.0),
            ("Sauna entry", "SAUNA", "Wellness", False, 14.5),
            ("Spa day pass", "SPA", "Wellness", False, 45.0)),
    "Airport transfer": (("Transfer one way", "TR1", None, False, 39.9),
                         ("Transfer return", "TR2", None, False, 72.0)),
    "City tour": (("Walking tour", "WALK", None, False, 25.0),
                  ("Bus tour", "BUS", None, False, 33.3)),
    "Late checkout": (("Late checkout until 14:00", "LC14", None, False, 20.0),
                      ("Late checkout until 18:00", "LC18", None, False, 45.0)),
    "Minibar": (("Water", "H2O", "Beverage", True, 3.5), ("Beer", "BEER", "Beverage", False, 5.9),
                ("Chocolate", "CHOC", "Food", True, 4.2)),
}
LOCAL_NAMES = {  # a few translations: Names holds the languages a product has
    "cs-CZ": {"Continental breakfast": "Kontinentální snídaně", "Breakfast buffet": "Snídaně",
              "Parking spot per day": "Parkování na den", "Water": "Voda", "Beer": "Pivo"},
    "de-AT": {"Continental breakfast": "Kontinentales Frühstück", "Sauna entry": "Saunaeintritt",
              "Garage per day": "Garage pro Tag", "Beer": "Bier"},
}
ACCOUNTING_CATEGORIES = ("Food", "Beverage", "Wellness", "Other")
CLASSIFICATIONS = ("Food", "Beverage", "Wellness", "CityTax", "Fee")
# The order's state -> its items' AccountingState (Processed: most are Closed on a bill).
ITEM_STATES = {"Canceled": "Canceled", "Optional": "Inactive", "Inquired": "Inactive",
               "Enquired": "Inactive", "Requested": "Inactive"}
ITEM_COUNT_WEIGHTS = (50, 35, 15)  # 1, 2 or 3 items per order: 1.65 on average
CHAIN_NAME = "Sandbox Hotels"
# Line1, City, PostalCode of an enterprise's Address, by its country.
ADDRESSES = {
    "CZ": ("I.P. Pavlova 5", "Prague", "120 00"),
    "US": ("2005 Kalia Road", "Honolulu", "96815"),
    "AT": ("Maria-Theresien-Straße 18", "Innsbruck", "6020"),
}
NOTE_TYPES = ("General", "ChannelManager", "SpecialRequest")
NOTE_TYPE_WEIGHTS = (80, 15, 5)
NOTE_TEXTS = {
    "General": ("Shaken, not stirred.", "Guest allergic to nuts.", "Late arrival, around 23:00.",
                "Invoice to the company, please.", "Pick-up at terminal 2.", "VIP guest.",
                "Birthday: add a card.", "Příjezd po půlnoci, klíč na recepci.",
                'Quote "as agreed" \\ backslash test ✓'),
    "ChannelManager": ("Booked via Booking.com, prepaid.", "Expedia Collect booking.",
                       "Virtual card will be charged on arrival."),
    "SpecialRequest": ("Extra pillows please.", "Quiet table by the window.",
                       "Gluten-free breakfast."),
}


@dataclass(slots=True, eq=False)
class Enterprise:
    seq: int
    Id: str
    Name: str
    ShortName: str | None
    TimeZoneIdentifier: str
    Country: str
    DefaultLanguageCode: str
    Pricing: str
    ChainId: str
    CreatedUtc: float
    UpdatedUtc: float
    LinkedUtc: float  # added to the portfolio
    currency: str  # not in enterprises/getAll (configuration/get has it): the items' currency


# Attributes carry the API's names so that updates given in API names need no mapping table.
@dataclass(slots=True, eq=False)
class Service:
    seq: int
    Id: str
    EnterpriseId: str
    Name: str
    bookable: bool
    IsActive: bool
    CreatedUtc: float
    UpdatedUtc: float


@dataclass(slots=True, eq=False)
class Order:
    seq: int  # hidden creation sequence: the order pages follow (higher = newer)
    Id: str
    ServiceId: str
    AccountId: str
    AccountType: str
    CreatorProfileId: str
    UpdaterProfileId: str
    BookerId: str | None
    Number: str
    State: str
    Origin: str
    CommanderOrigin: str | None
    OriginDetails: str | None
    CreatedUtc: float
    UpdatedUtc: float
    CancelledUtc: float | None
    VoucherId: str | None
    BusinessSegmentId: str | None
    LinkedReservationId: str | None
    Options: dict[str, bool]  # shared between orders: replace it, never mutate it
    extra: dict[str, Any] | None = None  # fields the API may add one day (schema evolution)
    json: bytes | None = None  # cached serialization; reset on every change


ORDER_FIELDS = tuple(f for f in Order.__dataclass_fields__ if f[0].isupper())
TIMESTAMP_FIELDS = frozenset({"CreatedUtc", "UpdatedUtc", "CancelledUtc"})
OPTION_NAMES = ("OwnerCheckedIn", "AllCompanionsCheckedIn", "AnyCompanionCheckedIn",
                "ConnectorCheckIn")


@dataclass(slots=True, eq=False)
class Note:
    seq: int
    Id: str
    OrderId: str
    Text: str | None  # the spec requires no field of a note
    Type: str
    CreatedUtc: float
    UpdatedUtc: float
    deleted: bool = False  # kept as a tombstone so a cursor pointing at it stays valid
    extra: dict[str, Any] | None = None  # fields the API may add one day; shared, never mutated


@dataclass(slots=True, frozen=True)
class Price:
    """An amount in one tax rate: a unit price, or a unit count times one."""

    Currency: str
    NetValue: float
    GrossValue: float
    TaxCode: str
    TaxValue: float

    def times(self, count: int) -> "Price":
        if count == 1:
            return self
        return Price(self.Currency, round(self.NetValue * count, 4),
                     round(self.GrossValue * count, 4), self.TaxCode,
                     round(self.TaxValue * count, 4))


def make_price(currency: str, value: float, tax: tuple[str, float], gross_pricing: bool) -> Price:
    """A unit price from the value an enterprise prices in: gross (tax included) or net."""
    code, rate = tax
    if gross_pricing:
        gross = round(value, 2)
        net = round(gross / (1 + rate), 4)
        return Price(currency, net, gross, code, round(gross - net, 4))
    net = round(value, 4)
    tax_value = round(net * rate, 4)
    return Price(currency, net, round(net + tax_value, 4), code, tax_value)


@dataclass(slots=True, eq=False)
class Product:
    seq: int
    Id: str
    ServiceId: str
    EnterpriseId: str  # not in the API's product: the token scope it belongs to
    Names: dict[str, str]
    ShortName: str
    classification: str | None  # the one of CLASSIFICATIONS that is true
    AccountingCategoryId: str
    IsActive: bool
    default: bool  # a "default product" (IncludeDefault); never in generated items
    Price: Price
    CreatedUtc: float
    UpdatedUtc: float


@dataclass(slots=True, eq=False)
class Item:
    """An order item. Order, service, account and enterprise come from `order`; the amounts
    are `unit` times UnitCount, computed when shown."""

    seq: int
    Id: str
    order: Order
    EnterpriseId: str
    Type: str  # ProductOrder, ProductOrderRebate, CustomItem
    product_id: str | None  # None: a custom item (orders/add Items)
    BillingName: str
    AccountingCategoryId: str | None
    UnitCount: int
    unit: Price
    AccountingState: str
    CreatedUtc: float
    UpdatedUtc: float
    ConsumedUtc: float
    ClosedUtc: float | None = None
    CanceledUtc: float | None = None
    BillId: str | None = None
    rebated_id: str | None = None  # the item a ProductOrderRebate rebates


@dataclass
class Dataset:
    enterprises: list[Enterprise] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    products: list[Product] = field(default_factory=list)


def fmt_ts(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))  # 2x datetime's speed


def to_ts(value: datetime | str | float | None) -> float | None:
    """Epoch seconds from an aware datetime, an ISO 8601 string or a number."""
    if value is None or isinstance(value, int | float):
        return value
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        raise ValueError(f"timestamp must be timezone-aware: {value!r}")
    return value.timestamp()


def add_months(dt: datetime, months: int) -> datetime:
    """Calendar-month addition that clamps the day (2023-01-31 + 1 month = 2023-02-28)."""
    year, month0 = divmod(dt.month - 1 + months, 12)
    year += dt.year
    day = min(dt.day, calendar.monthrange(year, month0 + 1)[1])
    return dt.replace(year=year, month=month0 + 1, day=day)


def order_to_api(order: Order) -> dict[str, Any]:
    api: dict[str, Any] = {name: getattr(order, name) for name in ORDER_FIELDS}
    for name in TIMESTAMP_FIELDS:
        api[name] = fmt_ts(api[name])
    api["Options"] = dict(order.Options)
    if order.extra:
        api.update(order.extra)
    return api


_quote = json.encoder.encode_basestring  # C-accelerated, keeps non-ASCII as is
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _js(value: Any) -> str:
    if type(value) is str:
        return _quote(value)
    return "null" if value is None else _encode(value)


@lru_cache(maxsize=256)
def _options_json(items: tuple[tuple[str, bool], ...]) -> str:
    return _encode(dict(items))  # a handful of distinct values; encoding one costs 3 µs


def order_json(o: Order) -> bytes:
    """Compact JSON of order_to_api(o), byte for byte, at 3x the speed of json.dumps of that
    dict: pages of orders are mostly this."""
    text = (
        f'{{"Id":{_js(o.Id)},"ServiceId":{_js(o.ServiceId)},"AccountId":{_js(o.AccountId)},'
        f'"AccountType":{_js(o.AccountType)},"CreatorProfileId":{_js(o.CreatorProfileId)},'
        f'"UpdaterProfileId":{_js(o.UpdaterProfileId)},"BookerId":{_js(o.BookerId)},'
        f'"Number":{_js(o.Number)},"State":{_js(o.State)},"Origin":{_js(o.Origin)},'
        f'"CommanderOrigin":{_js(o.CommanderOrigin)},"OriginDetails":{_js(o.OriginDetails)},'
        f'"CreatedUtc":{_js(fmt_ts(o.CreatedUtc))},"UpdatedUtc":{_js(fmt_ts(o.UpdatedUtc))},'
        f'"CancelledUtc":{_js(fmt_ts(o.CancelledUtc))},"VoucherId":{_js(o.VoucherId)},'
        f'"BusinessSegmentId":{_js(o.BusinessSegmentId)},'
        f'"LinkedReservationId":{_js(o.LinkedReservationId)},'
        f'"Options":{_options_json(tuple(o.Options.items()))}'
    )
    if o.extra:
        text += "," + _js(o.extra)[1:-1]
    return (text + "}").encode()


def note_to_api(note: Note, shape: NoteShape) -> dict[str, Any]:
    api: dict[str, Any]
    if shape == "seed":
        api = {"Id": note.Id, "ServiceOrderId": note.OrderId, "Text": note.Text,
               "Type": note.Type, "CreatedUtc": fmt_ts(note.CreatedUtc)}
    else:
        api = {"Id": note.Id, "OrderId": note.OrderId, "Text": note.Text, "Type": note.Type,
               "CreatedUtc": fmt_ts(note.CreatedUtc), "UpdatedUtc": fmt_ts(note.UpdatedUtc)}
    if note.extra:
        api.update(note.extra)
    return api


def enterprise_to_api(e: Enterprise) -> dict[str, Any]:
    """Every field the current documentation marks required (the deprecated
    EditableHistoryInterval null, as in its sample), and some optional ones."""
    line1, city, postal_code = ADDRESSES.get(e.Country, (None, None, None))
    address_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"mews-sandbox/address/{e.Id}"))
    return {
        "Id": e.Id, "ExternalIdentifier": None, "HoldingKey": None, "ChainId": e.ChainId,
        "ChainName": CHAIN_NAME, "CreatedUtc": fmt_ts(e.CreatedUtc),
        "UpdatedUtc": fmt_ts(e.UpdatedUtc), "Name": e.Name, "ShortName": e.ShortName,
        "TimeZoneIdentifier": e.TimeZoneIdentifier, "LegalEnvironmentCode": e.Country,
        "AccommodationEnvironmentCode": e.Country, "AccountingEnvironmentCode": e.Country,
        "TaxEnvironmentCode": e.Country, "DefaultLanguageCode": e.DefaultLanguageCode,
        "Pricing": e.Pricing, "LinkedUtc": fmt_ts(e.LinkedUtc),
        "EditableHistoryInterval": None, "AccountingEditableHistoryInterval": "P0M7DT0H0M0S",
        "OperationalEditableHistoryInterval": "P0M5DT0H0M0S", "BusinessDayClosingOffset": None,
        "TaxPrecision": None, "AddressId": address_id,
        "Address": {"Id": address_id, "Line1": line1, "Line2": None, "City": city,
                    "PostalCode": postal_code, "CountryCode": e.Country,
                    "CountrySubdivisionCode": None, "Latitude": None, "Longitude": None},
        "GroupNames": [CHAIN_NAME], "Subscription": {"TaxIdentifier": None},
    }


def service_to_api(service: Service, shape: ServiceShape) -> dict[str, Any]:
    api: dict[str, Any] = {
        "Id": service.Id,
        "EnterpriseId": service.EnterpriseId,
        "IsActive": service.IsActive,
        "Names": {"en-US": service.Name},
        "CreatedUtc": fmt_ts(service.CreatedUtc),
        "UpdatedUtc": fmt_ts(service.UpdatedUtc),
    }
    if shape == "legacy":  # older responses: the single Name and Type, no Data
        api["Name"] = service.Name
        api["Type"] = "Reservable" if service.bookable else "Orderable"
        return api
    api["Options"] = {"BillAsPackage": False}
    api["Ordering"] = service.seq
    # Optional: some services have one, as in the documentation's sample.
    api["ExternalIdentifier"] = f"SVCE-{service.seq}" if service.seq % 2 else None
    if service.bookable:
        api["Data"] = {"Discriminator": "Bookable", "Value": {
            "StartOffset": "P0M0DT14H0M0S", "EndOffset": "P0M0DT12H0M0S",
            "OccupancyStartOffset": "P0M0DT14H0M0S", "OccupancyEndOffset": "P0M0DT12H0M0S",
            "TimeUnitPeriod": "Day"}}
    else:
        api["Data"] = {"Discriminator": "Additional", "Value": {"Promotions": {
            "BeforeCheckIn": False, "AfterCheckIn": True, "DuringStay": True,
            "BeforeCheckOut": False, "AfterCheckOut": False, "DuringCheckOut": False}}}
    return api


def amount_to_api(price: Price) -> dict[str, Any]:
    """The Amount object: one tax rate, so one tax value and one breakdown item."""
    return {
        "Currency": price.Currency, "NetValue": price.NetValue, "GrossValue": price.GrossValue,
        "TaxValues": [{"Code": price.TaxCode, "Value": price.TaxValue}],
        "Breakdown": {"Items": [{"TaxRateCode": price.TaxCode, "NetValue": price.NetValue,
                                 "TaxValue": price.TaxValue}]},
    }


def product_to_api(p: Product) -> dict[str, Any]:
    """The current documentation's product (products.md), its deprecated fields left out."""
    return {
        "Id": p.Id, "ServiceId": p.ServiceId, "CreatedUtc": fmt_ts(p.CreatedUtc),
        "UpdatedUtc": fmt_ts(p.UpdatedUtc), "CategoryId": None,
        "AccountingCategoryId": p.AccountingCategoryId, "IsActive": p.IsActive,
        "Names": dict(p.Names), "ExternalNames": dict(p.Names),
        "ShortNames": {"en-US": p.ShortName}, "Descriptions": {},
        "ChargingMode": "Once", "PostingMode": "Once",
        "Options": {"BillAsPackage": False, "ExcludePriceFromOffer": False},
        "Promotions": {"BeforeCheckIn": False, "AfterCheckIn": True, "DuringStay": True,
                       "BeforeCheckOut": False, "AfterCheckOut": False,
                       "DuringCheckOut": False},
        "Classifications": {name: name == p.classification for name in CLASSIFICATIONS},
        "Price": amount_to_api(p.Price), "Ordering": p.seq, "ExternalIdentifier": None,
        "ConsumptionMoment": "ServiceOrderStart",
    }


def _item_data(item: Item) -> dict[str, Any] | None:
    if item.Type == "ProductOrderRebate":
        return {"Discriminator": "Rebate", "Product": None,
                "Rebate": {"ProductId": item.product_id, "RebatedItemId": item.rebated_id}}
    if item.product_id is None:
        return None  # a custom item
    return {"Discriminator": "Product", "Rebate": None, "Product": {
        "ProductId": item.product_id, "AgeCategoryId": None, "ProductType": "Product"}}


def item_to_api(item: Item) -> dict[str, Any]:
    """The current documentation's order item (orderitems.md). OriginalAmount equals Amount:
    the sandbox converts no currency."""
    order = item.order
    amount = amount_to_api(item.unit.times(item.UnitCount))
    return {
        "Id": item.Id, "EnterpriseId": item.EnterpriseId, "AccountId": order.AccountId,
        "AccountType": order.AccountType, "Notes": None, "ServiceId": order.ServiceId,
        "ServiceOrderId": order.Id, "BillId": item.BillId,
        "AccountingCategoryId": item.AccountingCategoryId, "BillingName": item.BillingName,
        "ExternalIdentifier": None, "UnitCount": item.UnitCount,
        "UnitAmount": amount_to_api(item.unit), "Amount": amount, "OriginalAmount": amount,
        "RevenueType": "Additional" if item.product_id is None else "Product",
        "CreatorProfileId": order.CreatorProfileId, "UpdaterProfileId": order.UpdaterProfileId,
        "CreatedUtc": fmt_ts(item.CreatedUtc), "UpdatedUtc": fmt_ts(item.UpdatedUtc),
        "ConsumedUtc": fmt_ts(item.ConsumedUtc), "CanceledUtc": fmt_ts(item.CanceledUtc),
        "ClosedUtc": fmt_ts(item.ClosedUtc), "StartUtc": None, "ClaimedUtc": None,
        "AccountingState": item.AccountingState, "Type": item.Type,
        "Options": {"CanceledWithReservation": False}, "Data": _item_data(item),
    }


@lru_cache(maxsize=4096)
def _amount_json(price: Price) -> str:
    return _encode(amount_to_api(price))  # a few hundred distinct amounts: nearly all cached


def item_json(item: Item) -> bytes:
    """Compact JSON of item_to_api(item), byte for byte, with the amounts from a cache: a page
    of 1000 items costs 26 ms of CPU instead of 59 with json.dumps of the dicts."""
    o = item.order
    amount = _amount_json(item.unit.times(item.UnitCount))
    text = (
        f'{{"Id":{_js(item.Id)},"EnterpriseId":{_js(item.EnterpriseId)},'
        f'"AccountId":{_js(o.AccountId)},"AccountType":{_js(o.AccountType)},"Notes":null,'
        f'"ServiceId":{_js(o.ServiceId)},"ServiceOrderId":{_js(o.Id)},'
        f'"BillId":{_js(item.BillId)},"AccountingCategoryId":{_js(item.AccountingCategoryId)},'
        f'"BillingName":{_js(item.BillingName)},"ExternalIdentifier":null,'
        f'"UnitCount":{item.UnitCount},"UnitAmount":{_amount_json(item.unit)},'
        f'"Amount":{amount},"OriginalAmount":{amount},'
        f'"RevenueType":"{"Additional" if item.product_id is None else "Product"}",'
        f'"CreatorProfileId":{_js(o.CreatorProfileId)},'
        f'"UpdaterProfileId":{_js(o.UpdaterProfileId)},'
        f'"CreatedUtc":{_js(fmt_ts(item.CreatedUtc))},"UpdatedUtc":{_js(fmt_ts(item.UpdatedUtc))},'
        f'"ConsumedUtc":{_js(fmt_ts(item.ConsumedUtc))},'
        f'"CanceledUtc":{_js(fmt_ts(item.CanceledUtc))},"ClosedUtc":{_js(fmt_ts(item.ClosedUtc))},'
        f'"StartUtc":null,"ClaimedUtc":null,"AccountingState":{_js(item.AccountingState)},'
        f'"Type":{_js(item.Type)},"Options":{{"CanceledWithReservation":false}},'
        f'"Data":{_js(_item_data(item))}}}'
    )
    return text.encode()


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def new_id(rng: random.Random) -> str:
    """A version-4 UUID string from `rng` (3x faster than uuid.UUID: it matters at 2.5M ids)."""
    h = rng.randbytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def _month_starts(start: int, end: int) -> tuple[list[int], list[int]]:
    """Epoch seconds of every first-of-month (and first-of-quarter) in [start, end]."""
    months: list[int] = []
    dt = datetime.fromtimestamp(start, UTC).replace(day=1, hour=0, minute=0, second=0)
    while (ts := int(dt.timestamp())) <= end:
        if ts >= start:
            months.append(ts)
        dt = add_months(dt, 1)
    quarters = [ts for ts in months if datetime.fromtimestamp(ts, UTC).month % 3 == 1]
    return months, quarters


def _next_boundary(boundaries: list[int], after: int, skip: int) -> int | None:
    i = bisect_right(boundaries, after) + skip
    return boundaries[i] if i < len(boundaries) else None


@contextmanager
def paused_gc() -> Iterator[None]:
    """Millions of small objects and no cycles: the cyclic GC would only rescan them over and
    over while they are built (a quarter of the time at a million orders)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def generate(orders: int, seed: int, now: datetime, *, legacy_values: bool = False,
             null_note_text: float = 0.0, heavier: bool = False) -> Dataset:
    """Same arguments -> identical data. Nothing is later than `now`. `legacy_values` and
    `null_note_text` change only the values they name: the random draws stay the same.
    `heavier`: about 2 notes per order instead of 1.6, and fields the pipeline does not know,
    three on orders and one on notes, as real Mews adds them (drawn from an RNG of their own)."""
    rng = random.Random(seed)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    anchor = int(now.timestamp())  # whole seconds, not later than now
    start = anchor - 4 * 365 * DAY
    data = Dataset()

    # The enterprises' details come from their own RNG: the main sequence stays as it was.
    details = random.Random(f"enterprises-{seed}")
    chain_id = new_id(details)
    for name, short, zone, country, language, pricing, currency in ENTERPRISE_PROFILES:
        created = start - 365 * DAY - details.randrange(365 * DAY)
        data.enterprises.append(Enterprise(
            seq=len(data.enterprises), Id=new_id(rng), Name=name, ShortName=short,
            TimeZoneIdentifier=zone, Country=country, DefaultLanguageCode=language,
            Pricing=pricing, ChainId=chain_id, CreatedUtc=created,
            UpdatedUtc=created + details.randrange(anchor - created),
            LinkedUtc=created + details.randrange(30 * DAY), currency=currency))
    additional: list[Service] = []
    for enterprise in data.enterprises:
        names = ["Accommodation", *rng.sample(ADDITIONAL_SERVICES, 5)]
        for i, name in enumerate(names):
            created = start - rng.randrange(365 * DAY)
            service = Service(
                seq=len(data.services), Id=new_id(rng), EnterpriseId=enterprise.Id, Name=name,
                bookable=i == 0, IsActive=i != len(names) - 1,  # the last one was retired
                CreatedUtc=created, UpdatedUtc=created + rng.randrange(anchor - created))
            data.services.append(service)
            if not service.bookable:
                additional.append(service)
    # Products from an RNG of their own too: the orders of a seed stay as they were.
    data.products = generate_products(data.enterprises, additional, anchor,
                                      random.Random(f"products-{seed}"))

    accounts = [new_id(rng) for _ in range(max(20, orders // 3))]
    reservations = [new_id(rng) for _ in range(max(10, orders // 4))]
    profiles = [new_id(rng) for _ in range(12)]
    vouchers = [new_id(rng) for _ in range(30)]
    segments = [new_id(rng) for _ in range(5)]
    months, quarters = _month_starts(start, anchor)
    options_pool: dict[tuple[bool, ...], dict[str, bool]] = {}
    rand = rng.random

    def pick(items: list[str] | tuple[str, ...]) -> str:
        # rng.choice() costs ~10x more, which shows at a million orders
        return items[int(rand() * len(items))]

    enterprise_weight = dict(zip((e.Id for e in data.enterprises), (5, 3, 2), strict=True))
    service_weights = [enterprise_weight[s.EnterpriseId] * (1 if s.IsActive else 0.3)
                       for s in additional]
    services = rng.choices([s.Id for s in additional], service_weights, k=orders)
    states = rng.choices(LEGACY_ORDER_STATES if legacy_values else ORDER_STATES,
                         ORDER_STATE_WEIGHTS, k=orders)
    commander_origins = LEGACY_COMMANDER_ORIGINS if legacy_values else COMMANDER_ORIGINS
    origins = rng.choices(ORIGINS, ORIGIN_WEIGHTS, k=orders)
    # Creation sequence follows CreatedUtc, except imports, which carry an earlier CreatedUtc.
    created_times = sorted(start + int(rand() * (anchor - start)) for _ in range(orders))
    # The newest orders have no booker, cancellation, link, voucher or segment yet, so a
    # client cannot learn those columns' types from its first pages.
    quiet_from = orders - min(2000, orders // 3)

    for seq in range(orders):
        created, state, origin = created_times[seq], states[seq], origins[seq]
        quiet = seq >= quiet_from
        if origin == "Import":
            created -= int(rand() * 60 * DAY)
        if quiet and state == "Canceled":
            state = "Confirmed"
        roll = rand()
        if roll < 0.35:
            updated = created
        elif roll < 0.97:
            updated = min(anchor, created + int(rng.expovariate(1 / (3 * DAY))))
        else:  # batch jobs at midnight on the 1st: many identical UpdatedUtc at window edges
            boundaries = quarters if roll < 0.985 else months
            updated = _next_boundary(boundaries, created, int(rand() * 3)) or created
        checked_in = state in ("Started", "Processed")
        flags = (checked_in and rand() < 0.9, checked_in and rand() < 0.6,
                 checked_in and rand() < 0.7, checked_in and rand() < 0.05)
        options = options_pool.setdefault(flags, dict(zip(OPTION_NAMES, flags, strict=True)))
        creator = pick(profiles)
        data.orders.append(Order(
            seq=seq,
            Id=new_id(rng),
            ServiceId=services[seq],
            AccountId=pick(accounts),
            AccountType="Company" if rand() < 0.1 else "Customer",
            CreatorProfileId=creator,
            UpdaterProfileId=creator if updated == created else pick(profiles),
            BookerId=None if quiet or rand() >= 0.3 else pick(accounts),
            Number=str(seq + 1),
            State=state,
            Origin=origin,
            CommanderOrigin=pick(commander_origins) if origin == "Commander" else None,
            OriginDetails=pick(CHANNELS) if origin == "ChannelManager" else None,
            CreatedUtc=created,
            UpdatedUtc=updated,
            CancelledUtc=updated if state == "Canceled" else None,
            VoucherId=None if quiet or rand() >= 0.03 else pick(vouchers),
            BusinessSegmentId=None if quiet or rand() >= 0.4 else pick(segments),
            LinkedReservationId=None if quiet or rand() >= 0.25 else pick(reservations),
            Options=options,
        ))

    note_counts = rng.choices(range(6), (20, 25, 20, 15, 12, 8) if heavier
                              else (30, 25, 20, 12, 8, 5), k=orders)
    if orders >= 5000:  # a few orders whose notes alone need more than one page
        for i in rng.sample(range(orders), 3):
            note_counts[i] = 1001 + int(rand() * 1500)
    if heavier:
        add_unknown_order_fields(data.orders, random.Random(f"added-{seed}"))
    privacy = ({"IsPrivate": False}, {"IsPrivate": True}) if heavier else (None, None)
    note_types = iter(rng.choices(NOTE_TYPES, NOTE_TYPE_WEIGHTS, k=sum(note_counts)))
    for order, count in zip(data.orders, note_counts, strict=True):
        # Notes fall between the order's creation and its last update, which is consistent
        # with a note change bumping the order.
        for _ in range(count):
            note_type = next(note_types)
            created = order.CreatedUtc + int(rand() * (order.UpdatedUtc - order.CreatedUtc + 1))
            edited = rand() < 0.1
            text: str | None = pick(NOTE_TEXTS[note_type])
            if rand() < null_note_text:
                text = None
            data.notes.append(Note(
                seq=len(data.notes), Id=new_id(rng), OrderId=order.Id,
                Text=text, Type=note_type, CreatedUtc=created,
                UpdatedUtc=created + int(rand() * (order.UpdatedUtc - created + 1)) if edited
                else created, extra=privacy[len(data.notes) % 10 == 0]))
    return data


def generate_products(enterprises: list[Enterprise], services: list[Service], anchor: int,
                      rng: random.Random) -> list[Product]:
    """The catalogue's products of each Additional service, priced in its enterprise's
    currency, one in ten retired, and one default product per service."""
    by_id = {e.Id: e for e in enterprises}
    categories = {e.Id: {name: new_id(rng) for name in ACCOUNTING_CATEGORIES} for e in enterprises}
    products: list[Product] = []
    for service in services:
        enterprise = by_id[service.EnterpriseId]
        reduced, standard = TAX_RATES[enterprise.Country]
        fee = ("Service fee", "FEE", "Fee", False, 2.0)
        for name, short, kind, low, eur in (*PRODUCT_CATALOGUE[service.Name], fee):
            names = {"en-US": name}
            if local := LOCAL_NAMES.get(enterprise.DefaultLanguageCode, {}).get(name):
                names[enterprise.DefaultLanguageCode] = local
            value = eur * PRICE_FACTOR[enterprise.currency]
            created = service.CreatedUtc + rng.randrange(30 * DAY)
            products.append(Product(
                seq=len(products), Id=new_id(rng), ServiceId=service.Id,
                EnterpriseId=enterprise.Id, Names=names, ShortName=short, classification=kind,
                AccountingCategoryId=categories[enterprise.Id][
                    kind if kind in ACCOUNTING_CATEGORIES else "Other"],
                IsActive=rng.random() >= 0.1, default=name == fee[0],
                Price=make_price(enterprise.currency, value, reduced if low else standard,
                                 enterprise.Pricing == "Gross"),
                CreatedUtc=created, UpdatedUtc=created + rng.randrange(anchor - created)))
    return products


def generate_items(orders: list[Order], products: list[Product], rng: random.Random,
                   ) -> list[Item]:
    """1 to 3 items per order, of its service's products (never a default product), with
    accounting states that follow the order's state, and a rebate for 3% of closed items.
    Every time lies between the order's CreatedUtc and UpdatedUtc (the consumption may lie
    later): consistent whether or not an item change bumps its order."""
    by_service: dict[str, list[Product]] = {}
    for product in products:
        if not product.default:
            by_service.setdefault(product.ServiceId, []).append(product)
    counts = rng.choices((1, 2, 3), ITEM_COUNT_WEIGHTS, k=len(orders))
    rand = rng.random
    items: list[Item] = []
    for order, count in zip(orders, counts, strict=True):
        state = ITEM_STATES.get(order.State, "Open")
        if order.State == "Processed" and rand() < 0.9:
            state = "Closed"
        created, span = order.CreatedUtc, max(0, order.UpdatedUtc - order.CreatedUtc)
        bill = new_id(rng) if state == "Closed" or (state == "Open" and rand() < 0.5) else None
        choices = by_service[order.ServiceId]
        for _ in range(count):
            product = choices[int(rand() * len(choices))]
            consumed = created + int(rand() * (min(span, 3 * DAY) + 1))
            item = Item(
                seq=len(items), Id=new_id(rng), order=order, EnterpriseId=product.EnterpriseId,
                Type="ProductOrder", product_id=product.Id, BillingName=product.Names["en-US"],
                AccountingCategoryId=product.AccountingCategoryId,
                UnitCount=1 + int(rand() * 4), unit=product.Price, AccountingState=state,
                CreatedUtc=created, UpdatedUtc=consumed, ConsumedUtc=consumed, BillId=bill)
            if state == "Closed":  # closed on a bill after consumption
                item.ClosedUtc = item.UpdatedUtc = consumed + int(
                    rand() * (order.UpdatedUtc - consumed + 1))
            elif state == "Canceled":
                item.CanceledUtc = item.UpdatedUtc = order.CancelledUtc or order.UpdatedUtc
            items.append(item)
            if state == "Closed" and rand() < 0.03:
                at = item.UpdatedUtc + int(rand() * (order.UpdatedUtc - item.UpdatedUtc + 1))
                items.append(rebate(item, len(items), new_id(rng), at))
    return items


def rebate(item: Item, seq: int, item_id: str, at: float) -> Item:
    """A ProductOrderRebate item taking back the whole of `item`: a negative amount."""
    unit = item.unit
    negative = Price(unit.Currency, -unit.NetValue, -unit.GrossValue, unit.TaxCode,
                     -unit.TaxValue)
    return Item(seq=seq, Id=item_id, order=item.order, EnterpriseId=item.EnterpriseId,
                Type="ProductOrderRebate", product_id=item.product_id,
                BillingName=item.BillingName, AccountingCategoryId=item.AccountingCategoryId,
                UnitCount=item.UnitCount, unit=negative, AccountingState="Open", CreatedUtc=at,
                UpdatedUtc=at, ConsumedUtc=at, rebated_id=item.Id)


def add_unknown_order_fields(orders: list[Order], rng: random.Random) -> None:
    """Text, an ISO time (which Arrow would read as a timestamp) and a number."""
    for order in orders:
        order.extra = {
            "ExternalIdentifier": f"EXT-{order.Number}" if rng.random() < 0.6 else None,
            "ConsumedUtc": fmt_ts(order.UpdatedUtc) if order.State == "Processed" else None,
            "Quantity": 1 + int(rng.random() * 4),
        }
