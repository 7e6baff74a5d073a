"""Typed stubs of the native module (checked against it with mypy's stubtest)."""

import os
from collections.abc import Awaitable, Callable
from typing import Any, final

import numpy as np

# A config dict: librdkafka properties as strings, plus an optional "oauth_cb" token callback.
_ClientConfig = dict[str, str | Callable[[str], tuple[Any, ...]]]

__all__ = [
    "HEADER_ERROR",
    "HEADER_MODEL_VERSION",
    "HEADER_SOURCE_OFFSET",
    "HEADER_SOURCE_PARTITION",
    "HEADER_SOURCE_TOPIC",
    "ArrowBufferOwner",
    "Batch",
    "BatchReader",
    "EmbeddedCluster",
    "KafkaDataset",
    "PreparedSend",
    "Producer",
    "SchemaRegistry",
    "SendReport",
    "__version__",
    "commit_offsets",
    "committed_offsets",
    "create_topic",
    "is_consumer_only_property",
    "librdkafka_features",
    "librdkafka_version",
    "protobuf_message_name",
    "secret_properties",
    "watermarks",
]

__version__: str
librdkafka_version: str
librdkafka_features: list[str]
secret_properties: list[str]
HEADER_ERROR: str
HEADER_SOURCE_TOPIC: str
HEADER_SOURCE_PARTITION: str
HEADER_SOURCE_OFFSET: str
HEADER_MODEL_VERSION: str

def is_consumer_only_property(key: str) -> bool: ...
def commit_offsets(
    config: _ClientConfig, offsets: dict[tuple[str, int], int], timeout: float = 30.0
) -> None: ...
def committed_offsets(
    config: _ClientConfig, partitions: list[tuple[str, int]], timeout: float = 30.0
) -> dict[tuple[str, int], int | None]: ...
def watermarks(
    config: _ClientConfig, partitions: list[tuple[str, int]], timeout: float = 10.0
) -> dict[tuple[str, int], tuple[int, int]]: ...

@final
class ArrowBufferOwner:
    @property
    def address(self) -> int: ...
    def __len__(self) -> int: ...

@final
class Batch:
    @property
    def num_rows(self) -> int: ...
    def __len__(self) -> int: ...
    @property
    def column_names(self) -> list[str]: ...
    @property
    def offsets(self) -> dict[tuple[str, int], int]: ...
    @property
    def nbytes(self) -> int: ...
    def __getitem__(self, key: str, /) -> Any: ...
    def to_numpy(self, columns: list[str] | None = None) -> dict[str, Any]: ...
    def __arrow_c_array__(self, requested_schema: object | None = None) -> tuple[object, object]: ...
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...
    def __arrow_c_schema__(self) -> object: ...

@final
class BatchReader:
    def __iter__(self) -> BatchReader: ...
    def __next__(self) -> Batch: ...
    def poll(self, timeout: float, until_delivered: list[SendReport] | None = None) -> Batch | None: ...
    def __aiter__(self) -> BatchReader: ...
    def __anext__(self) -> Any: ...
    def positions(self) -> dict[tuple[str, int], int]: ...
    def assignment(self) -> list[tuple[str, int]]: ...
    def stats(self) -> tuple[int, int, int, int]: ...
    def commit(self) -> None: ...
    def commit_offsets(self, offsets: dict[tuple[str, int], int], asynchronous: bool = False) -> None: ...
    def lag(self) -> dict[tuple[str, int], int]: ...
    def close(self) -> None: ...

@final
class KafkaDataset:
    def __new__(
        cls,
        config: _ClientConfig,
        *,
        topics: list[str] | None = None,
        partitions: list[tuple[str, int]] | None = None,
        format: str = "raw",
        columns: list[tuple[str, str]] | None = None,
        dtype: str | None = None,
        shape: list[int] | None = None,
        avro_schema: str | None = None,
        registry_schemas: dict[int, str] | None = None,
        registry: SchemaRegistry | None = None,
        subject: str | None = None,
        proto_schema: str | None = None,
        proto_file: str | None = None,
        descriptor_set: bytes | None = None,
        message: str | None = None,
        metadata: list[str] = ...,
        batch_size: int = 1024,
        max_wait: float = 0.1,
        start: object | None = None,
        end: object | None = None,
        on_error: str = "error",
        dead_letter_topic: str | None = None,
        queue_bytes: int = ...,
        timeout: float = 10.0,
        commit: bool = True,
    ) -> KafkaDataset: ...
    def num_messages(self) -> int | None: ...
    def plan(self) -> list[tuple[str, int, int, int | None]] | None: ...
    def is_bounded(self) -> bool: ...
    def column_names(self) -> list[str]: ...
    def __arrow_c_schema__(self) -> object: ...
    def reader(self, resume: dict[tuple[str, int], int] | None = None) -> BatchReader: ...

