"""``format="connect_json"``: rows in Kafka Connect's JSON envelope, written to a real broker and
read back byte for byte. (That Connect's own ``JsonConverter`` reads them, and a JDBC sink writes
them into PostgreSQL, is tested with a real Connect worker in ``test_connect.py``.)"""

from __future__ import annotations

import asyncio
import json

import kafka_ml as km
import numpy as np
import pytest
from kafka_ml.aio import Producer as AsyncProducer
from kafka_ml.connect_json import connect_schema

SCHEMA = {
    "id": "int64",
    "flag": "bool",
    "small": "int8",
    "count": "uint32",
    "big": "uint64",
    "score": "float32",
    "price": "float64?",
    "name": "string?",
    "vec": ("float32", 3),
    "tags": "int16[]",
}


def rows() -> dict[str, object]:
    pa = pytest.importorskip("pyarrow")
    return {
        "id": np.arange(3),
        "flag": np.array([True, False, True]),
        "small": np.array([-128, 0, 127]),
        "count": np.array([0, 1, 4_294_967_295], dtype=np.uint32),
        "big": np.array([0, 2**63 - 1, 5], dtype=np.uint64),
        "score": np.array([0.1, 1.5, -2.25], dtype=np.float32),
        "price": np.array([312000.5, None, 1e-7], dtype=object),
        "name": np.array(["a", 'quote " and \\ and é', None], dtype=object),
        "vec": np.array([[0.1, 0.2, 0.3], [1, 2, 3], [0, 0, 0]], dtype=np.float32),
        "tags": pa.array([[1, 2], [], [-3]]),
    }


def read_raw(config: dict[str, str], topic: str) -> list[tuple[bytes | None, dict[str, object]]]:
    with km.KafkaDataset(topic, config, format="raw", end="latest") as ds:
        return [(k, json.loads(bytes(v))) for b in ds for k, v in zip(b["key"], b["value"], strict=True)]


def test_connect_schema_from_declared_columns() -> None:
    assert connect_schema(
        {"id": "int64", "p": "float32?", "v": ("float64", 4), "s": "str"}, name="ml.Pred"
    ) == {
        "type": "struct",
        "fields": [
            {"type": "int64", "optional": False, "field": "id"},
            {"type": "float", "optional": True, "field": "p"},
            {
                "type": "array",
                "items": {"type": "double", "optional": False},
                "optional": False,
                "field": "v",
            },
            {"type": "string", "optional": False, "field": "s"},
        ],
        "optional": False,
        "name": "ml.Pred",
    }
    types = connect_schema({t: t for t in ["bool", "int8", "int16", "uint8", "uint16", "uint32", "uint64"]})
    assert [f["type"] for f in types["fields"]] == [
        "boolean",
        "int8",
        "int16",
        "int16",
        "int32",
        "int64",
        "int64",
    ]


def test_rows_are_written_in_connects_envelope(config: dict[str, str], new_topic) -> None:
    topic = new_topic()
    with km.Producer(config) as producer:
        assert producer.send(topic, rows(), format="connect_json", schema=SCHEMA, key="id").rows == 3
    messages = read_raw(config, topic)
    assert [k for k, _ in messages] == [b"0", b"1", b"2"]  # integer keys as decimal text, as for json
    expected_schema = connect_schema(SCHEMA)
    assert all(m["schema"] == expected_schema for _, m in messages)
    assert [set(m) for _, m in messages] == [{"schema", "payload"}] * 3
    payloads = [m["payload"] for _, m in messages]
    assert payloads[0] == {
        "id": 0, "flag": True, "small": -128, "count": 0, "big": 0, "score": 0.1, "price": 312000.5,
        "name": "a", "vec": [0.1, 0.2, 0.3], "tags": [1, 2],
    }  # fmt: skip
    # Nulls are left out (Connect reads a missing optional field as null); float32 values are
    # written as their shortest text, which Connect parses back to the same float.
    assert payloads[1] == {
        "id": 1, "flag": False, "small": 0, "count": 1, "big": 2**63 - 1, "score": 1.5,
        "name": 'quote " and \\ and é', "vec": [1.0, 2.0, 3.0], "tags": [],
    }  # fmt: skip
    assert payloads[2]["price"] == 1e-7 and "name" not in payloads[2]
    assert payloads[2]["count"] == 4_294_967_295 and payloads[2]["tags"] == [-3]


