"""Large reads and sends take the fast paths: JSON decoded on two threads and by the
schema-directed parser, sends queued with librdkafka's batch call and JSON encoded while earlier
rows are queued. They must give exactly what the one-message-at-a-time paths give: the same
rows in the same order, the same errors at the same offsets, and nothing sent from a bad send."""

from __future__ import annotations

import json

import kafka_ml as km
import numpy as np
import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicPartition

SCHEMA = {"id": "int64", "x": ("float32", 2), "note": "string?"}
MESSAGES = 3000
# Offset → payload that the JSON format must reject (each for a different reason).
BAD = {
    5: b'{"id": 5, "x": [1, 2',
    700: b'{"id": "seven hundred", "x": [1, 2]}',
    1500: b'{"id": 1500, "x": [1, 2, 3]}',
    2999: b"not json",
}


def payload(i: int) -> bytes:
    if i in BAD:
        return BAD[i]
    record: dict[str, object] = {"id": i, "x": [i / 3, -i], "extra": {"nested": [i, "s"]}}
    if i % 7 == 0:
        record["note"] = 'quoted "text" \u00e9'  # escapes: the tape decoder's share
    return json.dumps(record).encode()


@pytest.fixture(scope="module")
def mixed_topic(new_topic, produce) -> str:
    """3000 JSON messages in one partition, four of them bad; read in chunks of many."""
    topic = new_topic()
    produce(topic, [payload(i) for i in range(MESSAGES)])
    return topic


def read(config, topic, **kw) -> tuple[km.KafkaDataset, dict[str, list]]:
    ds = km.KafkaDataset(topic, config, format="json", schema=SCHEMA, end="latest", batch_size=1000, **kw)
    out: dict[str, list] = {"id": [], "x": [], "note": []}
    for b in ds:
        cols = b.to_numpy()
        out["id"].extend(cols["id"].tolist())
        out["x"].extend(cols["x"].tolist())
        out["note"].extend(pa.record_batch(b).column("note").to_pylist())
    return ds, out


def test_many_json_messages_with_bad_ones_decode_in_order(config, mixed_topic):
    ds, out = read(config, mixed_topic, on_error="skip")
    good = [i for i in range(MESSAGES) if i not in BAD]
    assert out["id"] == good
    want_x = np.array([[i / 3, -i] for i in good], dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(np.array(out["x"], dtype=np.float32), want_x)
    assert out["note"] == ['quoted "text" \u00e9' if i % 7 == 0 else None for i in good]
    assert ds.stats["skipped"] == len(BAD)
    assert ds.state_dict()["offsets"][mixed_topic] == {"0": MESSAGES}


def test_the_first_bad_message_of_a_chunk_raises_with_its_offset(config, mixed_topic):
    ds = km.KafkaDataset(mixed_topic, config, format="json", schema=SCHEMA, end="latest", batch_size=2)
    ids = []
    with pytest.raises(km.DecodeError, match=f"topic '{mixed_topic}' partition 0 offset 5.*malformed JSON"):
        for b in ds:
            ids.extend(b.to_numpy()["id"].tolist())
    assert ids == [0, 1, 2, 3, 4]  # every row before it is handed out first


def test_dead_letters_of_a_chunk_keep_their_order(config, new_topic, mixed_topic):
    dlq = new_topic(prefix="dlq")
    _, out = read(config, mixed_topic, on_error="dead_letter", dead_letter_topic=dlq)
    assert len(out["id"]) == MESSAGES - len(BAD)
    c = Consumer({**config, "group.id": "reader-" + dlq})
    c.assign([TopicPartition(dlq, 0, 0)])
    letters = []
    while len(letters) < len(BAD):
        msg = c.poll(10)
        assert msg is not None, "timed out reading the dead letters"
        letters.append((int(dict(msg.headers())["kafka_ml.source.offset"]), msg.value()))
    c.close()
    assert letters == sorted(BAD.items())


def big_features(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "id": np.arange(n, dtype=np.int64),
        "x": rng.uniform(-1, 1, size=(n, 4)).astype(np.float32),
        "user": (np.arange(n) % 97).astype(np.int64),
    }


def test_a_large_keyed_json_send_arrives_whole_and_in_order(config, new_topic):
    """Above 65 536 rows a JSON send queues its first chunks while the next are encoded."""
    n = 150_000
    topic = new_topic(partitions=3)
    data = big_features(n)
    schema = {"id": "int64", "x": ("float32", 4), "user": "int64"}
    with km.Producer(config) as p:
        report = p.send(topic, data, format="json", schema=schema, key="user").wait()
        assert (report.delivered, report.failed) == (n, 0)
    ds = km.KafkaDataset(
        topic,
        config,
        format="json",
        schema=schema,
        end="latest",
        metadata=["partition", "key"],
        batch_size=65_536,
    )
    ids, xs, partitions, keys = [], [], [], []
    for b in ds:
        cols = b.to_numpy()
        ids.append(cols["id"])
        xs.append(cols["x"])
        partitions.append(cols["partition"])
        keys.extend(pa.record_batch(b).column("key").to_pylist())
    id_arr, part_arr = np.concatenate(ids), np.concatenate(partitions)
    order = np.argsort(id_arr)
    np.testing.assert_array_equal(id_arr[order], data["id"])
    np.testing.assert_array_equal(np.concatenate(xs)[order], data["x"])
    assert keys[0] is not None and len(set(part_arr.tolist())) == 3
    # One partition per key, and each partition in send order.
    by_key: dict[bytes, set[int]] = {}
    for k, part in zip(keys, part_arr.tolist(), strict=True):
        by_key.setdefault(k, set()).add(part)
    assert all(len(ps) == 1 for ps in by_key.values())
    for part in range(3):
        in_part = id_arr[part_arr == part]
        assert (np.diff(in_part) > 0).all()


def test_a_large_json_send_with_one_bad_row_sends_nothing(config, new_topic):
    n = 150_000
    topic = new_topic()
    data = big_features(n)
    data["x"][n - 1, 2] = np.nan
    with km.Producer(config) as p:
        with pytest.raises(km.EncodeError, match=f"row {n - 1}.*NaN"):
            p.send(topic, data, format="json", schema={"id": "int64", "x": ("float32", 4), "user": "int64"})
        p.flush(10)
        assert (p.delivered, p.failed) == (0, 0)
    c = Consumer({**config, "group.id": "check-" + topic})
    low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    c.close()
    assert (low, high) == (0, 0)


def test_a_send_larger_than_the_producer_queue_waits_and_keeps_order(config, new_topic):
    """The batch call fails from the first message that does not fit: the send retries from there."""
    n = 20_000
    topic = new_topic()
    rows = np.arange(n, dtype=np.int64).reshape(n, 1)
    with km.Producer({**config, "queue.buffering.max.messages": 1000}) as p:
        assert p.send(topic, rows).wait().delivered == n
    ds = km.KafkaDataset(topic, config, format="tensor", dtype="int64", shape=(1,), end="latest")
    got = np.concatenate([b.to_numpy()["value"] for b in ds])
    np.testing.assert_array_equal(got.reshape(-1), np.arange(n))
