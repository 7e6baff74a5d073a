"""Start/end positions, snapshot semantics, replay, streaming and the latency bound."""

from __future__ import annotations

import datetime as dt
import time

import kafka_ml as km
import numpy as np
import pytest


def ids(ds: km.KafkaDataset) -> list[int]:
    return [int(v) for b in ds for v in b["value"][:, 0]]


def rows(start: int, n: int) -> list[bytes]:
    return [np.array([i], dtype=np.int64).tobytes() for i in range(start, start + n)]


def open_ds(config, topic, **kw) -> km.KafkaDataset:
    return km.KafkaDataset(topic, config, format="tensor", dtype="int64", shape=1, **kw)


def test_bounded_read_is_a_replayable_snapshot(config, new_topic, produce):
    topic = new_topic(partitions=3)
    for p in range(3):
        produce(topic, rows(p * 100, 100), partition=p)
    ds = open_ds(config, topic, end="latest", batch_size=64)
    assert len(ds) == 300
    produce(topic, rows(1000, 10), partition=0)  # after the snapshot: not part of the dataset
    first = sorted(ids(ds))
    second = sorted(ids(ds))
    assert first == second == list(range(300))


def test_explicit_offsets_and_partitions(config, new_topic, produce):
    topic = new_topic(partitions=2)
    produce(topic, rows(0, 50), partition=0)
    produce(topic, rows(100, 50), partition=1)
    ds = open_ds(config, topic, start={(topic, 0): 10, (topic, 1): 45}, end={(topic, 0): 20})
    assert sorted(ids(ds)) == list(range(10, 20)) + list(range(145, 150))
    only_p1 = km.KafkaDataset(
        partitions=[(topic, 1)], config=config, format="tensor", dtype="int64", shape=1, end="latest"
    )
    assert ids(only_p1) == list(range(100, 150))
    with pytest.raises(km.ConfigError, match="outside its range"):
        open_ds(config, topic, start={(topic, 0): 51}, end="latest")


def test_timestamp_positions(config, new_topic, produce):
    topic = new_topic()
    base = 1_700_000_000_000
    produce(topic, [{"value": v, "timestamp": base + i * 1000} for i, v in enumerate(rows(0, 10))])
    start = dt.datetime.fromtimestamp((base + 3000) / 1000, tz=dt.timezone.utc)
    end = dt.datetime.fromtimestamp((base + 7000) / 1000, tz=dt.timezone.utc)
    assert ids(open_ds(config, topic, start=start, end=end)) == [3, 4, 5, 6]
    with pytest.raises(km.ConfigError, match="timezone-aware"):
        open_ds(config, topic, start=dt.datetime(2024, 1, 1))


def test_unbounded_stream_and_latency_bound(config, new_topic, produce):
    topic = new_topic()
    produce(topic, rows(0, 5))
    ds = open_ds(config, topic, batch_size=1000, max_wait=0.2)
    with pytest.raises(TypeError):
        len(ds)
    it = iter(ds)
    t0 = time.monotonic()
    first = next(it)
    # 5 rows never fill a 1000-row batch: max_wait closes it.
    assert [int(v) for v in first["value"][:, 0]] == [0, 1, 2, 3, 4]
    assert time.monotonic() - t0 < 10
    produce(topic, rows(5, 3))  # arrives while streaming
    second = next(it)
    assert [int(v) for v in second["value"][:, 0]] == [5, 6, 7]
    ds.close()


def test_empty_range_ends_at_once(config, new_topic, produce):
    topic = new_topic()
    produce(topic, rows(0, 3))
    ds = open_ds(config, topic, start="latest", end="latest")
    assert len(ds) == 0 and list(ds) == []


@pytest.mark.parametrize("group", [None, "g-eof"], ids=["batch-path", "group-poll-path"])
def test_a_partition_fetched_after_another_ones_end_is_read_whole(config, new_topic, group):
    # Partition 1 (one message) reaches its end in the first fetch; partition 0 arrives in many
    # small record batches over several fetches, and its tail lands in the same consume batch
    # as partition 1's end-of-partition event. Every message must still be delivered.
    topic = new_topic(partitions=2)
    n = 600
    with km.Producer({**config, "batch.size": "1000", "linger.ms": "0"}) as producer:
        producer.send(topic, {"id": np.arange(n, dtype=np.int64)}, format="json", partition=0)
        producer.send(topic, {"id": np.array([n], dtype=np.int64)}, format="json", partition=1)
    for fetch_bytes in ("1024", "4096", "16384"):
        ds = km.KafkaDataset(
            topic,
            {**config, "max.partition.fetch.bytes": fetch_bytes}
            | ({"group.id": f"{group}-{topic}-{fetch_bytes}"} if group else {}),
            format="json",
            schema={"id": "int64"},
            end="latest",
            batch_size=32,
        )
        got = sorted(int(v) for b in ds for v in b["id"])
        assert got == list(range(n + 1)), f"max.partition.fetch.bytes={fetch_bytes}"
