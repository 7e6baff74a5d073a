"""`Producer`: publishes messages and NumPy rows, every message accounted delivered or failed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import _native
from .dataset import _config
from .exceptions import ConfigError

__all__ = ["Producer"]


class Producer:
    """A librdkafka producer (idempotent, ``acks=all`` unless ``config`` says otherwise).

    ``send(topic, array)`` writes one message per row of a NumPy array in the ``tensor`` format
    (raw little-endian elements), the format ``KafkaDataset(format="tensor")`` reads back.
    ``flush`` raises :class:`~kafka_ml.DeliveryError` if any message failed, and
    :class:`~kafka_ml.KafkaTimeoutError` naming how many were not delivered in time.
    """

    def __init__(self, config: Mapping[str, object]) -> None:
        self._native = _native.Producer(_config(config))

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
        timestamp: int | None = None,
    ) -> None:
        """Queues one message."""
        self._native.produce(topic, value, key, partition, list(headers) if headers else None, timestamp)

    def send(self, topic: str, data: Any, *, format: str = "tensor", partition: int | None = None) -> int:
        """Queues one message per row of ``data`` (an N-D NumPy array); returns the row count."""
        if format != "tensor":
            raise ConfigError(f"format={format!r}: this producer writes the 'tensor' format")
        array = np.asarray(data)
        if array.ndim < 2 or array.shape[0] == 0:
            raise ConfigError(f"expected an array of rows (at least 2-D, non-empty), got shape {array.shape}")
        if array.dtype.kind not in "iuf":
            raise ConfigError(f"tensor rows must be numeric, got dtype {array.dtype}")
        little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        row_bytes = little.strides[0]
        return self._native.send_rows(topic, little.reshape(-1).view(np.uint8).data, row_bytes, partition)

    def flush(self, timeout: float = 30.0) -> None:
        """Waits until every queued message is delivered; raises if any failed or timed out."""
        self._native.flush(timeout)

    @property
    def delivered(self) -> int:
        return self._native.delivered

    @property
    def failed(self) -> int:
        return self._native.failed

    def close(self, timeout: float = 30.0) -> None:
        """Flushes what is queued."""
        self.flush(timeout)

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
