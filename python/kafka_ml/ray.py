"""Ray Data: Kafka topics as a ``ray.data.Dataset``, and a Dataset written to a topic.

``read_kafka`` resolves a bounded snapshot once, on the driver, and cuts every partition's
``[start, end)`` offsets into read tasks, so a large partition is read by several tasks. Each task
reads exactly its range with a :class:`~kafka_ml.KafkaDataset` that decodes in Rust into Arrow
record batches (no Python object per row) and yields them as pyarrow tables.

Exactly once: the tasks' ranges are disjoint and cover the snapshot. A task yields its rows in
offset order, cut into blocks at fixed row counts, so a retried task yields the same blocks again.
A task that cannot reach its end offset (the records were deleted, the partition now ends earlier,
nothing arrives within ``read_timeout``) raises :class:`~kafka_ml.IncompleteReadError` naming the
topic, partition and offsets; it never hands out part of its range as if it were all of it.

``write_kafka`` sends each block with kafka-ml's :class:`~kafka_ml.Producer` (encoding in Rust),
waits for every delivery, and fails the write task with the reason of the first failure.

Needs Ray Data: ``pip install 'kafka-ml[ray]'``.
"""

from __future__ import annotations

import functools
import itertools
import math
import pickle
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

try:
    import pyarrow as pa
    import ray.data
    from ray.data.block import Block, BlockAccessor, BlockMetadata
    from ray.data.datasource import Datasink, Datasource, ReadTask, WriteResult
except ImportError as _e:  # pragma: no cover - exercised by a subprocess test without Ray
    raise ImportError(
        f"kafka_ml.ray needs Ray Data ({_e}): install it with pip install 'kafka-ml[ray]'"
    ) from _e

import numpy as np

from .dataset import ColumnType, KafkaDataset, PositionSpec, _position
from .exceptions import (
    ConfigError,
    DecodeError,
    DeliveryError,
    IncompleteReadError,
    KafkaError,
    KafkaMLError,
    KafkaTimeoutError,
)
from .producer import Producer

__all__ = ["KafkaMLDatasink", "KafkaMLDatasource", "KafkaReadRange", "read_kafka", "write_kafka"]

SendFormat = Literal["tensor", "json", "json_schema", "connect_json", "avro", "protobuf", "raw"]

#: Decoded bytes a read task holds at least (by the schema's row size), unless Ray asks for fewer
#: tasks or ``override_num_blocks`` sets them: each task connects and fetches metadata once, and
#: on two cores 1 M 80-byte rows read in 4 tasks took 1.4-1.7 s, in 50 tasks 3.5-4.5 s.
MIN_BYTES_PER_TASK = 16 << 20
#: Bytes a block aims at (Ray's own blocks are at most 128 MiB by default); smaller blocks start
#: the next operator sooner.
TARGET_BLOCK_BYTES = 32 << 20
#: Rows per Arrow batch a task's reader builds (a block is one or more of them, never copied).
_READ_BATCH_ROWS = 65_536
#: A guess of a variable-length value's bytes, where the schema cannot tell (strings, lists).
_VARIABLE_BYTES = 64


@dataclass(frozen=True)
class KafkaReadRange:
    """The offsets ``[start, end)`` of one partition that one read task reads."""

    topic: str
    partition: int
    start: int
    end: int

    def __str__(self) -> str:
        return f"topic '{self.topic}' partition {self.partition} offsets [{self.start}, {self.end})"


# -- the read side --------------------------------------------------------------------------


def _row_bytes(schema: pa.Schema) -> int:
    """Estimated in-memory bytes of one row of ``schema`` (exact for fixed-width columns)."""

    def width(t: pa.DataType) -> int:
        if pa.types.is_fixed_size_list(t):
            return int(t.list_size) * width(t.value_type)
        if pa.types.is_struct(t):
            return sum(width(t.field(i).type) for i in range(t.num_fields))
        if pa.types.is_boolean(t):
            return 1
        try:
            return max(1, int(t.bit_width) // 8)
        except ValueError:  # variable length: offsets plus a guess of the values
            return 4 + _VARIABLE_BYTES

    return max(1, sum(width(f.type) for f in schema))


def _tensor_shape(field: pa.Field) -> tuple[int, ...] | None:
    """The per-row shape of a fixed-size list column of numbers, else ``None``."""
    t = field.type
    if not pa.types.is_fixed_size_list(t) or not (
        pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type)
    ):
        return None
    shape = (field.metadata or {}).get(b"kafka_ml.shape")
    if shape is not None:
        return tuple(int(d) for d in shape.decode().strip("[]").split(",") if d.strip())
    return (int(t.list_size),)


