"""`Producer`: publishes messages and NumPy rows, every message accounted delivered or failed."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from . import _native
from ._native import SendReport
from .connect_json import envelope_table
from .dataset import ColumnType, KafkaDataset, _column_decl, _config, descriptor_set_bytes
from .exceptions import ClosedError, ConfigError, EncodeError, KafkaMLError
from .json_schema_rules import check_rows
from .registry import SchemaRegistry, SubjectNameStrategy, json_schema_columns, registry_client, subject_name

__all__ = ["Headers", "Producer", "SendReport"]

#: Headers of a ``send``: ``[(name, value), ...]`` on every row, or ``{name: one value per row}``
#: (bytes, strings or integers, ``None`` for a null value).
Headers = Sequence[tuple[str, bytes | None]] | Mapping[str, Sequence[Any] | np.ndarray]


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
    ) -> SendReport:
        """Queues one message; the report tells when it is delivered."""
        return self._native.produce(
            topic, value, key, partition, list(headers) if headers else None, timestamp
        )

    def send(
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
        progress: bool = False,
    ) -> SendReport:
        """Queues one message per row of ``data``; returns its :class:`SendReport`.

        ``data`` is an N-D NumPy array (``tensor``: one row per message, any trailing shape), a
        dict of equal-length arrays (2-D arrays become fixed-length list columns), a pyarrow
        Table or RecordBatch, or anything exporting the Arrow PyCapsule interface (polars,
        pandas). Rows are encoded in Rust as ``tensor``, ``json``, ``avro`` (with ``schema_id``
        in the Confluent wire format) or ``raw`` (the ``value`` column's bytes).

        ``schema`` declares the columns as ``KafkaDataset`` reads them (``{"id": "int64",
        "x": ("float32", 16)}``): the data is checked and cast to it first — a missing column, a
        null or NaN in a non-nullable integer column, a fraction bound for an integer, a list
        row of the wrong length raise :class:`~kafka_ml.EncodeError` naming column and row.
        Every row is encoded and checked (size against ``message.max.bytes``, the topic's
        existence) before the first is queued: a failed ``send`` sends nothing.

        ``connect_json`` writes each row in Kafka Connect's JSON envelope, ``{"schema": ...,
        "payload": {...}}``, which Connect's ``JsonConverter`` (``schemas.enable=true``) reads as
        a typed record, as sink connectors such as a JDBC sink need: the Connect schema comes
        from ``schema`` (required; see :mod:`kafka_ml.connect_json`).

        ``json_schema`` writes JSON objects in the Confluent wire format of JSON Schema: the
        columns come from ``json_schema`` (or ``schema``), which is registered like an Avro
        schema; it needs a ``schema_registry``. Its keywords (ranges, ``multipleOf``, lengths,
        ``pattern``, ``enum``, ``const``, array sizes; see :mod:`kafka_ml.json_schema_rules`)
        are checked on every row before anything is sent.

        With ``schema_registry`` (a URL or :class:`~kafka_ml.SchemaRegistry`), ``avro`` values
        are framed with the id of ``avro_schema`` under its subject (``subject``, or the
        ``subject_name_strategy``'s: ``<topic>-value`` by default): the schema is registered
        first (``auto_register=False`` only looks it up), and a schema the subject's
        compatibility rule refuses raises :class:`~kafka_ml.SchemaRegistryError` before
        anything is sent.

        ``protobuf`` rows become ``message`` (a full name; default: the file's first) of a
        ``proto_file``, a ``descriptor_set`` (bytes or a path) or ``proto_schema`` (``.proto``
        text): each column fills the field of its name (lists → ``repeated``, structs → nested
        messages, strings → enums by value name, timestamps → ``google.protobuf.Timestamp``);
        fields without a column stay unset. With ``schema_registry`` the ``.proto`` is
        registered (schema type ``PROTOBUF``) and values are framed with its id and the
        message's indexes.

        ``key`` is a column name (partitioning then follows the key) or one key per row.
        ``headers`` is a list of ``(name, value)`` for every row, or ``{name: values}`` with one
        value per row (bytes, text or integers; e.g. each result's lineage).

        The returned report counts deliveries as they are reported; ``report.wait()`` blocks
        until all are in and raises :class:`~kafka_ml.DeliveryError` naming the failed rows.
        With ``progress=True`` (needs tqdm) a progress bar follows the deliveries and ``send``
        returns when they are all in.
        """
        if format == "tensor" and isinstance(data, np.ndarray) and schema is None and key is None:
            report = self._send_tensor_rows(topic, data, partition)
        else:
            if format == "json_schema":
                if json_schema is None:
                    raise ConfigError("format='json_schema' needs json_schema (the writer's JSON Schema)")
                schema = schema if schema is not None else json_schema_columns(json_schema)
            proto = _proto_arguments(format, message, proto_file, descriptor_set, proto_schema)
            if schema_registry is not None and schema_id is None:
                schema_id = registered_schema_id(
                    topic, format, json_schema if format == "json_schema" else avro_schema,
                    schema_registry, subject, subject_name_strategy, auto_register,
                    proto,
                )  # fmt: skip
            stream, kwargs = _send_arguments(
                data, format, schema, key, partition, headers, timestamp, avro_schema, schema_id, timeout,
                json_schema,
            )  # fmt: skip
            kwargs.update(proto)
            # The row count lets a send that cannot wait run without a helper thread.
            rows = stream.num_rows if isinstance(stream, _pyarrow().Table) else None
            report = self._native.send_prepared(
                self._native.prepare_send(topic, stream, _native_format(format), **kwargs), rows
            )
        if progress:
            _follow(report, topic)
        return report

    def _send_tensor_rows(self, topic: str, data: np.ndarray, partition: int | None) -> SendReport:
        array = np.asarray(data)
        if array.ndim < 2 or array.shape[0] == 0:
            raise EncodeError(f"expected an array of rows (at least 2-D, non-empty), got shape {array.shape}")
        if array.dtype.kind not in "iuf":
            raise EncodeError(f"tensor rows must be numeric, got dtype {array.dtype}")
        little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        row_bytes = little.strides[0]
        return self._native.send_rows(topic, little.reshape(-1).view(np.uint8), row_bytes, partition)

    # -- transactions (needs "transactional.id" in the config) -------------------------------

    def init_transactions(self, timeout: float = 30.0) -> None:
        """Registers the ``transactional.id``, fencing older producers that used it."""
        self._native.init_transactions(timeout)

    def begin_transaction(self) -> None:
        self._native.begin_transaction()

    def commit_transaction(self, timeout: float = 30.0) -> None:
        """Delivers what was sent in the transaction and commits it, with its offsets, atomically."""
        self._native.commit_transaction(timeout)

    def abort_transaction(self, timeout: float = 30.0) -> None:
        """Discards what was sent in the transaction: ``read_committed`` readers never see it."""
        self._native.abort_transaction(timeout)

    def send_offsets_to_transaction(
        self,
        dataset: KafkaDataset,
        timeout: float = 30.0,
        offsets: Mapping[tuple[str, int], int] | None = None,
    ) -> None:
        """Commits, inside the open transaction, the offsets of every batch ``dataset`` has handed
        out, to its consumer group (create it with ``commit=False``): input consumed and output
        produced become visible together or not at all (exactly-once). ``offsets`` (e.g. the
        ``batch.offsets`` of the batches whose results the transaction holds) commits exactly
        those instead, when later batches are handed out but not finished."""
        reader = dataset._reader
        if reader is None:
            raise ConfigError("the dataset has not been iterated yet: there are no offsets to send")
        exact = None if offsets is None else {(str(t), int(p)): int(o) for (t, p), o in offsets.items()}
        self._native.send_offsets_to_transaction(reader, timeout, exact)

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
        """Flushes what is queued (up to ``timeout`` seconds), then releases the librdkafka
        producer: its connections and threads, also for the :class:`SendReport` objects of its
        sends (they keep their counts). What the flush could not deliver is purged and reported
        failed, and the flush's error raised. Later calls raise :class:`ClosedError`; closing
        again does nothing."""
        try:
            self.flush(timeout)
        except ClosedError:
            pass
        finally:
            self._native.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        # The block already failed: flush what can be delivered, but let the block's own
        # exception propagate rather than one about the messages it left undelivered.
        with contextlib.suppress(KafkaMLError):
            self.close()


def _follow(report: SendReport, topic: str) -> None:
    """A tqdm bar of `report`'s deliveries until every row is reported."""
    try:
        from tqdm.auto import tqdm
    except ImportError as e:
        raise ImportError("progress=True needs tqdm: pip install tqdm") from e
    with tqdm(total=report.rows, unit="msg", desc=f"send {topic}") as bar:
        while not report.done:
            report.join(0.1)
            bar.update(report.delivered + report.failed - bar.n)
        bar.update(report.delivered + report.failed - bar.n)
    report.wait()


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as e:  # pragma: no cover - a broken install
        raise ImportError("sending tables needs pyarrow (a kafka-ml dependency): pip install pyarrow") from e
    return pyarrow


def _column(pa: Any, name: str, values: Any) -> Any:
    """One input column as an Arrow array; 2-D NumPy arrays become fixed-size lists."""
    array = np.asarray(values) if not hasattr(values, "__arrow_c_array__") else values
    if isinstance(array, np.ndarray):
        if array.dtype == object:
            try:
                return pa.array(array)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                raise EncodeError(f"column '{name}': objects that cannot be encoded ({e})") from e
        if array.ndim >= 2:
            width = int(np.prod(array.shape[1:]))
            flat = pa.array(np.ascontiguousarray(array).reshape(-1))
            return pa.FixedSizeListArray.from_arrays(flat, width)
    return pa.array(array)


def _arrow_stream(data: Any, format: str) -> Any:
    """`data` as an object exporting `__arrow_c_stream__`."""
    pa = _pyarrow()
    if isinstance(data, np.ndarray):
        if format != "tensor":
            raise EncodeError(f"format={format!r} needs named columns: pass a dict or a table, not an array")
        return pa.table({"value": _column(pa, "value", data)})
    if isinstance(data, Mapping):
        return pa.table({str(k): _column(pa, str(k), v) for k, v in data.items()})
    if hasattr(data, "__arrow_c_stream__"):
        return data
    if hasattr(data, "__arrow_c_array__"):
        return pa.table(pa.record_batch(data))
    raise EncodeError(
        f"cannot send {type(data).__name__}: expected a NumPy array, a dict of arrays, or an Arrow table"
    )


def registered_schema_id(
    topic: str,
    format: str,
    schema: Mapping[str, Any] | str | None,
    schema_registry: str | SchemaRegistry,
    subject: str | None,
    strategy: SubjectNameStrategy,
    auto_register: bool,
    proto: Mapping[str, Any] | None = None,
) -> int:
    """The registry id that frames a send's values (looked up or registered; cached):
    ``schema`` is the ``avro`` writer schema or the ``json_schema`` JSON Schema; ``proto`` the
    ``protobuf`` schema arguments."""
    if format == "protobuf":
        client = registry_client(schema_registry)
        assert client is not None
        full_name = _native.protobuf_message_name(**(proto or {}))
        if subject is None:
            subject = {
                "topic": f"{topic}-value",
                "record": full_name,
                "topic_record": f"{topic}-{full_name}",
            }[strategy]
        # The message's file, and first every file it imports, each under its own subject.
        return client.register_protobuf(subject, auto_register=auto_register, **(proto or {}))
    kinds = {"avro": ("AVRO", "avro_schema"), "json_schema": ("JSON", "json_schema")}
    if format not in kinds:
        raise ConfigError(
            f"schema_registry is for format='avro', 'json_schema' or 'protobuf', not {format!r}"
        )
    schema_type, argument = kinds[format]
    if schema is None:
        raise ConfigError(f"format={format!r} with a schema_registry needs {argument} (the writer schema)")
    client = registry_client(schema_registry)
    assert client is not None
    text = schema if isinstance(schema, str) else json.dumps(schema)
    if subject is None:
        if format == "json_schema" and strategy != "topic":
            raise ConfigError("format='json_schema' names its subject by topic (or give subject=)")
        subject = subject_name(topic, strategy, schema)
    return client.register(subject, text, schema_type, auto_register=auto_register)


def _proto_arguments(
    format: str,
    message: str | None,
    proto_file: str | os.PathLike[str] | None,
    descriptor_set: bytes | str | os.PathLike[str] | None,
    proto_schema: str | None,
) -> dict[str, Any]:
    """The Protobuf schema arguments of a send in the native layer's terms (none for other formats)."""
    given = proto_file is not None or descriptor_set is not None or proto_schema is not None
    if format != "protobuf":
        if given or message is not None:
            raise ConfigError(
                "message, proto_file, descriptor_set and proto_schema are for format='protobuf'"
            )
        return {}
    return {
        "proto_schema": proto_schema,
        "proto_file": os.fspath(proto_file) if proto_file is not None else None,
        "descriptor_set": descriptor_set_bytes(descriptor_set),
        "message": message,
    }


def _native_format(format: str) -> str:
    """The native layer's format: ``connect_json`` arrives there as JSON of its envelope."""
    return "json" if format == "connect_json" else format


def _send_arguments(
    data: Any,
    format: str,
    schema: Mapping[str, ColumnType] | None,
    key: str | Sequence[Any] | np.ndarray | None,
    partition: int | None,
    headers: Headers | None,
    timestamp: int | None,
    avro_schema: Mapping[str, Any] | str | None,
    schema_id: int | None,
    timeout: float,
    json_schema: Mapping[str, Any] | str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """`send`'s arguments in the native layer's terms (shared by the sync and async producer)."""
    if avro_schema is not None and not isinstance(avro_schema, str):
        avro_schema = json.dumps(avro_schema)
    stream = _arrow_stream(data, format)
    if format == "json_schema" and json_schema is not None:
        # The schema's keywords (ranges, patterns, enums, ...) are checked on the whole table
        # before the first row is encoded, as confluent's serializer checks each value.
        table = _pyarrow().table(stream)
        check_rows(table, json.loads(json_schema) if isinstance(json_schema, str) else json_schema)
        stream = table
    keys = _key_array(key) if key is not None and not isinstance(key, str) else None
    if format == "connect_json":
        if schema is None:
            raise ConfigError(
                "format='connect_json' needs a schema: the declared columns become the Connect schema"
            )
        table = _pyarrow().table(stream)
        if isinstance(key, str):  # the envelope replaces the columns: the key column goes as keys
            if key not in table.column_names:
                raise EncodeError(f"key column '{key}' is missing")
            keys, key = table.column(key).combine_chunks(), None
        # Checked and cast here; the native layer writes the envelope as JSON, column by column.
        stream, schema = envelope_table(table, schema), None
    return stream, {
        "columns": [(n, _column_decl(n, d)) for n, d in schema.items()] if schema is not None else None,
        "avro_schema": avro_schema,
        "schema_id": schema_id,
        "key_column": key if isinstance(key, str) else None,
        "keys": keys,
        "partition": partition,
        "headers": list(headers) if headers and not isinstance(headers, Mapping) else None,
        "row_headers": [(str(name), _key_array(values)) for name, values in headers.items()]
        if isinstance(headers, Mapping)
        else None,
        "timestamp": timestamp,
        "timeout": timeout,
    }


def _key_array(keys: Sequence[Any] | np.ndarray) -> Any:
    pa = _pyarrow()
    array = np.asarray(keys)
    if array.dtype.kind in "iuUS":
        return pa.array(array)  # converted by Arrow in C: no Python object per row
    if array.dtype == object:
        try:  # all bytes (or None), or all text (or None): Arrow converts them in C
            converted = pa.array(array)
            return pa.nulls(len(array), pa.binary()) if pa.types.is_null(converted.type) else converted
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass  # mixed: each value's bytes, below
    return pa.array(
        [None if k is None else k if isinstance(k, bytes) else str(k).encode() for k in array.tolist()],
        type=pa.binary(),
    )
