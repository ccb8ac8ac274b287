"""Turn pages of Mews items into typed Arrow tables with dlt's column names.

Known fields get explicit types, so a page whose timestamps or booleans are all null still
creates typed columns. Fields the API adds later are kept, named the way dlt names them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.normalizers.naming.snake_case import NamingConvention

from .client import MewsResponseError
from .json_text import json_text

TIMESTAMP = pa.timestamp("us", tz="UTC")
STRING = pa.string()
# Amounts: exact decimals, never floats. 12 decimals hold every amount Mews documents (its
# examples have 0 to 4) and 26 integer digits any total; dlt makes it DECIMAL(38,12) in
# DuckDB and numeric(38,12) in PostgreSQL. A value with more decimals (a float Mews computed)
# is rounded half-even to 12, far below any currency's unit.
AMOUNT_SCALE = 12
AMOUNT = pa.decimal128(38, AMOUNT_SCALE)
_naming = NamingConvention()


@dataclass(frozen=True)
class Column:
    """A destination column fed by the first present of `paths` (each a tuple of API keys)."""

    name: str
    type: pa.DataType
    paths: tuple[tuple[str, ...], ...]
    always: bool = True  # False: emitted only when some item carries it
    # A list or object kept as JSON text: its shape, declared so that Arrow reads it
    # (`ArrowPageReader`); `json_text` then writes it column-wise.
    raw: pa.DataType | None = None


def col(name: str, api: str, type: pa.DataType = STRING, *alternatives: str) -> Column:
    paths = tuple(tuple(path.split(".")) for path in (api, *alternatives))
    return Column(name, type, paths)


def text(name: str, api: str, raw: pa.DataType) -> Column:
    """A column of the JSON text of the list or object at `api`, of the shape `raw`."""
    return Column(name, STRING, (tuple(api.split(".")),), raw=raw)


ORDER_COLUMNS = [
    col("id", "Id"),
    col("service_id", "ServiceId"),
    col("account_id", "AccountId"),
    col("account_type", "AccountType"),
    col("creator_profile_id", "CreatorProfileId"),
    col("updater_profile_id", "UpdaterProfileId"),
    col("booker_id", "BookerId"),
    col("number", "Number"),
    col("state", "State"),
    col("origin", "Origin"),
    col("commander_origin", "CommanderOrigin"),
    col("origin_details", "OriginDetails"),
    col("created_utc", "CreatedUtc", TIMESTAMP),
    col("updated_utc", "UpdatedUtc", TIMESTAMP),
    col("cancelled_utc", "CancelledUtc", TIMESTAMP),
    col("voucher_id", "VoucherId"),
    col("business_segment_id", "BusinessSegmentId"),
    col("linked_reservation_id", "LinkedReservationId"),
    col("options__owner_checked_in", "Options.OwnerCheckedIn", pa.bool_()),
    col("options__all_companions_checked_in", "Options.AllCompanionsCheckedIn", pa.bool_()),
    col("options__any_companion_checked_in", "Options.AnyCompanionCheckedIn", pa.bool_()),
    col("options__connector_check_in", "Options.ConnectorCheckIn", pa.bool_()),
]

NOTE_COLUMNS = [
    col("id", "Id"),
    # The seed names the order reference ServiceOrderId, the current documentation OrderId.
    col("service_order_id", "ServiceOrderId", pa.string(), "OrderId"),
    col("text", "Text"),
    col("type", "Type"),
    col("created_utc", "CreatedUtc", TIMESTAMP),
    Column("updated_utc", TIMESTAMP, (("UpdatedUtc",),), always=False),
]

SERVICE_COLUMNS = [
    col("id", "Id"),
    col("enterprise_id", "EnterpriseId"),
    col("name", "Name"),
    col("discriminator", "Discriminator"),
    col("is_active", "IsActive", pa.bool_()),
    col("created_utc", "CreatedUtc", TIMESTAMP),
    col("updated_utc", "UpdatedUtc", TIMESTAMP),
]

ENTERPRISE_COLUMNS = [
    col("id", "Id"),
    col("name", "Name"),
    col("short_name", "ShortName"),
    col("chain_name", "ChainName"),
    col("time_zone_identifier", "TimeZoneIdentifier"),
    col("created_utc", "CreatedUtc", TIMESTAMP),
    col("updated_utc", "UpdatedUtc", TIMESTAMP),
]


TAX_VALUES = pa.list_(pa.struct([("Code", STRING), ("Value", AMOUNT)]))
BREAKDOWN = pa.struct(
    [("Items", pa.list_(pa.struct([("TaxRateCode", STRING), ("NetValue", AMOUNT),
                                   ("TaxValue", AMOUNT)])))]
)  # fmt: skip
PRODUCT_DATA = pa.struct(
    [("ProductId", STRING), ("AgeCategoryId", STRING), ("ProductType", STRING)]
)
REBATE_DATA = pa.struct([("ProductId", STRING), ("RebatedItemId", STRING)])


def amount_columns(prefix: str, api: str) -> list[Column]:
    """An Amount object (`Currency`, `NetValue`, `GrossValue`, `TaxValues`, `Breakdown`):
    the values typed, the tax lists as JSON text (see the data dictionary)."""
    return [
        col(f"{prefix}__currency", f"{api}.Currency"),
        col(f"{prefix}__net_value", f"{api}.NetValue", AMOUNT),
        col(f"{prefix}__gross_value", f"{api}.GrossValue", AMOUNT),
        text(f"{prefix}__tax_values", f"{api}.TaxValues", TAX_VALUES),
        text(f"{prefix}__breakdown", f"{api}.Breakdown", BREAKDOWN),
    ]


# The product an item sold (or, for a rebate, the product of the item it rebates) and the item
# a rebate rebates sit two objects deep in Data: lifted to columns of their own.
ORDER_ITEM_COLUMNS = [
    col("id", "Id"),
    col("service_order_id", "ServiceOrderId"),
    col("service_id", "ServiceId"),
    col("enterprise_id", "EnterpriseId"),
    col("account_id", "AccountId"),
    col("account_type", "AccountType"),
    col("bill_id", "BillId"),
    col("accounting_category_id", "AccountingCategoryId"),
    col("billing_name", "BillingName"),
    col("external_identifier", "ExternalIdentifier"),
    col("notes", "Notes"),
    col("type", "Type"),
    col("revenue_type", "RevenueType"),
    col("accounting_state", "AccountingState"),
    col("unit_count", "UnitCount", pa.int64()),
    *amount_columns("unit_amount", "UnitAmount"),
    *amount_columns("amount", "Amount"),
    *amount_columns("original_amount", "OriginalAmount"),
    col("product_id", "Data.Product.ProductId", STRING, "Data.Rebate.ProductId"),
    col("rebated_item_id", "Data.Rebate.RebatedItemId"),
    col("data__discriminator", "Data.Discriminator"),
    text("data__product", "Data.Product", PRODUCT_DATA),
    text("data__rebate", "Data.Rebate", REBATE_DATA),
    col("options__canceled_with_reservation", "Options.CanceledWithReservation", pa.bool_()),
    col("creator_profile_id", "CreatorProfileId"),
    col("updater_profile_id", "UpdaterProfileId"),
    col("created_utc", "CreatedUtc", TIMESTAMP),
    col("updated_utc", "UpdatedUtc", TIMESTAMP),
    col("consumed_utc", "ConsumedUtc", TIMESTAMP),
    col("closed_utc", "ClosedUtc", TIMESTAMP),
    col("canceled_utc", "CanceledUtc", TIMESTAMP),
    col("start_utc", "StartUtc", TIMESTAMP),
    col("claimed_utc", "ClaimedUtc", TIMESTAMP),
]

# Rows of `product_row`: the name picked from Names, the other language maps left out.
PRODUCT_COLUMNS = [
    col("id", "Id"),
    col("service_id", "ServiceId"),
    col("name", "Name"),
    col("category_id", "CategoryId"),
    col("accounting_category_id", "AccountingCategoryId"),
    col("is_active", "IsActive", pa.bool_()),
    col("charging_mode", "ChargingMode"),
    col("posting_mode", "PostingMode"),
    *amount_columns("price", "Price"),
    col("created_utc", "CreatedUtc", TIMESTAMP),
    col("updated_utc", "UpdatedUtc", TIMESTAMP),
]

KEY_COLUMNS = ("id", "service_order_id")  # the primary key, and the notes' merge key


def to_table(items: Sequence[dict[str, Any]] | pa.Table, columns: Sequence[Column]) -> pa.Table:
    """A typed table of `items`: the known columns first, then any field the API added.

    `items` may also be a table of a page decoded by `ArrowPageReader`: the fields of
    `raw_schema(columns)`, and any others as Arrow read them (values, objects of values).
    """
    if isinstance(items, pa.Table):
        arrays = _known_columns(items, columns)
        for path, array in _added_columns(items, columns).items():
            name = _column_name(path)
            if name not in arrays and array.null_count < len(array):
                arrays[name] = array
        return with_keys_required(pa.table(arrays))
    arrays = _known_columns_of_objects(items, columns)
    for path, values in _unknown_fields(items, columns).items():
        name = _column_name(path)
        if name not in arrays and any(v is not None for v in values):
            arrays[name] = _inferred_array(values)
    return with_keys_required(pa.table(arrays))


def _column_name(path: tuple[str, ...]) -> str:
    """dlt's name for the API field at `path` (one level of objects flattened)."""
    return _naming.normalize_path(_naming.make_path(*map(_naming.normalize_identifier, path)))


