"""Producer encoders: NumPy/Arrow/pandas/polars rows → json/tensor/avro/raw messages that read
back through KafkaDataset and through the ordinary tools, and bad data that sends nothing."""

from __future__ import annotations

import io
import json

import fastavro
import kafka_ml as km
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicPartition

SCHEMA = {"id": "int64", "x": ("float32", 4), "y": "int32"}


def features(n: int = 50) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "id": np.arange(n, dtype=np.int64),
        "x": rng.random((n, 4), dtype=np.float32),
        "y": (np.arange(n) % 3).astype(np.int32),
    }


def consume_all(config: dict[str, str], topic: str, partitions: int = 1) -> list:
    """Every message of the topic, read with confluent-kafka (an independent client)."""
    c = Consumer({**config, "group.id": "check-" + topic, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, eof = [], 0
    while eof < partitions:
        msg = c.poll(10)
        assert msg is not None, "timed out reading back"
        if msg.error():
            eof += 1
            continue
        out.append(msg)
    c.close()
    return out


def read_back(config, topic, **kw) -> dict[str, np.ndarray]:
    ds = km.KafkaDataset(topic, config, end="latest", **kw)
    parts: dict[str, list[np.ndarray]] = {}
    for b in ds:
        for name, arr in b.to_numpy().items():
            parts.setdefault(name, []).append(arr)
    return {k: np.concatenate(v) for k, v in parts.items()}


def test_json_rows_read_back_and_interoperate(config, new_topic):
    topic = new_topic()
    data = features()
    with km.Producer(config) as p:
        assert p.send(topic, data, format="json", schema=SCHEMA).wait().delivered == 50
    out = read_back(config, topic, format="json", schema=SCHEMA)
    for name in SCHEMA:
        np.testing.assert_array_equal(out[name], data[name])
    decoded = [json.loads(m.value()) for m in consume_all(config, topic)]
    assert [d["id"] for d in decoded] == list(range(50))
    np.testing.assert_array_equal(np.array([d["x"] for d in decoded], dtype=np.float32), data["x"])


def test_tensor_rows_interoperate(config, new_topic):
    topic = new_topic()
    rows = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    with km.Producer(config) as p:
        p.send(topic, rows)
    values = [np.frombuffer(m.value(), dtype="<f4").reshape(3, 4) for m in consume_all(config, topic)]
    np.testing.assert_array_equal(np.stack(values), rows)


AVRO = {
    "type": "record",
    "name": "Features",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "x", "type": {"type": "array", "items": "float"}},
        {"name": "label", "type": ["null", "string"]},
    ],
}


def test_avro_confluent_framing_reads_back_and_interoperates(config, new_topic):
    topic = new_topic()
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "x": pa.array([[0.5, 1.5], [2.5, 3.5], [4.5, 5.5]], pa.list_(pa.float32())),
            "label": pa.array(["a", None, "c"]),
        }
    )
    with km.Producer(config) as p:
        p.send(topic, table, format="avro", avro_schema=AVRO, schema_id=7)
    out = read_back(config, topic, format="avro", avro_schema=AVRO, schema_registry={7: AVRO})
    np.testing.assert_array_equal(out["id"], [1, 2, 3])
    assert list(out["label"]) == ["a", None, "c"]
    parsed = fastavro.parse_schema(AVRO)
    records = []
    for m in consume_all(config, topic):
        assert m.value()[:5] == b"\x00\x00\x00\x00\x07"
        records.append(fastavro.schemaless_reader(io.BytesIO(m.value()[5:]), parsed, parsed))
    assert records == [
        {"id": 1, "x": [0.5, 1.5], "label": "a"},
        {"id": 2, "x": [2.5, 3.5], "label": None},
        {"id": 3, "x": [4.5, 5.5], "label": "c"},
    ]