def _as_tensor_columns(table: pa.Table) -> pa.Table:
    """Fixed-size list columns of numbers as Arrow's canonical fixed-shape tensor columns, which
    Ray Data hands out as N-D NumPy arrays; the storage (the list's buffers) is not copied."""
    columns, fields = [], []
    for field, column in zip(table.schema, table.columns, strict=True):
        shape = _tensor_shape(field)
        if shape is None:
            columns.append(column)
            fields.append(field)
            continue
        value_type = field.type.value_type
        tensor_type = pa.fixed_shape_tensor(value_type, list(shape))
        # The canonical storage has a nullable item field; ours says "not null" (metadata only).
        storage_type = pa.list_(pa.field("item", value_type), int(field.type.list_size))
        chunks = [
            pa.ExtensionArray.from_storage(tensor_type, chunk.view(storage_type)) for chunk in column.chunks
        ]
        columns.append(pa.chunked_array(chunks, type=tensor_type))
        fields.append(pa.field(field.name, tensor_type, nullable=field.nullable))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _read_range(
    arguments: dict[str, Any],
    rng: KafkaReadRange,
    read_timeout: float,
    rows_per_block: int,
    tensors: bool,
) -> Iterator[Block]:
    """A read task: exactly ``rng``, in blocks of ``rows_per_block`` rows (the last one shorter).

    Blocks are cut at fixed row counts of the range's records in offset order, never by arrival
    time, so a retried task yields the same blocks: Ray may keep the blocks of a failed attempt.
    """
    config = dict(arguments["config"])
    # No group: a task reads its explicit offsets and commits nothing.
    config.pop("group.id", None)
    # An offset that vanishes mid-read (deleted, truncated) raises instead of librdkafka's
    # default of jumping to the earliest offset, which would hand out a range with a hole.
    config["auto.offset.reset"] = "error"
    options = {k: v for k, v in arguments.items() if k not in ("topics", "config", "partitions")}
    options.update(
        start={(rng.topic, rng.partition): rng.start},
        end={(rng.topic, rng.partition): rng.end},
        batch_size=min(_READ_BATCH_ROWS, rows_per_block),
        max_wait=0.5,
        commit=False,
    )
    # Opening the reader asks the partition's leader for its watermarks. While a leader is down
    # (killed, not yet fenced, no successor elected: several seconds) that fails at once; the task
    # asks again until read_timeout has passed, as it waits for records mid-read, instead of
    # failing the whole Dataset (Ray Data does not retry a task that raises).
    deadline = time.monotonic() + read_timeout
    while True:
        try:
            dataset = KafkaDataset(None, config, partitions=[(rng.topic, rng.partition)], **options)
            break
        except (KafkaError, KafkaTimeoutError) as e:
            if time.monotonic() >= deadline:
                raise IncompleteReadError(
                    f"cannot read {rng} of the snapshot: no answer for {read_timeout:g} s: {e}"
                ) from e
            time.sleep(0.5)
        except KafkaMLError as e:  # e.g. the start offset was deleted since the snapshot
            raise IncompleteReadError(f"cannot read {rng} of the snapshot: {e}") from e
    with dataset:
        plan = dataset.plan or []
        # The native plan clamps an end to the partition's high watermark: a partition that now
        # ends before the snapshot's end lost records (unclean leader election, topic recreated).
        if [(t, p, lo, hi) for t, p, lo, hi in plan] != [(rng.topic, rng.partition, rng.start, rng.end)]:
            now = ", ".join(f"[{lo}, {hi})" for _, _, lo, hi in plan)
            raise IncompleteReadError(
                f"cannot read {rng}: the partition now offers {now or 'nothing'} of it "
                "(records lost or the topic recreated since the snapshot was taken)"
            )
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        rows = 0
        last_progress = time.monotonic()
        while True:
            try:
                batch = dataset.poll(min(1.0, read_timeout))
            except StopIteration:
                # The reader stops a bounded read only when the partition's fetch position has
                # reached the end offset (transaction markers and compacted offsets included).
                break
            except DecodeError:
                raise  # a bad record (on_error="error"): it names its own offset
            except KafkaMLError as e:  # e.g. offsets deleted mid-read (auto.offset.reset=error)
                raise IncompleteReadError(f"cannot read {rng}: {e}") from e
            if batch is None:
                if time.monotonic() - last_progress > read_timeout:
                    reached = dataset.state_dict()["offsets"].get(rng.topic, {}).get(str(rng.partition))
                    raise IncompleteReadError(
                        f"cannot read {rng}: no record arrived for {read_timeout:g} s after offset "
                        f"{reached if reached is not None else rng.start} (broker or partition "
                        "leader unreachable?); the read fails rather than return part of the range"
                    )
                continue
            last_progress = time.monotonic()
            record_batch = pa.record_batch(batch)
            rows += record_batch.num_rows
            if rows > rng.end - rng.start:
                raise IncompleteReadError(f"read {rows} records from {rng}: more than its offsets")
            pending.append(record_batch)
            pending_rows += record_batch.num_rows
            while pending_rows >= rows_per_block:
                table = pa.Table.from_batches(pending)
                yield _block(table.slice(0, rows_per_block), tensors)
                rest = table.slice(rows_per_block)
                pending, pending_rows = rest.to_batches(), rest.num_rows
        if pending_rows or rows == 0:
            yield _block(pa.Table.from_batches(pending, schema=pa.schema(dataset)), tensors)