@final
class Producer:
    def __new__(cls, config: _ClientConfig) -> Producer: ...
    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes | None]] | None = None,
        timestamp: int | None = None,
    ) -> SendReport: ...
    def send_rows(
        self,
        topic: str,
        rows: np.ndarray[tuple[int], np.dtype[np.uint8]],
        row_bytes: int,
        partition: int | None = None,
    ) -> SendReport: ...
    def prepare_send(
        self,
        topic: str,
        data: object,
        format: str,
        *,
        columns: list[tuple[str, str]] | None = None,
        avro_schema: str | None = None,
        schema_id: int | None = None,
        proto_schema: str | None = None,
        proto_file: str | None = None,
        descriptor_set: bytes | None = None,
        message: str | None = None,
        key_column: str | None = None,
        keys: object | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes | None]] | None = None,
        row_headers: list[tuple[str, object]] | None = None,
        timestamp: int | None = None,
        timeout: float = 30.0,
    ) -> PreparedSend: ...
    def send_prepared(self, prepared: PreparedSend, rows: int | None = None) -> SendReport: ...
    def send_prepared_async(self, prepared: PreparedSend) -> Awaitable[SendReport]: ...
    def flush(self, timeout: float = 30.0) -> None: ...
    def close(self) -> None: ...
    def init_transactions(self, timeout: float = 30.0) -> None: ...
    def begin_transaction(self) -> None: ...
    def commit_transaction(self, timeout: float = 30.0) -> None: ...
    def abort_transaction(self, timeout: float = 30.0) -> None: ...
    def send_offsets_to_transaction(
        self,
        reader: BatchReader,
        timeout: float = 30.0,
        offsets: dict[tuple[str, int], int] | None = None,
    ) -> None: ...
    @property
    def delivered(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def sent(self) -> int: ...

@final
class PreparedSend: ...

@final
class SendReport:
    @property
    def rows(self) -> int: ...
    @property
    def delivered(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def done(self) -> bool: ...
    @property
    def failures(self) -> list[tuple[int, str]]: ...
    def join(self, timeout: float) -> bool: ...
    def wait(self, timeout: float | None = None) -> SendReport: ...

@final
class EmbeddedCluster:
    def __new__(cls, brokers: int = 1) -> EmbeddedCluster: ...
    @property
    def bootstrap_servers(self) -> str: ...
    def create_topic(self, name: str, partitions: int = 1, replication_factor: int = 1) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> EmbeddedCluster: ...
    def __exit__(self, exc_type: object, exc: object, tb: object) -> None: ...

def create_topic(
    config: _ClientConfig,
    name: str,
    partitions: int = 1,
    replication: int = 1,
    topic_config: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> bool: ...

@final
class SchemaRegistry:
    """A Schema Registry client (Confluent's REST API): writer schemas by id (cached), subject
    versions, lookup and registration. ``auth`` is ``(user, secret)`` or a bearer token;
    ``verify`` is ``True``, ``False`` or a CA file path. Credentials are never shown."""

    def __new__(
        cls,
        url: str,
        *,
        auth: tuple[str, str] | str | None = None,
        verify: bool | str | os.PathLike[str] | None = None,
        timeout: float = 10.0,
    ) -> SchemaRegistry: ...
    @property
    def url(self) -> str: ...
    def schema(self, schema_id: int) -> dict[str, Any]: ...
    def subject_version(self, subject: str, version: int | None = None) -> dict[str, Any]: ...
    def register(
        self, subject: str, schema: str, schema_type: str = "AVRO", *, auto_register: bool = True
    ) -> int: ...
    def register_protobuf(
        self,
        subject: str,
        *,
        proto_schema: str | None = None,
        proto_file: str | None = None,
        descriptor_set: bytes | None = None,
        message: str | None = None,
        auto_register: bool = True,
    ) -> int: ...

def protobuf_message_name(
    *,
    proto_schema: str | None = None,
    proto_file: str | None = None,
    descriptor_set: bytes | None = None,
    message: str | None = None,
) -> str: ...
