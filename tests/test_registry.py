"""Schema Registry by URL, on a real registry (Apicurio Registry's Confluent-compatible API, or
`SCHEMA_REGISTRY_URL`) and a real broker: interop with confluent-kafka's serializers both ways,
schema evolution, and every kind of bad input."""

from __future__ import annotations

import io
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kafka_ml as km
import numpy as np
import pyarrow as pa
import pytest
from confluent_kafka import Consumer as CkConsumer
from confluent_kafka import Producer as CkProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from helpers import confluent_avro_values
from kafka_ml import _native

V1 = {
    "type": "record",
    "name": "Reading",
    "namespace": "ml.sensors",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "x", "type": {"type": "array", "items": "float"}},
        {"name": "label", "type": ["null", "string"], "default": None},
    ],
}
# v2: one field added with a default (BACKWARD-compatible), `label` removed.
V2 = {
    "type": "record",
    "name": "Reading",
    "namespace": "ml.sensors",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "x", "type": {"type": "array", "items": "float"}},
        {"name": "weight", "type": "double", "default": 1.5},
    ],
}


def rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"id": i, "x": [float(i), i / 4.0], "label": None if i % 3 == 0 else f"r{i}"}
        for i in range(start, start + n)
    ]


def confluent_send(
    bootstrap: str, url: str, topic: str, schema: dict[str, Any], values: list[dict[str, Any]]
) -> None:
    serializer = AvroSerializer(SchemaRegistryClient({"url": url}), json.dumps(schema))
    producer = CkProducer({"bootstrap.servers": bootstrap})
    ctx = SerializationContext(topic, MessageField.VALUE)
    for v in values:
        producer.produce(topic, serializer(v, ctx))
    assert producer.flush(30) == 0


def read_all(ds: km.KafkaDataset) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for batch in ds:
        for name, column in pa.record_batch(batch).to_pydict().items():
            out.setdefault(name, []).extend(column)
    return out


def registered_subjects(url: str) -> list[str]:
    return list(SchemaRegistryClient({"url": url}).get_subjects())


# -- interop ----------------------------------------------------------------------------------


def test_confluent_writes_kafka_ml_reads_with_only_the_url(
    config: dict[str, str], new_topic: Callable[..., str], schema_registry_url: str
) -> None:
    topic = new_topic()
    values = rows(300)
    confluent_send(config["bootstrap.servers"], schema_registry_url, topic, V1, values)
    ds = km.KafkaDataset(topic, config, format="avro", schema_registry=schema_registry_url, end="latest")
    got = read_all(ds)
    assert got["id"] == [v["id"] for v in values]
    assert got["x"] == [v["x"] for v in values]  # float32 values that are exact in binary
    assert got["label"] == [v["label"] for v in values]


def test_kafka_ml_writes_confluent_reads_and_the_subject_exists(
    config: dict[str, str], new_topic: Callable[..., str], schema_registry_url: str
) -> None:
    topic = new_topic()
    ids = np.arange(50, dtype=np.int64)
    data = {"id": ids, "x": np.stack([ids * 0.5, ids * 0.25], axis=1).astype(np.float32)}
    data_with_label = {**data, "label": [None if i % 2 else f"n{i}" for i in ids]}
    with km.Producer(config) as producer:
        producer.send(
            topic, data_with_label, format="avro", avro_schema=V1, schema_registry=schema_registry_url
        ).wait()
    assert f"{topic}-value" in registered_subjects(schema_registry_url)

    read = confluent_avro_values(config["bootstrap.servers"], schema_registry_url, topic, len(ids))
    got = [value for _, value in read]
    assert [g["id"] for g in got] == ids.tolist()
    assert [g["x"] for g in got] == data["x"].tolist()
    assert [g["label"] for g in got] == data_with_label["label"]


def test_values_of_two_schema_versions_resolve_to_the_latest(
    config: dict[str, str], new_topic: Callable[..., str], schema_registry_url: str
) -> None:
    topic = new_topic()
    bootstrap = config["bootstrap.servers"]
    confluent_send(bootstrap, schema_registry_url, topic, V1, rows(5))
    v2_values = [{"id": 100 + i, "x": [1.0, 2.0], "weight": 0.25 * i} for i in range(5)]
    confluent_send(bootstrap, schema_registry_url, topic, V2, v2_values)

    # No reader schema given: the subject's latest version (v2) is the reader schema.
    got = read_all(
        km.KafkaDataset(topic, config, format="avro", schema_registry=schema_registry_url, end="latest")
    )
    assert sorted(got) == ["id", "weight", "x"]  # `label` is gone, `weight` is new
    assert got["id"] == [0, 1, 2, 3, 4, 100, 101, 102, 103, 104]
    assert got["weight"] == [1.5] * 5 + [0.0, 0.25, 0.5, 0.75, 1.0]  # v1 values take the default

    # An explicit reader schema (v1) reads v2 values too (forward: `weight` dropped, the
    # missing `label` takes its default).
    got = read_all(
        km.KafkaDataset(
            topic, config, format="avro", avro_schema=V1, schema_registry=schema_registry_url, end="latest"
        )
    )
    assert got["label"][:5] == [None, "r1", "r2", None, "r4"] and got["label"][5:] == [None] * 5


