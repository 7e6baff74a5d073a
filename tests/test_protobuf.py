"""Protobuf, on a real broker and a real registry (Apicurio Registry's Confluent-compatible API,
or `SCHEMA_REGISTRY_URL`): interop with confluent-kafka's Protobuf serializers both ways (message
classes generated at test time with grpcio-tools' protoc), bad input, and plain Protobuf from a
.proto file or a descriptor set without a registry."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import kafka_ml as km
import numpy as np
import pyarrow as pa
import pytest
from confluent_kafka import Consumer as CkConsumer
from confluent_kafka import Producer as CkProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from kafka_ml.aio import Producer as AsyncProducer

PROTO = """\
syntax = "proto3";
package ml.sensors;

import "google/protobuf/timestamp.proto";

message Reading {
  int64 id = 1;
  repeated float x = 2;
  Kind kind = 3;
  Location at = 4;
  google.protobuf.Timestamp ts = 5;
  optional string label = 6;
  uint32 count = 7;
  bytes blob = 8;

  enum Kind {
    KIND_UNSPECIFIED = 0;
    KIND_TRAIN = 1;
    KIND_TEST = 2;
  }
}

message Location {
  double lat = 1;
  double lon = 2;
}
"""

KINDS = ["KIND_UNSPECIFIED", "KIND_TRAIN", "KIND_TEST"]
BASE_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


@pytest.fixture(scope="module")
def proto_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """reading.proto, its generated Python module (reading_pb2) and a descriptor set."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("proto")
    (out / "reading.proto").write_text(PROTO)
    include = Path(protoc.__file__).parent / "_proto"  # the well-known types
    rc = protoc.main(
        [
            "protoc",
            f"-I{out}",
            f"-I{include}",
            f"--python_out={out}",
            "--include_imports",
            f"--descriptor_set_out={out / 'reading.desc'}",
            "reading.proto",
        ]
    )
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def pb2(proto_dir: Path) -> ModuleType:
    sys.path.insert(0, str(proto_dir))
    try:
        return importlib.import_module("reading_pb2")
    finally:
        sys.path.remove(str(proto_dir))


def readings(pb2: ModuleType, n: int) -> list[Any]:
    out = []
    for i in range(n):
        r = pb2.Reading(
            id=i * 1_000_000_007 - 5,
            x=[i / 4.0, -i * 0.5, 1.0][: i % 4],
            kind=i % 3,
            count=i,
            blob=bytes([i % 256]) * (i % 3),
        )
        if i % 5:
            r.at.lat = i / 8.0
            r.at.lon = -i / 16.0
        r.ts.FromNanoseconds(BASE_NS + i * 1_000_000_123)
        if i % 2:
            r.label = f"r{i}"
        out.append(r)
    return out


def expected_columns(values: list[Any]) -> dict[str, list[Any]]:
    return {
        "id": [v.id for v in values],
        "x": [list(v.x) for v in values],
        "kind": [KINDS[v.kind] for v in values],
        "at": [{"lat": v.at.lat, "lon": v.at.lon} if v.HasField("at") else None for v in values],
        "ts": [v.ts.ToNanoseconds() for v in values],
        "label": [v.label if v.HasField("label") else None for v in values],
        "count": [v.count for v in values],
        "blob": [v.blob for v in values],
    }


def read_all(ds: km.KafkaDataset) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for batch in ds:
        rb = pa.record_batch(batch)
        for name, column in zip(rb.schema.names, rb.columns, strict=True):
            if pa.types.is_timestamp(column.type):
                assert column.type == pa.timestamp("ns", tz="UTC")
                column = column.cast(pa.int64())
            out.setdefault(name, []).extend(column.to_pylist())
    return out


