"""`KafkaDataset`: Kafka topic partitions as a stream of Arrow record batches / NumPy arrays."""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import numpy as np

from . import _native
from ._native import Batch, BatchReader, SchemaRegistry, SendReport
from .exceptions import ClosedError, ConfigError
from .registry import json_schema_columns, latest_schema_text, registry_client

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from .files import ExportResult
    from .metrics import DatasetMetrics
    from .torch import KafkaIterableDataset

__all__ = ["Batch", "DatasetOptions", "DecodeOptions", "KafkaDataset"]

ColumnType = str | tuple[str, int] | np.dtype[Any] | type
PositionSpec = (
    Literal["earliest", "latest", "committed"]
    | _dt.datetime
    | Mapping[tuple[str, int], int]
    | Mapping[str, Mapping[int, int]]
)


class DecodeOptions(TypedDict, total=False):
    """How a read decodes its messages and what it does with bad ones: keyword arguments of
    :class:`KafkaDataset` that :class:`~kafka_ml.inference.InferenceLoop` takes as
    ``**dataset_options`` and passes on as they are. Defined once here for the classes that
    pass them on; tests/test_options.py checks them against ``KafkaDataset``'s signature."""

    format: Literal["tensor", "json", "json_schema", "avro", "protobuf", "raw", "debezium"]
    schema: Mapping[str, ColumnType] | None
    dtype: Any
    shape: int | Sequence[int] | None
    avro_schema: Mapping[str, Any] | str | None
    schema_registry: str | SchemaRegistry | Mapping[int, Mapping[str, Any] | str] | None
    subject: str | None
    json_schema: Mapping[str, Any] | str | None
    message: str | None
    proto_file: str | os.PathLike[str] | None
    descriptor_set: bytes | str | os.PathLike[str] | None
    proto_schema: str | None
    on_error: Literal["error", "skip", "dead_letter"]
    queue_bytes: int
    timeout: float


class DatasetOptions(DecodeOptions, total=False):
    """:class:`DecodeOptions` and the dead-letter topic: what
    :class:`~kafka_ml.torch.KafkaIterableDataset` takes as ``**dataset_options`` (an
    ``InferenceLoop``'s own ``dead_letter_topic`` is where its failed predictions go)."""

    dead_letter_topic: str | None


_STATE_VERSION = 1


def _config(config: Mapping[str, object] | None) -> dict[str, Any]:
    """librdkafka properties as strings; ``oauth_cb`` (a callable) passes through as is."""
    out: dict[str, Any] = {}
    for key, value in (config or {}).items():
        if key == "oauth_cb":
            if not callable(value):
                raise ConfigError(
                    "config 'oauth_cb' must be callable: oauth_cb(config_str) -> (token, expiry)"
                )
            out[key] = value
        elif callable(value):
            raise ConfigError(
                f"config '{key}': kafka-ml takes no callback but 'oauth_cb'; errors are raised as "
                "exceptions and librdkafka's log goes to the 'kafka_ml.librdkafka' logger"
            )
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            out[key] = ",".join(str(v) for v in value)
        else:
            out[key] = str(value)
    return out


def _column_decl(name: str, decl: ColumnType) -> str:
    if isinstance(decl, tuple):
        element, width = decl
        return f"{_dtype_name(element)}[{int(width)}]"
    return _dtype_name(decl)


def _dtype_name(decl: object) -> str:
    if isinstance(decl, str):
        return decl
    return str(np.dtype(decl).name)  # type: ignore[call-overload]


def _position(value: PositionSpec | None, what: str) -> object:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise ConfigError(f"{what}: use a timezone-aware datetime (e.g. datetime.now(timezone.utc))")
        return ("timestamp", int(value.timestamp() * 1000))
    if isinstance(value, Mapping):
        flat: dict[tuple[str, int], int] = {}
        for key, off in value.items():
            if isinstance(key, tuple) and isinstance(off, int):
                flat[(str(key[0]), int(key[1]))] = off
            elif isinstance(off, Mapping):
                for partition, o in off.items():
                    flat[(str(key), int(partition))] = int(o)
            else:
                raise ConfigError(f"{what}: offsets must be {{(topic, partition): offset}}")
        return flat
    raise ConfigError(f"{what}: unsupported position {value!r}")


