"""Files to topics and back: export, ingest and peek.

- :func:`export` (also :meth:`KafkaDataset.to_parquet`, ``to_csv``, ``to_jsonl``) writes a bounded
  read of a dataset to a Parquet, CSV or JSON-lines file, or to a directory with one file per
  partition, batch by batch (memory stays bounded by the dataset's queue and one batch). A
  Parquet file's key-value metadata (key ``kafka_ml.export``, read back with
  :func:`export_metadata`) records exactly which records it holds: the topics, each partition's
  ``[start, end)`` offsets and row count, the payload format and, for registry-framed formats,
  the schema ids.
- :func:`ingest` sends Parquet, CSV, JSON-lines and Arrow IPC files (or directories of them) to a
  topic through :meth:`Producer.send` (rows encoded in Rust), batch by batch; every row ends up
  delivered or failed, and bad input raises :class:`~kafka_ml.IngestError` naming the file, the
  row and the column, with how many rows were delivered before it.
- :func:`peek` reads the last records of each partition; :func:`format_table` prints them.

pyarrow is needed here (the ``arrow`` extra) and imported only when these functions run.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import datetime as _dt
import json
import os
import re
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .exceptions import ConfigError, EncodeError, IngestError, KafkaMLError, SchemaRegistryError
from .registry import registry_client

if TYPE_CHECKING:
    from .dataset import ColumnType, KafkaDataset
    from .producer import Producer

__all__ = [
    "EXPORT_METADATA_KEY",
    "ExportResult",
    "IngestResult",
    "PartitionRange",
    "export",
    "export_metadata",
    "format_table",
    "ingest",
    "peek",
]

#: The Parquet key-value metadata key of an export's description (a JSON document).
EXPORT_METADATA_KEY = "kafka_ml.export"
_METADATA_VERSION = 1

#: File name suffixes and the file formats they mean.
_SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".arrow": "ipc",
    ".feather": "ipc",
    ".ipc": "ipc",
    ".arrows": "ipc",
}
_EXPORT_FORMATS = ("parquet", "csv", "jsonl")
_EXTENSION = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}
# Formats whose values carry a Schema Registry id (magic byte 0, then the id, big-endian).
_REGISTRY_FORMATS = ("avro", "json_schema", "protobuf")
# Columns an export reads for its own accounting and drops unless the dataset asked for them.
_ACCOUNTING = ("topic", "partition", "offset")


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.compute
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("files need pyarrow: pip install 'kafka-ml[arrow]'") from e
    return pyarrow


def _file_format(path: Path, given: str | None, allowed: Sequence[str]) -> str:
    if given is not None:
        if given not in allowed:
            raise ConfigError(f"file format {given!r}: expected one of {', '.join(allowed)}")
        return given
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None or kind not in allowed:
        names = ", ".join(s for s, k in _SUFFIXES.items() if k in allowed)
        raise ConfigError(f"{path}: cannot tell the file format from the name (expected {names})")
    return kind


# -- export --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionRange:
    """What an export holds of one partition: every record of offsets ``[start, end)`` that the
    read handed out (``rows`` of them; offsets without a record — transaction markers, compacted
    records — and records skipped by ``on_error="skip"`` give no row)."""

    topic: str
    partition: int
    start: int
    end: int
    rows: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "start": self.start,
            "end": self.end,
            "rows": self.rows,
        }


@dataclass(frozen=True)
class ExportResult:
    """The files an export wrote and what each holds (``metadata[path]`` is the document that
    a Parquet file carries under :data:`EXPORT_METADATA_KEY`)."""

    files: list[str]
    rows: int
    partitions: list[PartitionRange]
    format: str
    file_format: str
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)


def export_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The description a Parquet export carries (its topics, partitions with ``[start, end)``
    offsets and row counts, format and schema ids); :class:`ConfigError` if it has none."""
    _pyarrow()
    import pyarrow.parquet as pq

    kv = pq.read_metadata(os.fspath(path)).metadata or {}
    raw = kv.get(EXPORT_METADATA_KEY.encode())
    if raw is None:
        raise ConfigError(f"{path}: no {EXPORT_METADATA_KEY} metadata (not written by a kafka-ml export)")
    document: dict[str, Any] = json.loads(raw)
    return document