def test_record_name_strategy_and_auto_register_off(
    config: dict[str, str], new_topic: Callable[..., str], schema_registry_url: str
) -> None:
    topic = new_topic()
    schema = {**V1, "name": f"R{uuid.uuid4().hex[:8]}"}
    full_name = f"ml.sensors.{schema['name']}"
    data = {"id": np.arange(3, dtype=np.int64), "x": np.zeros((3, 2), np.float32), "label": ["a", "b", None]}
    with km.Producer(config) as producer:
        with pytest.raises(km.SchemaRegistryError) as missing:
            producer.send(
                topic, data, format="avro", avro_schema=schema, schema_registry=schema_registry_url,
                subject_name_strategy="record", auto_register=False,
            )  # fmt: skip
        assert missing.value.status == 404 and full_name in str(missing.value)
        producer.send(
            topic, data, format="avro", avro_schema=schema, schema_registry=schema_registry_url,
            subject_name_strategy="record",
        ).wait()  # fmt: skip
    assert full_name in registered_subjects(schema_registry_url)
    got = read_all(
        km.KafkaDataset(
            topic, config, format="avro", schema_registry=schema_registry_url, subject=full_name, end="latest"
        )
    )
    assert got["id"] == [0, 1, 2] and got["label"] == ["a", "b", None]


# -- bad input --------------------------------------------------------------------------------


