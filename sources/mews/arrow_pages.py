"""Decode pages of Mews items straight into Arrow, fields the API added included.

A page of 1,000 orders decoded and typed this way costs 14.8 ms of CPU against 18.8 ms with
orjson and `from_pylist`, which make a Python object per field; with three fields the caller
does not know, 15.6 against 24.3 ms (`benchmarks/bench.py`, 2026-12-02). Real Mews adds fields
every few months, so a page with such fields must stay on this path. They arrive as Arrow
inferred them, except that Arrow reads an ISO text such as "2026-01-01T00:00:00Z" as a
timestamp, while the general path keeps the text: such a field is declared as text, and that
page parsed again once. Later pages of the operation are parsed with the added fields
declared, which costs less than inferring them.
"""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.json as arrow_json


class ArrowPageReader:
    """Pages of one operation, `{items_key: [item, ...], "Cursor": ...}`, whose items have the
    fields of `item_schema` with those types, and any other fields that are values or objects
    of values. `read` gives None for anything else (another type, a list, not JSON), which the
    caller decodes the general way.
    """

    def __init__(self, items_key: str, item_schema: pa.Schema) -> None:
        self.items_key = items_key
        self.known = item_schema
        self.schema = item_schema  # `known`, plus the added fields learned from earlier pages

    def read(self, body: bytes) -> dict[str, Any] | None:
        items = self._parse(body, self.schema)
        if items is None and self.schema is not self.known:
            self.schema = self.known  # a learned field changed type: learn again
            items = self._parse(body, self.known)
        if items is None:
            return None
        found = items[0].type.value_type
        if found != pa.struct(list(self.schema)):
            # Fields the API added: declared from now on, since inferring them costs more
            # than parsing them (a page with three: 1.45x the parse time inferred).
            self.schema, timestamps = _learned(found, self.schema)
            if timestamps:
                items = self._parse(body, self.schema)
                if items is None:
                    return None
        items_type = items[0].type.value_type
        known_names = set(self.known.names)
        if not all(_flat(field, known_names) for field in items_type):
            return None  # an added list or object in an object: the general way makes it text
        return {
            self.items_key: pa.Table.from_struct_array(items[0].values),
            "Cursor": items[1],
        }

    def _parse(self, body: bytes, schema: pa.Schema) -> tuple[pa.ListArray, str | None] | None:
        """(the items, the cursor), with the items' fields in `schema` typed as declared."""
        item_type = pa.list_(pa.struct(list(schema)))
        options = arrow_json.ParseOptions(
            explicit_schema=pa.schema([(self.items_key, item_type), ("Cursor", pa.string())]),
            unexpected_field_behavior="infer",
            newlines_in_values=True,
        )
        try:
            body_table = arrow_json.read_json(
                io.BytesIO(body),
                read_options=arrow_json.ReadOptions(use_threads=False, block_size=len(body) + 1),
                parse_options=options,
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        found = body_table.schema.field(self.items_key).type
        if body_table.num_rows != 1 or not pa.types.is_list(found):
            return None
        if not pa.types.is_struct(found.value_type):
            return None
        items = body_table.column(self.items_key).combine_chunks()
        if items.null_count or items.values.null_count:
            return None  # no items key, or an item that is null: the general way says what is wrong
        return items, body_table.column("Cursor")[0].as_py()


def _learned(found: pa.StructType, schema: pa.Schema) -> tuple[pa.Schema, bool]:
    """`schema` plus the values and objects of values in `found` that it lacks, typed as Arrow
    inferred them, except timestamps, which become text; and whether there were timestamps
    (then the page must be parsed again to keep their text). A field null in every item is
    left to inference, as are lists and objects in objects (their pages go the general way).
    """
    fields = {field.name: field for field in schema}
    timestamps = False
    for field in found:
        declared = fields.get(field.name)
        if pa.types.is_struct(field.type):
            children = {c.name: c for c in (declared.type if declared is not None else [])}
            for child in field.type:
                if child.name not in children and _learnable(child.type):
                    children[child.name] = _as_declared(child)
                    timestamps |= pa.types.is_timestamp(child.type)
            if children:
                fields[field.name] = pa.field(field.name, pa.struct(list(children.values())))
        elif declared is None and _learnable(field.type):
            fields[field.name] = _as_declared(field)
            timestamps |= pa.types.is_timestamp(field.type)
    return pa.schema(list(fields.values())), timestamps


def _learnable(type: pa.DataType) -> bool:
    return not pa.types.is_null(type) and not pa.types.is_nested(type)


def _as_declared(field: pa.Field) -> pa.Field:
    return pa.field(field.name, pa.string()) if pa.types.is_timestamp(field.type) else field


def _flat(field: pa.Field, known_names: set[str]) -> bool:
    """Whether `field` needs nothing but Arrow: known, a value, or an object of values."""
    if field.name in known_names and not pa.types.is_struct(field.type):
        return True
    if pa.types.is_struct(field.type):
        return not any(pa.types.is_nested(child.type) for child in field.type)
    return not pa.types.is_nested(field.type)
