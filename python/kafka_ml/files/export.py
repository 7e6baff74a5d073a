"""Export: a bounded read of a dataset to Parquet, CSV or JSON-lines files, with the exact offsets
it covers in the Parquet metadata."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..exceptions import ConfigError, SchemaRegistryError
from ..registry import registry_client

if TYPE_CHECKING:
    from ..dataset import KafkaDataset

from ._common import (
    _ACCOUNTING,
    _EXPORT_FORMATS,
    _EXTENSION,
    _METADATA_VERSION,
    _REGISTRY_FORMATS,
    EXPORT_METADATA_KEY,
    _file_format,
    _pyarrow,
)
from .writers import _writer

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
    from ..dataset import KafkaDataset

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
    from ..producer import _proto_arguments, registered_schema_id

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
