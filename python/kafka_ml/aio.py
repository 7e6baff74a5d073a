"""The asyncio API: a producer whose sends resolve when delivered, without blocking the loop.

`async for batch in KafkaDataset(...)` is the asyncio way of reading (see `kafka_ml.KafkaDataset`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from ._native import SendReport
from .dataset import ColumnType
from .exceptions import ConfigError
from .producer import Headers, _native_format, _proto_arguments, _send_arguments, registered_schema_id
from .producer import Producer as _SyncProducer
from .registry import SchemaRegistry, SubjectNameStrategy, json_schema_columns

__all__ = ["Producer"]


class Producer:
    """``await producer.send(...)`` resolves to the :class:`~kafka_ml.SendReport` once every row
    is delivered, or raises :class:`~kafka_ml.DeliveryError` naming the failed rows.

    Rows are encoded and queued on the shared tokio runtime's blocking pool and delivery is
    awaited asynchronously: the event loop keeps running, and no thread is started per call.
    Arguments are those of :meth:`kafka_ml.Producer.send`.
    """

    def __init__(self, config: Mapping[str, object]) -> None:
        self._producer = _SyncProducer(config)

    async def send(
        self,
        topic: str,
        data: Any,
        *,
        format: Literal[
            "tensor", "json", "json_schema", "connect_json", "avro", "protobuf", "raw"
        ] = "tensor",
        schema: Mapping[str, ColumnType] | None = None,
        key: str | Sequence[Any] | np.ndarray | None = None,
        partition: int | None = None,
        headers: Headers | None = None,
        timestamp: int | None = None,
        avro_schema: Mapping[str, Any] | str | None = None,
        schema_id: int | None = None,
        json_schema: Mapping[str, Any] | str | None = None,
        schema_registry: str | SchemaRegistry | None = None,
        subject: str | None = None,
        subject_name_strategy: SubjectNameStrategy = "topic",
        auto_register: bool = True,
        message: str | None = None,
        proto_file: str | os.PathLike[str] | None = None,
        descriptor_set: bytes | str | os.PathLike[str] | None = None,
        proto_schema: str | None = None,
        timeout: float = 30.0,
    ) -> SendReport:
        if format == "json_schema":
            if json_schema is None:
                raise ConfigError("format='json_schema' needs json_schema (the writer's JSON Schema)")
            schema = schema if schema is not None else json_schema_columns(json_schema)
        proto = _proto_arguments(format, message, proto_file, descriptor_set, proto_schema)
        if schema_registry is not None and schema_id is None:
            # A registry round trip the first time a schema is seen: off the event loop.
            schema_id = await asyncio.to_thread(
                registered_schema_id,
                topic, format, json_schema if format == "json_schema" else avro_schema,
                schema_registry, subject, subject_name_strategy, auto_register,
                proto,
            )  # fmt: skip
        stream, kwargs = _send_arguments(
            data, format, schema, key, partition, headers, timestamp, avro_schema, schema_id, timeout,
            json_schema,
        )  # fmt: skip
        kwargs.update(proto)
        native = self._producer._native
        return await native.send_prepared_async(
            native.prepare_send(topic, stream, _native_format(format), **kwargs)
        )

    async def flush(self, timeout: float = 30.0) -> None:
        """Waits for every queued message (in the default executor: flushing is rare)."""
        await asyncio.get_running_loop().run_in_executor(None, self._producer.flush, timeout)

    async def close(self, timeout: float = 30.0) -> None:
        """Flushes, then releases the librdkafka producer: see :meth:`kafka_ml.Producer.close`."""
        await asyncio.get_running_loop().run_in_executor(None, self._producer.close, timeout)

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
