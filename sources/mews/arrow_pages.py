"""Decode pages of Mews items straight into Arrow, fields the API added included.

A page of 1,000 orders decoded and typed this way costs 14.8 ms of CPU against 18.8 ms with
orjson and `from_pylist`, which make a Python object per field; with three fields the caller
does not know, 15.6 against 24.3 ms (`benchmarks/bench.py`, 2026-12-02). Real Mews adds fields
every few months, so a page with such fields must stay on this path. They arrive as Arrow
inferred them, except that Arrow reads an ISO text such as "2026-01-01T00:00:00Z" as a
timestamp, while the general path keeps the text: such a field is declared as text, and that
page parsed again once. Later pages of the operation are parsed with the added fields
declared, which costs less than inferring them.

Lists and objects below an item's first level of objects (an order item's tax lists, its
`Data.Product`) are declared too, and the caller keeps them as JSON text (`json_text.py`). Two
things Arrow reads would change that text, so such a page goes the general way: a key absent
from some objects (Arrow reads it as null; found by counting the key in the body), and a
number sent as text into a declared decimal (Arrow takes "0.5" as 0.5; found by a search of
the body). Both checks cost about 2.3 ms of CPU for a page of 1,660 items (2.7 MB).
"""

from __future__ import annotations

import io
import os
import re
from typing import Any

import pyarrow as pa
import pyarrow.json as arrow_json

from .json_text import renders


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
        self._deep_decimals = _deep_decimals(item_schema)
        # One search for the names' common ending ("Value" for the items' NetValue, TaxValue,
        # Value): 1.5 ms a page of 1,000 items, a search per name 3.5 ms each.
        ending = os.path.commonprefix([name[::-1] for name in self._deep_decimals])[::-1]
        self._ending = len(ending.encode())
        self._number_as_text = re.compile(re.escape(ending.encode()) + rb'"\s*:\s*"')

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
        if not all(_takes(field, self.known) for field in items_type):
            return None  # e.g. an added list or object in an object: the general way makes it text
        table = pa.Table.from_struct_array(items[0].values)
        if not self._text_as_sent(body, table):
            return None
        return {self.items_key: table, "Cursor": items[1]}

    def _number_sent_as_text(self, body: bytes) -> bool:
        """Whether a key named as a decimal below the first level has a text value."""
        for found in self._number_as_text.finditer(body):
            key = body[body.rfind(b'"', 0, found.start()) + 1 : found.start() + self._ending]
            if key.decode(errors="replace") in self._deep_decimals:
                return True
        return False

    def _text_as_sent(self, body: bytes, table: pa.Table) -> bool:
        """Whether the lists and objects below the first level hold what the body says: no
        number sent as text into a decimal, and every key that reads null in some object
        there present in each object Arrow has it in (else it was absent from some).
        A page with none (orders, notes) needs no look: 0.12 ms, now 0.02, of the 6 ms a page
        of 1,000 orders takes to decode."""
        if not _deep_types(table.schema):
            return True
        if self._deep_decimals and self._number_sent_as_text(body):
            return False
        nulls: set[str] = set()
        for column in table.columns:
            values = column.combine_chunks()
            if pa.types.is_struct(values.type):
                for child in values.flatten():
                    _keys_with_nulls(child, nulls)
            else:
                _keys_with_nulls(values, nulls)
        return all(
            body.count(b'"' + key.encode() + b'":') == _objects_with(table, key) for key in nulls
        )

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


def _takes(field: pa.Field, known: pa.Schema) -> bool:
    """Whether the caller takes `field` of an item as Arrow read it: an added value or object
    of values (each becomes a column), or a known field whose lists and objects below the
    first level hold what JSON text can be made of (no timestamp Arrow inferred)."""
    index = known.get_field_index(field.name)
    if not pa.types.is_struct(field.type):
        return renders(field.type) if index >= 0 else not pa.types.is_nested(field.type)
    declared = set(known.field(index).type.names) if index >= 0 else set()
    return all(
        renders(child.type) if child.name in declared else not pa.types.is_nested(child.type)
        for child in field.type
    )


def _deep_decimals(schema: pa.Schema) -> set[str]:
    """The names of the decimals declared below the first level of objects."""
    found: set[str] = set()

    def inside_text(type: pa.DataType) -> None:
        if pa.types.is_list(type):
            inside_text(type.value_type)
        elif pa.types.is_struct(type):
            for child in type:
                if pa.types.is_decimal(child.type):
                    found.add(child.name)
                inside_text(child.type)

    for type in _deep_types(schema):
        inside_text(type)
    return found


def _deep_types(schema: pa.Schema) -> list[pa.DataType]:
    """The lists and objects below the first level of objects: the JSON text columns."""
    deep = []
    for field in schema:
        children = list(field.type) if pa.types.is_struct(field.type) else [field]
        deep += [child.type for child in children if pa.types.is_nested(child.type)]
    return deep


def _keys_with_nulls(values: pa.Array, found: set[str]) -> None:
    """Add to `found` the keys of the objects in `values` (at any depth) that are null in
    some object that is not null itself."""
    if pa.types.is_list(values.type):
        _keys_with_nulls(values.flatten(), found)
    elif pa.types.is_struct(values.type):
        for field, child in zip(values.type, values.flatten(), strict=True):
            if child.null_count > values.null_count:
                found.add(field.name)
            _keys_with_nulls(child, found)


def _objects_with(table: pa.Table, key: str) -> int:
    """How many objects of the page (items included) have `key` in Arrow."""
    count = table.num_rows if key in table.column_names else 0
    return count + sum(_objects_in(column.combine_chunks(), key) for column in table.columns)


def _objects_in(values: pa.Array, key: str) -> int:
    if pa.types.is_list(values.type):
        return _objects_in(values.flatten(), key)
    if not pa.types.is_struct(values.type):
        return 0
    count = len(values) - values.null_count if key in values.type.names else 0
    return count + sum(_objects_in(child, key) for child in values.flatten())