def test_arrow_tables_and_async_sends(config: dict[str, str], new_topic) -> None:
    pa = pytest.importorskip("pyarrow")
    topic = new_topic()
    table = pa.table({"id": pa.array([7, 8], pa.int32()), "label": pa.array(["x", "y"])})

    async def send() -> None:
        report = await AsyncProducer(config).send(
            topic, table, format="connect_json", schema={"id": "int32", "label": "string"}
        )
        assert report.delivered == 2

    asyncio.run(send())
    assert [m["payload"] for _, m in read_raw(config, topic)] == [
        {"id": 7, "label": "x"},
        {"id": 8, "label": "y"},
    ]


@pytest.mark.parametrize(
    ("data", "schema", "message"),
    [
        (
            {"p": np.array([1.0, None], dtype=object)},
            {"p": "float64"},
            "column 'p' row 1: null in a column that is not",
        ),
        (
            {"p": np.array([1.0, 2.0, np.nan])},
            {"p": "float64?"},
            "column 'p' row 2: NaN or infinity has no JSON",
        ),
        ({"p": np.array([1.0, np.inf])}, {"p": "float32"}, "column 'p' row 1: NaN or infinity has no JSON"),
        ({"i": np.array([1.0, 1.5])}, {"i": "int64"}, "column 'i' row 1: 1.5 is not an integer"),
        ({"i": np.array([1, 300])}, {"i": "uint8"}, "column 'i' row 1: 300 is out of range for uint8"),
        ({"i": np.array([-1, 3])}, {"i": "uint16"}, "column 'i' row 0: -1 is out of range for uint16"),
        (
            {"i": np.array([2**63], dtype=np.uint64)},
            {"i": "uint64"},
            "row 0: 9223372036854775808 is out of range",
        ),
        (
            {"f": np.array([1.0, 1e40])},
            {"f": "float32"},
            "column 'f' row 1: 1e+40 is out of range for float32",
        ),
        (
            {"v": [[1.0, 2.0], [3.0]]},
            {"v": ("float32", 2)},
            "column 'v' row 1: 1 elements, declared 2 (ragged",
        ),
        ({"v": [[1.0], [2.0, 3.0, np.nan]]}, {"v": "float64[]"}, "column 'v' row 1: NaN or infinity"),
        ({"x": np.array([1])}, {"y": "int64"}, "column 'y' is declared but missing"),
        ({"s": np.array([1.5])}, {"s": "bool"}, "column 's' holds double, declared bool"),
        ({"v": np.ones((2, 3))}, {"v": "float64"}, "column 'v' holds lists but is declared a scalar"),
    ],
)
def test_bad_rows_are_refused_before_anything_is_sent(config, new_topic, data, schema, message) -> None:
    pa = pytest.importorskip("pyarrow")
    data = {k: pa.array(v) if isinstance(v, list) else v for k, v in data.items()}
    topic = new_topic()
    with km.Producer(config) as producer:
        with pytest.raises(km.EncodeError, match=message.replace("(", r"\(").replace("+", r"\+")):
            producer.send(topic, data, format="connect_json", schema=schema)
    assert read_raw(config, topic) == []


def test_settings_it_cannot_honour_are_config_errors(config) -> None:
    producer = km.Producer(config)
    with pytest.raises(km.ConfigError, match="needs a schema"):
        producer.send("t", {"a": np.zeros(2)}, format="connect_json")
    with pytest.raises(km.ConfigError, match="cannot write binary columns"):
        producer.send(
            "t", {"a": np.array([b"x"], dtype=object)}, format="connect_json", schema={"a": "binary"}
        )
    with pytest.raises(km.ConfigError, match="cannot parse type 'float32\\[0\\]'"):
        producer.send("t", {"a": np.zeros((1, 1))}, format="connect_json", schema={"a": "float32[0]"})
    with pytest.raises(km.ConfigError, match="lists of strings"):
        producer.send("t", {"a": [["x"]]}, format="connect_json", schema={"a": "string[]"})
