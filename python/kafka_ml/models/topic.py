"""Creating and reading a model topic: one compacted partition, read as raw records with their
offsets and headers."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .. import _native
from ..dataset import KafkaDataset, _config
from ..exceptions import UnknownTopicError
from .wire import _PARTITION, _TOPIC_CONFIG

log = logging.getLogger("kafka_ml.models")


def _ensure_topic(config: Mapping[str, str], topic: str, replication_factor: int, timeout: float) -> None:
    """Creates the model topic compacted with one partition, unless it exists; returns once the
    cluster's metadata knows it."""
    created = _native.create_topic(dict(config), topic, 1, replication_factor, dict(_TOPIC_CONFIG), timeout)
    if created:
        log.info("created compacted model topic %r", topic)
        # The controller has created it, but a broker applies that a moment later: until then
        # its metadata answers UNKNOWN_TOPIC_OR_PART, and the first read would fail.
        deadline = time.monotonic() + timeout
        while True:
            try:
                _native.watermarks(dict(config), [(topic, _PARTITION)], max(0.1, deadline - time.monotonic()))
                return
            except UnknownTopicError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)


def _with_defaults(config: Mapping[str, object], defaults: Mapping[str, str]) -> dict[str, str]:
    out = _config(config)
    for k, v in defaults.items():
        out.setdefault(k, v)
    return out


@dataclass
class _Record:
    offset: int
    key: bytes | None
    value: memoryview | None  # a view of the Arrow buffer: chunks go to disk without a copy
    headers: dict[str, bytes]


def _records(batch: Any) -> Iterator[_Record]:
    """The messages of a raw batch with key, offset and headers metadata."""
    import pyarrow as pa

    rb = pa.record_batch(batch)
    keys = rb.column("key").to_pylist()
    values = rb.column("value")
    offsets = rb.column("offset").to_pylist()
    headers = rb.column("headers").to_pylist()
    for i, offset in enumerate(offsets):
        value = values[i]
        yield _Record(
            offset=offset,
            key=keys[i],
            value=memoryview(value.as_buffer()) if value.is_valid else None,
            headers={k: v for k, v in headers[i] if v is not None},
        )


def _read_range(
    config: Mapping[str, str], topic: str, start: int, end: int, timeout: float
) -> Iterator[_Record]:
    """Messages of partition 0 in offsets ``[start, end)``, in order, with bounded memory."""
    if start >= end:
        return
    tp = (topic, _PARTITION)
    with KafkaDataset(
        config=config,
        partitions=[tp],
        format="raw",
        metadata=["offset", "headers"],
        start={tp: start},
        end={tp: end},
        batch_size=4,
        queue_bytes=8 << 20,
        timeout=timeout,
    ) as ds:
        for batch in ds:
            yield from _records(batch)


def _watermarks(config: Mapping[str, str], topic: str, timeout: float) -> tuple[int, int]:
    tp = (topic, _PARTITION)
    with KafkaDataset(
        config=config, partitions=[tp], format="raw", start="earliest", end="latest", timeout=timeout
    ) as ds:
        plan = ds.plan or []
    for _t, _p, low, high in plan:
        return low, high if high is not None else low
    return 0, 0


# -- publishing ----------------------------------------------------------------------------------