def _known_columns(raw: pa.Table, columns: Sequence[Column]) -> dict[str, pa.Array]:
    """The fast path: the known fields, already in Arrow, typed and renamed."""
    arrays: dict[str, pa.Array] = {}
    for column in columns:
        found = [_raw_column(raw, path) for path in column.paths]
        values = found[0] if len(found) == 1 else pc.coalesce(*found)
        if column.always or values.null_count < len(values):
            arrays[column.name] = _typed_array(values, column.type, column.name)
    return arrays


def _known_columns_of_objects(
    items: Sequence[dict[str, Any]], columns: Sequence[Column]
) -> dict[str, pa.Array]:
    """The known fields of decoded items: by Arrow, but for the JSON text, which keeps any
    key an object carries (Arrow would keep only those declared)."""
    texts = [column for column in columns if column.raw is not None]
    values = [column for column in columns if column.raw is None]
    try:
        raw = pa.Table.from_pylist(list(items), schema=raw_schema(values))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        arrays = _known_columns_by_python(items, columns)
    else:
        arrays = _known_columns(raw, values) | _known_columns_by_python(items, texts)
    return {c.name: arrays[c.name] for c in columns if c.name in arrays}


def _known_columns_by_python(
    items: Sequence[dict[str, Any]], columns: Sequence[Column]
) -> dict[str, pa.Array]:
    """The forgiving path, for pages where a field has an unexpected type."""
    arrays: dict[str, pa.Array] = {}
    for column in columns:
        values = _values(items, column.paths)
        if column.always or any(v is not None for v in values):
            arrays[column.name] = _typed_array(values, column.type, column.name)
    return arrays


