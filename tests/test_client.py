"""Unit tests of the pieces of the API client and source that need no server."""

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import orjson
import pyarrow as pa
import pytest
from harness import FakeClock

from sources.mews import check_ids, group_by_start, parse_utc, service_row, walk_windows
from sources.mews import client as client_module
from sources.mews.arrow_pages import ArrowPageReader
from sources.mews.client import (
    MewsClient,
    MewsConfigError,
    SlidingWindowLimiter,
    chunked,
    format_utc,
    retry_after_seconds,
)
from sources.mews.tables import NOTE_COLUMNS, ORDER_COLUMNS, raw_schema, to_table


def test_limiter_never_allows_more_than_the_window_holds():
    clock = FakeClock()
    limiter = SlidingWindowLimiter(3, 30.0, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(7):
        limiter.acquire()
        starts.append(clock.now)
        limiter.release()
        clock.now += 1.0
    # Any 30 s sliding window holds at most 3 starts.
    for i, start in enumerate(starts):
        assert sum(1 for s in starts[i:] if s < start + 30.0) <= 3
    assert 30.0 <= starts[3] <= 30.5  # the 4th waits for the 1st to leave the window (+slack)
    assert clock.sleeps and all(s > 0 for s in clock.sleeps)


def test_limiter_counts_a_request_until_a_window_after_its_answer():
    """However late the server counts a request (its arrival is anywhere between our start
    and its answer), request k starts a whole window after request k - 3 was answered."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter(3, 30.0, clock=clock, sleep=clock.sleep)
    answered: list[float] = []
    starts: list[float] = []
    for k in range(9):
        limiter.acquire()
        starts.append(clock.now)
        clock.now += 2.5 if k % 3 == 0 else 0.1  # some answers are slow
        limiter.release()
        answered.append(clock.now)
    for k in range(3, 9):
        assert starts[k] >= answered[k - 3] + 30.0
    assert starts[3] <= answered[0] + 30.5  # and not much later: no throughput is given away


def test_clients_of_one_token_share_its_limiter_and_the_token_is_not_kept():
    clock = FakeClock()

    def client(access_token: str) -> MewsClient:
        return MewsClient(
            "https://api.mews-demo.com", "client", access_token,
            rate_limit=(3, 30.0), clock=clock, sleep=clock.sleep,
        )

    first, again, other = client("token-a"), client("token-a"), client("token-b")
    assert first._limiter is again._limiter  # a run's next step, or a property sharing it
    assert other._limiter is not first._limiter
    for _ in range(3):
        first._limiter.acquire(clock.sleep)
        first._limiter.release()
    waited, _ = again._limiter.acquire(clock.sleep)
    assert waited >= 30.0  # the 4th request of the token waits, whichever client sends it
    assert not any("token-a" in str(key) for key in client_module._LIMITERS)


def test_retry_after_accepts_seconds_and_http_dates():
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("7", lambda: now) == 7.0
    assert retry_after_seconds("Wed, 01 Jan 2025 12:00:05 GMT", lambda: now) == 5.0
    assert retry_after_seconds("Wed, 01 Jan 2025 11:00:00 GMT", lambda: now) == 0.0
    assert retry_after_seconds(None, lambda: now) is None
    assert retry_after_seconds("soon", lambda: now) is None


def test_format_utc_keeps_precision_only_when_present():
    assert format_utc(datetime(2024, 4, 1, tzinfo=UTC)) == "2024-04-01T00:00:00Z"
    moment = datetime(2024, 4, 1, 1, 2, 3, 450000, tzinfo=UTC)
    assert format_utc(moment) == "2024-04-01T01:02:03.450000Z"
    plus_two = datetime(2024, 4, 1, 2, 0, tzinfo=UTC).astimezone()  # any zone becomes UTC
    assert format_utc(plus_two).endswith("Z")


def test_windows_cover_the_range_without_gap_or_overlap_and_stay_within_three_months():
    start, end = datetime(2023, 1, 31, 5, tzinfo=UTC), datetime(2025, 2, 10, tzinfo=UTC)
    windows = list(walk_windows(start, end))
    assert windows[0][0] == start and windows[-1][1] == end
    for (_, a_end), (b_start, _) in zip(windows, windows[1:], strict=False):
        assert a_end == b_start
    for a, b in windows:
        assert a < b
        months = (b.year - a.year) * 12 + b.month - a.month
        assert months < 3 or (months == 3 and (b.day, b.time()) <= (a.day, a.time()))
    assert list(walk_windows(end, end)) == []


def test_group_by_start_backs_off_by_the_overlap_and_starts_new_services_at_start_date():
    start = datetime(2020, 1, 1, tzinfo=UTC)
    marks = {"a": "2024-05-01T00:00:00Z", "b": "2024-05-01T00:00:00Z"}
    groups = group_by_start(["a", "b", "c"], marks, start, timedelta(minutes=5))
    assert groups == {start: ["c"], datetime(2024, 4, 30, 23, 55, tzinfo=UTC): ["a", "b"]}


def test_chunked_batches_of_at_most_1000():
    batches = list(chunked((str(i) for i in range(2501)), 1000))
    assert [len(b) for b in batches] == [1000, 1000, 501]


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "", "01/02/2024"])
def test_parse_utc_refuses_what_is_not_a_date(value):
    with pytest.raises(MewsConfigError, match="ISO 8601"):
        parse_utc(value, "SOURCES__MEWS__START_DATE")


def test_parse_utc_reads_dates_and_zones_as_utc():
    assert parse_utc("2024-01-31", "x") == datetime(2024, 1, 31, tzinfo=UTC)
    assert parse_utc("2024-01-31T02:00:00+02:00", "x") == datetime(2024, 1, 31, tzinfo=UTC)


@pytest.mark.parametrize("value", ["abc", [""], [1, 2], {"a": 1}])
def test_check_ids_refuses_anything_but_a_list_of_ids(value):
    with pytest.raises(MewsConfigError, match="JSON list of ids"):
        check_ids(value, "SOURCES__MEWS__SERVICE_IDS")


def test_check_ids_says_an_empty_list_is_to_be_unset_to_mean_all():
    with pytest.raises(MewsConfigError, match="ENTERPRISE_IDS is an empty list: unset it"):
        check_ids([], "SOURCES__MEWS__ENTERPRISE_IDS")


def test_check_ids_names_the_setting_and_the_first_id_that_is_not_a_uuid():
    good = "AE8DA28C-3A4B-4C5D-8E9F-0A1B2C3D4E5F"
    with pytest.raises(MewsConfigError, match="SERVICE_IDS holds 'ae8da28c-x', which is not a"):
        check_ids([good, "ae8da28c-x", "nope"], "SOURCES__MEWS__SERVICE_IDS")
    assert check_ids([f" {good} "], "SOURCES__MEWS__SERVICE_IDS") == [good]  # as written


@pytest.mark.parametrize(
    "url", ["api.mews.com", "ftp://api.mews.com", "https://", "https://x.com/?a=1", ""]
)
def test_client_refuses_malformed_platform_urls(url):
    with pytest.raises(MewsConfigError, match="PLATFORM_URL"):
        MewsClient(url, "c", "a")


def test_client_refuses_empty_tokens_without_echoing_them():
    with pytest.raises(MewsConfigError, match="ACCESS_TOKEN is empty"):
        MewsClient("https://api.mews.com", "secret-client", "  ")


def test_client_repr_holds_no_token():
    client = MewsClient("https://api.mews.com", "secret-client", "secret-access")
    assert "secret" not in repr(client)


def test_order_table_types_null_only_columns_and_keeps_new_fields():
    page = [
        {
            "Id": "o1",
            "UpdatedUtc": "2024-01-01T00:00:00Z",
            "CreatedUtc": "2024-01-01T00:00:00.1234567Z",  # .NET's 7 digits
            "CancelledUtc": None,
            "State": "SomethingNew",
            "Options": {"OwnerCheckedIn": None, "BrandNewFlag": True},
            "LoyaltyCode": "X1",
        }
    ]
    table = to_table(page, ORDER_COLUMNS)
    assert table.schema.field("cancelled_utc").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("options__owner_checked_in").type == pa.bool_()
    assert table.column("created_utc")[0].as_py() == datetime(2024, 1, 1, 0, 0, 0, 123456, UTC)
    assert table.column("state").to_pylist() == ["SomethingNew"]
    assert table.column("options__brand_new_flag").to_pylist() == [True]
    assert table.column("loyalty_code").to_pylist() == ["X1"]
    assert not table.schema.field("id").nullable


def test_fields_the_api_added_come_in_the_same_order_in_every_process():
    """A table read whole each run (enterprises) is loaded only when it changed, by a digest
    of it; the added fields' order came from a set, which differs between processes (string
    hashes are salted), so the table looked changed, and was loaded again, on every run."""
    code = (
        "from sources.mews.tables import ENTERPRISE_COLUMNS, to_table; "
        "item = {'Id': 'e1', **{f'Added{n}': n for n in range(8)}, 'Nested': {'a': 1, 'b': 2}}; "
        "print(to_table([item], ENTERPRISE_COLUMNS).schema.names)"
    )
    orders = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in range(6)
    }
    assert len(orders) == 1, orders


def test_note_table_reads_both_order_reference_names():
    page = [
        {"Id": "n1", "ServiceOrderId": "o1", "Text": "a", "Type": "General"},
        {"Id": "n2", "OrderId": "o2", "Text": "b", "Type": "General"},
    ]
    table = to_table(page, NOTE_COLUMNS)
    assert table.column("service_order_id").to_pylist() == ["o1", "o2"]
    assert "updated_utc" not in table.column_names  # only when the API sends it


ORDER = {
    "Id": "o1",
    "ServiceId": "s1",
    "Number": "17",
    "State": "Confirmed",
    "CreatedUtc": "2024-01-01T00:00:00.1234567Z",
    "UpdatedUtc": "2024-01-02T10:00:00Z",
    "CancelledUtc": None,
    "Options": {"OwnerCheckedIn": True, "ConnectorCheckIn": None},
}
PAGES = {
    "orders": (
        "ProductServiceOrders",
        ORDER_COLUMNS,
        [ORDER, {**ORDER, "Id": "o2", "Options": None, "CancelledUtc": "2024-02-01T00:00:00Z"}],
    ),
    "seed notes": (
        "ServiceOrderNotes",
        NOTE_COLUMNS,
        [
            {
                "Id": "n1",
                "ServiceOrderId": "o1",
                "Text": 'Příjezd \\ "late"\n',
                "Type": "General",
                "CreatedUtc": "2024-01-01T00:00:00Z",
            }
        ],
    ),
    "current notes": (
        "ServiceOrderNotes",
        NOTE_COLUMNS,
        [
            {
                "Id": "n1",
                "OrderId": "o1",
                "Text": "a",
                "Type": "General",
                "CreatedUtc": "2024-01-01T00:00:00Z",
                "UpdatedUtc": "2024-01-03T00:00:00Z",
            }
        ],
    ),
}


@pytest.mark.parametrize("name", PAGES)
def test_a_page_decoded_by_arrow_gives_the_table_decoding_objects_gives(name):
    key, columns, items = PAGES[name]
    body = orjson.dumps({key: items, "Cursor": "c9", "Extra": 1}, option=orjson.OPT_INDENT_2)
    page = ArrowPageReader(key, raw_schema(columns)).read(body)
    assert page is not None and page["Cursor"] == "c9"
    assert isinstance(page[key], pa.Table)
    assert to_table(page[key], columns).equals(to_table(items, columns))


ADDED = {
    "LoyaltyCode": "GOLD",  # text
    "ConsumedUtc": "2024-01-03T00:00:00Z",  # ISO text, which Arrow would read as a timestamp
    "Quantity": 3,
    "Price": {"Net": 9.5, "Currency": "EUR", "ChargedUtc": "2024-01-03T00:00:00Z"},
    "Options": {"OwnerCheckedIn": True, "ConnectorCheckIn": None, "SelfCheckIn": False},
    "Retired": None,  # null in every item: no column, as the general way
}


def same_columns(fast: pa.Table, general: pa.Table) -> bool:
    """Equal, column for column, whatever the order of the added columns."""
    return sorted(fast.column_names) == sorted(general.column_names) and fast.select(
        general.column_names
    ).equals(general)


def test_a_page_with_fields_the_api_added_stays_on_arrow_and_gives_the_general_table():
    items = [{**ORDER, **ADDED}, {**ORDER, "Id": "o2", "Quantity": None, "Options": None}]
    reader = ArrowPageReader("ProductServiceOrders", raw_schema(ORDER_COLUMNS))
    for _ in range(2):  # the second page is parsed with what the first taught
        body = orjson.dumps({"ProductServiceOrders": items, "Cursor": "c"})
        page = reader.read(body)
        assert page is not None
        fast, general = to_table(page["ProductServiceOrders"], ORDER_COLUMNS), to_table(
            items, ORDER_COLUMNS
        )
        assert same_columns(fast, general)
    assert {"loyalty_code", "consumed_utc", "quantity", "price__net", "price__charged_utc",
            "options__self_check_in"} <= set(fast.column_names)
    assert "retired" not in fast.column_names
    assert fast.schema.field("consumed_utc").type == pa.string()  # the text Mews sent
    assert fast.column("consumed_utc")[0].as_py() == "2024-01-03T00:00:00Z"
    assert reader.schema.field("ConsumedUtc").type == pa.string()


def test_a_field_learned_as_text_that_changes_shape_is_learned_again():
    reader = ArrowPageReader("ProductServiceOrders", raw_schema(ORDER_COLUMNS))
    first = [{**ORDER, "ConsumedUtc": "2024-01-03T00:00:00Z"}]
    assert reader.read(orjson.dumps({"ProductServiceOrders": first, "Cursor": "c"}))
    later = [{**ORDER, "ConsumedUtc": {"At": "2024-01-03T00:00:00Z"}}]
    page = reader.read(orjson.dumps({"ProductServiceOrders": later, "Cursor": "c"}))
    assert page is not None
    assert same_columns(
        to_table(page["ProductServiceOrders"], ORDER_COLUMNS), to_table(later, ORDER_COLUMNS)
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"ProductServiceOrders": [{"Id": "o1", "Tags": ["a"]}], "Cursor": "c"}',
        b'{"ProductServiceOrders": [{"Id": "o1", "P": {"Q": {"R": 1}}}], "Cursor": "c"}',
        b'{"ProductServiceOrders": [{"Id": "o1", "Number": 17}], "Cursor": "c"}',
        b'{"ProductServiceOrders": [null], "Cursor": "c"}',
        b'{"ProductServiceOrders": [1], "Cursor": "c"}',
        b'{"ProductServiceOrders": {"Id": "o1"}, "Cursor": "c"}',
        b'{"Cursor": "c"}',
        b'{"ProductServiceOrders": [], "Cursor": 5}',
        b'{"ProductServiceOrders": [{"Id": "o1"',
        b"[]",
        b'{"ProductServiceOrders": []}\n{"ProductServiceOrders": []}',
    ],
    ids=[
        "added-list",
        "added-object-in-object",
        "other-type",
        "null-item",
        "item-not-object",
        "items-not-list",
        "no-items",
        "cursor-not-text",
        "truncated",
        "array",
        "two-objects",
    ],
)
def test_a_page_of_another_shape_is_left_to_the_general_decoding(body):
    assert ArrowPageReader("ProductServiceOrders", raw_schema(ORDER_COLUMNS)).read(body) is None


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"Names": {"cs-CZ": "Snídaně", "en-US": "Breakfast"}, "Name": "Old"}, "Breakfast"),
        ({"Names": {"cs-CZ": "Snídaně", "de-DE": "Frühstück"}, "Name": "Old"}, "Snídaně"),
        ({"Names": {}, "Name": "Old"}, "Old"),
        ({"Name": "Old", "Type": "Orderable"}, "Old"),  # an older response
        ({"Names": None}, None),
    ],
)
def test_a_service_is_named_from_names_first_then_the_deprecated_name(fields, name):
    row = service_row({"Id": "s1", "EnterpriseId": "e1", **fields})
    assert row["Name"] == name
