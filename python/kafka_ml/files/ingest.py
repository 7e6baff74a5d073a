"""Ingest: Parquet, CSV, JSON-lines and Arrow IPC files to a topic through `Producer.send`, every row
accounted delivered or failed, bad input named by file, row and column."""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigError, EncodeError, IngestError, KafkaMLError
from ..registry import registry_client

if TYPE_CHECKING:
    from ..dataset import ColumnType
    from ..producer import Producer

from ._common import (
    _REGISTRY_FORMATS,
    _SUFFIXES,
    _file_format,
    _pyarrow,
)
from .export import _Progress
from .ingest_errors import _encode_error, _read_error, _row_text
from .writers import _string_bytes

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
    from ..dataset import _column_decl

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
    from ..producer import Producer, registered_schema_id

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
    from ..producer import _proto_arguments

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
