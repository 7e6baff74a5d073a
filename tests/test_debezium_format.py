"""`format="debezium"` on a real broker, with change events written the way Debezium's JSON
converter writes them (with and without the embedded schema). The end-to-end path through a real
Connect worker and PostgreSQL is in test_connect.py."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import kafka_ml as km
import numpy as np
import pytest

SCHEMA_FIELDS = [
    {"type": "int32", "optional": False, "field": "id"},
    {
        "type": "bytes",
        "optional": False,
        "name": "org.apache.kafka.connect.data.Decimal",
        "parameters": {"scale": "2", "connect.decimal.precision": "10"},
        "field": "price",
    },
    {"type": "bytes", "optional": True, "field": "photo"},
]


def decimal(value: str, scale: int) -> str:
    """Connect's Decimal encoding: the unscaled integer, big-endian two's complement, base64."""
    unscaled = round(float(value) * 10**scale)
    width = max(1, (unscaled.bit_length() + 8) // 8)
    return base64.b64encode(unscaled.to_bytes(width, "big", signed=True)).decode()


def event(op: str, row: dict[str, object], lsn: int, *, with_schema: bool) -> bytes:
    image = "before" if op == "d" else "after"
    payload = {
        "before": None,
        "after": None,
        image: row,
        "op": op,
        "source": {"connector": "postgresql", "ts_ms": 1_700_000_000_000 + lsn, "lsn": lsn},
        "ts_ms": 1_700_000_000_500,
    }
    if not with_schema:
        return json.dumps(payload).encode()
    row_schema = {"type": "struct", "optional": True, "fields": SCHEMA_FIELDS}
    schema = {
        "type": "struct",
        "fields": [
            {**row_schema, "field": "before"},
            {**row_schema, "field": "after"},
            {"type": "string", "optional": False, "field": "op"},
        ],
    }
    return json.dumps({"schema": schema, "payload": payload}).encode()


def test_events_with_embedded_schema_become_typed_columns(
    config: dict[str, str], new_topic: Callable[..., str], produce: Callable[..., None]
) -> None:
    topic = new_topic()
    photo = base64.b64encode(b"\x89PNG").decode()
    messages: list[bytes | dict[str, object] | None] = [
        event("r", {"id": 1, "price": decimal("19.99", 2), "photo": photo}, 100, with_schema=True),
        event("c", {"id": 2, "price": decimal("-0.50", 2), "photo": None}, 200, with_schema=True),
        event("u", {"id": 1, "price": decimal("18.00", 2), "photo": photo}, 300, with_schema=True),
        event("d", {"id": 2, "price": decimal("-0.50", 2), "photo": None}, 400, with_schema=True),
        {"key": b'{"id": 2}', "value": None},  # the tombstone after the delete
    ]
    produce(topic, messages)
    ds = km.KafkaDataset(
        topic,
        config,
        format="debezium",
        schema={"id": "int32", "price": "float64", "photo": "binary?"},
        metadata=["offset"],
        end="latest",
    )
    assert ds.columns == ["id", "price", "photo", "__op", "__source_ts_ms", "__lsn", "offset"]
    batches = [b.to_numpy() for b in ds]
    out = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    np.testing.assert_array_equal(out["id"], np.array([1, 2, 1, 2], dtype=np.int32))
    np.testing.assert_array_equal(out["price"], [19.99, -0.5, 18.0, -0.5])
    assert list(out["photo"]) == [b"\x89PNG", None, b"\x89PNG", None]
    assert list(out["__op"]) == ["r", "c", "u", "d"]
    np.testing.assert_array_equal(out["__lsn"], [100, 200, 300, 400])
    np.testing.assert_array_equal(out["offset"], [0, 1, 2, 3])
    assert ds.stats["tombstones"] == 1 and ds.stats["skipped"] == 0
    assert len(ds) == 5
    assert ds.state_dict()["offsets"][topic] == {"0": 5}  # the tombstone's offset is consumed


def test_events_without_schema_and_bad_events(
    config: dict[str, str], new_topic: Callable[..., str], produce: Callable[..., None]
) -> None:
    topic = new_topic()
    produce(
        topic,
        [
            event("c", {"id": 7, "price": 2.5}, 10, with_schema=False),  # decimal.handling.mode=double
            event("c", {"id": 8, "price": decimal("2.50", 2)}, 20, with_schema=False),  # scale unknown
            b'{"id": 9, "price": 1.0}',  # a flattened row, not an envelope
        ],
    )
    schema = {"id": "int64", "price": "float32"}
    ds = km.KafkaDataset(topic, config, format="debezium", schema=schema, end="latest")
    with pytest.raises(km.DecodeError) as info:
        list(ds)
    assert info.value.offset == 1
    assert "column 'price'" in info.value.reason and "decimal.handling.mode=double" in info.value.reason

    ds = km.KafkaDataset(topic, config, format="debezium", schema=schema, end="latest", on_error="skip")
    ids = [i for batch in ds for i in batch["id"].tolist()]
    assert ids == [7]
    assert ds.stats["skipped"] == 2


def test_debezium_format_needs_columns(config: dict[str, str], new_topic: Callable[..., str]) -> None:
    topic = new_topic()
    with pytest.raises(km.ConfigError, match="needs a schema of columns"):
        km.KafkaDataset(topic, config, format="debezium")
    with pytest.raises(km.ConfigError, match="clashes"):
        km.KafkaDataset(topic, config, format="debezium", schema={"__op": "string"})