def raw_schema(columns: Sequence[Column]) -> pa.Schema:
    """The API's shape of the known fields: timestamps still text, objects as structs."""
    return _raw_schema(tuple(columns))


@cache
def _raw_schema(columns: tuple[Column, ...]) -> pa.Schema:
    tree: dict[str, Any] = {}  # an object's fields: a type, or the fields of an object
    for column in columns:
        kind = column.raw or (STRING if column.type == TIMESTAMP else column.type)
        for path in column.paths:
            _declare(tree, path, kind)
    return pa.schema(_fields(tree))


def _declare(tree: dict[str, Any], path: tuple[str, ...], kind: pa.DataType) -> None:
    """Declare `path` of type `kind` in `tree`. An object declared whole (the shape of its
    JSON text) holds what the paths into it read."""
    *parents, last = path
    for key in parents:
        tree = tree.setdefault(key, {})
        if isinstance(tree, pa.DataType):
            return
    if not isinstance(tree.get(last), pa.StructType):
        tree[last] = kind


def _fields(tree: dict[str, Any]) -> list[tuple[str, pa.DataType]]:
    return [
        (name, pa.struct(_fields(node)) if isinstance(node, dict) else node)
        for name, node in tree.items()
    ]


def _raw_column(raw: pa.Table, path: tuple[str, ...]) -> pa.Array:
    values = raw.column(path[0]).combine_chunks()
    return pc.struct_field(values, list(path[1:])) if len(path) > 1 else values


def with_keys_required(table: pa.Table) -> pa.Table:
    """Mark key columns NOT NULL as dlt does for its primary and merge keys, so that the
    Arrow schema and dlt's hints agree."""
    schema = table.schema
    for name in KEY_COLUMNS:
        index = schema.get_field_index(name)
        if index >= 0 and table.column(name).null_count == 0:
            schema = schema.set(index, schema.field(name).with_nullable(False))
    return table if schema is table.schema else table.cast(schema)


def _values(items: Sequence[dict[str, Any]], paths: tuple[tuple[str, ...], ...]) -> list[Any]:
    first, *alternatives = paths
    values = _get_all(items, first)
    for path in alternatives:
        if any(v is None for v in values):
            found = _get_all(items, path)
            values = [f if v is None else v for v, f in zip(values, found, strict=True)]
    return values