def descriptor_set_bytes(descriptor_set: bytes | str | os.PathLike[str] | None) -> bytes | None:
    """A ``FileDescriptorSet`` given as bytes or as the path of a file holding it."""
    if descriptor_set is None or isinstance(descriptor_set, bytes):
        return descriptor_set
    with open(descriptor_set, "rb") as f:
        return f.read()


class KafkaDataset:
    """Batches of messages from Kafka topics, decoded in Rust into Arrow columns.

    A bounded read (``end`` given) snapshots its end offsets when the dataset is created: every
    pass (``for batch in dataset``) reads the same messages, and ``len(dataset)`` is known. With
    no ``end`` the dataset streams forever. With a ``group.id`` in ``config``, offsets are
    committed only for batches the iteration has handed out.

    Args:
        topics: a topic name or list of names (every partition is read).
        config: librdkafka properties, e.g. ``{"bootstrap.servers": "localhost:9092"}``.
        partitions: instead of ``topics``, exact ``[(topic, partition), ...]``.
        format: ``"tensor"``, ``"json"``, ``"json_schema"`` (JSON in the Confluent wire
            format), ``"avro"``, ``"protobuf"``, ``"raw"`` or ``"debezium"`` (Debezium
            change events: the row image plus ``__op``, ``__source_ts_ms`` and ``__lsn``;
            tombstones give no row and are counted in ``stats["tombstones"]``).
        schema: for ``json``: ``{"id": "int64", "x": ("float32", 16), "note": "string?"}``
            (``?`` marks a nullable column; ``"float32[]"`` a variable-length list); for
            ``debezium``: the table's columns, the same way.
        dtype, shape: for ``tensor``: element type and per-message shape.
        avro_schema: for ``avro``: the (reader) record schema, as a dict or JSON string.
        schema_registry: for Confluent-framed Avro (magic byte 0 + schema id): a registry URL
            or :class:`~kafka_ml.SchemaRegistry` — each writer schema is fetched by id the first
            time it is seen and values resolve to the reader schema (``avro_schema``, or else
            the subject's latest version) — or, offline, ``{schema_id: writer_schema}``.
        subject: the reader schema's subject when ``avro_schema`` / ``json_schema`` (or, for
            ``protobuf``, a schema file) is not given (default ``<topic>-value``).
        json_schema: for ``json_schema`` (JSON objects in the Confluent wire format): the
            object JSON Schema that gives the columns (see
            :func:`kafka_ml.registry.json_schema_columns`); by default the subject's latest.
            ``schema=`` declares the columns explicitly instead.
        message, proto_file, descriptor_set, proto_schema: for ``protobuf``: the message (full
            name, e.g. ``"pkg.Reading"``; default: the first in the file) of a ``.proto`` file,
            a ``FileDescriptorSet`` (bytes or a path) or ``.proto`` text. Without a registry
            values are plain Protobuf of that message; with ``schema_registry`` they are
            Confluent-framed (schema id and message indexes), decoded with their writer schema
            and matched to the reader message's columns by field name — the reader message
            being the subject's latest schema when no file is given.
        metadata: extra columns among ``topic, partition, offset, timestamp, key, headers``.
        batch_size: rows per batch at most; ``max_wait``: seconds before a partial batch is
            handed out anyway (the latency bound). ``max_wait=0``: a batch is handed out as
            soon as no more messages are waiting in the consumer (latency first; under load
            batches still fill up).
        start, end: ``"earliest"``, ``"latest"``, ``"committed"`` (start only, with a group),
            a timezone-aware ``datetime``, or ``{(topic, partition): offset}``.
        on_error: ``"error"`` (raise with topic/partition/offset), ``"skip"`` (counted in
            ``stats``) or ``"dead_letter"`` (to ``dead_letter_topic``, acknowledged before any
            later offset is handed out).
        queue_bytes: bound of decoded batches waiting to be taken (memory stays flat).
        timeout: seconds for metadata, watermark and commit round trips.
        commit: with a ``group.id``, commit what was handed out (set ``False`` when the offsets
            go to the group inside a producer transaction, see
            :meth:`Producer.send_offsets_to_transaction`).
        metrics: ``True`` (prometheus-client's default registry) or a ``CollectorRegistry``:
            messages, batches and decoded bytes handed out, decode errors and consumer lag per
            partition, labelled ``dataset=metrics_name`` (default: the topics); see
            :mod:`kafka_ml.metrics`. Needs ``pip install 'kafka-ml[metrics]'``.
    """

    def __init__(
        self,
        topics: str | Sequence[str] | None = None,
        config: Mapping[str, object] | None = None,
        *,
        partitions: Sequence[tuple[str, int]] | None = None,
        format: Literal["tensor", "json", "json_schema", "avro", "protobuf", "raw", "debezium"] = "raw",
        schema: Mapping[str, ColumnType] | None = None,
        dtype: Any = None,
        shape: int | Sequence[int] | None = None,
        avro_schema: Mapping[str, Any] | str | None = None,
        schema_registry: str | SchemaRegistry | Mapping[int, Mapping[str, Any] | str] | None = None,
        subject: str | None = None,
        json_schema: Mapping[str, Any] | str | None = None,
        message: str | None = None,
        proto_file: str | os.PathLike[str] | None = None,
        descriptor_set: bytes | str | os.PathLike[str] | None = None,
        proto_schema: str | None = None,
        metadata: Sequence[str] = (),
        batch_size: int = 1024,
        max_wait: float = 0.1,
        start: PositionSpec | None = None,
        end: PositionSpec | None = None,
        on_error: Literal["error", "skip", "dead_letter"] = "error",
        dead_letter_topic: str | None = None,
        queue_bytes: int = 64 << 20,
        timeout: float = 10.0,
        commit: bool = True,
        metrics: bool | CollectorRegistry = False,
        metrics_name: str | None = None,
    ) -> None:
        registry = None
        if metrics is not False:
            from .metrics import metrics_registry

            # Resolved before anything connects: a missing prometheus-client fails at once.
            registry = metrics_registry(metrics)
        # Kept to build the same read elsewhere (`torch()`).
        self._arguments: dict[str, Any] = {
            "topics": topics, "config": dict(config or {}), "partitions": partitions, "format": format,
            "schema": schema, "dtype": dtype, "shape": shape, "avro_schema": avro_schema,
            "schema_registry": schema_registry, "subject": subject, "message": message,
            "proto_file": proto_file, "descriptor_set": descriptor_set, "proto_schema": proto_schema,
            "metadata": list(metadata),
            "batch_size": batch_size, "max_wait": max_wait, "start": start, "end": end, "on_error": on_error,
            "dead_letter_topic": dead_letter_topic, "queue_bytes": queue_bytes, "timeout": timeout,
        }  # fmt: skip
        if isinstance(topics, str):
            topics = [topics]
        if format == "json_schema" and schema is None:
            schema = self._json_schema_columns(topics, partitions, json_schema, schema_registry, subject)
            # The columns as resolved now: a read built again from these arguments (`torch()`,
            # an export) decodes into the same columns without asking the registry again.
            self._arguments["schema"] = dict(schema)
        if json_schema is not None:
            self._arguments["json_schema"] = json_schema
        columns = [(n, _column_decl(n, d)) for n, d in schema.items()] if schema is not None else None
        if isinstance(shape, int):
            shape = [shape]

        def as_json(s: Mapping[str, Any] | str) -> str:
            return s if isinstance(s, str) else json.dumps(s)

        self._native = _native.KafkaDataset(
            _config(config),
            topics=list(topics) if topics is not None else None,
            partitions=[(str(t), int(p)) for t, p in partitions] if partitions is not None else None,
            format=format,
            columns=columns,
            dtype=np.dtype(dtype).name if dtype is not None else None,
            shape=list(shape) if shape is not None else None,
            avro_schema=as_json(avro_schema) if avro_schema is not None else None,
            registry_schemas={int(k): as_json(v) for k, v in schema_registry.items()}
            if isinstance(schema_registry, Mapping)
            else None,
            registry=registry_client(schema_registry),
            subject=subject,
            proto_schema=proto_schema,
            proto_file=os.fspath(proto_file) if proto_file is not None else None,
            descriptor_set=descriptor_set_bytes(descriptor_set),
            message=message,
            metadata=list(metadata),
            batch_size=batch_size,
            max_wait=max_wait,
            start=_position(start, "start"),
            end=_position(end, "end"),
            on_error=on_error,
            dead_letter_topic=dead_letter_topic,
            queue_bytes=queue_bytes,
            timeout=timeout,
            commit=commit,
        )
        self._reader: BatchReader | None = None
        self._resume: dict[tuple[str, int], int] | None = None
        self._closed = False
        self._metrics: DatasetMetrics | None = None
        if registry is not None:
            from .metrics import DatasetMetrics

            names = topics if topics is not None else sorted({t for t, _ in partitions or []})
            self._metrics = DatasetMetrics(self, registry, metrics_name or ",".join(names))

    @staticmethod
    def _json_schema_columns(
        topics: str | Sequence[str] | None,
        partitions: Sequence[tuple[str, int]] | None,
        json_schema: Mapping[str, Any] | str | None,
        schema_registry: object,
        subject: str | None,
    ) -> dict[str, ColumnType]:
        if json_schema is None:
            client = registry_client(schema_registry)
            if client is None:
                raise ConfigError("format='json_schema' needs json_schema=, schema=, or a schema_registry")
            names = {topics} if isinstance(topics, str) else set(topics or [t for t, _ in partitions or []])
            if subject is None and len(names) != 1:
                raise ConfigError("format='json_schema' over several topics: name the subject (subject=)")
            json_schema = latest_schema_text(client, subject or f"{names.pop()}-value", "JSON")
        return dict(json_schema_columns(json_schema))

    # -- iteration ---------------------------------------------------------------------------

    def _start_pass(self) -> BatchReader:
        if self._closed:
            raise ClosedError("KafkaDataset is closed")
        if self._reader is not None:
            if self._metrics is not None:
                self._metrics.end_pass(self._reader)
            self._reader.close()
        self._reader = self._native.reader(self._resume)
        self._resume = None
        return self._reader

    def __iter__(self) -> Iterator[Batch]:
        """Starts a pass (an epoch of a bounded read) and yields its batches."""
        reader = self._start_pass()
        return reader if self._metrics is None else self._metrics.iterate(reader)

    def __aiter__(self) -> AsyncIterator[Batch]:
        """``async for batch in dataset``: waits for batches without blocking the event loop."""
        reader = self._start_pass()
        return reader if self._metrics is None else self._metrics.aiterate(reader)

    def poll(self, timeout: float, until_delivered: Sequence[SendReport] | None = None) -> Batch | None:
        """The next batch of the current pass (starting one if none is running), or ``None`` if
        none arrives within ``timeout`` seconds; ``StopIteration`` when a bounded read is done.

        For loops that must notice other events (a stop request, a deadline) while waiting.
        With ``until_delivered`` (:class:`~kafka_ml.SendReport` objects), ``None`` also as soon
        as all of them are reported: a loop that produces what it consumes waits for its next
        input or its results' acknowledgements, whichever comes first, in one call."""
        reader = self._reader if self._reader is not None else self._start_pass()
        reports = None if until_delivered is None else list(until_delivered)
        batch = reader.poll(timeout, reports)
        if self._metrics is not None and batch is not None:
            self._metrics.count(batch)
        return batch

    def __len__(self) -> int:
        """Number of messages (offsets) in a bounded read."""
        n = self._native.num_messages()
        if n is None:
            raise TypeError("an unbounded KafkaDataset (no end) has no length")
        return n

    def torch(self, **options: Any) -> KafkaIterableDataset:
        """This read as a PyTorch ``IterableDataset`` sharded over DataLoader workers and DDP ranks
        (:class:`kafka_ml.torch.KafkaIterableDataset`; ``options`` are its own: ``shuffle_buffer``,
        ``seed``, ``drop_last``, ``rank``, ``world_size``, ``num_workers``, or overrides)."""
        from .torch import KafkaIterableDataset

        arguments = {k: v for k, v in self._arguments.items() if k != "topics"}
        return KafkaIterableDataset(self._arguments["topics"], **{**arguments, **options})

    # -- files -------------------------------------------------------------------------------

    def to_parquet(self, path: str | os.PathLike[str], **options: Any) -> ExportResult:
        """Writes this bounded read to a Parquet file (or, with ``per_partition=True``, a
        directory of one file per partition) whose metadata records the topic, each partition's
        ``[start, end)`` offsets and row count, the format and the schema ids; see
        :func:`kafka_ml.files.export` for ``options`` (``compression``, ``batch_size``,
        ``progress``, ...). Needs pyarrow."""
        from .files import export

        return export(self, path, file_format="parquet", **options)

    def to_csv(self, path: str | os.PathLike[str], **options: Any) -> ExportResult:
        """Writes this bounded read to a CSV file (lists as JSON text, bytes as base64); see
        :func:`kafka_ml.files.export`."""
        from .files import export

        return export(self, path, file_format="csv", **options)

    def to_jsonl(self, path: str | os.PathLike[str], **options: Any) -> ExportResult:
        """Writes this bounded read to a JSON-lines file (one object per record); see
        :func:`kafka_ml.files.export`."""
        from .files import export

        return export(self, path, file_format="jsonl", **options)

    # -- metadata ----------------------------------------------------------------------------

    @property
    def columns(self) -> list[str]:
        return self._native.column_names()

    @property
    def assignment(self) -> list[tuple[str, int]]:
        """The partitions the current pass owns: with a ``group.id`` and no ``end``, the group's
        current assignment to this member (empty until the group has assigned partitions)."""
        return self._reader.assignment() if self._reader is not None else []

    @property
    def plan(self) -> list[tuple[str, int, int, int | None]] | None:
        """``[(topic, partition, start, end)]``; ``None`` when a consumer group assigns partitions."""
        return self._native.plan()

    def __arrow_c_schema__(self) -> object:
        return self._native.__arrow_c_schema__()

    @property
    def stats(self) -> dict[str, int]:
        """Counters of the current pass: ``skipped``, ``dead_lettered``, ``queued_bytes``, and
        ``tombstones`` (null-valued messages that the ``debezium`` format reads as no row)."""
        if self._reader is None:
            return {"skipped": 0, "dead_lettered": 0, "queued_bytes": 0, "tombstones": 0}
        skipped, dead_lettered, queued, tombstones = self._reader.stats()
        return {
            "skipped": skipped,
            "dead_lettered": dead_lettered,
            "queued_bytes": queued,
            "tombstones": tombstones,
        }

    # -- offsets -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The exact next offset of every partition, after everything handed out so far."""
        if self._reader is not None:
            positions = self._reader.positions()
        elif self._resume is not None:
            positions = dict(self._resume)
        else:
            positions = {(t, p): start for t, p, start, _ in (self.plan or [])}
        offsets: dict[str, dict[str, int]] = {}
        for (topic, partition), offset in sorted(positions.items()):
            offsets.setdefault(topic, {})[str(partition)] = offset
        return {"version": _STATE_VERSION, "offsets": offsets}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resumes the next pass exactly where ``state`` (from :meth:`state_dict`) left off."""
        if state.get("version") != _STATE_VERSION:
            raise ConfigError(f"unsupported state_dict version {state.get('version')!r}")
        self._resume = {
            (topic, int(partition)): int(offset)
            for topic, parts in state["offsets"].items()
            for partition, offset in parts.items()
        }

    def commit(
        self, offsets: Mapping[tuple[str, int], int] | None = None, *, asynchronous: bool = False
    ) -> None:
        """Commits (with a ``group.id``) the offsets of every batch handed out so far.

        With ``offsets`` (e.g. ``batch.offsets`` once the batch's results are safely written)
        it commits exactly those, for the partitions this member still owns, also with
        ``commit=False``: at-least-once processing that commits only what it has finished.
        ``asynchronous=True`` (with ``offsets``) returns as soon as the commit is queued
        instead of after the group coordinator's answer; a failure is logged (the
        ``kafka_ml`` logger), and the next commit covers it.
        """
        if offsets is not None:
            if self._reader is None:
                raise ClosedError("the dataset has not been iterated yet: there is nothing to commit")
            self._reader.commit_offsets(
                {(str(t), int(p)): int(o) for (t, p), o in offsets.items()}, asynchronous
            )
        elif self._reader is not None:
            self._reader.commit()

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stops the background consumer and commits what was handed out. Idempotent."""
        if self._reader is not None:
            if self._metrics is not None:
                self._metrics.end_pass(self._reader)
            self._reader.close()
        if self._metrics is not None:
            self._metrics.close()  # a closed dataset is no longer reported
            self._metrics = None
        self._closed = True

    def __enter__(self) -> KafkaDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