def frame(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def produce_raw(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = CkProducer({"bootstrap.servers": bootstrap})
    for v in values:
        producer.produce(topic, v)
    assert producer.flush(30) == 0


@pytest.fixture
def mixed_topic(
    config: dict[str, str], new_topic: Callable[..., str], schema_registry_url: str
) -> Iterator[tuple[str, list[bytes]]]:
    """Offsets 0-1 good, 2 an unknown id, 3 a wrong magic byte, 4 a body that does not match
    its schema, 5 a good one."""
    topic = new_topic()
    client = km.SchemaRegistry(schema_registry_url)
    schema_id = client.register(f"{topic}-value", json.dumps(V1))
    serializer = AvroSerializer(SchemaRegistryClient({"url": schema_registry_url}), json.dumps(V1))
    ctx = SerializationContext(topic, MessageField.VALUE)
    good = [serializer(r, ctx) for r in rows(3)]
    assert good[0][1:5] == schema_id.to_bytes(4, "big")
    values = [
        good[0],
        good[1],
        frame(2_000_000_000, good[2][5:]),
        b"\x01" + good[2][1:],
        frame(schema_id, b"\xff\xff\xff"),
        good[2],
    ]
    produce_raw(config["bootstrap.servers"], topic, values)
    yield topic, values


def test_each_bad_value_is_named_and_follows_on_error(
    config: dict[str, str], mixed_topic: tuple[str, list[bytes]], schema_registry_url: str
) -> None:
    topic, _ = mixed_topic
    kw: dict[str, Any] = dict(
        format="avro", avro_schema=V1, schema_registry=schema_registry_url, end="latest"
    )
    with pytest.raises(km.DecodeError) as first:
        read_all(km.KafkaDataset(topic, config, **kw))
    assert (first.value.topic, first.value.partition, first.value.offset) == (topic, 0, 2)
    assert "unknown schema id 2000000000" in str(first.value) and "has no such schema" in str(first.value)

    ds = km.KafkaDataset(topic, config, on_error="skip", **kw)
    assert read_all(ds)["id"] == [0, 1, 2]
    assert ds.stats["skipped"] == 3

    reasons = []
    for offset in (3, 4):
        with pytest.raises(km.DecodeError) as bad:
            read_all(km.KafkaDataset(topic, config, start={(topic, 0): offset}, **kw))
        assert bad.value.offset == offset
        reasons.append(str(bad.value))
    assert "not in the Confluent wire format" in reasons[0]
    assert "invalid Avro" in reasons[1]


def test_an_unreachable_registry_stops_the_read_and_skips_nothing(
    config: dict[str, str], mixed_topic: tuple[str, list[bytes]]
) -> None:
    topic, _ = mixed_topic
    from launcher import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    group = f"g-{uuid.uuid4().hex}"
    ds = km.KafkaDataset(
        topic, {**config, "group.id": group}, format="avro", avro_schema=V1,
        schema_registry=km.SchemaRegistry(dead, timeout=1.0), on_error="skip", end="latest",
    )  # fmt: skip
    with pytest.raises(km.SchemaRegistryError) as err:
        read_all(ds)
    assert err.value.status is None and f"cannot reach the schema registry at {dead}" in str(err.value)
    assert ds.stats["skipped"] == 0 and ds.stats["dead_lettered"] == 0
    # Nothing was handed out, so nothing was committed for the group.
    assert _native.committed_offsets({**config, "group.id": group}, [(topic, 0)]) == {(topic, 0): None}


def test_named_types_registered_under_other_subjects_are_resolved(
    config: dict[str, str], new_topic: Callable[..., str], schema_registry_url: str
) -> None:
    """Confluent's schema references: a writer schema whose field types (a record, an enum) are
    registered under subjects of their own. kafka-ml fetches them by reference for the writer, and
    for the reader when the columns come from the subject's latest schema."""
    import fastavro
    from confluent_kafka.schema_registry import Schema, SchemaReference

    ns = f"ml{uuid.uuid4().hex[:8]}"  # the subjects are named by the types: one set per test run
    point = {
        "type": "record", "name": "Point", "namespace": ns,
        "fields": [{"name": "lat", "type": "double"}, {"name": "lon", "type": "double"}],
    }  # fmt: skip
    kind = {"type": "enum", "name": "Kind", "namespace": ns, "symbols": ["TRAIN", "TEST"]}
    reading = {
        "type": "record", "name": "Reading", "namespace": ns,
        "fields": [
            {"name": "id", "type": "long"},
            {"name": "at", "type": f"{ns}.Point"},
            {"name": "kind", "type": f"{ns}.Kind"},
            {"name": "next", "type": ["null", f"{ns}.Kind"], "default": None},
        ],
    }  # fmt: skip
    client = SchemaRegistryClient({"url": schema_registry_url})
    client.register_schema(f"{ns}.Point", Schema(json.dumps(point), "AVRO"))
    client.register_schema(f"{ns}.Kind", Schema(json.dumps(kind), "AVRO"))
    references = [
        SchemaReference(f"{ns}.Point", f"{ns}.Point", 1),
        SchemaReference(f"{ns}.Kind", f"{ns}.Kind", 1),
    ]
    named: dict[str, Any] = {}
    fastavro.parse_schema(point, named_schemas=named)
    fastavro.parse_schema(kind, named_schemas=named)

    def write(topic: str, schema: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        refs = [r for r in references if f'"{r.name}"' in json.dumps(schema)]  # the types it uses
        schema_id = client.register_schema(f"{topic}-value", Schema(json.dumps(schema), "AVRO", refs))
        parsed = fastavro.parse_schema(schema, named_schemas=dict(named))
        values = []
        for row in rows:
            body = io.BytesIO()
            fastavro.schemaless_writer(body, parsed, row)
            values.append(frame(schema_id, body.getvalue()))
        produce_raw(config["bootstrap.servers"], topic, values)

    rows = [
        {"id": i, "at": {"lat": i / 2, "lon": -1.0}, "kind": ["TRAIN", "TEST"][i % 2],
         "next": None if i % 3 == 0 else "TEST"}
        for i in range(6)
    ]  # fmt: skip
    topic = with_record = new_topic()
    write(topic, reading, rows)
    # The writer refers to the registered types; the reader (given) defines its enum inline.
    reader = {
        "type": "record", "name": "Reading", "namespace": ns,
        "fields": [{"name": "id", "type": "long"},
                   {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["TRAIN", "TEST"]}}],
    }  # fmt: skip
    ds = km.KafkaDataset(
        topic, config, format="avro", avro_schema=reader, schema_registry=schema_registry_url, end="latest"
    )
    assert read_all(ds) == {"id": list(range(6)), "kind": [r["kind"] for r in rows]}

    # The reader from the subject's latest schema, whose enum types are references.
    flat = {**reading, "fields": [f for f in reading["fields"] if f["name"] != "at"]}
    topic = new_topic()
    write(topic, flat, [{k: v for k, v in r.items() if k != "at"} for r in rows])
    ds = km.KafkaDataset(topic, config, format="avro", schema_registry=schema_registry_url, end="latest")
    assert read_all(ds) == {
        "id": list(range(6)),
        "kind": [r["kind"] for r in rows],
        "next": [r["next"] for r in rows],
    }
    schema = pa.schema(ds)
    assert schema.field("kind").type == pa.string() and schema.field("next").nullable

    # A latest schema whose record-typed field is a referenced type: a struct column.
    ds = km.KafkaDataset(
        with_record, config, format="avro", schema_registry=schema_registry_url, end="latest"
    )
    assert pa.schema(ds).field("at").type == pa.struct(
        [pa.field("lat", pa.float64(), nullable=False), pa.field("lon", pa.float64(), nullable=False)]
    )
    assert read_all(ds)["at"] == [r["at"] for r in rows]


# -- nested records ---------------------------------------------------------------------------

NESTED_V1 = {
    "type": "record",
    "name": "Sample",
    "namespace": "ml.nested",
    "fields": [
        {"name": "id", "type": "long"},
        {
            "name": "features",
            "type": {
                "type": "record",
                "name": "Features",
                "fields": [
                    {"name": "x", "type": {"type": "array", "items": "float"}},
                    {"name": "y", "type": "int"},
                    {"name": "debug", "type": ["null", "string"], "default": None},
                ],
            },
        },
        {
            "name": "meta",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "Meta",
                    "fields": [
                        {"name": "source", "type": "string"},
                        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                        {
                            "name": "origin",
                            "type": {
                                "type": "record",
                                "name": "Origin",
                                "fields": [
                                    {"name": "lat", "type": "double"},
                                    {"name": "site", "type": ["null", "string"]},
                                ],
                            },
                        },
                    ],
                },
            ],
            "default": None,
        },
        {
            "name": "boxes",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Box",
                    "fields": [{"name": "w", "type": "int"}, {"name": "label", "type": "string"}],
                },
            },
        },
    ],
}


