"""The JSON Schema keywords a ``format="json_schema"`` send checks (kafka_ml.json_schema_rules),
against the reference validator Confluent's JSONSerializer uses (the ``jsonschema`` package):
every row the reference refuses is refused, every row it accepts is sent."""

from __future__ import annotations

from typing import Any

import jsonschema
import kafka_ml as km
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka_ml.json_schema_rules import check_rows

SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Checked",
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 0, "exclusiveMaximum": 999, "multipleOf": 3},
        "score": {"type": "number", "exclusiveMinimum": -1.5, "maximum": 2.5, "multipleOf": 0.5},
        "name": {"type": ["string", "null"], "minLength": 2, "maxLength": 5, "pattern": "^[a-z]+é?$"},
        "level": {"type": "string", "enum": ["low", "high"], "description": "an annotation"},
        "x": {
            "type": "array",
            "items": {"type": "number", "minimum": -1, "maximum": 1},
            "minItems": 1,
            "maxItems": 3,
            "uniqueItems": True,
        },
        "ok": {"type": "boolean", "const": True},
        "n": {"type": "integer", "enum": [1, 2.0, True]},
        "note": {"type": "string"},
    },
    "required": ["id", "score", "level", "x", "ok", "n"],
}
ARROW = pa.schema(
    [
        ("id", pa.int64()),
        ("score", pa.float64()),
        ("name", pa.string()),
        ("level", pa.string()),
        ("x", pa.list_(pa.float64())),
        ("ok", pa.bool_()),
        ("n", pa.int64()),
        ("note", pa.string()),
    ]
)
REFERENCE = jsonschema.Draft7Validator(SCHEMA)

# Values each property's keywords accept, and values of the column's type that may break them.
VALID = {
    "id": st.integers(0, 332).map(lambda k: 3 * k),
    "score": st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0, 2.5]),
    "name": st.none() | st.text(st.sampled_from("abz"), min_size=1, max_size=4).map(lambda t: t + "é"),
    "level": st.sampled_from(["low", "high"]),
    "x": st.lists(st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0]), min_size=1, max_size=3, unique=True),
    "ok": st.just(True),
    "n": st.sampled_from([1, 2]),
    "note": st.just("a"),
}
ANY = {
    "id": st.sampled_from([-3, -1, 0, 1, 996, 999, 1002]) | st.integers(-5, 1005),  # the bounds
    "score": st.sampled_from([-2.0, -1.5, -1.0, -0.25, 0.0, 0.5, 1.7, 2.5, 3.0]),
    # No line breaks: Python's `re` lets `$` match before a final newline, JSON Schema's
    # ECMA-262 regexes (and RE2, which kafka-ml uses) do not.
    "name": st.sampled_from([None, "", "a", "é", "ab", "abcdé", "abcdef", "Ab", "aéb"])
    | st.text(st.sampled_from("abzé1-"), max_size=7),
    "level": st.sampled_from(["low", "high", "mid", "Low"]),
    "x": st.lists(st.sampled_from([-1.5, -1.0, 0.0, 0.5, 1.0, 2.0]), max_size=4) | st.just([0.5, 0.5]),
    "ok": st.booleans(),
    "n": st.integers(0, 3),
    "note": st.none() | st.just("a"),
}


@st.composite
def rows(draw: st.DrawFn, changed: int = 1) -> dict[str, Any]:
    """A row that meets the schema, with up to `changed` properties drawn from anything of their
    type (one, so that a keyword is not hidden behind another one the row breaks)."""
    row = {name: draw(values) for name, values in VALID.items()}
    for name in draw(st.lists(st.sampled_from(sorted(ANY)), max_size=changed)):
        row[name] = draw(ANY[name])
    return row


def as_sent(row: dict[str, Any]) -> dict[str, Any]:
    """The JSON object the send writes for `row`: nulls are written as `null`."""
    return row


