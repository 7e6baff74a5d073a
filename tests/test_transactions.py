"""Producer transactions with consumer offsets: consume → produce exactly once."""

from __future__ import annotations

import uuid

import kafka_ml as km
import numpy as np
from confluent_kafka import Consumer, TopicPartition


def ids_in(config, topic: str, isolation: str) -> list[int]:
    ds = km.KafkaDataset(
        topic,
        {**config, "isolation.level": isolation},
        format="tensor",
        dtype="int64",
        shape=1,
        end="latest",
    )
    return [int(v) for b in ds for v in b["value"][:, 0]]


def committed(config, group: str, topic: str) -> int:
    c = Consumer({**config, "group.id": group})
    (tp,) = c.committed([TopicPartition(topic, 0)], timeout=10)
    c.close()
    return tp.offset


def test_committed_transaction_carries_results_and_offsets(config, new_topic, produce):
    source, sink = new_topic(), new_topic()
    produce(source, [np.array([i], np.int64).tobytes() for i in range(20)])
    group = f"g-{uuid.uuid4().hex[:8]}"
    ds = km.KafkaDataset(
        source,
        {**config, "group.id": group},
        format="tensor",
        dtype="int64",
        shape=1,
        batch_size=10,
        max_wait=0.5,
        commit=False,
    )
    producer = km.Producer({**config, "transactional.id": f"tx-{uuid.uuid4().hex[:8]}"})
    producer.init_transactions()
    it = iter(ds)

    # First batch: committed with its offsets.
    producer.begin_transaction()
    first = next(it)["value"]
    producer.send(sink, first * 100)
    producer.send_offsets_to_transaction(ds)
    producer.commit_transaction()
    assert committed(config, group, source) == 10

    # Second batch: aborted — neither its results nor its offsets count.
    producer.begin_transaction()
    second = next(it)["value"]
    producer.send(sink, second * 100)
    producer.send_offsets_to_transaction(ds)
    producer.flush()  # the records reach the log before the abort marks them aborted
    producer.abort_transaction()
    ds.close()

    assert committed(config, group, source) == 10, "aborted offsets are not committed"
    assert ids_in(config, sink, "read_committed") == [i * 100 for i in range(10)]
    assert len(ids_in(config, sink, "read_uncommitted")) == 20, "aborted records exist but are hidden"


def test_offsets_need_a_started_group_dataset(config, new_topic):
    topic = new_topic()
    ds = km.KafkaDataset(topic, config, format="raw")
    producer = km.Producer({**config, "transactional.id": f"tx-{uuid.uuid4().hex[:8]}"})
    try:
        producer.send_offsets_to_transaction(ds)
    except km.ConfigError as e:
        assert "not been iterated" in str(e)
    else:
        raise AssertionError("expected ConfigError")