def nested_v2() -> dict[str, Any]:
    """v2: `features.debug` removed, `features.scale` added with a default (BACKWARD-compatible)."""
    v2 = json.loads(json.dumps(NESTED_V1))
    v2["fields"][1]["type"]["fields"] = [
        {"name": "x", "type": {"type": "array", "items": "float"}},
        {"name": "y", "type": "int"},
        {"name": "scale", "type": "double", "default": 0.5},
    ]
    return v2


def nested_rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "features": {"x": [float(i), i / 4.0][: i % 3], "y": -i, "debug": None if i % 2 else f"d{i}"},
            "meta": None
            if i % 4 == 1
            else {
                "source": f"cam{i % 3}",
                "ts": 1_700_000_000_000 + i,
                "origin": {"lat": i / 8.0, "site": None if i % 3 == 0 else f"s{i}"},
            },
            "boxes": [{"w": i * 10 + j, "label": f"b{j}"} for j in range(i % 3)],
        }
        for i in range(start, start + n)
    ]


def test_nested_records_are_struct_columns_read_with_only_the_url(
    config: dict[str, str], new_topic: Callable[..., str], schema_registry_url: str
) -> None:
    topic = new_topic()
    values = nested_rows(60)
    confluent_send(config["bootstrap.servers"], schema_registry_url, topic, NESTED_V1, values)
    ds = km.KafkaDataset(topic, config, format="avro", schema_registry=schema_registry_url, end="latest")
    # Nested records are Arrow structs (nullable where the field is a ["null", record] union), arrays
    # of records lists of structs; nested fields keep the top level's types (timestamp-millis: int64).
    schema = pa.schema(ds)
    features = pa.struct(
        [
            pa.field("x", pa.list_(pa.field("item", pa.float32(), nullable=False)), nullable=False),
            pa.field("y", pa.int32(), nullable=False),
            pa.field("debug", pa.string()),
        ]
    )
    origin = pa.struct([pa.field("lat", pa.float64(), nullable=False), pa.field("site", pa.string())])
    meta = pa.struct(
        [
            pa.field("source", pa.string(), nullable=False),
            pa.field("ts", pa.int64(), nullable=False),
            pa.field("origin", origin, nullable=False),
        ]
    )
    box = pa.struct(
        [pa.field("w", pa.int32(), nullable=False), pa.field("label", pa.string(), nullable=False)]
    )
    assert schema.field("features") == pa.field("features", features, nullable=False)
    assert schema.field("meta") == pa.field("meta", meta, nullable=True)
    assert schema.field("boxes") == pa.field(
        "boxes", pa.list_(pa.field("item", box, nullable=False)), nullable=False
    )

    batches = list(ds)
    got: dict[str, list[Any]] = {}
    for batch in batches:
        rb = pa.record_batch(batch)
        assert isinstance(rb.column(rb.schema.get_field_index("meta")), pa.StructArray)
        for name, column in rb.to_pydict().items():
            got.setdefault(name, []).extend(column)
    assert got == {k: [v[k] for v in values] for k in ("id", "features", "meta", "boxes")}
    # As for Protobuf's nested messages: NumPy takes the flat columns, a struct column is read
    # through Arrow.
    assert batches[0]["id"].tolist() == list(range(len(batches[0])))
    with pytest.raises(TypeError, match=r"column 'features' .* cannot become a NumPy array"):
        batches[0]["features"]


def test_nested_records_resolve_across_schema_versions(
    config: dict[str, str], new_topic: Callable[..., str], schema_registry_url: str
) -> None:
    topic = new_topic()
    bootstrap = config["bootstrap.servers"]
    v1_values = nested_rows(4)
    confluent_send(bootstrap, schema_registry_url, topic, NESTED_V1, v1_values)
    v2 = nested_v2()
    v2_values = nested_rows(3, start=10)
    for v in v2_values:
        del v["features"]["debug"]
        v["features"]["scale"] = 2.0 + v["id"]
    confluent_send(bootstrap, schema_registry_url, topic, v2, v2_values)

    # The latest version (v2) is the reader: v1 values take `scale`'s default; `debug` is gone.
    got = read_all(
        km.KafkaDataset(topic, config, format="avro", schema_registry=schema_registry_url, end="latest")
    )
    expected_v1 = [{"x": v["features"]["x"], "y": v["features"]["y"], "scale": 0.5} for v in v1_values]
    assert got["features"] == expected_v1 + [v["features"] for v in v2_values]
    assert got["id"] == [0, 1, 2, 3, 10, 11, 12]
    assert got["meta"] == [v["meta"] for v in v1_values + v2_values]
    assert got["boxes"] == [v["boxes"] for v in v1_values + v2_values]

    # v1 as the reader: v2 values lack `debug`, which takes its default (null).
    got = read_all(
        km.KafkaDataset(
            topic,
            config,
            format="avro",
            avro_schema=NESTED_V1,
            schema_registry=schema_registry_url,
            end="latest",
        )
    )
    assert [f["debug"] for f in got["features"]] == [v["features"]["debug"] for v in v1_values] + [None] * 3


