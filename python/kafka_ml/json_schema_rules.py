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
from collections.abc import Mapping
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
        if name not in table.column_names or not isinstance(prop, Mapping):
            continue
        column = table.column(name)
        _check_property(name, column, prop)


def _kinds(prop: Mapping[str, Any]) -> list[str]:
    types = prop.get("type")
    kinds = [types] if isinstance(types, str) else list(types or [])
    return [k for k in kinds if k != "null"]


def _refuse_unchecked(schema: Mapping[str, Any], checked: frozenset[str], where: str) -> None:
    unchecked = sorted(k for k in schema if k not in checked and k not in _ANNOTATIONS)
    if unchecked:
        raise ConfigError(
            f"{where}: keyword(s) {', '.join(unchecked)} cannot be checked on write "
            "(kafka-ml checks type, required, minimum/maximum, exclusiveMinimum/Maximum, "
            "multipleOf, minLength/maxLength, pattern, enum, const, minItems/maxItems, "
            "uniqueItems and items)"
        )


def _check_property(name: str, column: Any, prop: Mapping[str, Any]) -> None:
    kind = _kinds(prop)[0] if _kinds(prop) else None
    where = f"JSON Schema property '{name}'"
    types = prop.get("type")
    if "null" not in ([types] if isinstance(types, str) else list(types or [])):
        # An optional property's column is nullable, but the JSON writer writes a null as
        # `null`, which a type without "null" refuses.
        nulls = _nulls(column)
        if nulls.any():
            first = int(np.argmax(nulls))
            raise EncodeError(
                f"column '{name}', row {first}: null breaks the JSON Schema's type {types!r} "
                f'({int(nulls.sum())} row(s) do; add "null" to the type to allow it)'
            )
    if kind == "array":
        _refuse_unchecked(prop, _ARRAY_KEYWORDS | {"type"}, where)
        _check_array(name, column, prop)
        return
    checked = {"integer": _NUMBER_KEYWORDS, "number": _NUMBER_KEYWORDS, "string": _STRING_KEYWORDS}
    _refuse_unchecked(prop, checked.get(kind or "", _BOOLEAN_KEYWORDS) | {"type"}, where)
    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    rows = np.arange(len(column))
    _check_values(name, column, rows, prop, kind, "")


