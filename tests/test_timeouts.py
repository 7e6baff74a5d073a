"""Every public timeout argument refuses NaN, infinities and negative seconds with a ConfigError
that names the argument and the value (they used to panic into PanicException, a BaseException
that `except Exception` misses, or were silently read as 0)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import kafka_ml as km
import kafka_ml.aio
import numpy as np
import pytest
from kafka_ml.torch import KafkaIterableDataset

BAD = [math.inf, -math.inf, math.nan, -1.0]
# Rust writes them so: inf, -inf, NaN, -1.
SHOWN = {"inf": "inf", "-inf": "-inf", "nan": "NaN", "-1.0": "-1"}

# Nothing listens there: what is tested fails before any connection is needed.
NOWHERE = {"bootstrap.servers": "127.0.0.1:9"}


def refused(argument: str, value: float) -> Any:
    return pytest.raises(km.ConfigError, match=rf"{argument}={SHOWN[repr(value)]}: expected")


@pytest.fixture(params=BAD, ids=repr)
def bad(request: pytest.FixtureRequest) -> float:
    return float(request.param)


def test_dataset_options(bad: float) -> None:
    with refused("timeout", bad):
        km.KafkaDataset("t", NOWHERE, format="raw", timeout=bad)
    with refused("max_wait", bad):
        km.KafkaDataset("t", NOWHERE, format="raw", max_wait=bad)


def test_dataset_poll(bad: float, config: dict[str, str], new_topic: Callable[..., str]) -> None:
    with km.KafkaDataset(new_topic(), config, format="raw") as ds, refused("timeout", bad):
        ds.poll(bad)


def test_producer_waits(bad: float) -> None:
    producer = km.Producer({**NOWHERE, "message.timeout.ms": "100"})
    report = producer.produce("t", b"x")
    with refused("timeout", bad):
        report.wait(timeout=bad)
    with refused("timeout", bad):
        report.join(bad)
    with refused("timeout", bad):
        producer.flush(bad)
    with refused("timeout", bad):
        producer.close(bad)
    with refused("timeout", bad):
        producer.send("t", {"x": np.arange(3)}, format="json", timeout=bad)


def test_transactions(bad: float) -> None:
    producer = km.Producer({**NOWHERE, "transactional.id": "never-used"})
    for step in (producer.init_transactions, producer.commit_transaction, producer.abort_transaction):
        with refused("timeout", bad):
            step(bad)


def test_send_offsets_to_transaction(
    bad: float, config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    producer = km.Producer({**config, "transactional.id": "never-used"})
    topic = new_topic()
    with km.KafkaDataset(topic, {**config, "group.id": topic}, format="raw", commit=False) as ds:
        ds.poll(0)  # a reader: the offsets to send exist
        with refused("timeout", bad):
            producer.send_offsets_to_transaction(ds, bad)


def test_async_producer(bad: float) -> None:
    async def main() -> None:
        producer = kafka_ml.aio.Producer(NOWHERE)
        with refused("timeout", bad):
            await producer.flush(bad)
        with refused("timeout", bad):
            await producer.send("t", {"x": np.arange(3)}, format="json", timeout=bad)

    asyncio.run(main())


def test_schema_registry(bad: float) -> None:
    with refused("timeout", bad):
        km.SchemaRegistry("http://127.0.0.1:9", timeout=bad)


def test_model_topics(bad: float) -> None:
    pytest.importorskip("pyarrow")
    with refused("timeout", bad):
        km.ModelPublisher("models", NOWHERE, timeout=bad)
    with refused("timeout", bad):
        km.ModelSubscriber("models", NOWHERE, timeout=bad)


def test_torch_commit(bad: float, config: dict[str, str], new_topic: Callable[..., str]) -> None:
    ds = KafkaIterableDataset(new_topic(), {**config, "group.id": "g"}, format="raw", end="latest")
    with refused("timeout", bad):
        ds.commit(ds.state_dict(), timeout=bad)


def test_a_long_timeout_is_a_long_wait_not_an_error(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    """Beyond what librdkafka can wait (an int of milliseconds) is 'forever', not a failure."""
    producer = km.Producer(config)
    producer.produce(new_topic(), b"x").wait(timeout=1e12)
    producer.flush(1e300)