def test_a_corrupt_nested_value_is_named_and_follows_on_error(
    config: dict[str, str], new_topic: Callable[..., str], schema_registry_url: str
) -> None:
    topic = new_topic()
    serializer = AvroSerializer(SchemaRegistryClient({"url": schema_registry_url}), json.dumps(NESTED_V1))
    ctx = SerializationContext(topic, MessageField.VALUE)
    good = [serializer(r, ctx) for r in nested_rows(4)]
    schema_id = int.from_bytes(good[0][1:5], "big")
    # Offset 2: value 2 cut short; offset 3: id 1, `features` {x: [], y: 0, debug: null}, then a
    # `meta` union branch (zigzag 7 = -4) out of range.
    body = good[2][5:]
    cut = frame(schema_id, body[: len(body) - 12])
    bad_branch = frame(schema_id, b"\x02\x00\x00\x00\x07")
    produce_raw(config["bootstrap.servers"], topic, [good[0], good[1], cut, bad_branch, good[3]])
    kw: dict[str, Any] = dict(format="avro", schema_registry=schema_registry_url, end="latest")

    with pytest.raises(km.DecodeError) as first:
        read_all(km.KafkaDataset(topic, config, **kw))
    assert (first.value.topic, first.value.partition, first.value.offset) == (topic, 0, 2)
    assert "invalid Avro" in str(first.value)
    with pytest.raises(km.DecodeError) as second:
        read_all(km.KafkaDataset(topic, config, start={(topic, 0): 3}, **kw))
    assert second.value.offset == 3
    assert "field 'meta'" in str(second.value) and "union branch -4" in str(second.value)

    ds = km.KafkaDataset(topic, config, on_error="skip", **kw)
    got = read_all(ds)
    assert ds.stats["skipped"] == 2
    assert got["id"] == [0, 1, 3]
    assert got["meta"] == [r["meta"] for r in nested_rows(4) if r["id"] != 2]


def test_kafka_ml_writes_nested_records_confluent_reads_them(
    config: dict[str, str], new_topic: Callable[..., str], schema_registry_url: str
) -> None:
    topic = new_topic()
    values = nested_rows(40)
    # Struct columns from a table, and from plain Python dicts (one column of dicts per field).
    table = pa.Table.from_pylist(values)
    assert pa.types.is_struct(table.schema.field("meta").type)
    as_dicts: dict[str, Any] = {k: [v[k] for v in values] for k in values[0]}
    as_dicts["boxes"] = pa.array(as_dicts["boxes"])  # ragged: NumPy cannot hold it as a list
    with km.Producer(config) as producer:
        producer.send(
            topic, table, format="avro", avro_schema=NESTED_V1, schema_registry=schema_registry_url
        ).wait()
        producer.send(
            topic, as_dicts, format="avro", avro_schema=NESTED_V1, schema_registry=schema_registry_url
        ).wait()
    assert f"{topic}-value" in registered_subjects(schema_registry_url)

    read = confluent_avro_values(config["bootstrap.servers"], schema_registry_url, topic, 2 * len(values))
    got = [value for _, value in read]
    for g in got:  # fastavro gives timestamp-millis as a datetime
        if g["meta"] is not None:
            g["meta"]["ts"] = round(g["meta"]["ts"].timestamp() * 1000)
    assert got == values + values

    # And kafka-ml reads its own values back equal.
    got_back = read_all(
        km.KafkaDataset(topic, config, format="avro", schema_registry=schema_registry_url, end="latest")
    )
    assert got_back == {k: [v[k] for v in values + values] for k in values[0]}

    # A struct that lacks a field of the nested record: EncodeError naming the column and row.
    broken = table.set_column(1, "features", pa.array([{"x": [1.0], "y": 1}] * len(values)))
    with (
        km.Producer(config) as producer,
        pytest.raises(km.EncodeError, match="column 'features' row 0: the struct has no field 'debug'"),
    ):
        producer.send(
            topic, broken, format="avro", avro_schema=NESTED_V1, schema_registry=schema_registry_url
        )