def _empty_blocks(schema: pa.Schema) -> list[Block]:
    return [schema.empty_table()]


def _block(table: pa.Table, tensors: bool) -> Block:
    return _as_tensor_columns(table) if tensors else table


@dataclass(frozen=True)
class _ReadPlan:
    """The snapshot a read resolved on the driver, and what each task needs to read its part."""

    arguments: dict[str, Any]
    ranges: tuple[KafkaReadRange, ...]
    schema: pa.Schema
    row_bytes: int


def _resolve(
    topics: str | Sequence[str] | None,
    config: Mapping[str, object] | None,
    partitions: Sequence[tuple[str, int]] | None,
    start: PositionSpec | None,
    end: PositionSpec,
    options: dict[str, Any],
) -> _ReadPlan:
    """Resolves the snapshot once: the offsets of every partition, the columns and their types."""
    probe = KafkaDataset(topics, config, partitions=partitions, start=start, end=end, commit=False, **options)
    try:
        plan = probe.plan
        schema = pa.schema(probe)
        arguments = dict(probe._arguments)
    finally:
        probe.close()
    assert plan is not None
    explicit = _position(end, "end")
    if isinstance(explicit, dict):
        # KafkaDataset reads up to the high watermark at most; an explicit end past it names
        # records that do not exist, which a Dataset must not pretend to hold.
        for t, p, _, hi in plan:
            asked = explicit.get((t, p))
            if asked is not None and hi is not None and asked > hi:
                raise ConfigError(
                    f"end offset {asked} of topic '{t}' partition {p} is beyond its high watermark {hi}"
                )
    ranges = tuple(
        KafkaReadRange(t, p, lo, hi) for t, p, lo, hi in sorted(plan) if hi is not None and hi > lo
    )
    return _ReadPlan(arguments, ranges, schema, _row_bytes(schema))