class _Progress:
    """A tqdm bar over offsets when tqdm is installed and ``enabled`` (by default: stderr is a
    terminal); otherwise nothing."""

    def __init__(self, total: int | None, unit: str, desc: str, enabled: bool | None) -> None:
        if enabled is None:
            enabled = sys.stderr.isatty()
        self._bar: Any = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total, unit=unit, unit_scale=True, desc=desc, file=sys.stderr)

    def update(self, n: int) -> None:
        if self._bar is not None and n:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def export(
    dataset: KafkaDataset,
    path: str | os.PathLike[str],
    *,
    file_format: str | None = None,
    per_partition: bool = False,
    compression: str | None = "snappy",
    batch_size: int = 65_536,
    progress: bool | None = None,
    writer_schema_ids: bool = True,
    parquet_options: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Writes the records of a bounded ``dataset`` (``end`` given) to ``path``.

    ``file_format`` is ``"parquet"``, ``"csv"`` or ``"jsonl"`` (default: from the name's suffix;
    Parquet for a directory). With ``per_partition=True`` ``path`` is a directory that gets one
    file per partition, ``<topic>-<partition>.<ext>``, each with its own metadata. The read is the
    dataset's, offsets resolved as the dataset resolved them (``dataset.plan``): the same
    records ``for batch in dataset`` would give, and ``len(dataset)`` offsets. Columns are the
    dataset's (its ``metadata=`` columns included). Every file is written under a temporary name
    and renamed when complete: an export that fails leaves no partial file.

    Parquet: one row group per ``batch_size`` rows, ``compression`` as pyarrow names it,
    dictionary encoding for string and binary columns only (a dictionary of distinct floats or
    ids costs time and saves nothing), ``parquet_options`` passed on to
    ``pyarrow.parquet.ParquetWriter`` over these; the
    key-value metadata :data:`EXPORT_METADATA_KEY` describes the records (see
    :func:`export_metadata`). For registry-framed formats (``avro``, ``json_schema``,
    ``protobuf`` with a ``schema_registry``) it names the subject and the reader schema's id, and
    — unless ``writer_schema_ids=False`` — the writer schema ids found in the values (a second,
    raw read of the same offsets: the decoders do not hand out each value's id).

    CSV and JSON lines have no place for metadata; lists, structs and maps are written as JSON
    text in CSV cells, bytes as base64 in both. JSON has no NaN or infinity: a float that is one
    raises :class:`~kafka_ml.EncodeError` naming the column, partition and offset.
    """
    _pyarrow()
    plan = dataset.plan
    if plan is None or any(end is None for *_, end in plan):
        raise ConfigError("an export needs a bounded read: create the dataset with end= (e.g. end='latest')")
    bounded = [(t, p, s, int(e)) for t, p, s, e in plan if e is not None]
    target = Path(path)
    jobs: list[tuple[Path, list[tuple[str, int, int, int]]]]
    if per_partition:
        kind = _file_format(target, file_format or "parquet", _EXPORT_FORMATS)
        target.mkdir(parents=True, exist_ok=True)
        jobs = [(target / f"{t}-{p}{_EXTENSION[kind]}", [(t, p, s, e)]) for t, p, s, e in bounded]
    else:
        kind = _file_format(target, file_format, _EXPORT_FORMATS)
        jobs = [(target, bounded)]
    arguments = dataset._arguments
    registry = _reader_schema(arguments, bounded) if kind == "parquet" else None
    bar = _Progress(sum(e - s for _, _, s, e in bounded), "msg", "export", progress)
    files: list[str] = []
    ranges: list[PartitionRange] = []
    documents: dict[str, dict[str, Any]] = {}
    try:
        for out, parts in jobs:
            written, doc = _export_file(
                arguments,
                out,
                parts,
                kind,
                {"compression": compression or "none", **(parquet_options or {})},
                batch_size,
                bar,
                registry,
                writer_schema_ids,
            )
            files.append(str(out))
            ranges += written
            documents[str(out)] = doc
    finally:
        bar.close()
    return ExportResult(
        files=files,
        rows=sum(r.rows for r in ranges),
        partitions=ranges,
        format=str(arguments["format"]),
        file_format=kind,
        metadata=documents,
    )


def _bounded_read(
    arguments: Mapping[str, Any],
    parts: Sequence[tuple[str, int, int, int]],
    **overrides: Any,
) -> KafkaDataset:
    """A read of exactly the offsets ``parts`` with the dataset's decoding, never committing."""
    from .dataset import KafkaDataset

    options = {k: v for k, v in arguments.items() if k != "topics"}
    options.update(
        partitions=[(t, p) for t, p, _, _ in parts],
        start={(t, p): s for t, p, s, _ in parts},
        end={(t, p): e for t, p, _, e in parts},
    )
    options.update(overrides)
    return KafkaDataset(None, commit=False, **options)


def _export_file(
    arguments: Mapping[str, Any],
    out: Path,
    parts: Sequence[tuple[str, int, int, int]],
    kind: str,
    parquet_options: Mapping[str, Any],
    batch_size: int,
    bar: _Progress,
    registry: dict[str, Any] | None,
    writer_schema_ids: bool,
) -> tuple[list[PartitionRange], dict[str, Any]]:
    pa = _pyarrow()
    user_metadata = list(arguments["metadata"])
    topics = sorted({t for t, _, _, _ in parts})
    # What the accounting needs: partitions to count rows by (when there are several), offsets to
    # name a record that CSV or JSON cannot hold.
    text = kind != "parquet"
    needed = {"topic": len(topics) > 1, "partition": len(parts) > 1 or text, "offset": text}
    internal = [m for m in _ACCOUNTING if needed[m] and m not in user_metadata]
    read = _bounded_read(
        arguments, parts, metadata=user_metadata + internal, batch_size=batch_size, max_wait=1.0
    )
    schema = pa.schema(read)
    keep = [i for i, f in enumerate(schema) if f.name not in internal]
    out_schema = pa.schema([schema.field(i) for i in keep])
    rows: dict[tuple[str, int], int] = {(t, p): 0 for t, p, _, _ in parts}
    seen = {(t, p): s for t, p, s, _ in parts}
    tmp = out.with_name(f".{out.name}.partial")
    writer = _writer(kind, tmp, out_schema, parquet_options)
    try:
        with read:
            for batch in read:
                rb = pa.record_batch(batch)
                _count_rows(pa, rb, topics, rows)
                position = batch.offsets
                bar.update(sum(o - seen[tp] for tp, o in position.items()))
                seen.update(position)
                writer.write(pa.RecordBatch.from_arrays([rb.column(i) for i in keep], schema=out_schema), rb)
            skipped = read.stats["skipped"]
        # The pass ran to its end: every offset of [start, end) was read, the ones that hold no
        # record (transaction markers, compacted records) included, so `end` is the snapshot's.
        bar.update(sum(e - seen[(t, p)] for t, p, _, e in parts))
        ranges = [PartitionRange(t, p, s, e, rows[(t, p)]) for t, p, s, e in parts]
        doc = _export_document(arguments, ranges, topics, skipped, registry)
        if registry is not None and writer_schema_ids and kind == "parquet":
            doc["schema_registry"]["writer_schema_ids"] = _writer_schema_ids(arguments, parts)
        writer.close({EXPORT_METADATA_KEY: json.dumps(doc, sort_keys=True)})
        os.replace(tmp, out)
    except BaseException:
        writer.abort()
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return ranges, doc


def _count_rows(pa: Any, rb: Any, topics: Sequence[str], rows: dict[tuple[str, int], int]) -> None:
    if len(rows) == 1:
        only = next(iter(rows))
        rows[only] += rb.num_rows
        return
    partitions = np.asarray(rb.column("partition"))
    if len(topics) == 1:
        counts = np.bincount(partitions)
        for p in np.flatnonzero(counts):
            rows[(topics[0], int(p))] += int(counts[p])
        return
    names = rb.column("topic").to_numpy(zero_copy_only=False)
    for topic in topics:
        counts = np.bincount(partitions[names == topic])
        for p in np.flatnonzero(counts):
            rows[(topic, int(p))] += int(counts[p])


def _export_document(
    arguments: Mapping[str, Any],
    ranges: Sequence[PartitionRange],
    topics: Sequence[str],
    skipped: int,
    registry: dict[str, Any] | None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": _METADATA_VERSION,
        "kafka_ml": __version__,
        "topics": list(topics),
        "format": arguments["format"],
        "partitions": [r.as_dict() for r in ranges],
        "rows": sum(r.rows for r in ranges),
        "skipped": skipped,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if len(topics) == 1:
        doc["topic"] = topics[0]
    if registry is not None:
        doc["schema_registry"] = dict(registry)
    return doc


def _reader_schema(
    arguments: Mapping[str, Any], parts: Sequence[tuple[str, int, int, int]]
) -> dict[str, Any] | None:
    """For a registry-framed read: the subject and the id (and version) of the schema whose
    columns the read produces — the subject's latest, or the given schema where registered."""
    fmt = arguments["format"]
    spec = arguments["schema_registry"]
    if fmt not in _REGISTRY_FORMATS or spec is None:
        return None
    client = registry_client(spec)
    if client is None:  # offline {id: schema}: the ids are what the values carry
        return {"subject": None, "reader_schema_id": None}
    topics = sorted({t for t, _, _, _ in parts})
    subject = arguments["subject"] or (f"{topics[0]}-value" if len(topics) == 1 else None)
    info: dict[str, Any] = {"subject": subject, "reader_schema_id": None}
    explicit = {
        "avro": arguments.get("avro_schema"),
        "json_schema": arguments.get("json_schema"),
        "protobuf": arguments.get("proto_file")
        or arguments.get("descriptor_set")
        or arguments.get("proto_schema"),
    }[fmt]
    if subject is None:
        return info
    if explicit is None:
        latest = client.subject_version(subject)
        info.update(reader_schema_id=int(latest["id"]), reader_schema_version=int(latest["version"]))
        return info
    from .producer import _proto_arguments, registered_schema_id

    proto = _proto_arguments(
        fmt,
        arguments.get("message"),
        arguments.get("proto_file"),
        arguments.get("descriptor_set"),
        arguments.get("proto_schema"),
    )
    schema = explicit if fmt != "protobuf" else None
    with contextlib.suppress(SchemaRegistryError):  # not registered: the reader schema has no id
        info["reader_schema_id"] = registered_schema_id(
            topics[0], fmt, schema, client, subject, "topic", False, proto
        )
    return info


def _writer_schema_ids(arguments: Mapping[str, Any], parts: Sequence[tuple[str, int, int, int]]) -> list[int]:
    """The schema ids that the values of ``parts`` are framed with (magic byte 0, 4-byte id)."""
    pa = _pyarrow()
    pc = pa.compute
    ids: set[int] = set()
    raw = _bounded_read(
        {"config": arguments["config"], "timeout": arguments["timeout"]},
        parts,
        format="raw",
        batch_size=65_536,
        max_wait=1.0,
    )
    with raw:
        for batch in raw:
            heads = pc.unique(pc.binary_slice(pa.record_batch(batch).column("value"), 0, 5))
            for head in heads.to_pylist():
                if head is not None and len(head) == 5 and head[0] == 0:
                    ids.add(int.from_bytes(head[1:], "big"))
    return sorted(ids)


class _Writer:
    def write(self, batch: Any, source: Any) -> None:
        raise NotImplementedError

    def close(self, metadata: Mapping[str, str]) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


def _writer(kind: str, path: Path, schema: Any, parquet_options: Mapping[str, Any]) -> _Writer:
    if kind == "parquet":
        return _ParquetWriter(path, schema, parquet_options)
    if kind == "csv":
        return _CsvWriter(path, schema)
    return _JsonLinesWriter(path, schema)


class _ParquetWriter(_Writer):
    def __init__(self, path: Path, schema: Any, options: Mapping[str, Any]) -> None:
        import pyarrow.parquet as pq

        pa = _pyarrow()
        text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_binary(f.type)]
        options = {"use_dictionary": text, **options}
        self._writer = pq.ParquetWriter(os.fspath(path), schema, **options)

    def write(self, batch: Any, source: Any) -> None:
        self._writer.write_batch(batch)

    def close(self, metadata: Mapping[str, str]) -> None:
        self._writer.add_key_value_metadata(dict(metadata))
        self._writer.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()


class _CsvWriter(_Writer):
    """CSV through pyarrow's writer; what CSV cannot hold as it is becomes text: lists, structs
    and maps as JSON, bytes as base64."""

    def __init__(self, path: Path, schema: Any) -> None:
        self._path = path
        self._writer: Any = None
        self._empty = schema

    def write(self, batch: Any, source: Any) -> None:
        pa = _pyarrow()
        import pyarrow.csv as pcsv

        columns = [
            _csv_column(pa, batch.column(i), batch.schema.field(i).name, source)
            for i in range(batch.num_columns)
        ]
        table = pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
        if self._writer is None:
            self._writer = pcsv.CSVWriter(os.fspath(self._path), table.schema)
        self._writer.write_batch(table)

    def close(self, metadata: Mapping[str, str]) -> None:
        if self._writer is None:  # no rows: the header alone
            pa = _pyarrow()
            self.write(pa.RecordBatch.from_pylist([], schema=self._empty), None)
        self._writer.close()

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()


class _JsonLinesWriter(_Writer):
    """One JSON object per line, built column by column with Arrow compute (no Python object
    per row for numbers, booleans, strings and lists of them)."""

    def __init__(self, path: Path, schema: Any) -> None:
        self._file = open(path, "wb")  # closed in close() / abort()
        self._names = [json.dumps(name, ensure_ascii=False) for name in schema.names]

    def write(self, batch: Any, source: Any) -> None:
        pa = _pyarrow()
        pc = pa.compute
        if batch.num_rows == 0:
            return
        pieces: list[Any] = []
        for i, name in enumerate(self._names):
            text = _json_text(pa, batch.column(i), batch.schema.field(i).name, source)
            pieces += [("{" if i == 0 else ", ") + name + ": ", pc.fill_null(text, "null")]
        if not pieces:
            pieces = ["{", pa.array([""] * batch.num_rows)]
        pieces.append("}\n")
        lines = pc.binary_join_element_wise(*pieces, "")
        self._file.write(_string_bytes(lines))

    def close(self, metadata: Mapping[str, str]) -> None:
        self._file.close()

    def abort(self) -> None:
        self._file.close()


def _string_bytes(array: Any) -> memoryview:
    """The UTF-8 bytes of a string array's values, back to back (without a copy)."""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)
    start, end = int(offsets[array.offset]), int(offsets[array.offset + len(array)])
    return memoryview(array.buffers()[2])[start:end]


def _where(source: Any, row: int) -> str:
    """Topic, partition and offset of an exported batch's row (from the accounting columns)."""
    if source is None:
        return f"row {row}"
    names = source.schema.names
    part = source.column("partition")[row].as_py() if "partition" in names else "?"
    offset = source.column("offset")[row].as_py() if "offset" in names else "?"
    topic = source.column("topic")[row].as_py() if "topic" in names else None
    return (f"topic '{topic}' " if topic else "") + f"partition {part} offset {offset}"


def _csv_column(pa: Any, array: Any, name: str, source: Any) -> Any:
    t = array.type
    if pa.types.is_dictionary(t):
        array = array.dictionary_decode()
        t = array.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return _base64(pa, array)
    if _is_list(pa, t) or pa.types.is_struct(t) or pa.types.is_map(t):
        return _json_text(pa, array, name, source)
    return array


def _is_list(pa: Any, t: Any) -> bool:
    return bool(pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))


