"""Bad input: a clear error naming topic, partition, offset and reason; nothing lost."""

from __future__ import annotations

import io
import json
import struct

import fastavro
import kafka_ml as km
import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition
from kafka_ml.headers import ERROR, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC

SCHEMA = {"id": "int64", "x": ("float32", 2)}
GOOD = [json.dumps({"id": i, "x": [i, i]}).encode() for i in range(3)]


def json_ds(config, topic, **kw) -> km.KafkaDataset:
    return km.KafkaDataset(topic, config, format="json", schema=SCHEMA, end="latest", batch_size=100, **kw)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"id": 1, "x": [1, 2', "malformed JSON"),
        (b'{"id": "one", "x": [1, 2]}', "field 'id': expected int64, got string"),
        (b'{"x": [1, 2]}', "field 'id' is null or missing"),
        (b'{"id": null, "x": [1, 2]}', "field 'id' is null or missing but not nullable"),
        (b'{"id": 1, "x": [1, 2, 3]}', "field 'x': expected 2 elements, got 3"),
    ],
)
def test_bad_json_raises_with_its_position(config, new_topic, produce, payload, reason):
    topic = new_topic()
    produce(topic, [*GOOD, payload, *GOOD])
    ds = json_ds(config, topic)
    got: list[int] = []
    with pytest.raises(km.DecodeError) as info:
        for batch in ds:
            got += batch["id"].tolist()
    err = info.value
    assert (err.topic, err.partition, err.offset) == (topic, 0, 3)
    assert reason in err.reason and f"topic '{topic}' partition 0 offset 3" in str(err)
    assert got == [0, 1, 2], "rows before the bad message are handed out"
    assert ds.state_dict()["offsets"][topic] == {"0": 3}, "resume points at the bad message"


def test_tensor_wrong_length(config, new_topic, produce):
    topic = new_topic()
    produce(topic, [np.zeros(4, np.float32).tobytes(), b"\x00" * 15])
    ds = km.KafkaDataset(topic, config, format="tensor", dtype="float32", shape=4, end="latest")
    with pytest.raises(km.DecodeError, match="15 bytes, expected 16") as info:
        list(ds)
    assert info.value.offset == 1


AVRO = {"type": "record", "name": "r", "fields": [{"name": "id", "type": "long"}]}


def test_avro_bad_datum_and_unknown_schema_id(config, new_topic, produce):
    topic = new_topic()
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(AVRO), {"id": 5})
    produce(
        topic,
        [b"\x00" + struct.pack(">I", 1) + buf.getvalue(), b"\x00" + struct.pack(">I", 9) + buf.getvalue()],
    )
    ds = km.KafkaDataset(
        topic, config, format="avro", avro_schema=AVRO, schema_registry={1: AVRO}, end="latest"
    )
    with pytest.raises(km.DecodeError, match=r"unknown schema id 9 \(known ids: \[1\]\)"):
        list(ds)
    bad = new_topic()
    produce(bad, [b"\xff\xff\xff"])
    with pytest.raises(km.DecodeError, match="invalid Avro"):
        list(km.KafkaDataset(bad, config, format="avro", avro_schema=AVRO, end="latest"))


def test_skip_counts_what_it_skipped(config, new_topic, produce):
    topic = new_topic()
    produce(topic, [GOOD[0], b"nope", GOOD[1], b"{}", GOOD[2]])
    ds = json_ds(config, topic, on_error="skip")
    ids = [i for b in ds for i in b["id"].tolist()]
    assert ids == [0, 1, 2]
    assert ds.stats["skipped"] == 2
    assert ds.state_dict()["offsets"][topic] == {"0": 5}


def test_dead_letter_keeps_the_raw_message_and_reason(config, new_topic, produce):
    topic, dlq = new_topic(), new_topic(prefix="dlq")
    produce(topic, [GOOD[0], {"value": b"broken", "key": b"k", "headers": [("trace", b"abc")]}, GOOD[1]])
    group = "g-dlq-" + topic
    ds = json_ds({**config, "group.id": group}, topic, on_error="dead_letter", dead_letter_topic=dlq)
    assert [i for b in ds for i in b["id"].tolist()] == [0, 1]
    ds.close()
    assert ds.stats["dead_lettered"] == 1
    c = Consumer({**config, "group.id": "reader-" + dlq, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(dlq, 0, 0)])
    msg = c.poll(10)
    c.close()
    assert msg is not None and msg.value() == b"broken" and msg.key() == b"k"
    headers = dict(msg.headers())
    assert headers["trace"] == b"abc"
    # The native reader's dead-letter headers carry the names kafka_ml.headers defines.
    assert b"malformed JSON" in headers[ERROR] and ERROR == "kafka_ml.error"
    assert headers[SOURCE_OFFSET] == b"1" and SOURCE_OFFSET == "kafka_ml.source.offset"
    assert headers[SOURCE_TOPIC] == topic.encode() and headers[SOURCE_PARTITION] == b"0"


def test_unknown_topic(config):
    with pytest.raises(km.UnknownTopicError, match="no-such-topic") as info:
        km.KafkaDataset("no-such-topic-xyz", config, format="raw")
    assert info.value.name == "UNKNOWN_TOPIC_OR_PART"


def test_bad_config_key(config):
    with pytest.raises(km.ConfigError, match=r"no\.such\.property"):
        km.KafkaDataset("t", {**config, "no.such.property": "1"}, format="raw")


def test_bad_arguments_are_config_errors(config, new_topic):
    topic = new_topic()
    with pytest.raises(km.ConfigError, match="cannot parse type 'float33'"):
        km.KafkaDataset(topic, config, format="json", schema={"x": "float33"})
    with pytest.raises(km.ConfigError, match="needs dead_letter_topic"):
        km.KafkaDataset(topic, config, format="raw", on_error="dead_letter")
    with pytest.raises(km.ConfigError, match="unknown metadata column 'partitions'"):
        km.KafkaDataset(topic, config, format="raw", metadata=["partitions"])


def test_unreachable_broker_times_out():
    with pytest.raises(km.KafkaTimeoutError) as info:
        km.KafkaDataset("t", {"bootstrap.servers": "127.0.0.1:1"}, format="raw", timeout=2)
    assert info.value.name is not None and info.value.retriable
