"""The value keywords of a JSON Schema, checked on the columns of a ``format="json_schema"``
send before anything is sent, as Confluent's ``JSONSerializer`` checks each value.

A send has the schema's properties as columns (see :func:`kafka_ml.registry.json_schema_columns`),
so the keywords are checked column by column with Arrow compute kernels instead of one Python
dict per row: ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum`` (also
draft-04's boolean form), ``multipleOf``, ``minLength``, ``maxLength``, ``pattern``, ``enum``,
``const``, and, for arrays, ``minItems``, ``maxItems``, ``uniqueItems`` and the keywords of
``items``. A null is refused unless the property's type allows
``null`` (the JSON writer writes it as ``null``); the other keywords apply to values of their
type only, so they skip nulls. Annotations (``title``, ``description``, ``format``, ...) are not
assertions and are ignored. Any other keyword is a :class:`~kafka_ml.ConfigError` naming it
rather than being skipped silently. A violation is an :class:`~kafka_ml.EncodeError` naming the
column, the first row, the keyword and how many rows break it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .exceptions import ConfigError, EncodeError

__all__ = ["check_rows"]

# Keywords that describe and do not assert (JSON Schema's annotations, and `format`, which is an
# annotation unless a validator opts in: Confluent's serializer does not).
_ANNOTATIONS = frozenset(
    {
        "$schema", "$id", "id", "$comment", "title", "description", "default", "examples",
        "readOnly", "writeOnly", "deprecated", "format", "contentEncoding", "contentMediaType",
        "$anchor",
    }
)  # fmt: skip
# The object's own keywords: the columns follow `properties` and `required` already, and a send
# writes no property the schema does not name, so `additionalProperties` holds whatever it says.
_OBJECT_KEYWORDS = frozenset(
    {"type", "properties", "required", "additionalProperties", "definitions", "$defs"}
)
_NUMBER_KEYWORDS = frozenset(
    {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "enum", "const"}
)
_STRING_KEYWORDS = frozenset({"minLength", "maxLength", "pattern", "enum", "const"})
_BOOLEAN_KEYWORDS = frozenset({"enum", "const"})
_ARRAY_KEYWORDS = frozenset({"items", "minItems", "maxItems", "uniqueItems"})


def check_rows(table: Any, json_schema: Mapping[str, Any]) -> None:
    """Raises :class:`~kafka_ml.EncodeError` for the first column of ``table`` (a
    ``pyarrow.Table`` whose columns are ``json_schema``'s properties) with a value that breaks a
    keyword of its property."""
    _refuse_unchecked(json_schema, _OBJECT_KEYWORDS, "the JSON Schema")
    for name, prop in json_schema.get("properties", {}).items():
        if name in table.column_names and isinstance(prop, Mapping):
            _check_property(name, table.column(name).combine_chunks(), prop)


def _types(prop: Mapping[str, Any]) -> list[str]:
    types = prop.get("type")
    return [types] if isinstance(types, str) else list(types or [])


def _kind(prop: Mapping[str, Any]) -> str | None:
    """The property's type besides ``null`` (one, as ``json_schema_columns`` requires)."""
    return next((t for t in _types(prop) if t != "null"), None)


def _refuse_unchecked(schema: Mapping[str, Any], checked: frozenset[str], where: str) -> None:
    unchecked = sorted(k for k in schema if k not in checked and k not in _ANNOTATIONS)
    if unchecked:
        raise ConfigError(
            f"{where}: keyword(s) {', '.join(unchecked)} cannot be checked on write "
            "(kafka-ml checks type, required, minimum/maximum, exclusiveMinimum/Maximum, "
            "multipleOf, minLength/maxLength, pattern, enum, const, minItems/maxItems, "
            "uniqueItems and items)"
        )


def _refuse(
    name: str, bad: np.ndarray, rows: np.ndarray, subject: Callable[[int], str], rule: str, hint: str = ""
) -> None:
    """Raises :class:`~kafka_ml.EncodeError` at the first element where ``bad`` holds:
    ``rows[i]`` is the row of element ``i``, ``subject(i)`` what it is."""
    if bad.any():
        first = int(np.argmax(bad))
        count = len(np.unique(rows[bad]))
        raise EncodeError(
            f"column '{name}', row {int(rows[first])}: {subject(first)} breaks the JSON Schema's "
            f"{rule} ({count} row(s) do{hint})"
        )


def _check_property(name: str, column: Any, prop: Mapping[str, Any]) -> None:
    kind = _kind(prop)
    where = f"JSON Schema property '{name}'"
    rows = np.arange(len(column))
    if "null" not in _types(prop):
        # An optional property's column is nullable, but the JSON writer writes a null as
        # `null`, which a type without "null" refuses.
        rule = f"type {prop.get('type')!r}"
        _refuse(name, _nulls(column), rows, lambda _: "null", rule, '; add "null" to the type to allow it')
    if kind == "array":
        _refuse_unchecked(prop, _ARRAY_KEYWORDS | {"type"}, where)
        _check_array(name, column, rows, prop)
        return
    checked = {"integer": _NUMBER_KEYWORDS, "number": _NUMBER_KEYWORDS, "string": _STRING_KEYWORDS}
    _refuse_unchecked(prop, checked.get(kind or "", _BOOLEAN_KEYWORDS) | {"type"}, where)
    _check_values(name, column, rows, prop, kind, "")


def _check_array(name: str, column: Any, rows: np.ndarray, prop: Mapping[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_fixed_size_list(column.type):
        column = column.cast(pa.list_(column.type.value_type))
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    valid = ~_nulls(column)

    def items(i: int) -> str:
        return f"a list of {int(lengths[i])} items"

    if "minItems" in prop:
        _refuse(name, valid & (lengths < prop["minItems"]), rows, items, f"minItems {prop['minItems']!r}")
    if "maxItems" in prop:
        _refuse(name, valid & (lengths > prop["maxItems"]), rows, items, f"maxItems {prop['maxItems']!r}")
    values = pc.list_flatten(column)
    parents = pc.list_parent_indices(column).to_numpy(zero_copy_only=False)
    if prop.get("uniqueItems") is True:
        # Sorted by row, then value: a repeated item sits next to its twin (1 and 1.0 are equal).
        numbers = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
        order = np.lexsort((numbers, parents))
        row_of, sorted_numbers = parents[order], numbers[order]
        twins = (row_of[1:] == row_of[:-1]) & (sorted_numbers[1:] == sorted_numbers[:-1])
        repeated = np.zeros(len(column), dtype=bool)
        repeated[row_of[1:][twins]] = True
        _refuse(name, repeated, rows, lambda _: "a list with a repeated item", "uniqueItems True")
    item_schema = prop.get("items")
    if isinstance(item_schema, Mapping):
        where = f"JSON Schema property '{name}' items"
        _refuse_unchecked(item_schema, _NUMBER_KEYWORDS | {"type"}, where)
        _check_values(name, values, parents, item_schema, _kind(item_schema), "an item ")


def _nulls(array: Any) -> np.ndarray:
    import pyarrow.compute as pc

    return np.asarray(pc.is_null(array).to_numpy(zero_copy_only=False), dtype=bool)


# `report(keyword, bound, bad)`: refuses the first value where `bad` holds.
_Report = Callable[[str, Any, np.ndarray], None]


def _check_values(
    name: str, array: Any, rows: np.ndarray, prop: Mapping[str, Any], kind: str | None, what: str
) -> None:
    """Checks the keywords of `prop` on `array` (one value per element; `rows[i]` is the row
    element `i` belongs to)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    valid = ~_nulls(array)

    def report(keyword: str, bound: Any, bad: np.ndarray) -> None:
        _refuse(name, bad & valid, rows, lambda i: f"{what}{array[i].as_py()!r}", f"{keyword} {bound!r}")

    if kind in ("integer", "number") and (
        pa.types.is_integer(array.type) or pa.types.is_floating(array.type)
    ):
        values = np.asarray(pc.fill_null(array, 0).to_numpy(zero_copy_only=False))
        _check_numbers(prop, values, report)
    elif kind == "string" and (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        filled = pc.fill_null(array, "")
        lengths = pc.utf8_length(filled).to_numpy(zero_copy_only=False)
        if "minLength" in prop:
            report("minLength", prop["minLength"], lengths < prop["minLength"])
        if "maxLength" in prop:
            report("maxLength", prop["maxLength"], lengths > prop["maxLength"])
        if "pattern" in prop:
            try:
                found = pc.match_substring_regex(filled, prop["pattern"])
            except pa.ArrowInvalid as e:
                raise ConfigError(
                    f"JSON Schema property '{name}': pattern {prop['pattern']!r} is not supported ({e})"
                ) from None
            report("pattern", prop["pattern"], ~found.to_numpy(zero_copy_only=False))
    _check_enum(prop, array, kind, report)


def _check_numbers(prop: Mapping[str, Any], values: np.ndarray, report: _Report) -> None:
    def number(keyword: str) -> float | None:
        bound = prop.get(keyword)
        return None if isinstance(bound, bool) or bound is None else bound

    minimum, maximum = number("minimum"), number("maximum")
    # Draft-04: `exclusiveMinimum: true` makes `minimum` exclusive; later drafts: a bound itself.
    exclusive_min = prop.get("exclusiveMinimum")
    exclusive_max = prop.get("exclusiveMaximum")
    if minimum is not None:
        report("minimum", minimum, values <= minimum if exclusive_min is True else values < minimum)
    if maximum is not None:
        report("maximum", maximum, values >= maximum if exclusive_max is True else values > maximum)
    if number("exclusiveMinimum") is not None:
        report("exclusiveMinimum", exclusive_min, values <= exclusive_min)
    if number("exclusiveMaximum") is not None:
        report("exclusiveMaximum", exclusive_max, values >= exclusive_max)
    step = number("multipleOf")
    if step is not None:
        if isinstance(step, float) or values.dtype.kind == "f":
            # As the reference validator does: the quotient must be a whole number.
            with np.errstate(all="ignore"):
                quotient = values / step
                bad = ~np.isfinite(quotient) | (np.trunc(quotient) != quotient)
        else:
            bad = values % step != 0
        report("multipleOf", step, bad)


def _check_enum(prop: Mapping[str, Any], array: Any, kind: str | None, report: _Report) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    for keyword in ("enum", "const"):
        if keyword not in prop:
            continue
        allowed = prop["enum"] if keyword == "enum" else [prop["const"]]
        members: list[Any]
        if kind == "boolean":
            members = [v for v in allowed if isinstance(v, bool)]
        elif kind == "string":
            members = [v for v in allowed if isinstance(v, str)]
        else:  # numbers: 1 and 1.0 are equal in JSON Schema, true is not 1
            members = [v for v in allowed if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if pa.types.is_integer(array.type):
                members = [int(v) for v in members if float(v).is_integer() and not math.isinf(v)]
        inside = pc.is_in(array, value_set=pa.array(members, type=array.type))
        report(keyword, prop[keyword], ~np.asarray(inside.to_numpy(zero_copy_only=False), dtype=bool))
