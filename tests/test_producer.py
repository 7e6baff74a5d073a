"""The basic producer: tensor rows round-trip, and failures are reported, never silent."""

from __future__ import annotations

import statistics
import time
import uuid

import kafka_ml as km
import numpy as np
import pytest


def test_tensor_rows_round_trip(config, new_topic):
    topic = new_topic()
    rows = np.arange(300, dtype=np.int16).reshape(100, 3)
    with km.Producer(config) as producer:
        assert producer.send(topic, rows).rows == 100
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


@pytest.fixture
def unwritable_topic(bootstrap_servers: str) -> str:
    """A topic whose broker refuses every record batch: its max.message.bytes is tiny, below
    what the client checks (so the failure is the broker's, reported per message)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"unwritable-{uuid.uuid4().hex[:8]}"
    topic = NewTopic(name, num_partitions=1, replication_factor=1, config={"max.message.bytes": "200"})
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    admin.create_topics([topic])[name].result(timeout=30)
    return name


def test_send_report_names_failed_rows(config, new_topic, unwritable_topic):
    producer = km.Producer({**config, "message.timeout.ms": 3000})
    report = producer.send(unwritable_topic, np.zeros((3, 64), np.float32))
    with pytest.raises(km.DeliveryError, match=r"3 of 3 rows failed \(row \d: .*MessageSizeTooLarge"):
        report.wait(60)
    assert report.done and report.failed == 3 and report.delivered == 0
    assert sorted(row for row, _ in report.failures) == [0, 1, 2]
    ok = producer.send(new_topic(), np.ones((4, 2), np.float32)).wait(30)
    assert (ok.delivered, ok.failed) == (4, 0)


def test_async_send_resolves_when_delivered_without_blocking_the_loop(config, new_topic):
    import asyncio

    import kafka_ml.aio

    topic = new_topic()
    data = {"id": np.arange(20_000, dtype=np.int64), "x": np.ones((20_000, 8), np.float32)}

    async def main() -> tuple[km.SendReport, int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                await asyncio.sleep(0.001)
                ticks += 1

        task = asyncio.create_task(ticker())
        async with kafka_ml.aio.Producer(config) as producer:
            report = await producer.send(
                topic, data, format="json", schema={"id": "int64", "x": ("float32", 8)}
            )
        stop.set()
        await task
        return report, ticks

    report, ticks = asyncio.run(main())
    assert report.done and report.delivered == 20_000
    assert ticks > 5, "the loop ran while rows were encoded, queued and delivered"
    ds = km.KafkaDataset(topic, config, format="json", schema={"id": "int64"}, end="latest")
    assert sorted(i for b in ds for i in b["id"].tolist()) == list(range(20_000))


def test_async_send_failure_raises(config, unwritable_topic):
    import asyncio

    import kafka_ml.aio

    producer = kafka_ml.aio.Producer({**config, "message.timeout.ms": 3000})
    with pytest.raises(km.DeliveryError, match="2 of 2 rows failed"):
        asyncio.run(producer.send(unwritable_topic, {"v": ["x" * 300, "y" * 300]}, format="json"))


def test_unknown_partition_fails_before_queueing(config, new_topic):
    # Without auto-creation the producer checks the topic first, so it knows its partitions.
    producer = km.Producer({**config, "allow.auto.create.topics": False})
    with pytest.raises(km.UnknownTopicError, match="Unknown partition"):
        producer.send(new_topic(), np.zeros((3, 2), np.float32), partition=5)
    assert producer.delivered == 0 and producer.failed == 0


def test_progress_bar_follows_deliveries(config, new_topic, capsys):
    topic = new_topic()
    report = km.Producer(config).send(topic, np.zeros((5000, 4), np.float32), progress=True)
    assert report.done and report.delivered == 5000
    assert "5000/5000" in capsys.readouterr().err


def test_headers_with_one_value_per_row(config, new_topic):
    topic = new_topic()
    with km.Producer(config) as producer:
        producer.send(
            topic,
            {"v": np.array([1, 2, 3])},
            format="json",
            headers={"source": [b"a", "b", None], "offset": np.array([10, 11, 12])},
        )
        with pytest.raises(km.EncodeError, match="header 'n'"):
            producer.send(topic, {"v": np.array([1, 2])}, format="json", headers={"n": [1]})
    ds = km.KafkaDataset(topic, config, format="raw", metadata=["headers"], end="latest")
    headers = [h for b in ds for h in b["headers"]]
    assert headers == [
        [("source", b"a"), ("offset", b"10")],
        [("source", b"b"), ("offset", b"11")],
        [("source", None), ("offset", b"12")],
    ]


def test_close_releases_the_client_for_the_producer_and_its_reports(config, new_topic):
    """`close()` flushes, then lets go of the librdkafka producer (connections, threads), also
    held by the reports of its sends: counts stay readable, anything else is ClosedError."""
    import threading

    topic = new_topic()
    producer = km.Producer(config)
    report = producer.send(topic, np.zeros((100, 4), np.float32))
    before = threading.active_count(), len(_native_threads())
    producer.close()
    assert report.done and report.delivered == 100  # the close flushed first
    assert (producer.delivered, producer.failed) == (100, 0)
    assert report.wait(timeout=1) is report  # a report of a closed producer still answers
    with pytest.raises(km.ClosedError, match="producer is closed"):
        producer.produce(topic, b"x")
    with pytest.raises(km.ClosedError):
        producer.flush(1)
    producer.close()  # again: nothing to do
    # The producer's librdkafka threads are gone, though `producer` and `report` are alive.
    assert len(_native_threads()) < before[1], (before, len(_native_threads()))


def _native_threads() -> list[str]:
    """The names of this process's threads (librdkafka's are named rdk:...)."""
    import os

    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except FileNotFoundError:
            pass  # a thread that ended after the listing (librdkafka's, ending on close)
    return [n for n in names if n.startswith("rdk:")]


def test_an_idempotent_producers_first_message_does_not_wait_for_librdkafkas_pid_timer(config, new_topic):
    """An idempotent producer (kafka-ml's default) sends nothing before it has a producer id.
    librdkafka 2.12.1 asks for one 500 ms after the producer starts, or on a metadata reply that
    comes while only the bootstrap connection is up, then not again for 500 ms: the first message of
    every new producer waited about half a second (an inference loop's first results, a CLI send).
    vendor/patches/librdkafka-idemp-pid-on-broker-up.patch asks as soon as a broker comes up. The
    first message of a new producer is timed with and without idempotence, on the same broker: the
    difference was about 500 ms before the patch (508 and 510 ms against 7 ms), 7-10 ms with it."""
    topic = new_topic()
    row = np.zeros((1, 4), dtype=np.float32)

    def first_message_s(idempotent: bool) -> float:
        producer = km.Producer({**config, "linger.ms": 0, "enable.idempotence": str(idempotent).lower()})
        start = time.perf_counter()
        producer.send(topic, row).wait(30)
        elapsed = time.perf_counter() - start
        producer.close()
        return elapsed

    first_message_s(True)  # the broker's first producer-id request of the topic's life is not timed
    plain = statistics.median(first_message_s(False) for _ in range(3))
    idempotent = statistics.median(first_message_s(True) for _ in range(3))
    assert idempotent < plain + 0.3, (
        f"an idempotent producer's first message took {idempotent * 1000:.0f} ms, a plain one's "
        f"{plain * 1000:.0f} ms: the id request waited for librdkafka's 500 ms timer"
    )