def _get_all(items: Sequence[Any], path: tuple[str, ...]) -> list[Any]:
    """The value at `path` in every item (None where absent); a comprehension per level,
    since this runs for every column of every page."""
    values: list[Any] = list(items)
    for key in path:
        values = [v.get(key) if isinstance(v, dict) else None for v in values]
    return values


def _unknown_fields(
    items: Sequence[dict[str, Any]], columns: Sequence[Column]
) -> dict[tuple[str, ...], list[Any]]:
    """Fields no column reads, one level of objects flattened like dlt flattens them."""
    known = {path for column in columns for path in column.paths}
    parents = {path[0] for path in known if len(path) > 1}
    found: dict[tuple[str, ...], list[Any]] = {}
    # Iterating a dict yields its keys: set().union(*items) stays in C, which matters per page.
    # Sorted: a set's order changes from one process to the next (string hashes are salted),
    # and the columns' order with it, which made a table read whole (enterprises) look
    # changed, and be loaded again, on every run.
    for key in sorted(set().union(*items)):
        if (key,) in known:
            continue
        values = [item.get(key) for item in items]
        if key in parents or (
            any(isinstance(v, dict) for v in values)
            and all(v is None or isinstance(v, dict) for v in values)
        ):
            children = set().union(*[v for v in values if isinstance(v, dict)])
            for child in sorted(children - {path[1] for path in known if path[0] == key}):
                found[(key, child)] = _get_all(values, (child,))
        else:
            found[(key,)] = values
    return found


def _added_columns(raw: pa.Table, columns: Sequence[Column]) -> dict[tuple[str, ...], pa.Array]:
    """The fields of a page decoded into Arrow that no column reads, one level of objects
    flattened: what `_unknown_fields` finds in decoded items, with the same types."""
    known = raw_schema(columns)
    known_names = set(known.names)  # a new list on every access of `names`
    found: dict[tuple[str, ...], pa.Array] = {}
    for field in raw.schema:
        if field.name in known_names and not pa.types.is_struct(field.type):
            continue
        values = raw.column(field.name).combine_chunks()
        if not pa.types.is_struct(field.type):
            found[(field.name,)] = values
            continue
        read = known.field(field.name).type if field.name in known_names else []
        taken = {c.name for c in read}
        for child in (name for name in field.type.names if name not in taken):
            found[(field.name, child)] = pc.struct_field(values, child)
    return found


def _typed_array(values: list[Any] | pa.Array, type: pa.DataType, name: str) -> pa.Array:
    try:
        if isinstance(values, pa.Array) and pa.types.is_nested(values.type) and type == STRING:
            return json_text(values)  # a list or object declared as `Column.raw`
        if isinstance(values, pa.Array):
            return values.cast(type)
        if type == TIMESTAMP:
            return pa.array(values, pa.string()).cast(TIMESTAMP)
        return pa.array(values, type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    if isinstance(values, pa.Array):
        values = values.to_pylist()
    if type == TIMESTAMP:
        return pa.array([_parse_timestamp(v, name) for v in values], TIMESTAMP)
    if type == pa.string():
        return pa.array([None if v is None else _as_text(v) for v in values], type)
    if pa.types.is_decimal(type):
        return pa.array([_as_decimal(v, name) for v in values], type)
    raise MewsResponseError(f"Mews sent a value for {name} that is not a {type}: fix or report it.")


def _parse_timestamp(value: Any, name: str) -> datetime | None:
    """Slow path for what Arrow's ISO parser refuses (7 fraction digits, no zone)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise MewsResponseError(
            f"Mews sent {name} = {str(value)[:40]!r}, which is not an ISO 8601 timestamp."
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _as_decimal(value: Any, name: str) -> Decimal | None:
    """A JSON number as the decimal its text was: a float's repr is the shortest text that
    reads back as it, which is the text Mews sent (up to 15 significant digits)."""
    if value is None:
        return None
    try:
        exact = Decimal(repr(value) if isinstance(value, float) else str(value))
        return exact.quantize(Decimal(1).scaleb(-AMOUNT_SCALE))
    except (InvalidOperation, ValueError):
        raise MewsResponseError(f"Mews sent {name} = {str(value)[:40]!r}, not a number.") from None


def _inferred_array(values: list[Any]) -> pa.Array:
    if any(isinstance(v, dict | list) for v in values):
        return pa.array([None if v is None else _as_text(v) for v in values], pa.string())
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else _as_text(v) for v in values], pa.string())


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
