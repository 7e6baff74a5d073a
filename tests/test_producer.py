"""The basic producer: tensor rows round-trip, and failures are reported, never silent."""

from __future__ import annotations

import kafka_ml as km
import numpy as np
import pytest


def test_tensor_rows_round_trip(config, new_topic):
    topic = new_topic()
    rows = np.arange(300, dtype=np.int16).reshape(100, 3)
    with km.Producer(config) as producer:
        assert producer.send(topic, rows) == 100
    assert producer.delivered == 100 and producer.failed == 0
    ds = km.KafkaDataset(topic, config, format="tensor", dtype="int16", shape=3, end="latest")
    np.testing.assert_array_equal(np.concatenate([b["value"] for b in ds]), rows)


def test_big_endian_input_is_written_little_endian(config, new_topic):
    topic = new_topic()
    rows = np.arange(6, dtype=">f4").reshape(2, 3)
    with km.Producer(config) as producer:
        producer.send(topic, rows)
    ds = km.KafkaDataset(topic, config, format="tensor", dtype="float32", shape=3, end="latest")
    np.testing.assert_array_equal(np.concatenate([b["value"] for b in ds]), rows.astype("<f4"))


def test_unreachable_broker_flush_names_what_was_not_delivered():
    producer = km.Producer({"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 60000})
    producer.produce("t", b"a")
    producer.produce("t", b"b")
    with pytest.raises(km.KafkaTimeoutError, match="2 message"):
        producer.flush(1.0)


def test_failed_delivery_is_raised_once(config):
    producer = km.Producer({**config, "message.timeout.ms": 1000, "enable.idempotence": False})
    producer.produce("t", b"x", partition=99)  # the topic has no partition 99
    with pytest.raises(km.DeliveryError, match="1 message"):
        producer.flush(10)
    producer.flush(10)  # reported already: the next flush has nothing to report


def test_bad_rows_are_rejected_before_sending(config):
    producer = km.Producer(config)
    with pytest.raises(km.EncodeError, match="at least 2-D"):
        producer.send("t", np.zeros(3))
    with pytest.raises(km.EncodeError, match="numeric"):
        producer.send("t", np.array([["a"]], dtype=object))