def test_pandas_and_polars_frames(config, new_topic):
    schema = {"id": "int64", "score": "float64", "name": "string"}
    frame = {"id": [1, 2], "score": [0.25, 0.5], "name": ["a", "b"]}
    for data in (pd.DataFrame(frame), pl.DataFrame(frame)):
        topic = new_topic()
        with km.Producer(config) as p:
            p.send(topic, data, format="json", schema=schema)
        out = read_back(config, topic, format="json", schema=schema)
        np.testing.assert_array_equal(out["id"], [1, 2])
        assert list(out["name"]) == ["a", "b"]


def test_key_column_drives_partitioning(config, new_topic):
    topic = new_topic(partitions=4)
    data = {"user": np.array([f"u{i % 5}" for i in range(100)]), "v": np.arange(100)}
    with km.Producer(config) as p:
        p.send(topic, data, format="json", key="user")
    partition_of: dict[bytes, set[int]] = {}
    for m in consume_all(config, topic, partitions=4):
        assert json.loads(m.value())["user"].encode() == m.key()
        partition_of.setdefault(m.key(), set()).add(m.partition())
    assert len(partition_of) == 5 and all(len(ps) == 1 for ps in partition_of.values())


def test_raw_nulls_become_tombstones(config, new_topic):
    topic = new_topic()
    with km.Producer(config) as p:
        p.send(topic, {"value": pa.array([b"a", None], pa.binary())}, format="raw", key=[b"k1", b"k2"])
    msgs = consume_all(config, topic)
    assert [(m.key(), m.value()) for m in msgs] == [(b"k1", b"a"), (b"k2", None)]


def assert_empty(config, topic):
    assert read_back(config, topic, format="raw") == {}, "a failed send must send nothing"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"id": np.array([1.0, np.nan]), "x": np.zeros((2, 4)), "y": [1, 2]}, "column 'id' row 1: NaN"),
        (
            {"id": np.array([1.0, 2.5]), "x": np.zeros((2, 4)), "y": [1, 2]},
            "column 'id' row 1: 2.5 is not an integer",
        ),
        ({"id": [1, 2], "x": np.zeros((2, 3)), "y": [1, 2]}, "column 'x' has 3 elements per row, declared 4"),
        ({"id": [1, 2], "x": pa.array([[1, 2, 3, 4], [1, 2]]), "y": [1, 2]}, "column 'x' row 1: 2 elements"),
        ({"id": [1, None], "x": np.zeros((2, 4)), "y": [1, 2]}, "column 'id' row 1: null"),
        ({"id": [1, 2], "x": np.zeros((2, 4))}, "'y' is declared but missing"),
        ({"id": [1, 2], "x": np.zeros((2, 4)), "y": [1, 2**40]}, "column 'y' cannot be stored as Int32"),
    ],
)
def test_bad_rows_raise_before_anything_is_sent(config, new_topic, data, message):
    topic = new_topic()
    with km.Producer(config) as p, pytest.raises(km.EncodeError, match=message):
        p.send(topic, data, format="json", schema=SCHEMA)
    assert_empty(config, topic)


def test_unencodable_objects_and_oversized_rows(config, new_topic):
    topic = new_topic()
    p = km.Producer({**config, "message.max.bytes": 2000})
    with pytest.raises(km.EncodeError, match="column 'obj'"):
        p.send(topic, {"obj": np.array([object(), object()], dtype=object)}, format="json")
    with pytest.raises(km.EncodeError, match=r"row 1 encodes to \d+ bytes, above message.max.bytes \(2000\)"):
        p.send(topic, {"value": pa.array([b"x", b"y" * 5000])}, format="raw")
    with pytest.raises(km.EncodeError, match="no JSON representation"):
        p.send(topic, {"f": np.array([1.0, np.inf])}, format="json")
    p.flush()
    assert_empty(config, topic)


def test_unknown_topic_without_auto_create(config):
    p = km.Producer({**config, "allow.auto.create.topics": False})
    with pytest.raises(km.UnknownTopicError, match="no-such-topic"):
        p.send("no-such-topic-" + "z" * 6, {"v": [1]}, format="json")
    assert p.delivered == 0