def frame(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def produce_raw(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = CkProducer({"bootstrap.servers": bootstrap})
    for v in values:
        producer.produce(topic, v)
    assert producer.flush(30) == 0


def confluent_serializer(pb2: ModuleType, url: str) -> ProtobufSerializer:
    return ProtobufSerializer(
        pb2.Reading, SchemaRegistryClient({"url": url}), {"use.deprecated.format": False}
    )


def table(n: int) -> pa.Table:
    i = np.arange(n)
    return pa.table(
        {
            "id": pa.array(i * 3 - 7, pa.int64()),
            "x": pa.array([[float(j) / 2, -1.5][: j % 3] for j in range(n)], pa.list_(pa.float32())),
            "kind": pa.array([KINDS[j % 3] for j in range(n)]),
            "at": pa.array(
                [None if j % 4 == 0 else {"lat": j / 8.0, "lon": -j / 4.0} for j in range(n)],
                pa.struct([("lat", pa.float64()), ("lon", pa.float64())]),
            ),
            "ts": pa.array(BASE_NS + i * 1_000_001_001, pa.timestamp("ns", tz="UTC")),
            "label": pa.array([None if j % 2 else f"n{j}" for j in range(n)]),
            "count": pa.array(i, pa.uint32()),
            "blob": pa.array([bytes([j % 7]) * (j % 2) for j in range(n)], pa.binary()),
        }
    )


def table_as_columns(t: pa.Table) -> dict[str, list[Any]]:
    cols = t.to_pydict()
    cols["ts"] = t.column("ts").cast(pa.int64()).to_pylist()
    return cols


# -- interop ----------------------------------------------------------------------------------


def test_confluent_writes_kafka_ml_reads_with_only_the_url(
    config: dict[str, str], new_topic: Callable[..., str], schema_registry_url: str, pb2: ModuleType
) -> None:
    topic = new_topic()
    values = readings(pb2, 120)
    serializer = confluent_serializer(pb2, schema_registry_url)
    ctx = SerializationContext(topic, MessageField.VALUE)
    produce_raw(config["bootstrap.servers"], topic, [serializer(v, ctx) for v in values])

    ds = km.KafkaDataset(topic, config, format="protobuf", schema_registry=schema_registry_url, end="latest")
    assert read_all(ds) == expected_columns(values)
    schema = pa.schema(ds)
    assert schema.field("x").type == pa.list_(pa.field("item", pa.float32(), nullable=False))
    assert schema.field("at").type == pa.struct([("lat", pa.float64()), ("lon", pa.float64())])


def test_kafka_ml_writes_confluent_reads_and_the_subject_exists(
    config: dict[str, str],
    new_topic: Callable[..., str],
    schema_registry_url: str,
    pb2: ModuleType,
    proto_dir: Path,
) -> None:
    topic = new_topic()
    data = table(40)
    with km.Producer(config) as producer:
        producer.send(
            topic,
            data,
            format="protobuf",
            proto_file=proto_dir / "reading.proto",
            message="ml.sensors.Reading",
            schema_registry=schema_registry_url,
        ).wait()
    client = SchemaRegistryClient({"url": schema_registry_url})
    assert f"{topic}-value" in client.get_subjects()
    assert client.get_latest_version(f"{topic}-value").schema.schema_type == "PROTOBUF"

    got = confluent_read(config, topic, pb2.Reading, data.num_rows)
    assert expected_columns(got) == table_as_columns(data)

    # And kafka-ml reads its own values back, with the subject's latest schema as the reader.
    ds = km.KafkaDataset(topic, config, format="protobuf", schema_registry=schema_registry_url, end="latest")
    assert read_all(ds) == table_as_columns(data)


def test_message_indexes_select_a_message_that_is_not_the_first(
    config: dict[str, str], new_topic: Callable[..., str], schema_registry_url: str, proto_dir: Path
) -> None:
    topic = new_topic()
    points = pa.table({"lat": [1.5, 2.5], "lon": [-1.0, 0.25]})
    with km.Producer(config) as producer:
        producer.send(
            topic,
            points,
            format="protobuf",
            proto_file=proto_dir / "reading.proto",
            message="ml.sensors.Location",
            schema_registry=schema_registry_url,
        ).wait()
    raw = read_all(km.KafkaDataset(topic, config, format="raw", end="latest"))["value"]
    assert all(v[5:7] == b"\x02\x02" for v in raw)  # one index (zigzag 2): message 1 of the file
    ds = km.KafkaDataset(
        topic,
        config,
        format="protobuf",
        schema_registry=schema_registry_url,
        message="Location",
        end="latest",
    )
    assert read_all(ds) == points.to_pydict()


# -- bad input --------------------------------------------------------------------------------


def test_each_bad_value_is_named_and_follows_on_error(
    config: dict[str, str], new_topic: Callable[..., str], schema_registry_url: str, pb2: ModuleType
) -> None:
    topic = new_topic()
    values = readings(pb2, 3)
    serializer = confluent_serializer(pb2, schema_registry_url)
    ctx = SerializationContext(topic, MessageField.VALUE)
    good = [serializer(v, ctx) for v in values]
    schema_id = int.from_bytes(good[0][1:5], "big")
    produce_raw(
        config["bootstrap.servers"],
        topic,
        [
            good[0],
            frame(2_000_000_000, good[1][5:]),  # 1: an id the registry does not have
            frame(schema_id, b"\x02\x0a" + good[1][6:]),  # 2: message index 5 of a 2-message file
            frame(schema_id, b"\x00\x0a\xff\xff"),  # 3: a body that does not parse
            b"\x08\x01",  # 4: not framed
            good[2],
        ],
    )
    kw: dict[str, Any] = dict(format="protobuf", schema_registry=schema_registry_url, end="latest")
    reasons = []
    for offset in (1, 2, 3, 4):
        with pytest.raises(km.DecodeError) as bad:
            read_all(km.KafkaDataset(topic, config, start={(topic, 0): offset}, **kw))
        assert (bad.value.topic, bad.value.partition, bad.value.offset) == (topic, 0, offset)
        reasons.append(str(bad.value))
    assert "unknown schema id 2000000000" in reasons[0] and "has no such schema" in reasons[0]
    assert "message indexes [5]" in reasons[1]
    assert "invalid Protobuf (ml.sensors.Reading)" in reasons[2]
    assert "not in the Confluent wire format" in reasons[3]

    ds = km.KafkaDataset(topic, config, on_error="skip", **kw)
    got = read_all(ds)
    assert got["id"] == [values[0].id, values[2].id]
    assert ds.stats["skipped"] == 4


def test_an_unreachable_registry_stops_the_read_and_skips_nothing(
    config: dict[str, str], new_topic: Callable[..., str], proto_dir: Path
) -> None:
    from launcher import free_port

    topic = new_topic()
    produce_raw(config["bootstrap.servers"], topic, [frame(1, b"\x00\x08\x01")])
    dead = f"http://127.0.0.1:{free_port()}"
    ds = km.KafkaDataset(
        topic, config, format="protobuf", proto_file=proto_dir / "reading.proto",
        schema_registry=km.SchemaRegistry(dead, timeout=1.0), on_error="skip", end="latest",
    )  # fmt: skip
    with pytest.raises(km.SchemaRegistryError, match=f"cannot reach the schema registry at {dead}"):
        read_all(ds)
    assert ds.stats["skipped"] == 0


def test_an_invalid_row_is_named_and_nothing_is_sent(
    config: dict[str, str], new_topic: Callable[..., str], proto_dir: Path
) -> None:
    topic = new_topic()
    data = table(5).set_column(2, "kind", pa.array(["KIND_TRAIN"] * 3 + ["KIND_NOPE", "KIND_TEST"]))
    with km.Producer(config) as producer:
        with pytest.raises(km.EncodeError, match="column 'kind' row 3: 'KIND_NOPE' is not a value of enum"):
            producer.send(topic, data, format="protobuf", proto_file=proto_dir / "reading.proto")
        with pytest.raises(km.EncodeError, match="column 'id' row 1: null"):
            producer.send(
                topic, {"id": pa.array([1, None])}, format="protobuf", proto_file=proto_dir / "reading.proto"
            )
        with pytest.raises(km.ConfigError, match="message 'Nope' is not in the schema"):
            producer.send(
                topic, data, format="protobuf", proto_file=proto_dir / "reading.proto", message="Nope"
            )
    assert read_all(km.KafkaDataset(topic, config, format="raw", end="latest")) == {}


# -- without a registry -----------------------------------------------------------------------


def test_plain_protobuf_from_a_proto_file_and_a_descriptor_set(
    config: dict[str, str],
    new_topic: Callable[..., str],
    produce: Callable[..., None],
    pb2: ModuleType,
    proto_dir: Path,
) -> None:
    topic = new_topic()
    values = readings(pb2, 50)
    produce(topic, [v.SerializeToString() for v in values])
    expected = expected_columns(values)
    by_file = km.KafkaDataset(
        topic, config, format="protobuf", proto_file=proto_dir / "reading.proto", end="latest"
    )
    got = read_all(by_file)
    assert got == expected
    # Without a registry, only fields with presence are nullable.
    schema = pa.schema(by_file)
    assert not schema.field("id").nullable and schema.field("label").nullable
    assert schema.field("at").nullable

    by_set = km.KafkaDataset(
        topic,
        config,
        format="protobuf",
        descriptor_set=(proto_dir / "reading.desc").read_bytes(),
        message="ml.sensors.Reading",
        end="latest",
    )
    assert read_all(by_set) == expected


def test_the_async_producer_writes_plain_protobuf(
    config: dict[str, str], new_topic: Callable[..., str], pb2: ModuleType
) -> None:
    topic = new_topic()
    data = table(10)

    async def send() -> None:
        async with AsyncProducer(config) as producer:
            await producer.send(topic, data, format="protobuf", proto_schema=PROTO, message="Reading")

    asyncio.run(send())
    raw = read_all(km.KafkaDataset(topic, config, format="raw", end="latest"))["value"]
    parsed = [pb2.Reading.FromString(v) for v in raw]
    assert [p.id for p in parsed] == data.column("id").to_pylist()
    assert parsed[0].ts.ToDatetime(tzinfo=dt.timezone.utc) == dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


# -- imports: each imported file under its own subject, referenced ------------------------------


def imported_schemas(root: Path) -> tuple[Path, str, str, ModuleType]:
    """``e<unique>.proto`` (message ``ml.e<unique>.Event``) importing ``t<unique>/geo/geo.proto``,
    which imports ``t<unique>/geo/unit.proto``, and the Timestamp well-known type; with the
    generated Python module and a descriptor set. Unique names keep the registry subjects (named by
    import path) and the protobuf runtime's descriptor pool apart between tests. Returns the
    ``.proto`` path, the imported files' directory, the message's full name and the module."""
    from grpc_tools import protoc

    unique = uuid.uuid4().hex[:8]
    package_dir, top = f"t{unique}/geo", f"e{unique}"
    pkg = package_dir.replace("/", ".")
    (root / package_dir).mkdir(parents=True)
    (root / package_dir / "unit.proto").write_text(
        f'syntax = "proto3";\npackage {pkg};\nenum Unit {{ UNIT_NONE = 0; UNIT_METRE = 1; }}\n'
    )
    (root / package_dir / "geo.proto").write_text(
        f'syntax = "proto3";\npackage {pkg};\nimport "{package_dir}/unit.proto";\n'
        "message GeoPoint { double lat = 1; double lon = 2; Unit unit = 3; }\n"
    )
    (root / f"{top}.proto").write_text(
        f'syntax = "proto3";\npackage ml.{top};\nimport "{package_dir}/geo.proto";\n'
        'import "google/protobuf/timestamp.proto";\n'
        f"message Event {{ int64 id = 1; {pkg}.GeoPoint at = 2; google.protobuf.Timestamp ts = 3; }}\n"
    )
    include = Path(protoc.__file__).parent / "_proto"
    files = [f"{package_dir}/unit.proto", f"{package_dir}/geo.proto", f"{top}.proto"]
    rc = protoc.main(
        ["protoc", f"-I{root}", f"-I{include}", f"--python_out={root}", "--include_imports",
         f"--descriptor_set_out={root / 'event.desc'}", *files]
    )  # fmt: skip
    assert rc == 0
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(f"{top}_pb2")
    finally:
        sys.path.remove(str(root))
    return root / f"{top}.proto", package_dir, f"ml.{top}.Event", module


def events(n: int) -> pa.Table:
    i = np.arange(n)
    return pa.table(
        {
            "id": pa.array(i * 5 + 1, pa.int64()),
            "at": pa.array(
                [
                    {"lat": j / 8.0, "lon": -j / 4.0, "unit": "UNIT_METRE" if j % 2 else "UNIT_NONE"}
                    for j in range(n)
                ],
                pa.struct([("lat", pa.float64()), ("lon", pa.float64()), ("unit", pa.string())]),
            ),
            "ts": pa.array(BASE_NS + i * 1_000_000_007, pa.timestamp("ns", tz="UTC")),
        }
    )


def confluent_read(config: dict[str, str], topic: str, message: Any, n: int) -> list[Any]:
    deserializer = ProtobufDeserializer(message, {"use.deprecated.format": False})
    consumer = CkConsumer(
        {"bootstrap.servers": config["bootstrap.servers"], "group.id": f"g-{uuid.uuid4().hex}",
         "auto.offset.reset": "earliest"}
    )  # fmt: skip
    consumer.subscribe([topic])
    got: list[Any] = []
    try:
        for _ in range(200):
            if len(got) == n:
                break
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            got.append(deserializer(msg.value(), SerializationContext(topic, MessageField.VALUE)))
    finally:
        consumer.close()
    return got


@pytest.mark.parametrize("given", ["proto_file", "descriptor_set"])
def test_a_schema_with_imports_registers_each_imported_file_under_its_own_subject(
    config: dict[str, str],
    new_topic: Callable[..., str],
    schema_registry_url: str,
    tmp_path: Path,
    given: str,
) -> None:
    """As Confluent's serializers do: every imported file (the well-known types aside) under a
    subject named by its import path, imports first, and each schema referencing the files it
    imports by subject and version. Confluent's deserializer and kafka-ml (with only the URL,
    fetching the references) read the values back."""
    proto_file, package_dir, message, pb2 = imported_schemas(tmp_path)
    schema: dict[str, Any] = (
        {"proto_file": proto_file}
        if given == "proto_file"
        else {"descriptor_set": (tmp_path / "event.desc").read_bytes()}
    )
    topic = new_topic()
    data = events(30)
    with km.Producer(config) as producer:
        producer.send(
            topic, data, format="protobuf", message=message,
            schema_registry=schema_registry_url, **schema,
        ).wait()  # fmt: skip

    client = SchemaRegistryClient({"url": schema_registry_url})
    unit, geo = f"{package_dir}/unit.proto", f"{package_dir}/geo.proto"
    assert {f"{topic}-value", unit, geo} <= set(client.get_subjects())
    top = client.get_latest_version(f"{topic}-value").schema
    geo_version = client.get_latest_version(geo)
    assert [(r.name, r.subject, r.version) for r in top.references] == [(geo, geo, geo_version.version)]
    assert [(r.name, r.subject) for r in geo_version.schema.references] == [(unit, unit)]
    assert client.get_latest_version(unit).schema.references == []

    got = confluent_read(config, topic, pb2.Event, data.num_rows)
    assert [m.id for m in got] == data.column("id").to_pylist()
    assert [(m.at.lat, m.at.lon, m.at.unit) for m in got] == [
        (a["lat"], a["lon"], 1 if a["unit"] == "UNIT_METRE" else 0) for a in data.column("at").to_pylist()
    ]
    assert [m.ts.ToNanoseconds() for m in got] == data.column("ts").cast(pa.int64()).to_pylist()

    ds = km.KafkaDataset(topic, config, format="protobuf", schema_registry=schema_registry_url, end="latest")
    cols = read_all(ds)
    assert cols["id"] == data.column("id").to_pylist()
    assert cols["at"] == data.column("at").to_pylist()
    assert cols["ts"] == data.column("ts").cast(pa.int64()).to_pylist()


def test_without_auto_register_an_unregistered_import_is_named_and_nothing_is_sent(
    config: dict[str, str], new_topic: Callable[..., str], schema_registry_url: str, tmp_path: Path
) -> None:
    proto_file, package_dir, message, _ = imported_schemas(tmp_path)
    topic = new_topic()
    with km.Producer(config) as producer, pytest.raises(km.SchemaRegistryError) as e:
        producer.send(
            topic, events(3), format="protobuf", proto_file=proto_file, message=message,
            schema_registry=schema_registry_url, auto_register=False,
        )  # fmt: skip
    assert f"{package_dir}/unit.proto" in str(e.value)
    assert len(km.KafkaDataset(topic, config, format="raw", end="latest")) == 0
