"""Readers, producers and the async runtime inherited by a forked child (a DataLoader worker,
multiprocessing's fork start method): their threads stayed in the parent, so using them in the
child used to hang. Now it raises ForkedProcessError, dropping them there does not wait for
threads that do not exist, and objects made in the child work."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
from collections.abc import Callable

import kafka_ml as km
import pytest


def run_forked(child: Callable[[], str], timeout: float = 60) -> str:
    """`child()` in a forked process; its result, or the exception it raised, as text."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def main() -> None:
        try:
            send.send(child())
        except BaseException as e:
            send.send(f"raised {type(e).__name__}: {e}")

    process = context.Process(target=main)
    process.start()
    try:
        if not receive.poll(timeout):
            pytest.fail(f"the forked child hung for {timeout} s")
        return str(receive.recv())
    finally:
        process.kill()
        process.join()


def test_an_inherited_reader_raises_and_the_dataset_reads_again_in_the_child(
    config: dict[str, str], new_topic: Callable[..., str], produce: Callable[..., None]
) -> None:
    topic = new_topic()
    produce(topic, [b"%d" % i for i in range(10)])
    ds = km.KafkaDataset(topic, config, format="raw", batch_size=4, end="latest")
    readers = [iter(ds)]
    first = next(readers[0])  # the parent's reader is running: its thread and consumer are live

    def child() -> str:
        with pytest.raises(km.ForkedProcessError, match="Create the reader in the child"):
            next(readers[0])
        with pytest.raises(km.ForkedProcessError):
            readers[0].positions()
        rows = sum(len(batch) for batch in ds)  # a pass of the child's own
        ds.close()
        readers.clear()
        gc.collect()  # dropping the inherited reader must not wait for the parent's thread
        return f"read {rows}"

    assert run_forked(child) == "read 10"
    # The parent's reader is intact.
    assert len(first) + sum(len(batch) for batch in readers[0]) == 10
    ds.close()


def test_an_inherited_producer_raises_and_one_made_in_the_child_works(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    topic = new_topic()
    producer = km.Producer(config)
    report = producer.produce(topic, b"parent").wait(timeout=30)

    def child() -> str:
        with pytest.raises(
            km.ForkedProcessError, match="this producer was created before this process was forked"
        ):
            producer.produce(topic, b"child")
        with pytest.raises(km.ForkedProcessError):
            report.wait(timeout=1)
        with pytest.raises(km.ForkedProcessError):
            producer.flush(1)
        own = km.Producer(config)
        own.produce(topic, b"child").wait(timeout=30)
        own.close()
        delivered = own.delivered
        del own
        gc.collect()
        return f"delivered {delivered}"

    assert run_forked(child) == "delivered 1"
    producer.produce(topic, b"parent again").wait(timeout=30)  # the parent's producer is intact
    rows = sum(len(b) for b in km.KafkaDataset(topic, config, format="raw", end="latest"))
    assert rows == 3


def test_the_async_api_refuses_to_run_in_a_child_forked_after_it_started(
    config: dict[str, str], new_topic: Callable[..., str], produce: Callable[..., None]
) -> None:
    topic = new_topic()
    produce(topic, [b"x"])

    async def first_batch_rows() -> int:
        with km.KafkaDataset(topic, config, format="raw", end="latest") as ds:
            async for batch in ds:
                return len(batch)
        return 0

    assert asyncio.run(first_batch_rows()) == 1  # the parent has started the async runtime

    def child() -> str:
        with pytest.raises(km.ForkedProcessError, match="'spawn' or 'forkserver'"):
            asyncio.run(first_batch_rows())
        return "refused"

    assert run_forked(child) == "refused"
