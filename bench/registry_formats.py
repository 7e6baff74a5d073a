"""Registry-framed workloads of the consumer and producer benchmarks: the feature records of the
JSON workload (``{"id": long, "x": 16 floats, "y": long}``) written in the Confluent wire format
with their schema in a real Schema Registry (Apicurio, ``kafka/registry_launcher.py``; or
``$SCHEMA_REGISTRY_URL``).

kafka-ml reads them with ``KafkaDataset(format="avro", schema_registry=url)`` (columns straight
into Arrow, the writer schema fetched once by id); the baseline is what confluent-kafka-python
users write: ``consume()`` + ``AvroDeserializer`` per message + ``np.array`` per chunk."""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import cpu_self, log

DIM = 16
AVRO_SCHEMA = {
    "type": "record",
    "name": "Features",
    "namespace": "bench",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "x", "type": {"type": "array", "items": "float"}},
        {"name": "y", "type": "long"},
    ],
}


def start_registry() -> tuple[str, Any]:
    """A registry URL and the server to stop (``None`` for ``$SCHEMA_REGISTRY_URL``)."""
    external = os.environ.get("SCHEMA_REGISTRY_URL")
    if external:
        return external.rstrip("/"), None
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kafka"))
    from registry_launcher import RegistryServer

    server = RegistryServer().start()
    return server.url, server