def _split(ranges: Sequence[KafkaReadRange], num_tasks: int) -> list[KafkaReadRange]:
    """Cuts the partitions' ranges into about ``num_tasks`` ranges of about equal offsets: a
    partition into several when it holds more than its share, never two partitions into one."""
    total = sum(r.end - r.start for r in ranges)
    if total == 0:
        return []
    share = max(1, math.ceil(total / max(1, num_tasks)))
    out: list[KafkaReadRange] = []
    for r in ranges:
        pieces = max(1, math.ceil((r.end - r.start) / share))
        bounds = [r.start + (r.end - r.start) * k // pieces for k in range(pieces + 1)]
        out.extend(
            KafkaReadRange(r.topic, r.partition, lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo
        )
    return out


class KafkaMLDatasource(Datasource):
    """A bounded read of Kafka partitions, resolved when the datasource is created (see
    :func:`read_kafka`); read tasks cover the snapshot's offset ranges exactly once."""

    def __init__(
        self,
        plan: _ReadPlan,
        *,
        num_tasks: int | None = None,
        min_offsets_per_task: int | None = None,
        read_timeout: float = 60.0,
        tensors: bool = True,
        rows_per_block: int | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._rows_per_block = rows_per_block
        self._plan = plan
        self._num_tasks = num_tasks
        self._min_offsets_per_task = max(1, min_offsets_per_task or MIN_BYTES_PER_TASK // plan.row_bytes)
        self._read_timeout = read_timeout
        self._tensors = tensors
        self._schema = _block(plan.schema.empty_table(), tensors).schema

    @property
    def ranges(self) -> tuple[KafkaReadRange, ...]:
        """Every partition's ``[start, end)`` of the snapshot (empty partitions left out)."""
        return self._plan.ranges

    def get_name(self) -> str:
        return "KafkaML"

    def estimate_inmemory_data_size(self) -> int | None:
        # Offsets, not records: a transactional or compacted topic holds fewer; a fair bound.
        return sum(r.end - r.start for r in self._plan.ranges) * self._plan.row_bytes

    def task_ranges(self, parallelism: int) -> list[KafkaReadRange]:
        """The ranges of the read tasks for Ray's requested ``parallelism`` (or the
        ``override_num_blocks`` given to :func:`read_kafka`)."""
        total = sum(r.end - r.start for r in self._plan.ranges)
        if self._num_tasks is not None:
            wanted = self._num_tasks
        else:
            wanted = min(max(1, parallelism), max(1, total // self._min_offsets_per_task))
        return _split(self._plan.ranges, wanted)

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: ray.data.DataContext | None = None,
    ) -> list[ReadTask]:
        row_bytes = self._plan.row_bytes
        rows_per_block = self._rows_per_block or max(1024, TARGET_BLOCK_BYTES // row_bytes)
        if not self._plan.ranges:  # nothing in the snapshot: one empty block with the columns
            empty = BlockMetadata(num_rows=0, size_bytes=0, input_files=None, exec_stats=None)
            return [ReadTask(functools.partial(_empty_blocks, self._schema), empty, schema=self._schema)]
        tasks = []
        for rng in self.task_ranges(parallelism):
            offsets = rng.end - rng.start
            read = functools.partial(
                _read_range, self._plan.arguments, rng, self._read_timeout, rows_per_block, self._tensors
            )
            # num_rows stays unknown: offsets overcount a transactional or compacted topic, and
            # Ray would answer count() from it without reading.
            metadata = BlockMetadata(
                num_rows=None, size_bytes=offsets * row_bytes, input_files=None, exec_stats=None
            )
            tasks.append(ReadTask(read, metadata, schema=self._schema, per_task_row_limit=per_task_row_limit))
        return tasks


def read_kafka(
    topics: str | Sequence[str] | None = None,
    config: Mapping[str, object] | None = None,
    *,
    partitions: Sequence[tuple[str, int]] | None = None,
    format: Literal["tensor", "json", "json_schema", "avro", "protobuf", "raw", "debezium"] = "raw",
    schema: Mapping[str, ColumnType] | None = None,
    start: PositionSpec | None = None,
    end: PositionSpec = "latest",
    metadata: Sequence[str] = (),
    on_error: Literal["error", "skip", "dead_letter"] = "error",
    override_num_blocks: int | None = None,
    min_offsets_per_task: int | None = None,
    read_timeout: float = 60.0,
    tensors: bool = True,
    rows_per_block: int | None = None,
    num_cpus: float | None = None,
    memory: float | None = None,
    concurrency: int | None = None,
    **options: Any,
) -> ray.data.Dataset:
    """A bounded read of Kafka topics as a ``ray.data.Dataset`` of typed columns.

    Takes :class:`~kafka_ml.KafkaDataset`'s arguments (``topics``, ``config``, ``partitions``,
    ``format``, ``schema``, ``start``, ``metadata``, ``on_error`` and, in ``options``, ``dtype``,
    ``shape``, ``avro_schema``, ``schema_registry`` (a URL: the tasks pickle it), ``subject``,
    ``json_schema``, the Protobuf arguments, ``dead_letter_topic``, ``queue_bytes``,
    ``timeout``); ``end`` defaults to ``"latest"`` and must be bounded.

    The snapshot (each partition's ``[start, end)``) is resolved now, once. ``override_num_blocks``
    sets the number of read tasks (about: a partition is never shared by two tasks); otherwise
    Ray's parallelism decides, with tasks of at least ``min_offsets_per_task`` offsets (default:
    16 MiB of rows, by the schema). Each task reads one partition's range; a task with no
    record for ``read_timeout`` seconds before its end (or no answer from the partition's leader
    for as long when it starts: a leader change is waited for) fails with
    :class:`~kafka_ml.IncompleteReadError`. ``tensors=True`` gives fixed-size numeric lists
    (``format="tensor"``, ``"float32[16]"`` columns) as Arrow fixed-shape tensor columns, which
    Ray hands out as N-D NumPy arrays; ``False`` keeps them fixed-size lists. ``rows_per_block``
    fixes the rows of a block (default: about 32 MiB of rows). ``num_cpus``, ``memory`` and
    ``concurrency`` go to the read tasks as in Ray's own readers.

    ``on_error="dead_letter"``: a retried task dead-letters its bad records again.
    """
    if end is None:
        raise ConfigError("read_kafka reads a bounded snapshot: end cannot be None (a stream)")
    if override_num_blocks is not None and override_num_blocks < 1:
        raise ConfigError(f"override_num_blocks must be >= 1, got {override_num_blocks}")
    options = {
        **options,
        "format": format,
        "schema": schema,
        "metadata": list(metadata),
        "on_error": on_error,
    }
    try:
        pickle.dumps(options)
    except Exception as e:
        raise ConfigError(
            f"read_kafka's options travel to Ray workers and must pickle: {e} (give schema_registry as a URL)"
        ) from e
    plan = _resolve(topics, config, partitions, start, end, options)
    source = KafkaMLDatasource(
        plan,
        num_tasks=override_num_blocks,
        min_offsets_per_task=min_offsets_per_task,
        read_timeout=read_timeout,
        tensors=tensors,
        rows_per_block=rows_per_block,
    )
    if override_num_blocks is None:
        # The tasks this read wants, given to Ray as its block count: Ray otherwise asks for about
        # 1 MiB blocks and splits each task's output to match (0.3-0.5 s of 1.5 s for 1 M rows
        # on two cores, 78 blocks instead of 4), while a block of a few tens of MiB is well
        # within its 128 MiB target.
        override_num_blocks = max(1, len(source.task_ranges(1 << 30)))
    dataset: ray.data.Dataset = ray.data.read_datasource(
        source,
        num_cpus=num_cpus,
        memory=memory,
        concurrency=concurrency,
        override_num_blocks=override_num_blocks,
    )
    return dataset


# -- the write side -------------------------------------------------------------------------


def _plain_columns(table: pa.Table) -> pa.Table:
    """Tensor extension columns (Arrow's or Ray's) as fixed-size lists of their flat values,
    the columns the Producer's encoders take."""
    columns, names = [], []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if isinstance(column.type, pa.ExtensionType):
            if isinstance(column.type, pa.FixedShapeTensorType):
                storage = [chunk.storage for chunk in column.chunks]
                column = pa.chunked_array(storage, type=column.type.storage_type)
            else:  # Ray's own tensor types: through NumPy (N-D, one row per tensor)
                array = np.asarray(
                    column.to_numpy() if column.num_chunks != 1 else column.chunk(0).to_numpy()
                )
                flat = array.reshape(len(array), -1)
                column = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])
        columns.append(column)
        names.append(name)
    return pa.Table.from_arrays(columns, names=names)


def _tensor_rows(table: pa.Table) -> np.ndarray:
    """The single column of a ``tensor`` write as an N-D array, one row per message."""
    if table.num_columns != 1:
        raise ConfigError(
            f"format='tensor' writes one column of tensors; the Dataset has {table.column_names}"
        )
    column = table.column(0)
    if isinstance(column.type, pa.FixedShapeTensorType):
        rows: np.ndarray = np.concatenate([chunk.to_numpy_ndarray() for chunk in column.chunks])
        return rows
    if pa.types.is_fixed_size_list(column.type):
        flat: np.ndarray = column.combine_chunks().flatten().to_numpy()
        return flat.reshape(len(column), int(column.type.list_size))
    return np.asarray(BlockAccessor.for_block(table).to_numpy(table.column_names[0]))


#: One Producer per worker process and config, reused by that worker's later write tasks: a new
#: producer's first delivery waits for its connections and producer id (0.1-0.7 s against a local
#: broker), many times the cost of sending a block.
_PRODUCERS: dict[tuple[tuple[str, str], ...], Producer] = {}


def _producer_key(config: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), repr(v)) for k, v in config.items()))


def _producer(config: Mapping[str, object]) -> Producer:
    key = _producer_key(config)
    producer = _PRODUCERS.get(key)
    if producer is None:
        producer = _PRODUCERS[key] = Producer(config)
    return producer


class KafkaMLDatasink(Datasink[int]):
    """Writes each block to ``topic`` with kafka-ml's Producer; each task waits for every
    delivery and returns the rows delivered (summed in :attr:`written`). A worker process keeps
    its producer for later write tasks with the same config."""

    def __init__(
        self,
        topic: str,
        config: Mapping[str, object],
        *,
        format: SendFormat = "json",
        timeout: float = 60.0,
        **send_options: Any,
    ) -> None:
        self.topic = topic
        self._config = dict(config)
        self._format = format
        self._timeout = timeout
        self._send_options = send_options
        self.written = 0

    def get_name(self) -> str:
        return "KafkaML"

    def write(self, blocks: Iterable[Block], ctx: Any) -> int:
        try:
            return self._write(_producer(self._config), blocks)
        except BaseException:
            # A producer that failed may be in a fatal state (idempotence): the next task opens
            # a new one.
            _PRODUCERS.pop(_producer_key(self._config), None)
            raise

    def _write(self, producer: Producer, blocks: Iterable[Block]) -> int:
        reports = []
        for block in blocks:
            table = BlockAccessor.for_block(block).to_arrow()
            if table.num_rows == 0:
                continue
            if self._format == "tensor":
                data: Any = _tensor_rows(table)
            else:
                data = _plain_columns(table)
            # Blocks are queued back to back; deliveries are awaited once, below.
            reports.append(
                producer.send(
                    self.topic, data, format=self._format, timeout=self._timeout, **self._send_options
                )
            )
        delivered = 0
        for report in reports:
            try:
                report.wait(self._timeout)
            except KafkaMLError as e:
                raise DeliveryError(f"write task to topic '{self.topic}': {e}") from e
            delivered += report.delivered
        return delivered

    def on_write_complete(self, write_result: WriteResult[int]) -> None:
        self.written = sum(write_result.write_returns)


def write_kafka(
    dataset: ray.data.Dataset,
    topic: str,
    config: Mapping[str, object],
    *,
    format: SendFormat = "json",
    key: str | None = None,
    schema: Mapping[str, ColumnType] | None = None,
    timeout: float = 60.0,
    ray_remote_args: Mapping[str, Any] | None = None,
    concurrency: int | None = None,
    **send_options: Any,
) -> int:
    """Writes ``dataset`` to ``topic``, one message per row, encoded in Rust by
    :meth:`Producer.send <kafka_ml.Producer.send>` (``format``, ``key`` (a column), ``schema``
    and ``send_options`` are its arguments); returns the number of rows delivered.

    Each write task waits for its deliveries; a failed delivery fails the task (and the write)
    with :class:`~kafka_ml.DeliveryError` and its reason. At least once: a retried task sends its
    rows again.
    """
    sink = KafkaMLDatasink(
        topic, config, format=format, timeout=timeout, key=key, schema=schema, **send_options
    )
    dataset.write_datasink(sink, ray_remote_args=dict(ray_remote_args or {}), concurrency=concurrency)
    return sink.written