def refused_exactly_when_the_reference_refuses(row: dict[str, Any]) -> None:
    table = pa.Table.from_pylist([row], schema=ARROW)
    valid = REFERENCE.is_valid(as_sent(row))
    if valid:
        check_rows(table, SCHEMA)
    else:
        with pytest.raises(km.EncodeError, match=r"column '\w+', row 0: "):
            check_rows(table, SCHEMA)


GOOD = {"id": 3, "score": 0.5, "name": "ab", "level": "low", "x": [0.5], "ok": True, "n": 1, "note": "a"}
# Each keyword at its bound (and the valid side of it), always tried besides the generated rows.
BOUNDS = [
    {"id": 996}, {"id": 999}, {"id": 0}, {"id": -3}, {"id": 4},
    {"score": 2.5}, {"score": 3.0}, {"score": -1.0}, {"score": -1.5}, {"score": 1.7},
    {"name": "a"}, {"name": "abcdé"}, {"name": "abcdef"}, {"name": "Ab"}, {"name": None},
    {"x": []}, {"x": [0.0, 0.5, 1.0]}, {"x": [0.0, 0.5, 1.0, -1.0]}, {"x": [0.5, 0.5]}, {"x": [2.0]},
    {"x": [-1.0]}, {"level": "mid"}, {"ok": False}, {"n": 3}, {"n": 2}, {"note": None},
]  # fmt: skip


@pytest.mark.parametrize("change", BOUNDS, ids=lambda c: repr(c))
def test_each_keyword_at_its_bound_agrees_with_the_reference_validator(change: dict[str, Any]) -> None:
    refused_exactly_when_the_reference_refuses({**GOOD, **change})


@settings(max_examples=600, deadline=None)
@given(rows())
def test_each_row_is_refused_exactly_when_the_reference_validator_refuses_it(row: dict[str, Any]) -> None:
    refused_exactly_when_the_reference_refuses(row)


@settings(max_examples=100, deadline=None)
@given(st.lists(rows(changed=2), min_size=1, max_size=30))
def test_a_table_is_refused_at_a_row_the_reference_refuses(batch: list[dict[str, Any]]) -> None:
    table = pa.Table.from_pylist(batch, schema=ARROW)
    invalid = [i for i, row in enumerate(batch) if not REFERENCE.is_valid(as_sent(row))]
    if not invalid:
        check_rows(table, SCHEMA)
        return
    with pytest.raises(km.EncodeError) as refused:
        check_rows(table, SCHEMA)
    row = int(str(refused.value).split("row ")[1].split(":")[0])
    assert row in invalid, (str(refused.value), invalid)


def test_the_error_names_column_row_keyword_and_count() -> None:
    table = pa.Table.from_pylist([GOOD, {**GOOD, "id": 1002}, {**GOOD, "id": 1005}], schema=ARROW)
    with pytest.raises(km.EncodeError) as refused:
        check_rows(table, SCHEMA)
    assert str(refused.value) == (
        "column 'id', row 1: 1002 breaks the JSON Schema's exclusiveMaximum 999 (2 row(s) do)"
    )


@pytest.mark.parametrize(
    ("prop", "keyword"),
    [
        ({"type": "integer", "not": {"const": 3}}, "not"),
        ({"type": "string", "oneOf": [{"maxLength": 3}]}, "oneOf"),
        ({"type": "array", "items": {"type": "number"}, "contains": {"minimum": 0}}, "contains"),
    ],
)
def test_keywords_that_are_not_checked_are_refused_not_skipped(prop: dict[str, Any], keyword: str) -> None:
    schema = {"type": "object", "properties": {"v": prop}}
    column = (
        pa.array([[1.0]])
        if prop["type"] == "array"
        else pa.array([1] if prop["type"] == "integer" else ["a"])
    )
    with pytest.raises(km.ConfigError, match=f"property 'v': keyword\\(s\\) {keyword} cannot be checked"):
        check_rows(pa.table({"v": column}), schema)
    with pytest.raises(km.ConfigError, match="the JSON Schema: keyword\\(s\\) allOf"):
        check_rows(pa.table({"v": column}), {**schema, "allOf": []})
