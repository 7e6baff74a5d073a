"""Ctrl-C, close(), threads and async iteration."""

from __future__ import annotations

import _thread
import asyncio
import os
import subprocess
import sys
import threading
import time

import kafka_ml as km
import numpy as np
import pytest


def native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_blocked_iteration_wakes_on_ctrl_c(config, new_topic):
    topic = new_topic()
    ds = km.KafkaDataset(topic, config, format="raw")  # unbounded and empty: blocks
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        next(iter(ds))
    assert time.monotonic() - t0 < 5
    ds.close()


def test_close_leaves_no_threads(config, new_topic, produce):
    topic = new_topic()
    produce(topic, [b"x"] * 10)
    before = native_threads()
    for _ in range(3):
        with km.KafkaDataset(topic, config, format="raw", batch_size=2) as ds:
            next(iter(ds))
    time.sleep(1)  # librdkafka's threads exit asynchronously after destroy
    assert native_threads() <= before


def test_async_for_does_not_block_the_event_loop(config, new_topic, produce):
    topic = new_topic()
    ds = km.KafkaDataset(topic, config, format="tensor", dtype="int64", shape=1, max_wait=0.05)

    async def main() -> tuple[int, list[int]]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0.3)
        await asyncio.to_thread(lambda: None)
        loop = asyncio.get_running_loop()
        loop.call_later(0.5, lambda: produce(topic, [np.array([7], np.int64).tobytes()]))
        got: list[int] = []
        async for batch in ds:
            got += batch["value"][:, 0].tolist()
            break
        task.cancel()
        return ticks, got

    ticks, got = asyncio.run(main())
    ds.close()
    assert got == [7]
    assert ticks > 30, "the event loop kept running while waiting for Kafka"


def test_opening_against_an_unreachable_broker_wakes_on_ctrl_c():
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        km.KafkaDataset("t", {"bootstrap.servers": "127.0.0.1:1"}, format="raw", timeout=60)
    assert time.monotonic() - t0 < 5


def test_a_send_that_must_wait_for_room_in_the_queue_wakes_on_ctrl_c():
    # No broker: what is queued stays queued. A send that fits the queue is queued at once (on
    # the caller's thread); one that does not waits for room on a helper thread, and Ctrl-C ends
    # the wait at once.
    producer = km.Producer(
        {"bootstrap.servers": "127.0.0.1:1", "queue.buffering.max.messages": 10, "message.timeout.ms": 3000}
    )
    rows = np.zeros((8, 2), dtype=np.float32)
    t0 = time.monotonic()
    producer.send("t", rows)
    assert time.monotonic() - t0 < 2, "a send that fits the queue waited"
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        producer.send("t", rows)  # 16 rows for a queue of 10
    assert time.monotonic() - t0 < 2.5, "Ctrl-C did not end the wait for room"


# Async iteration hits a decode error while another thread asks the same reader for its
# positions and stats, over and over. Converting the error to an exception takes the GIL; it used
# to happen with the reader's mutex held, while the asking thread held the GIL waiting for that
# mutex: both waited forever.
DEADLOCK_PROBE = """
import asyncio, sys, threading
import kafka_ml as km

config, topic = {"bootstrap.servers": sys.argv[1]}, sys.argv[2]

async def one_pass():
    with km.KafkaDataset(topic, config, format="json", schema={"x": "int64"}, end="latest") as ds:
        reader = ds.__aiter__()
        done = threading.Event()

        def ask():
            while not done.is_set():
                reader.positions()
                reader.stats()

        asker = threading.Thread(target=ask)
        asker.start()
        try:
            async for _ in reader:
                pass
        except km.DecodeError:
            pass
        finally:
            done.set()
            asker.join()

for _ in range(30):
    asyncio.run(one_pass())
print("no deadlock")
"""


def test_an_error_in_async_iteration_does_not_deadlock_a_thread_asking_for_positions(
    bootstrap_servers, new_topic, produce
):
    topic = new_topic()
    produce(topic, [b"not json"] * 3)
    try:
        out = subprocess.run(
            [sys.executable, "-c", DEADLOCK_PROBE, bootstrap_servers, topic],
            capture_output=True,
            text=True,
            timeout=90,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("async iteration and positions() deadlocked")
    assert out.stdout.strip() == "no deadlock", out.stderr