def _check_array(name: str, column: Any, prop: Mapping[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        column = column.cast(pa.list_(column.type.value_type))
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    valid = ~_nulls(column)
    if "minItems" in prop:
        _report(name, "minItems", prop["minItems"], valid & (lengths < prop["minItems"]), lengths, "items")
    if "maxItems" in prop:
        _report(name, "maxItems", prop["maxItems"], valid & (lengths > prop["maxItems"]), lengths, "items")
    if prop.get("uniqueItems") is True:
        duplicated = np.zeros(len(column), dtype=bool)
        for row, items in enumerate(column.to_pylist()):
            if items is not None:
                normalised = [float(v) if isinstance(v, (int, float)) else v for v in items]
                duplicated[row] = len(set(normalised)) != len(normalised)
        _report(name, "uniqueItems", True, duplicated, None, "")
    items = prop.get("items")
    if isinstance(items, Mapping):
        item_kind = _kinds(items)[0] if _kinds(items) else None
        _refuse_unchecked(items, _NUMBER_KEYWORDS | {"type"}, f"JSON Schema property '{name}' items")
        values = pc.list_flatten(column)
        parents = pc.list_parent_indices(column).to_numpy(zero_copy_only=False)
        _check_values(name, values, parents, items, item_kind, "an item ")


def _nulls(array: Any) -> np.ndarray:
    import pyarrow.compute as pc

    return np.asarray(pc.is_null(array).to_numpy(zero_copy_only=False), dtype=bool)


def _check_values(
    name: str, array: Any, rows: np.ndarray, prop: Mapping[str, Any], kind: str | None, what: str
) -> None:
    """Checks the keywords of `prop` on `array` (one value per element; `rows[i]` is the row
    element `i` belongs to)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    valid = ~_nulls(array)

    def report(keyword: str, bound: Any, bad: np.ndarray, shown: Any) -> None:
        bad = bad & valid
        if bad.any():
            first = int(np.argmax(bad))
            rows_bad = np.unique(rows[bad])
            value = shown[first] if shown is not None else array[first].as_py()
            raise EncodeError(
                f"column '{name}', row {int(rows[first])}: {what}{value!r} breaks the JSON Schema's "
                f"{keyword} {bound!r} ({len(rows_bad)} row(s) do)"
            )

    if kind in ("integer", "number") and (
        pa.types.is_integer(array.type) or pa.types.is_floating(array.type)
    ):
        values = np.asarray(pc.fill_null(array, 0).to_numpy(zero_copy_only=False))
        _check_numbers(prop, values, report)
    elif kind == "string" and (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        filled = pc.fill_null(array, "")
        lengths = pc.utf8_length(filled).to_numpy(zero_copy_only=False)
        if "minLength" in prop:
            report("minLength", prop["minLength"], lengths < prop["minLength"], None)
        if "maxLength" in prop:
            report("maxLength", prop["maxLength"], lengths > prop["maxLength"], None)
        if "pattern" in prop:
            try:
                found = pc.match_substring_regex(filled, prop["pattern"])
            except pa.ArrowInvalid as e:
                raise ConfigError(
                    f"JSON Schema property '{name}': pattern {prop['pattern']!r} is not supported ({e})"
                ) from None
            report("pattern", prop["pattern"], ~found.to_numpy(zero_copy_only=False), None)
    _check_enum(prop, array, kind, report)


def _check_numbers(prop: Mapping[str, Any], values: np.ndarray, report: Any) -> None:
    def number(keyword: str) -> float | None:
        bound = prop.get(keyword)
        return None if isinstance(bound, bool) or bound is None else bound

    minimum, maximum = number("minimum"), number("maximum")
    # Draft-04: `exclusiveMinimum: true` makes `minimum` exclusive; later drafts: a bound itself.
    exclusive_min = prop.get("exclusiveMinimum")
    exclusive_max = prop.get("exclusiveMaximum")
    if minimum is not None:
        if exclusive_min is True:
            report("minimum", minimum, values <= minimum, None)
        else:
            report("minimum", minimum, values < minimum, None)
    if maximum is not None:
        if exclusive_max is True:
            report("maximum", maximum, values >= maximum, None)
        else:
            report("maximum", maximum, values > maximum, None)
    if number("exclusiveMinimum") is not None:
        report("exclusiveMinimum", exclusive_min, values <= exclusive_min, None)
    if number("exclusiveMaximum") is not None:
        report("exclusiveMaximum", exclusive_max, values >= exclusive_max, None)
    step = number("multipleOf")
    if step is not None:
        if isinstance(step, float) or values.dtype.kind == "f":
            # As the reference validator does: the quotient must be a whole number.
            with np.errstate(all="ignore"):
                quotient = values / step
                bad = ~np.isfinite(quotient) | (np.trunc(quotient) != quotient)
        else:
            bad = values % step != 0
        report("multipleOf", step, bad, None)


def _check_enum(prop: Mapping[str, Any], array: Any, kind: str | None, report: Any) -> None:
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
        value_set = pa.array(members, type=array.type) if members else pa.array([], type=array.type)
        inside = pc.is_in(array, value_set=value_set).to_numpy(zero_copy_only=False)
        report(keyword, prop[keyword], ~np.asarray(inside, dtype=bool), None)


def _report(name: str, keyword: str, bound: Any, bad: np.ndarray, shown: Any, unit: str) -> None:
    if bad.any():
        first = int(np.argmax(bad))
        detail = f"{int(shown[first])} {unit}" if shown is not None else "its items"
        raise EncodeError(
            f"column '{name}', row {first}: {detail} break(s) the JSON Schema's {keyword} {bound!r} "
            f"({int(bad.sum())} row(s) do)"
        )
