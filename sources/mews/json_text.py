"""JSON text of Arrow values, made column-wise: what `json.dumps` makes of each value one by one.

The order items keep their tax lists and `Data` objects as JSON text. Made per item in Python
(`json.dumps`, and `Decimal(repr(float))` for the amounts around it), a page of 1,000 items
costs 90 ms of CPU decoded and typed; read by Arrow with this text made column-wise, 26 ms
(`benchmarks/bench.py`, 2026-12-03; issue 21).

The text has `json.dumps`'s separators (", " and ": ") and keys in the order Arrow holds them.
Numbers: integers as they were; decimals without trailing zeros ("21" for 21.000000000000;
"1E-7" below 1E-6 but for 0, as Arrow writes them); floats in their shortest round-trip text
("0.1").
Text: `"` and `\\` and control characters escaped as `json.dumps` does; characters beyond ASCII
kept as UTF-8 (`json.dumps` writes \\u escapes: the same text once parsed).
"""

from __future__ import annotations

import json
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

_NEEDS_ESCAPE = r'["\\\x00-\x1f]'


def json_text(values: pa.Array) -> pa.Array:
    """Each value of `values` (objects, lists, text, numbers, booleans) as JSON text; null
    where it is null. Raises TypeError for a type JSON has no text for (a timestamp)."""
    text = _json(values)
    if values.null_count:
        text = pc.if_else(pc.is_valid(values), text, pa.scalar(None, pa.string()))
    return text


def renders(type: pa.DataType) -> bool:
    """Whether `json_text` takes values of `type`."""
    if pa.types.is_struct(type):
        return all(renders(field.type) for field in type)
    if pa.types.is_list(type):
        return renders(type.value_type)
    return any(
        check(type)
        for check in (
            pa.types.is_string,
            pa.types.is_boolean,
            pa.types.is_integer,
            pa.types.is_floating,
            pa.types.is_decimal,
            pa.types.is_null,
        )
    )


def _json(values: pa.Array) -> pa.Array:
    """The JSON text of every value, "null" for a null one."""
    type = values.type
    if pa.types.is_struct(type):
        text = _object(values)
    elif pa.types.is_list(type):
        # Every element's text, joined within each list by its offsets.
        texts = pa.ListArray.from_arrays(values.offsets, _json(values.values))
        text = pc.binary_join_element_wise("[", pc.binary_join(texts, ", "), "]", "")
    elif pa.types.is_string(type):
        text = pc.binary_join_element_wise('"', _escaped(values), '"', "")
    elif pa.types.is_boolean(type):
        text = pc.if_else(values, "true", "false")
    elif pa.types.is_decimal(type):
        text = _decimal(values)
    elif pa.types.is_integer(type) or pa.types.is_floating(type):
        text = values.cast(pa.string())
    elif pa.types.is_null(type):
        text = pa.array(["null"] * len(values), pa.string())
    else:
        raise TypeError(f"no JSON text for {type}")
    return pc.if_else(pc.is_valid(values), text, "null") if values.null_count else text


def _object(values: pa.StructArray) -> pa.Array:
    if not values.type.num_fields:
        return pa.array(["{}"] * len(values), pa.string())
    pieces: list[pa.Array | str] = []
    for index, field in enumerate(values.type):
        pieces.append(("{" if index == 0 else ", ") + json.dumps(field.name) + ": ")
        pieces.append(_json(values.field(index)))
    return pc.binary_join_element_wise(*pieces, "}", "")


def _escaped(values: pa.Array) -> pa.Array:
    """The text between the quotes. Nearly no value needs an escape: one pass finds out."""
    if not pc.any(pc.match_substring_regex(values, _NEEDS_ESCAPE)).as_py():
        return values
    values = pc.replace_substring(values, "\\", "\\\\")
    values = pc.replace_substring(values, '"', '\\"')
    for code in range(0x20):
        values = pc.replace_substring(values, chr(code), json.dumps(chr(code))[1:-1])
    return values


def _decimal(values: pa.Array) -> pa.Array:
    """Arrow writes every decimal with all its digits ("21.000000000000"): the trailing zeros
    go (by trimming: 5x faster than a regular expression). Below 1E-6 it writes an exponent
    ("1E-7", "0E-12"): valid JSON, kept, but for 0, written "0"."""
    text = values.cast(pa.string())
    trimmed = pc.ascii_rtrim(pc.ascii_rtrim(text, "0"), ".")
    tiny = pc.less(pc.abs(values), pa.scalar(Decimal("0.000001"), values.type))
    if not pc.any(tiny).as_py():
        return trimmed
    return pc.if_else(tiny, pc.if_else(pc.equal(values, 0), "0", text), trimmed)