def _base64(pa: Any, array: Any) -> Any:
    return pa.array(
        [None if v is None else base64.b64encode(v).decode("ascii") for v in array.to_pylist()],
        type=pa.string(),
    )


_NEEDS_ESCAPE = '[\\\\"\\x00-\\x1f]'


class _NotJson(Exception):
    """A value JSON cannot represent (NaN, infinity), at ``index`` of the array being written."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


def _json_text(pa: Any, array: Any, name: str, source: Any) -> Any:
    """Each value of ``array`` as JSON text (null where the value is null); a NaN or infinity
    raises :class:`EncodeError` naming the column and the record (``source``'s accounting
    columns say its partition and offset)."""
    try:
        return _json_values(pa, array)
    except _NotJson as e:
        raise EncodeError(
            f"column '{name}' ({_where(source, e.index)}): NaN or infinity has no JSON representation "
            "(export to Parquet instead)"
        ) from None


def _json_values(pa: Any, array: Any) -> Any:
    pc = pa.compute
    t = array.type
    if pa.types.is_dictionary(t):
        return _json_values(pa, array.dictionary_decode())
    if pa.types.is_integer(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t):
        return pc.cast(array, pa.string())
    if pa.types.is_floating(t):
        finite = pc.fill_null(pc.is_finite(array), True)
        if not pc.all(finite).as_py():
            raise _NotJson(int(np.flatnonzero(~np.asarray(finite))[0]))
        return pc.cast(array, pa.string())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _quoted(pa, array.cast(pa.string()))
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return _quoted(pa, _base64(pa, array))
    if pa.types.is_temporal(t):
        return _quoted(pa, pc.cast(array, pa.string()))
    if _is_list(pa, t):
        offsets = np.zeros(len(array) + 1, dtype=np.int32)
        np.cumsum(np.asarray(pc.fill_null(pc.list_value_length(array), 0)), out=offsets[1:])
        try:
            items = _json_values(pa, pc.list_flatten(array))
        except _NotJson as e:  # the item's index, as its row's
            raise _NotJson(int(np.searchsorted(offsets, e.index, side="right")) - 1) from None
        lists = pa.ListArray.from_arrays(pa.array(offsets), pc.fill_null(items, "null"))
        text = pc.binary_join_element_wise("[", pc.binary_join(lists, ", "), "]", "")
        return pc.if_else(array.is_null(), pa.nulls(len(array), pa.string()), text)
    return _json_values_python(pa, array)


def _json_values_python(pa: Any, array: Any) -> Any:
    """The general path: structs, maps and what Arrow cannot cast, through ``json.dumps``."""

    def default(value: object) -> object:
        if isinstance(value, bytes):
            return base64.b64encode(value).decode("ascii")
        return str(value)

    out: list[str | None] = []
    for row, value in enumerate(array.to_pylist()):
        if value is None:
            out.append(None)
            continue
        try:
            out.append(json.dumps(value, allow_nan=False, default=default, ensure_ascii=False))
        except ValueError:
            raise _NotJson(row) from None
    return pa.array(out, type=pa.string())


def _quoted(pa: Any, strings: Any) -> Any:
    pc = pa.compute
    if pc.any(pc.match_substring_regex(strings, _NEEDS_ESCAPE)).as_py():
        strings = pc.replace_substring(strings, "\\", "\\\\")
        strings = pc.replace_substring(strings, '"', '\\"')
        for char, escape in (("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"), ("\b", "\\b"), ("\f", "\\f")):
            strings = pc.replace_substring(strings, char, escape)
        if pc.any(pc.match_substring_regex(strings, "[\\x00-\\x1f]")).as_py():
            return pa.array(
                [None if s is None else json.dumps(s, ensure_ascii=False) for s in strings.to_pylist()],
                type=pa.string(),
            )
    return pc.binary_join_element_wise('"', strings, '"', "")


# -- ingest --------------------------------------------------------------------------------------


@dataclass
class IngestResult:
    """What an ingest sent: ``rows`` queued, ``delivered`` and ``failed`` as the delivery
    reports counted them, the files with their row counts, and up to 100 ``failures``
    (``"<file> row <n>: <reason>"``)."""

    topic: str
    files: list[tuple[str, int]] = field(default_factory=list)
    rows: int = 0
    delivered: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)


def _input_files(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[Path, str]]:
    """Each input file with its format; a directory gives its files (recursively, sorted, hidden
    files and ones of other types left out)."""
    files: list[tuple[Path, str]] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in _SUFFIXES
                and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
            )
            if not found:
                raise IngestError(
                    f"{path}: no .parquet, .csv, .jsonl or .arrow files in the directory", file=str(path)
                )
            files += [(p, _SUFFIXES[p.suffix.lower()]) for p in found]
        elif path.is_file():
            try:
                files.append((path, _file_format(path, None, tuple(dict.fromkeys(_SUFFIXES.values())))))
            except ConfigError as e:
                raise IngestError(str(e), file=str(path)) from None
        else:
            raise IngestError(f"{path}: no such file or directory", file=str(path))
    return files


def _file_batches(pa: Any, path: Path, kind: str, batch_size: int) -> Iterator[Any]:
    """A file's record batches. Parquet and Arrow IPC through their own readers (importing
    pyarrow.dataset alone takes a quarter of a second), text files through pyarrow.dataset."""
    if kind == "parquet":
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(os.fspath(path)).iter_batches(batch_size=batch_size)
        return
    if kind == "ipc":
        import pyarrow.ipc as ipc

        with pa.memory_map(os.fspath(path)) as source:
            try:
                reader = ipc.open_file(source)
                batches: Iterable[Any] = (reader.get_batch(i) for i in range(reader.num_record_batches))
            except pa.ArrowInvalid:  # the stream format (.arrows), not the file format
                source.seek(0)
                batches = ipc.open_stream(source)
            yield from batches
        return
    import pyarrow.dataset as pds

    if kind == "csv":
        import pyarrow.csv as pcsv

        # An unquoted empty cell is a null, a quoted one ("") an empty string: as pyarrow writes them.
        fmt: Any = pds.CsvFileFormat(
            read_options=pcsv.ReadOptions(use_threads=False, block_size=8 << 20),
            convert_options=pcsv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=False),
        )
    else:
        fmt = "json"
    dataset = pds.dataset(os.fspath(path), format=fmt)
    yield from dataset.to_batches(batch_size=batch_size)


def _declared(schema: Mapping[str, ColumnType] | None) -> dict[str, str]:
    from .dataset import _column_decl

    return {name: _column_decl(name, decl) for name, decl in (schema or {}).items()}


@dataclass
class _Send:
    report: Any
    file: str
    first_row: int


class _Ingest:
    """The accounting of one ingest: reports in flight and what they delivered."""

    def __init__(self, topic: str) -> None:
        self.result = IngestResult(topic)
        self.pending: deque[_Send] = deque()

    def settle(self, block: bool) -> None:
        while self.pending and (block or self.pending[0].report.done or len(self.pending) > 64):
            send = self.pending[0]
            while not send.report.join(1.0):
                pass
            self.pending.popleft()
            report = send.report
            self.result.delivered += report.delivered
            self.result.failed += report.failed
            for row, reason in report.failures:
                if len(self.result.failures) < 100:
                    self.result.failures.append(f"{send.file} row {send.first_row + row}: {reason}")


def ingest(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    topic: str,
    producer: Producer | Mapping[str, object],
    *,
    format: str = "json",
    schema: Mapping[str, ColumnType] | None = None,
    key: str | None = None,
    partition: int | None = None,
    avro_schema: Mapping[str, Any] | str | None = None,
    json_schema: Mapping[str, Any] | str | None = None,
    schema_registry: Any = None,
    subject: str | None = None,
    message: str | None = None,
    proto_file: str | os.PathLike[str] | None = None,
    descriptor_set: bytes | str | os.PathLike[str] | None = None,
    proto_schema: str | None = None,
    batch_size: int = 262_144,
    progress: bool | None = None,
) -> IngestResult:
    """Sends every row of ``paths`` (Parquet, CSV, JSON-lines or Arrow IPC files, or directories
    of them) to ``topic`` with :meth:`Producer.send`, about ``batch_size`` rows at a time, and waits
    until each row is delivered or failed.

    ``format`` and its arguments are :meth:`Producer.send`'s; with ``schema_registry`` and no
    schema given, the subject's latest schema is the writer schema. ``key`` names the column
    that keys each message. A file's type comes from its suffix (``.parquet``, ``.csv``,
    ``.jsonl``/``.ndjson``/``.json``, ``.arrow``/``.feather``); CSV cells holding JSON lists
    (as :func:`export` writes them) become list columns, and text bound for a ``binary`` column
    (or the ``raw`` format's ``key`` and ``value``) is base64-decoded.

    Raises :class:`~kafka_ml.IngestError` naming the file, row and column of input that cannot
    be read or encoded, after waiting for what was sent before it (its ``delivered`` and
    ``failed`` say how many rows); and, once everything is sent, if any row failed delivery.
    """
    from .producer import Producer, registered_schema_id

    pa = _pyarrow()
    files = _input_files([paths] if isinstance(paths, (str, os.PathLike)) else paths)
    owned = not isinstance(producer, Producer)
    client: Producer = Producer(producer) if not isinstance(producer, Producer) else producer
    send_options: dict[str, Any] = {
        "format": format,
        "schema": schema,
        "key": key,
        "partition": partition,
        "avro_schema": avro_schema,
        "json_schema": json_schema,
        "message": message,
        "proto_file": proto_file,
        "descriptor_set": descriptor_set,
        "proto_schema": proto_schema,
    }
    if schema_registry is not None:
        send_options.update(
            _registry_writer(topic, send_options, schema_registry, subject, registered_schema_id)
        )
    declared = _declared(schema)
    state = _Ingest(topic)
    bar = _Progress(_known_rows(files), "row", f"ingest {topic}", progress)
    try:
        for path, kind in files:
            rows = _ingest_file(pa, client, topic, path, kind, send_options, declared, batch_size, state, bar)
            state.result.files.append((str(path), rows))
        state.settle(block=True)
    except KafkaMLError as e:
        # Stopped: wait for what was sent before, so the error can say what reached the topic.
        state.settle(block=True)
        located = e if isinstance(e, IngestError) else None
        what = str(e) if located is not None else f"{type(e).__name__}: {e}"
        raise IngestError(
            f"{what}; {_before(state.result)}",
            file=located.file if located else None,
            row=located.row if located else None,
            column=located.column if located else None,
            delivered=state.result.delivered,
            failed=state.result.failed,
        ) from (None if located is not None else e)
    except BaseException:
        state.settle(block=True)
        raise
    finally:
        bar.close()
        if owned:
            with contextlib.suppress(KafkaMLError):
                client.flush(30)
    result = state.result
    if result.failed:
        shown = "; ".join(result.failures[:5])
        raise IngestError(
            f"{result.failed} of {result.rows} rows failed delivery to '{topic}' "
            f"({result.delivered} delivered): {shown}",
            delivered=result.delivered,
            failed=result.failed,
            result=result,
        )
    return result


def _before(result: IngestResult) -> str:
    what = f"{result.delivered} rows were delivered to '{result.topic}' before the error"
    if result.failed:
        what += f" and {result.failed} failed"
    return what


def _known_rows(files: Sequence[tuple[Path, str]]) -> int | None:
    """Rows of every file when their footers say (Parquet, Arrow IPC), for the progress bar."""
    total = 0
    for path, kind in files:
        if kind != "parquet":
            return None
        try:
            import pyarrow.parquet as pq

            total += pq.read_metadata(os.fspath(path)).num_rows
        except Exception:  # reported when the file is read
            return None
    return total


def _registry_writer(
    topic: str,
    options: dict[str, Any],
    schema_registry: Any,
    subject: str | None,
    registered_schema_id: Callable[..., int],
) -> dict[str, Any]:
    """The writer schema and its id, resolved once for every batch: the given schema
    (registered), or else the subject's latest."""
    fmt = options["format"]
    if fmt not in _REGISTRY_FORMATS:
        raise ConfigError(f"schema_registry is for format='avro', 'json_schema' or 'protobuf', not {fmt!r}")
    client = registry_client(schema_registry)
    if client is None:
        raise ConfigError("ingest needs a registry URL or SchemaRegistry, not {id: schema}")
    name = subject or f"{topic}-value"
    given = {
        "avro": options["avro_schema"],
        "json_schema": options["json_schema"],
        "protobuf": options["proto_file"] or options["descriptor_set"] or options["proto_schema"],
    }[fmt]
    if given is None:
        latest = client.subject_version(name)
        kind = {"avro": "AVRO", "json_schema": "JSON", "protobuf": "PROTOBUF"}[fmt]
        if latest["schema_type"] != kind:
            raise ConfigError(f"the latest schema of subject '{name}' is {latest['schema_type']}, not {kind}")
        argument = {"avro": "avro_schema", "json_schema": "json_schema", "protobuf": "proto_schema"}[fmt]
        return {argument: str(latest["schema"]), "schema_id": int(latest["id"])}
    from .producer import _proto_arguments

    proto = _proto_arguments(
        fmt, options["message"], options["proto_file"], options["descriptor_set"], options["proto_schema"]
    )
    schema = options["avro_schema"] if fmt == "avro" else options["json_schema"]
    return {"schema_id": registered_schema_id(topic, fmt, schema, client, name, "topic", True, proto)}


def _ingest_file(
    pa: Any,
    producer: Producer,
    topic: str,
    path: Path,
    kind: str,
    options: Mapping[str, Any],
    declared: Mapping[str, str],
    batch_size: int,
    state: _Ingest,
    bar: _Progress,
) -> int:
    """Sends one file: its record batches gathered into sends of about ``batch_size`` rows (a
    send of more than 64 Ki rows encodes on a second thread while it queues)."""
    read = 0  # rows read from the file
    sent = 0  # rows of it handed to the producer
    group: list[Any] = []
    batches = _file_batches(pa, path, kind, batch_size)

    def send() -> None:
        nonlocal sent, group
        data = pa.Table.from_batches(group)
        group = []
        try:
            report = producer.send(
                topic, _tensor_column(path, data) if options["format"] == "tensor" else data, **options
            )
        except EncodeError as e:
            raise _encode_error(pa, path, kind, data, sent, str(e), declared) from None
        state.pending.append(_Send(report, str(path), sent))
        state.result.rows += data.num_rows
        sent += data.num_rows
        bar.update(data.num_rows)
        state.settle(block=False)

    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as e:
            raise _read_error(path, kind, e, read) from None
        if batch is None:
            if group:
                send()
            return sent
        if read == 0:
            _check_columns(path, kind, batch.schema, options, declared)
        if batch.num_rows == 0:
            continue
        if kind in ("csv", "jsonl"):
            batch = _text_columns(pa, path, kind, batch, read, options, declared)
        if group and batch.schema != group[0].schema:  # CSV lists typed per batch
            send()
        group.append(batch)
        read += batch.num_rows
        if read - sent >= batch_size:
            send()


def _check_columns(
    path: Path, kind: str, schema: Any, options: Mapping[str, Any], declared: Mapping[str, str]
) -> None:
    names = set(schema.names)
    key = options["key"]
    first = _row_text(kind, 0)
    if isinstance(key, str) and key not in names:
        raise IngestError(
            f"{path}, {first}, column '{key}': no such column for the key (the file has {sorted(names)})",
            file=str(path),
            row=0,
            column=key,
        )
    for name in declared:
        if name not in names:
            raise IngestError(
                f"{path}, {first}, column '{name}': missing (the schema declares it; the file has "
                f"{sorted(names)})",
                file=str(path),
                row=0,
                column=name,
            )
    if options["format"] == "raw" and "value" not in names:
        raise IngestError(
            f"{path}, {first}, column 'value': missing (the raw format sends the 'value' column)",
            file=str(path),
            row=0,
            column="value",
        )


def _tensor_column(path: Path, batch: Any) -> Any:
    """The tensor format sends one fixed-size list column: ``value``, or the file's only one."""
    if "value" in batch.schema.names:
        return batch.select(["value"])
    if batch.num_columns == 1:
        return batch
    raise IngestError(
        f"{path}: the tensor format sends one column ('value', or a file's only column); the file has "
        f"{batch.schema.names}",
        file=str(path),
    )


def _row_text(kind: str, row: int) -> str:
    """A row's position as people look for it: the line too, for text files."""
    if kind == "csv":
        return f"row {row} (line {row + 2})"
    if kind == "jsonl":
        return f"row {row} (line {row + 1})"
    return f"row {row}"


def _text_columns(
    pa: Any,
    path: Path,
    kind: str,
    batch: Any,
    first_row: int,
    options: Mapping[str, Any],
    declared: Mapping[str, str],
) -> Any:
    """CSV and JSON lines hold lists as JSON text (CSV) and bytes as base64: back to Arrow."""
    import pyarrow.json as pj

    pc = pa.compute
    columns = list(batch.columns)
    changed = False
    binary = {n for n, d in declared.items() if d.rstrip("?") == "binary"}
    if options["format"] == "raw":
        binary |= {"key", "value"}
    for i, name in enumerate(batch.schema.names):
        column = columns[i]
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        if name in binary:
            columns[i] = _unbase64(pa, path, kind, column, first_row, name)
            changed = True
            continue
        decl = declared.get(name, "")
        is_list = decl.rstrip("?").endswith("]")
        if kind != "csv":
            continue
        if not is_list:
            present = pc.drop_null(column)
            if len(present) == 0 or not pc.all(pc.starts_with(present, "[")).as_py():
                continue
        text = pc.fill_null(column, "null")
        lines = pc.binary_join_element_wise('{"v": ', text, "}\n", "")
        try:
            parsed = pj.read_json(pa.BufferReader(_string_bytes(lines).tobytes()))
        except pa.ArrowInvalid as e:
            if not is_list:
                continue  # text that only starts like a list: left as text
            bad = _first_bad_json(column)
            where = _row_text(kind, first_row + bad) if bad is not None else f"rows from {first_row}"
            raise IngestError(
                f"{path}, {where}, column '{name}': not a JSON list ({e})",
                file=str(path),
                row=None if bad is None else first_row + bad,
                column=name,
            ) from None
        columns[i] = parsed.column("v").combine_chunks()
        changed = True
    if not changed:
        return batch
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _first_bad_json(column: Any) -> int | None:
    for i, value in enumerate(column.to_pylist()):
        if value in (None, ""):
            continue
        try:
            json.loads(value)
        except ValueError:
            return i
    return None


def _unbase64(pa: Any, path: Path, kind: str, column: Any, first_row: int, name: str) -> Any:
    out: list[bytes | None] = []
    for i, value in enumerate(column.to_pylist()):
        try:
            out.append(None if value is None else base64.b64decode(value, validate=True))
        except ValueError:
            raise IngestError(
                f"{path}, {_row_text(kind, first_row + i)}, column '{name}': not base64 (binary columns "
                "are base64 in CSV and JSON lines)",
                file=str(path),
                row=first_row + i,
                column=name,
            ) from None
    return pa.array(out, type=pa.binary())


_ROW = re.compile(r"\brow (\d+)")
_COLUMN = re.compile(r"column '([^']*)'")


def _encode_error(
    pa: Any, path: Path, kind: str, batch: Any, first_row: int, message: str, declared: Mapping[str, str]
) -> IngestError:
    """An :class:`EncodeError` of one batch, in the file's terms: its row numbers shifted to the
    file's, and the row found where the encoder names only the column."""
    column_match = _COLUMN.search(message)
    column = column_match.group(1) if column_match else None
    row_match = _ROW.search(message)
    row: int | None = first_row + int(row_match.group(1)) if row_match else None
    if row is None and column is not None and column in declared and column in batch.schema.names:
        found = _first_uncastable(pa, batch.column(column), declared[column])
        row = None if found is None else first_row + found
    reason = _ROW.sub(lambda m: f"row {first_row + int(m.group(1))}", message)
    where = _row_text(kind, row) if row is not None else f"rows {first_row}-{first_row + batch.num_rows - 1}"
    return IngestError(
        f"{path}, {where}" + (f", column '{column}'" if column else "") + f": {reason}",
        file=str(path),
        row=row,
        column=column,
    )


def _first_uncastable(pa: Any, column: Any, decl: str) -> int | None:
    """The first row of ``column`` that Arrow cannot cast to the declared scalar type."""
    name = decl.rstrip("?")
    if name.endswith("]"):
        return None
    try:
        target = (
            pa.from_numpy_dtype(np.dtype(name)) if name not in ("string", "binary") else getattr(pa, name)()
        )
    except TypeError:
        return None
    lo, hi = 0, len(column)

    def casts(a: int, b: int) -> bool:
        try:
            column.slice(a, b - a).cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return False
        return True

    if casts(lo, hi):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if casts(lo, mid):
            lo = mid
        else:
            hi = mid
    return lo


_CSV_ROW = re.compile(r"Row #(\d+)")
_CSV_COLUMN = re.compile(r"In CSV column #(\d+)")
_CSV_VALUE = re.compile(r"invalid value '(.*)'")
_JSON_ROW = re.compile(r"in row (\d+)")


# What pyarrow.dataset puts before the reader's own message.
_DATASET_PREFIX = re.compile(
    r"^(Error creating dataset\. .*?\?: )?(Could not open [\w ]+ input source '[^']*': )?(Invalid: )?", re.S
)


def _read_error(path: Path, kind: str, error: BaseException, row: int) -> IngestError:
    """A file that cannot be read: the pyarrow message with the row (and column) found."""
    message = _DATASET_PREFIX.sub("", str(error), count=1)
    what = {"csv": "CSV", "jsonl": "JSON lines", "parquet": "Parquet", "ipc": "Arrow IPC"}[kind]
    located: tuple[int, str | None] | None = None
    if kind == "csv":
        located = _locate_csv(path, message)
    elif kind == "jsonl":
        located = _locate_json(path, message)
    if located is None:
        after = f" (after row {row - 1})" if row else ""
        return IngestError(f"{path}: cannot be read as {what}{after}: {message}", file=str(path))
    bad, column = located
    return IngestError(
        f"{path}, {_row_text(kind, bad)}" + (f", column '{column}'" if column else "") + f": {message}",
        file=str(path),
        row=bad,
        column=column,
    )


def _locate_csv(path: Path, message: str) -> tuple[int, str | None] | None:
    """The data row (0-based) and column of a CSV error, read again with Python's csv module."""
    line_match = _CSV_ROW.search(message)
    column_match = _CSV_COLUMN.search(message)
    value_match = _CSV_VALUE.search(message)
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        column = int(column_match.group(1)) if column_match else None
        name = header[column] if column is not None and column < len(header) else None
        if line_match is not None:  # physical line number, 1-based, header included
            return max(int(line_match.group(1)) - 2, 0), name
        value = value_match.group(1) if value_match else None
        for i, record in enumerate(reader):
            if len(record) != len(header):
                return i, None
            if column is not None and value is not None and column < len(record) and record[column] == value:
                return i, name
    return None


_JSON_COLUMN = re.compile(r"Column\(/([^)]*)\) changed from (\w+) to (\w+)")


def _locate_json(path: Path, message: str) -> tuple[int, str | None] | None:
    """The row (0-based, blank lines not counted) of a JSON-lines error: the first line that is
    not a JSON object, or whose value of the column pyarrow names is of another JSON type than
    before."""
    changed = _JSON_COLUMN.search(message)
    column = changed.group(1) if changed else None
    first_kind: str | None = None
    with open(path, encoding="utf-8", errors="replace") as f:
        row = 0
        for text in f:
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except ValueError:
                return row, None
            if not isinstance(value, dict):
                return row, None
            if column is not None and value.get(column) is not None:
                kind = _json_kind(value[column])
                if first_kind is None:
                    first_kind = kind
                elif kind != first_kind:
                    return row, column
            row += 1
    return None


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


# -- peek ----------------------------------------------------------------------------------------


def peek(
    topic: str,
    config: Mapping[str, object],
    n: int = 20,
    *,
    partitions: Sequence[int] | None = None,
    format: str = "raw",
    **decoding: Any,
) -> Any:
    """The last ``n`` offsets of each partition of ``topic`` (of ``partitions``), decoded
    (``format`` and ``decoding`` as :class:`KafkaDataset` takes them), as a pyarrow Table with
    ``partition``, ``offset`` and ``key`` first, ordered by partition and offset."""
    from .dataset import KafkaDataset

    pa = _pyarrow()
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    selected = [(topic, int(p)) for p in partitions] if partitions is not None else None
    with KafkaDataset(
        None if selected else topic, config, partitions=selected, format="raw", start="earliest", end="latest"
    ) as probe:
        plan = probe.plan or []
    parts = [(t, p, max(int(s), int(e) - n), int(e)) for t, p, s, e in plan if e is not None]
    meta = ["partition", "offset"] + ([] if format == "raw" else ["key"])
    read = _bounded_read(
        {"config": dict(config), "format": format, "metadata": meta, **decoding},
        parts,
        batch_size=max(n, 1024),
    )
    with read:
        batches = [pa.record_batch(b) for b in read]
    table = pa.Table.from_batches(batches, schema=pa.schema(read))
    first = ["partition", "offset", "key"]
    order = [c for c in first if c in table.column_names] + [c for c in table.column_names if c not in first]
    return table.select(order).sort_by([("partition", "ascending"), ("offset", "ascending")])


def format_table(table: Any, width: int = 40) -> str:
    """A pyarrow Table as aligned text columns, each cell cut at ``width`` characters."""
    names = list(table.column_names)
    cells = [[_cell(v, width) for v in table.column(name).to_pylist()] for name in names]
    widths = [max([len(name)] + [len(c) for c in column]) for name, column in zip(names, cells, strict=True)]
    lines = ["  ".join(name.ljust(w) for name, w in zip(names, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in range(table.num_rows):
        lines.append("  ".join(c[row].ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _cell(value: object, width: int) -> str:
    if value is None:
        text = "null"
    elif isinstance(value, bytes):
        try:
            text = value.decode("utf-8")
            if not text.isprintable():
                text = repr(value)
        except UnicodeDecodeError:
            text = repr(value)
    elif isinstance(value, float):
        text = f"{value:.7g}"
    elif isinstance(value, (list, dict, tuple)):
        text = json.dumps(_short_floats(value), default=str, ensure_ascii=False)
    else:
        text = str(value)
    text = text.replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= width else text[: width - 1] + "…"


def _short_floats(value: object) -> object:
    """Floats cut to 7 significant digits (float32 values print as float64 otherwise)."""
    if isinstance(value, float):
        return float(f"{value:.7g}")
    if isinstance(value, (list, tuple)):
        return [_short_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: _short_floats(v) for k, v in value.items()}
    return value
