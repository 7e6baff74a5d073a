"""Every payload format decodes correctly on a real broker, with metadata columns."""

from __future__ import annotations

import io
import json
import struct

import fastavro
import kafka_ml as km
import numpy as np
import pyarrow as pa


def read_all(ds: km.KafkaDataset) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for batch in ds:
        for name, arr in batch.to_numpy().items():
            parts.setdefault(name, []).append(arr)
    return {k: np.concatenate(v) for k, v in parts.items()}


def test_tensor_rows_come_back_as_nd_arrays(config, new_topic, produce):
    topic = new_topic(partitions=1)
    rows = np.arange(50 * 2 * 3, dtype=np.float64).reshape(50, 2, 3)
    produce(topic, [r.astype("<f8").tobytes() for r in rows])
    ds = km.KafkaDataset(
        topic, config, format="tensor", dtype="float64", shape=(2, 3), end="latest", batch_size=16
    )
    assert len(ds) == 50
    out = read_all(ds)
    assert out["value"].shape == (50, 2, 3)
    np.testing.assert_array_equal(out["value"], rows)


def test_json_against_declared_schema(config, new_topic, produce):
    topic = new_topic()
    records = [{"id": i, "x": [i + 0.5, -i, 2.0], "y": i % 3, "name": f"r{i}"} for i in range(100)]
    produce(topic, [json.dumps(r).encode() for r in records])
    ds = km.KafkaDataset(
        topic,
        config,
        format="json",
        schema={"id": "int64", "x": ("float32", 3), "y": np.int32, "name": "string"},
        end="latest",
        batch_size=32,
    )
    out = read_all(ds)
    np.testing.assert_array_equal(out["id"], np.arange(100))
    assert out["x"].dtype == np.float32 and out["x"].shape == (100, 3)
    np.testing.assert_allclose(out["x"][:, 0], np.arange(100) + 0.5)
    assert out["y"].dtype == np.int32
    assert list(out["name"][:2]) == ["r0", "r1"]


AVRO_SCHEMA = {
    "type": "record",
    "name": "Features",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "x", "type": {"type": "array", "items": "float"}},
        {"name": "label", "type": ["null", "string"]},
    ],
}


def avro_bytes(record: dict[str, object]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(AVRO_SCHEMA), record)
    return buf.getvalue()


def test_avro_plain_and_confluent_wire_format(config, new_topic, produce):
    records = [{"id": i, "x": [float(i), 1.0], "label": None if i % 2 else f"l{i}"} for i in range(20)]
    plain = new_topic()
    produce(plain, [avro_bytes(r) for r in records])
    out = read_all(km.KafkaDataset(plain, config, format="avro", avro_schema=AVRO_SCHEMA, end="latest"))
    np.testing.assert_array_equal(out["id"], np.arange(20))
    assert out["x"].shape == (20, 2)
    assert out["label"][0] == "l0" and out["label"][1] is None

    framed = new_topic()
    produce(framed, [b"\x00" + struct.pack(">I", 42) + avro_bytes(r) for r in records])
    ds = km.KafkaDataset(
        framed,
        config,
        format="avro",
        avro_schema=AVRO_SCHEMA,
        schema_registry={42: AVRO_SCHEMA},
        end="latest",
    )
    np.testing.assert_array_equal(read_all(ds)["id"], np.arange(20))


def test_raw_with_every_metadata_column(config, new_topic, produce):
    topic = new_topic(partitions=2)
    produce(
        topic,
        [
            {
                "value": b"v0",
                "key": b"k0",
                "partition": 0,
                "headers": [("h", b"1")],
                "timestamp": 1_700_000_000_000,
            },
            {"value": None, "key": b"k1", "partition": 1},
        ],
    )
    ds = km.KafkaDataset(
        topic,
        config,
        format="raw",
        metadata=["topic", "partition", "offset", "timestamp", "headers"],
        end="latest",
    )
    table = pa.Table.from_batches([pa.record_batch(b) for b in ds]).sort_by("partition")
    assert table.column("value").to_pylist() == [b"v0", None]
    assert table.column("key").to_pylist() == [b"k0", b"k1"]
    assert table.column("topic").to_pylist() == [topic, topic]
    assert table.column("offset").to_pylist() == [0, 0]
    assert table.column("headers").to_pylist()[0] == [("h", b"1")]
    assert table.column("timestamp")[0].as_py().timestamp() == 1_700_000_000
