"""Helpers the test modules share. pytest puts tests/ on sys.path (it has no __init__.py), so a
test module imports them as `from helpers import ...`."""

from __future__ import annotations

import faulthandler
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any


def in_background(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Runs `work` in a thread; its return value lands in `out["result"]`, its error in
    `out["error"]`. Collect both with `finished`."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = work()
        except BaseException as e:
            out["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def finished(thread: threading.Thread, out: dict[str, Any], timeout: float) -> Any:
    """Waits up to `timeout` s for the work of `in_background`; returns its result or raises its
    error. Work still running fails the test, after every thread's Python stack is dumped."""
    thread.join(timeout)
    if thread.is_alive():
        # Where the work is stuck: every thread's Python stack (the test's own timeout comes
        # before pytest-timeout's, so conftest's stack dump would not run).
        faulthandler.dump_traceback(sys.stderr, all_threads=True)
    assert not thread.is_alive(), f"the work did not finish within {timeout}s"
    if "error" in out:
        raise out["error"]
    return out.get("result")


def confluent_avro_values(
    bootstrap: str, registry_url: str, topic: str, n: int, *, more_after: float = 0.0
) -> list[tuple[bytes, Any]]:
    """The first `n` values of `topic`, as confluent-kafka's consumer and `AvroDeserializer`
    read them (an independent reader of the registry's wire format): `(raw value, decoded)`
    pairs, within 100 s. `more_after` > 0 then polls that long more, so a caller can assert
    that nothing followed."""
    from confluent_kafka import Consumer
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
    context = SerializationContext(topic, MessageField.VALUE)
    group = f"check-{uuid.uuid4().hex}"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got: list[tuple[bytes, Any]] = []
    deadline = time.monotonic() + 100
    try:
        while len(got) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                got.append((msg.value(), deserialize(msg.value(), context)))
        if more_after > 0:
            msg = consumer.poll(more_after)
            if msg is not None and not msg.error():
                got.append((msg.value(), deserialize(msg.value(), context)))
    finally:
        consumer.close()
    return got
