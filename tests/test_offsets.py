"""Offsets: exact resume from state_dict, commits only for what the user received, rebalances."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid

import kafka_ml as km
import numpy as np
from confluent_kafka import Consumer, TopicPartition


def rows(start: int, n: int) -> list[bytes]:
    return [np.array([i], dtype=np.int64).tobytes() for i in range(start, start + n)]


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in tps]
    finally:
        c.close()


def test_state_dict_resumes_exactly(config, new_topic, produce):
    topic = new_topic(partitions=2)
    produce(topic, rows(0, 100), partition=0)
    produce(topic, rows(100, 100), partition=1)
    kw = dict(format="tensor", dtype="int64", shape=1, end="latest", batch_size=10)
    ds = km.KafkaDataset(topic, config, **kw)
    seen: list[int] = []
    it = iter(ds)
    for _ in range(7):
        seen += [int(v) for v in next(it)["value"][:, 0]]
    state = ds.state_dict()
    ds.close()
    assert sum(int(o) for parts in state["offsets"].values() for o in parts.values()) == len(seen)

    resumed = km.KafkaDataset(topic, config, **kw)
    resumed.load_state_dict(state)
    rest = [int(v) for b in resumed for v in b["value"][:, 0]]
    assert sorted(seen + rest) == list(range(200)), "no sample lost or repeated"


def test_group_commits_only_what_was_received(config, new_topic, produce):
    topic = new_topic()
    produce(topic, rows(0, 100))
    group = f"g-{uuid.uuid4().hex[:8]}"
    cfg = {**config, "group.id": group}
    ds = km.KafkaDataset(topic, cfg, format="tensor", dtype="int64", shape=1, batch_size=10, queue_bytes=1)
    it = iter(ds)
    first = next(it)
    assert len(first) == 10
    # The batch being processed is not committed until the next one is asked for ...
    assert committed(config["bootstrap.servers"], group, topic, 1) == [-1001]
    next(it)
    ds.commit()
    # ... and then exactly what was handed out is, though more was consumed into the queue.
    assert committed(config["bootstrap.servers"], group, topic, 1) == [20]
    ds.close()
    assert committed(config["bootstrap.servers"], group, topic, 1) == [20]

    # A new reader in the group starts from the committed offset: nothing lost.
    again = km.KafkaDataset(topic, cfg, format="tensor", dtype="int64", shape=1, batch_size=100, max_wait=0.5)
    batch = next(iter(again))
    assert int(batch["value"][0, 0]) == 20
    again.close()


def test_rebalance_between_two_members_loses_nothing(config, new_topic, produce):
    topic = new_topic(partitions=4)
    for p in range(4):
        produce(topic, rows(p * 500, 500), partition=p)
    group = f"g-{uuid.uuid4().hex[:8]}"
    cfg = {**config, "group.id": group, "session.timeout.ms": 6000}
    kw = dict(format="tensor", dtype="int64", shape=1, batch_size=10, max_wait=0.2, queue_bytes=4096)
    got: dict[str, list[int]] = {"a": [], "b": []}

    def consume(name: str, ds: km.KafkaDataset) -> None:
        for batch in ds:  # ends when the main thread closes the dataset
            got[name] += [int(v) for v in batch["value"][:, 0]]
            time.sleep(0.05)  # slow consumers, so the rebalance happens mid-stream

    a = km.KafkaDataset(topic, cfg, **kw)
    ta = threading.Thread(target=consume, args=("a", a))
    ta.start()
    time.sleep(1)
    b = km.KafkaDataset(topic, cfg, **kw)  # joins: partitions are rebalanced
    tb = threading.Thread(target=consume, args=("b", b))
    tb.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(set(got["a"]) | set(got["b"])) < 2000:
        time.sleep(0.2)
    a.close()
    b.close()
    ta.join(10)
    tb.join(10)
    assert set(got["a"]) | set(got["b"]) == set(range(2000)), "at-least-once: every message delivered"
    assert got["b"], "the second member received partitions"


def test_slow_group_reader_keeps_its_partitions(config, new_topic, produce):
    """A reader that leaves a full queue unread past max.poll.interval.ms is not evicted: the
    consumer thread keeps polling with its partitions paused, so nothing is read twice."""
    topic = new_topic(partitions=2)
    for p in range(2):
        produce(topic, rows(p * 500, 500), partition=p)
    group = f"g-{uuid.uuid4().hex[:8]}"
    cfg = {**config, "group.id": group, "session.timeout.ms": 6000, "max.poll.interval.ms": 7000}
    ds = km.KafkaDataset(
        topic, cfg, format="tensor", dtype="int64", shape=1, batch_size=10, max_wait=0.2, queue_bytes=1
    )
    it = iter(ds)
    got = [int(v) for v in next(it)["value"][:, 0]]
    time.sleep(10)  # longer than max.poll.interval.ms, with the queue full
    deadline = time.monotonic() + 60
    while len(got) < 1000 and time.monotonic() < deadline:
        got += [int(v) for v in next(it)["value"][:, 0]]
    ds.close()
    assert sorted(got) == list(range(1000)), "every message exactly once: no eviction, no re-read"


def test_latency_first_batches_close_when_nothing_waits_and_grow_under_load(config, new_topic, produce):
    # max_wait=0: a batch is handed out as soon as the consumer has nothing more waiting, with no
    # timer; a backlog still comes in full batches (the batch_size bound holds).
    topic = new_topic()
    produce(topic, rows(0, 5000))
    cfg = {**config, "group.id": f"g-{uuid.uuid4().hex[:8]}"}
    ds = km.KafkaDataset(topic, cfg, format="tensor", dtype="int64", shape=1, batch_size=500, max_wait=0)
    seen: list[int] = []
    sizes: list[int] = []
    deadline = time.monotonic() + 60
    while len(seen) < 5000 and time.monotonic() < deadline:
        batch = ds.poll(1.0)
        if batch is not None:
            sizes.append(len(batch))
            seen += [int(v) for v in batch["value"][:, 0]]
    assert seen == list(range(5000))
    assert max(sizes) == 500  # never over batch_size, and a backlog fills batches up to it
    assert sum(s == 500 for s in sizes) >= len(sizes) // 2, sizes

    # A lone message is handed out alone: nothing holds it back for company.
    produce(topic, rows(5000, 1))
    batch = None
    while batch is None and time.monotonic() < deadline:
        batch = ds.poll(1.0)
    assert batch is not None and [int(v) for v in batch["value"][:, 0]] == [5000]
    ds.close()


def test_poll_until_delivered_ends_at_the_next_input_or_at_the_acknowledgements(config, new_topic, produce):
    # An inference loop's one wait while its results are on their way: the next input, or the
    # results acknowledged, whichever comes first; the timeout still bounds it.
    topic, out = new_topic(), new_topic()
    cfg = {**config, "group.id": f"g-{uuid.uuid4().hex[:8]}"}
    ds = km.KafkaDataset(topic, cfg, format="tensor", dtype="int64", shape=1, max_wait=0)
    with socket.socket() as s:  # a port nothing listens on: a producer whose sends never end
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    unreachable = km.Producer({"bootstrap.servers": f"127.0.0.1:{port}"})
    values = {"v": np.arange(3, dtype=np.int64)}
    try:
        with km.Producer(config) as producer:
            # No input: the acknowledgements end the wait, well before its 30 s.
            report = producer.send(out, values, format="json", schema={"v": "int64"})
            started = time.monotonic()
            assert ds.poll(30, until_delivered=[report]) is None
            assert report.done and report.delivered == 3 and time.monotonic() - started < 20

            # Reports still missing: the timeout ends the wait ...
            pending = unreachable.send(out, values, format="json", schema={"v": "int64"})
            started = time.monotonic()
            assert ds.poll(0.3, until_delivered=[report, pending]) is None
            assert time.monotonic() - started >= 0.3 and not pending.done

            # ... or the next input does, at once.
            produce(topic, rows(0, 3))
            batch, deadline = None, time.monotonic() + 60
            while batch is None:
                assert time.monotonic() < deadline, "no input within 60 s"
                batch = ds.poll(30, until_delivered=[pending])
            assert [int(v) for v in batch["value"][:, 0]] == [0, 1, 2] and not pending.done
    finally:
        ds.close()
        with contextlib.suppress(km.KafkaMLError):
            unreachable.close(timeout=0)  # purges the send that could not go anywhere
    assert pending.done and pending.failed == 3


def test_lag_comes_from_the_last_fetch_and_async_commits_land(config, new_topic, produce):
    topic = new_topic(partitions=2)
    produce(topic, rows(0, 100), partition=0)
    produce(topic, rows(100, 40), partition=1)
    group = f"g-{uuid.uuid4().hex[:8]}"
    ds = km.KafkaDataset(
        topic, {**config, "group.id": group}, format="tensor", dtype="int64", shape=1,
        batch_size=10, commit=False, metadata=["partition"],
    )  # fmt: skip
    received = {0: 0, 1: 0}
    deadline = time.monotonic() + 30
    while received[0] < 10 or received[1] < 10:
        assert time.monotonic() < deadline, received
        batch = ds.poll(1.0)
        if batch is not None:
            for p in batch["partition"]:
                received[int(p)] += 1
    assert ds._reader is not None
    # The high watermarks (100 and 40) came with the fetches: lag is what was not handed out.
    assert ds._reader.lag() == {(topic, 0): 100 - received[0], (topic, 1): 40 - received[1]}

    ds.commit({(topic, 0): 7, (topic, 1): 3}, asynchronous=True)
    while committed(config["bootstrap.servers"], group, topic, 2) != [7, 3]:
        assert time.monotonic() < deadline, "the asynchronous commit never landed"
        ds.poll(0.1)  # the consumer thread serves the commit's answer
    ds.close()