def feature_columns(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The JSON workload's records as columns (the x vectors drawn from the same kind of pool)."""
    rng = np.random.default_rng(seed)
    pool = rng.uniform(-1.0, 1.0, size=(min(n, 20_000), DIM)).astype(np.float32)
    ids = np.arange(n, dtype=np.int64)
    return {"id": ids, "x": pool[ids % len(pool)], "y": rng.integers(0, 10, size=n).astype(np.int64)}


def kafka_ml_read(
    fmt: str, conn: dict[str, str], url: str, topic: str, records: int, batch: int, extra: dict[str, str]
) -> dict[str, Any]:
    """``KafkaDataset(format=fmt, schema_registry=url)`` to NumPy (``fmt``: avro or protobuf)."""
    import kafka_ml

    gc.collect()
    c0, t0 = cpu_self(), time.perf_counter()
    ds = kafka_ml.KafkaDataset(
        topic, {**conn, **extra}, format=fmt, schema_registry=url, start="earliest", end="latest",
        batch_size=batch,
    )  # fmt: skip
    rows, checksum = 0, 0
    for b in ds:
        cols = b.to_numpy()
        x = cols["x"]
        rows += x.shape[0]
        checksum += int(cols["id"].sum()) + int(cols["y"].sum())
    ds.close()
    t1, c1 = time.perf_counter(), cpu_self()
    assert x.shape[1] == DIM and x.dtype == np.float32, (x.shape, x.dtype)
    return {"rows": rows, "wall_s": t1 - t0, "cpu_s": c1 - c0, "checksum": checksum}


def kafka_ml_raw(
    conn: dict[str, str], topic: str, records: int, batch: int, extra: dict[str, str]
) -> dict[str, Any]:
    """The transport alone: ``KafkaDataset(format="raw")`` over the same topic, every value's
    bytes in an Arrow binary column and nothing decoded (how fast kafka-ml could go if decoding
    cost nothing)."""
    import kafka_ml

    gc.collect()
    c0, t0 = cpu_self(), time.perf_counter()
    ds = kafka_ml.KafkaDataset(
        topic, {**conn, **extra}, format="raw", start="earliest", end="latest", batch_size=batch
    )
    rows = 0
    for b in ds:
        rows += b.num_rows
    ds.close()
    t1, c1 = time.perf_counter(), cpu_self()
    return {"rows": rows, "wall_s": t1 - t0, "cpu_s": c1 - c0}


def confluent_read(
    fmt: str, conn: dict[str, str], url: str, topic: str, records: int, batch: int, extra: dict[str, str]
) -> dict[str, Any]:
    """confluent-kafka ``consume()`` + its ``AvroDeserializer`` / ``ProtobufDeserializer`` per
    message + ``np.array`` per chunk."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.serialization import MessageField, SerializationContext

    gc.collect()
    c0, t0 = cpu_self(), time.perf_counter()
    if fmt == "avro":
        from confluent_kafka.schema_registry.avro import AvroDeserializer

        avro = AvroDeserializer(SchemaRegistryClient({"url": url}))
        deserialize = avro
    else:
        from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer

        proto = ProtobufDeserializer(features_class(), {"use.deprecated.format": False})

        def deserialize(value: bytes, ctx: SerializationContext) -> dict[str, Any]:
            m = proto(value, ctx)
            return {"id": m.id, "x": list(m.x), "y": m.y}

    ctx = SerializationContext(topic, MessageField.VALUE)
    c = Consumer(
        {**conn, "group.id": f"bench-confluent-{time.monotonic_ns()}", "enable.auto.commit": False,
         "enable.auto.offset.store": False, "enable.partition.eof": False, **extra}
    )  # fmt: skip
    md = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
    rows, checksum = 0, 0
    while rows < records:
        msgs = c.consume(batch, timeout=1.0)
        ids, xs, ys = [], [], []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(str(err))
            d = deserialize(m.value(), ctx)
            ids.append(d["id"])
            xs.append(d["x"])
            ys.append(d["y"])
        if not xs:
            continue
        x = np.array(xs, dtype=np.float32)
        rows += x.shape[0]
        checksum += int(np.array(ids, dtype=np.int64).sum()) + int(np.array(ys, dtype=np.int64).sum())
    c.close()
    t1, c1 = time.perf_counter(), cpu_self()
    assert x.shape[1] == DIM
    return {"rows": rows, "wall_s": t1 - t0, "cpu_s": c1 - c0, "checksum": checksum}


PROTO_SCHEMA = """syntax = "proto3";
package bench;

message Features {
  int64 id = 1;
  repeated float x = 2;
  int64 y = 3;
}
"""


def features_class() -> Any:
    """The generated-class equivalent of ``PROTO_SCHEMA`` (what ``protoc --python_out`` gives a
    confluent-kafka user), built from its descriptor."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="bench_features.proto", package="bench", syntax="proto3")
    m = fdp.message_type.add(name="Features")
    f = descriptor_pb2.FieldDescriptorProto
    m.field.add(name="id", number=1, type=f.TYPE_INT64, label=f.LABEL_OPTIONAL)
    m.field.add(name="x", number=2, type=f.TYPE_FLOAT, label=f.LABEL_REPEATED)
    m.field.add(name="y", number=3, type=f.TYPE_INT64, label=f.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("bench.Features"))


def load_topic(fmt: str, bs: str, url: str, topic: str, records: int) -> None:
    """Writes the records registry-framed with kafka-ml (``fmt``: avro or protobuf)."""
    import kafka_ml

    cols = feature_columns(records)
    producer = kafka_ml.Producer({"bootstrap.servers": bs, "linger.ms": 20, "batch.size": 1_000_000})
    schema: dict[str, Any] = (
        {"avro_schema": AVRO_SCHEMA}
        if fmt == "avro"
        else {"proto_schema": PROTO_SCHEMA, "message": "bench.Features"}
    )
    for lo in range(0, records, 100_000):
        part = {k: v[lo : lo + 100_000] for k, v in cols.items()}
        producer.send(topic, part, format=fmt, schema_registry=url, partition=0, **schema)  # type: ignore[arg-type]
    producer.flush(120)


def log_run(label: str, i: int, r: dict[str, Any]) -> None:
    rate = r["rows"] / r["wall_s"]
    log(f"{label:<16} run {i + 1}: {r['wall_s']:.2f}s cpu {r['cpu_s']:.2f}s ({rate:,.0f} rows/s)")


# -- producing --------------------------------------------------------------------------------

PRODUCE_SCHEMA = {
    "type": "record",
    "name": "Features",
    "namespace": "bench",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "x", "type": {"type": "array", "items": "float"}},
        {"name": "y", "type": "int"},
    ],
}