def test_a_registry_lost_while_fetching_a_reference_stops_the_read(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    """The writer schema (by id) is cached, then the registry goes away: fetching the schema it
    references fails. That is the registry's fault, not the value's: the read stops, nothing is
    skipped (on_error="skip" must not apply)."""
    import fastavro
    from confluent_kafka.schema_registry import Schema, SchemaReference
    from registry_launcher import RegistryServer

    point = {
        "type": "record", "name": "Point", "namespace": "ml",
        "fields": [{"name": "lat", "type": "double"}, {"name": "lon", "type": "double"}],
    }  # fmt: skip
    reading = {
        "type": "record", "name": "Reading", "namespace": "ml",
        "fields": [{"name": "id", "type": "long"}, {"name": "at", "type": "ml.Point"}],
    }  # fmt: skip
    topic = new_topic()
    server = RegistryServer().start()
    try:
        client = SchemaRegistryClient({"url": server.url})
        client.register_schema("ml.Point", Schema(json.dumps(point), "AVRO"))
        reference = SchemaReference("ml.Point", "ml.Point", 1)
        schema_id = client.register_schema(f"{topic}-value", Schema(json.dumps(reading), "AVRO", [reference]))
        named: dict[str, Any] = {}
        fastavro.parse_schema(point, named_schemas=named)
        parsed = fastavro.parse_schema(reading, named_schemas=named)
        values = []
        for i in range(3):
            body = io.BytesIO()
            fastavro.schemaless_writer(body, parsed, {"id": i, "at": {"lat": 1.0 * i, "lon": 2.0}})
            values.append(frame(schema_id, body.getvalue()))
        produce_raw(config["bootstrap.servers"], topic, values)
        registry = km.SchemaRegistry(server.url, timeout=1.0)
        assert registry.schema(schema_id)["references"]  # the id's answer is cached, not the reference's
    finally:
        server.stop()
    ids_only = {**reading, "fields": [reading["fields"][0]]}  # the writer still needs ml.Point to parse
    ds = km.KafkaDataset(
        topic, config, format="avro", avro_schema=ids_only, schema_registry=registry, on_error="skip",
        end="latest",
    )  # fmt: skip
    with pytest.raises(km.SchemaRegistryError) as err:
        read_all(ds)
    assert err.value.status is None and "cannot reach the schema registry" in str(err.value)
    assert ds.stats["skipped"] == 0


def test_an_unreachable_registry_at_open_is_a_clear_error(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    from launcher import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(km.SchemaRegistryError, match="cannot reach the schema registry"):
        km.KafkaDataset(
            new_topic(), config, format="avro", schema_registry=km.SchemaRegistry(dead, timeout=1.0)
        )


def test_an_incompatible_schema_is_refused_before_anything_is_sent(
    config: dict[str, str], new_topic: Callable[..., str], schema_registry_url: str
) -> None:
    topic = new_topic()
    data = {"id": np.arange(4, dtype=np.int64), "x": np.zeros((4, 2), np.float32), "label": ["a"] * 4}
    incompatible = {**V1, "fields": [*V1["fields"], {"name": "required_new", "type": "int"}]}  # no default
    with km.Producer(config) as producer:
        producer.send(topic, data, format="avro", avro_schema=V1, schema_registry=schema_registry_url).wait()
        data["required_new"] = np.arange(4, dtype=np.int32)  # type: ignore[assignment]
        with pytest.raises(km.SchemaRegistryError) as refused:
            producer.send(
                topic, data, format="avro", avro_schema=incompatible, schema_registry=schema_registry_url
            )
    assert refused.value.status == 409
    assert f"subject '{topic}-value'" in str(refused.value)
    assert (
        len(
            read_all(
                km.KafkaDataset(
                    topic,
                    config,
                    format="avro",
                    avro_schema=V1,
                    schema_registry=schema_registry_url,
                    end="latest",
                )
            )["id"]
        )
        == 4
    )


def test_a_protobuf_schema_id_is_not_read_as_avro(
    config: dict[str, str], new_topic: Callable[..., str], schema_registry_url: str
) -> None:
    topic = new_topic()
    proto = 'syntax = "proto3";\nmessage Reading { int64 id = 1; }\n'
    proto_id = km.SchemaRegistry(schema_registry_url).register(f"{topic}-proto", proto, "PROTOBUF")
    produce_raw(config["bootstrap.servers"], topic, [frame(proto_id, b"\x00\x08\x01")])
    with pytest.raises(km.DecodeError, match=f"schema id {proto_id} is a PROTOBUF schema"):
        read_all(
            km.KafkaDataset(
                topic,
                config,
                format="avro",
                avro_schema=V1,
                schema_registry=schema_registry_url,
                end="latest",
            )
        )


# -- a registry with credentials --------------------------------------------------------------


@pytest.fixture(scope="module")
def secured_registry() -> Iterator[tuple[str, str, str]]:
    """A registry that needs HTTP basic auth: (url, user, password)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kafka"))
    from registry_launcher import RegistryServer

    password = f"pw-{uuid.uuid4().hex}"
    server = RegistryServer(users={"ml-reader": password}).start()
    try:
        yield server.url, "ml-reader", password
    finally:
        server.stop()


def test_registry_credentials_work_and_wrong_ones_are_refused_without_showing_them(
    config: dict[str, str], new_topic: Callable[..., str], secured_registry: tuple[str, str, str]
) -> None:
    url, user, password = secured_registry
    topic = new_topic()
    data = {"id": np.arange(3, dtype=np.int64), "x": np.ones((3, 2), np.float32), "label": ["a", None, "c"]}
    registry = km.SchemaRegistry(url, auth=(user, password))
    assert password not in repr(registry)
    with km.Producer(config) as producer:
        producer.send(topic, data, format="avro", avro_schema=V1, schema_registry=registry).wait()
    # Credentials in the URL work the same way.
    in_url = url.replace("http://", f"http://{user}:{password}@")
    got = read_all(km.KafkaDataset(topic, config, format="avro", schema_registry=in_url, end="latest"))
    assert got["id"] == [0, 1, 2]

    wrong = f"wrong-{uuid.uuid4().hex}"
    for spec in (
        km.SchemaRegistry(url, auth=(user, wrong)),
        url.replace("http://", f"http://{user}:{wrong}@"),
    ):
        with pytest.raises(km.SchemaRegistryError) as refused:
            km.KafkaDataset(topic, config, format="avro", schema_registry=spec, end="latest")
        assert refused.value.status == 401 and "credentials" in str(refused.value)
        assert wrong not in str(refused.value)
        assert wrong not in repr(km.SchemaRegistry(spec) if isinstance(spec, str) else spec)
    with pytest.raises(km.SchemaRegistryError) as anonymous:
        km.SchemaRegistry(url).schema(1)
    assert anonymous.value.status == 401


# -- a registry over TLS ----------------------------------------------------------------------


def test_a_registry_over_https_is_verified_with_the_given_ca(
    config: dict[str, str], new_topic: Callable[..., str], tls_registry: Any
) -> None:
    topic = new_topic()
    data = {
        "id": np.arange(4, dtype=np.int64),
        "x": np.ones((4, 2), np.float32),
        "label": ["a", None, "c", "d"],
    }
    trusted = km.SchemaRegistry(tls_registry.tls_url, verify=tls_registry.ca_path)
    with km.Producer(config) as producer:
        producer.send(topic, data, format="avro", avro_schema=V1, schema_registry=trusted).wait()
    got = read_all(km.KafkaDataset(topic, config, format="avro", schema_registry=trusted, end="latest"))
    assert got["id"] == [0, 1, 2, 3] and got["label"] == ["a", None, "c", "d"]
    # The same server's plain listener sees what was registered over TLS.
    assert f"{topic}-value" in registered_subjects(tls_registry.url)

    # A CA that did not sign the certificate, or only the system's CAs: refused, saying why.
    for verify in (tls_registry.wrong_ca_path, True):
        with pytest.raises(km.SchemaRegistryError) as refused:
            km.SchemaRegistry(tls_registry.tls_url, verify=verify).subject_version(f"{topic}-value")
        message = str(refused.value)
        assert tls_registry.tls_url.split("/apis")[0] in message and "certificate" in message.lower(), message
    # verify=False accepts any certificate (encrypted, not authenticated).
    unverified = km.SchemaRegistry(tls_registry.tls_url, verify=False)
    assert unverified.subject_version(f"{topic}-value")["id"] > 0


# -- JSON Schema ------------------------------------------------------------------------------

JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Reading",
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "x": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
        "label": {"type": ["string", "null"]},
        "ok": {"type": "boolean"},
    },
    "required": ["id", "x", "ok"],
}


def test_json_schema_both_ways_with_confluent(
    config: dict[str, str], new_topic: Callable[..., str], schema_registry_url: str
) -> None:
    from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer

    # confluent writes; kafka-ml reads with only the URL (columns from the subject's schema)
    topic = new_topic()
    values = [
        {"id": i, "x": [i * 0.5, -1.25], "label": None if i % 2 else f"l{i}", "ok": i % 3 == 0}
        for i in range(40)
    ]
    serializer = JSONSerializer(json.dumps(JSON_SCHEMA), SchemaRegistryClient({"url": schema_registry_url}))
    producer = CkProducer({"bootstrap.servers": config["bootstrap.servers"]})
    for v in values:
        producer.produce(topic, serializer(v, SerializationContext(topic, MessageField.VALUE)))
    assert producer.flush(30) == 0
    ds = km.KafkaDataset(
        topic, config, format="json_schema", schema_registry=schema_registry_url, end="latest"
    )
    got = read_all(ds)
    assert got == {k: [v[k] for v in values] for k in ("id", "x", "label", "ok")}
    assert ds.columns == ["id", "x", "label", "ok"]

    # kafka-ml writes; confluent reads (validating against the registered schema)
    out = new_topic()
    with km.Producer(config) as kp:
        kp.send(
            out, {k: [v[k] for v in values] for k in ("id", "x", "label", "ok")}, format="json_schema",
            json_schema=JSON_SCHEMA, schema_registry=schema_registry_url,
        ).wait()  # fmt: skip
    assert f"{out}-value" in registered_subjects(schema_registry_url)
    deserializer = JSONDeserializer(
        None, schema_registry_client=SchemaRegistryClient({"url": schema_registry_url})
    )
    consumer = CkConsumer(
        {"bootstrap.servers": config["bootstrap.servers"], "group.id": f"g-{uuid.uuid4().hex}",
         "auto.offset.reset": "earliest"}
    )  # fmt: skip
    consumer.subscribe([out])
    read: list[dict[str, Any]] = []
    try:
        for _ in range(200):
            if len(read) == len(values):
                break
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                read.append(deserializer(msg.value(), SerializationContext(out, MessageField.VALUE)))
    finally:
        consumer.close()
    assert read == values


def test_json_schema_bad_values_are_named(
    config: dict[str, str], new_topic: Callable[..., str], schema_registry_url: str
) -> None:
    topic = new_topic()
    client = km.SchemaRegistry(schema_registry_url)
    json_id = client.register(f"{topic}-value", json.dumps(JSON_SCHEMA), "JSON")
    avro_id = client.register(f"{topic}-other", json.dumps(V1))
    good = frame(json_id, b'{"id": 1, "x": [1, 2], "ok": true}')
    values = [
        good,
        frame(avro_id, b'{"id": 2}'),
        b'{"id": 3, "x": [1, 2], "ok": true}',
        frame(json_id, b'{"id": "four"}'),
        frame(2_000_000_001, b"{}"),
    ]
    produce_raw(config["bootstrap.servers"], topic, values)
    ds = km.KafkaDataset(
        topic, config, format="json_schema", json_schema=JSON_SCHEMA, schema_registry=schema_registry_url,
        end="latest", on_error="skip",
    )  # fmt: skip
    assert read_all(ds)["id"] == [1]
    assert ds.stats["skipped"] == 4
    expected = {
        1: f"schema id {avro_id} is a AVRO schema in the registry, not JSON",
        2: "not in the Confluent wire format",
        3: "id",
        4: "unknown schema id 2000000001",
    }
    for offset, reason in expected.items():
        with pytest.raises(km.DecodeError) as bad:
            read_all(
                km.KafkaDataset(
                    topic,
                    config,
                    format="json_schema",
                    json_schema=JSON_SCHEMA,
                    schema_registry=schema_registry_url,
                    start={(topic, 0): offset},
                    end="latest",
                )
            )
        assert bad.value.offset == offset and reason in str(bad.value)


def test_json_schema_columns() -> None:
    from kafka_ml.registry import json_schema_columns

    assert json_schema_columns(JSON_SCHEMA) == {
        "id": "int64",
        "x": "float64[2]",
        "label": "string?",
        "ok": "bool",
    }
    with pytest.raises(km.ConfigError, match="property 'nested'"):
        json_schema_columns({"type": "object", "properties": {"nested": {"type": "object"}}})


def test_torch_workers_share_one_registry_client(
    config: dict[str, str], new_topic: Callable[..., str], schema_registry_url: str
) -> None:
    # The client (with pooled connections) is created here and inherited by forked DataLoader
    # workers; each worker fetches the writer schema over connections of its own.
    import torch
    from kafka_ml.torch import KafkaIterableDataset
    from torch.utils.data import DataLoader

    topic = new_topic(partitions=4)
    for p in range(4):
        confluent_send(config["bootstrap.servers"], schema_registry_url, topic, V1, rows(50, start=100 * p))
    registry = km.SchemaRegistry(schema_registry_url)
    registry.schema(registry.subject_version(f"{topic}-value")["id"])  # a pooled connection now
    ds = KafkaIterableDataset(
        topic, config, format="avro", schema_registry=registry, end="latest", batch_size=16, num_workers=2
    )
    seen: list[int] = []
    for batch in DataLoader(ds, batch_size=None, num_workers=2):
        assert isinstance(batch["id"], torch.Tensor)
        seen.extend(batch["id"].tolist())
    assert sorted(seen) == sorted(v["id"] for p in range(4) for v in rows(50, start=100 * p))


def test_json_schema_keywords_are_checked_before_anything_is_sent(
    config: dict[str, str], new_topic: Callable[..., str], schema_registry_url: str
) -> None:
    """As confluent's JSONSerializer refuses a value its schema refuses, so does a send: before
    the first message, naming column, row and keyword."""
    schema = {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 0},
            "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        },
        "required": ["id", "code"],
    }
    topic = new_topic()
    with km.Producer(config) as kp:
        with pytest.raises(
            km.EncodeError, match="column 'code', row 2: 'ab1' breaks the JSON Schema's pattern"
        ):
            kp.send(
                topic, {"id": [1, 2, 3], "code": ["ABC", "XYZ", "ab1"]}, format="json_schema",
                json_schema=schema, schema_registry=schema_registry_url,
            )  # fmt: skip
        kp.send(
            topic, {"id": [1, 2], "code": ["ABC", "XYZ"]}, format="json_schema",
            json_schema=schema, schema_registry=schema_registry_url,
        ).wait()  # fmt: skip
    ds = km.KafkaDataset(
        topic, config, format="json_schema", schema_registry=schema_registry_url, end="latest"
    )
    assert read_all(ds) == {"id": [1, 2], "code": ["ABC", "XYZ"]}  # the refused send sent nothing