def kafka_ml_avro_send(
    conn: dict[str, str], url: str, topic: str, data: dict[str, np.ndarray], props: dict[str, str]
) -> dict[str, Any]:
    """``Producer.send(format="avro", schema_registry=url)`` + ``flush()``; a fresh producer and
    registry client per run (the schema is looked up once per run, as a new process would)."""
    import kafka_ml

    p = kafka_ml.Producer({**conn, **props})
    registry = kafka_ml.SchemaRegistry(url)
    report = p.send(
        topic, data, format="avro", avro_schema=PRODUCE_SCHEMA, schema_registry=registry, partition=0
    )
    p.flush(120)
    if p.delivered != report.rows or p.failed:
        raise RuntimeError(f"kafka-ml avro: delivered {p.delivered}, failed {p.failed}")
    return {"rows": report.rows}


def confluent_avro_send(
    conn: dict[str, str],
    url: str,
    topic: str,
    data: dict[str, np.ndarray],
    props: dict[str, str],
    poll_every: int,
) -> dict[str, Any]:
    """confluent-kafka's ``AvroSerializer`` per row + ``produce()`` (``poll(0)`` every
    ``poll_every``), ``flush()`` at the end."""
    from confluent_kafka import Producer
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    serialize = AvroSerializer(SchemaRegistryClient({"url": url}), json.dumps(PRODUCE_SCHEMA))
    ctx = SerializationContext(topic, MessageField.VALUE)
    p = Producer({**conn, **props})
    produce, poll = p.produce, p.poll
    n = 0
    t0 = time.perf_counter()
    for i, x, y in zip(data["id"].tolist(), data["x"].tolist(), data["y"].tolist(), strict=True):
        value = serialize({"id": i, "x": x, "y": y}, ctx)
        while True:
            try:
                produce(topic, value, partition=0)
                break
            except BufferError:
                if poll(0.01) == 0 and time.perf_counter() - t0 > 600:
                    raise RuntimeError("confluent avro: producer queue stuck full") from None
        n += 1
        if n % poll_every == 0:
            poll(0)
    if p.flush(120):
        raise RuntimeError("confluent avro: messages not delivered")
    return {"rows": n}


def kafka_ml_protobuf_send(
    conn: dict[str, str], url: str, topic: str, data: dict[str, np.ndarray], props: dict[str, str]
) -> dict[str, Any]:
    """``Producer.send(format="protobuf", proto_schema=..., schema_registry=url)`` + ``flush()``."""
    import kafka_ml

    p = kafka_ml.Producer({**conn, **props})
    registry = kafka_ml.SchemaRegistry(url)
    cols = {**data, "y": data["y"].astype(np.int64)}
    report = p.send(
        topic, cols, format="protobuf", proto_schema=PROTO_SCHEMA, message="bench.Features",
        schema_registry=registry, partition=0,
    )  # fmt: skip
    p.flush(120)
    if p.delivered != report.rows or p.failed:
        raise RuntimeError(f"kafka-ml protobuf: delivered {p.delivered}, failed {p.failed}")
    return {"rows": report.rows}


def confluent_protobuf_send(
    conn: dict[str, str],
    url: str,
    topic: str,
    data: dict[str, np.ndarray],
    props: dict[str, str],
    poll_every: int,
) -> dict[str, Any]:
    """confluent-kafka's ``ProtobufSerializer`` per row (a message object filled from the row)
    + ``produce()``, ``flush()`` at the end."""
    from confluent_kafka import Producer
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    cls = features_class()
    serialize = ProtobufSerializer(cls, SchemaRegistryClient({"url": url}), {"use.deprecated.format": False})
    ctx = SerializationContext(topic, MessageField.VALUE)
    p = Producer({**conn, **props})
    produce, poll = p.produce, p.poll
    n = 0
    t0 = time.perf_counter()
    for i, x, y in zip(data["id"].tolist(), data["x"].tolist(), data["y"].tolist(), strict=True):
        value = serialize(cls(id=i, x=x, y=y), ctx)
        while True:
            try:
                produce(topic, value, partition=0)
                break
            except BufferError:
                if poll(0.01) == 0 and time.perf_counter() - t0 > 600:
                    raise RuntimeError("confluent protobuf: producer queue stuck full") from None
        n += 1
        if n % poll_every == 0:
            poll(0)
    if p.flush(120):
        raise RuntimeError("confluent protobuf: messages not delivered")
    return {"rows": n}
