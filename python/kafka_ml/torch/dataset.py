"""`KafkaIterableDataset`: a Kafka topic as a sharded, resumable ``IterableDataset``.

``KafkaIterableDataset`` yields one dict of tensors per batch (``torch.from_numpy`` views of the
Arrow buffers where no reshuffling is needed), for ``DataLoader(ds, batch_size=None, ...)``.

The read is split deterministically over DataLoader workers x DDP ranks (``kafka_ml.sharding``):
a bounded read is cut into equal offset ranges, so every message is delivered exactly once per
epoch across all of them and no worker idles when there are fewer partitions than workers.
Assignment is explicit (no consumer-group rebalancing). A shard's state is the part of its
offset ranges it has not handed out yet, so a run resumes exactly — with torchdata's
``StatefulDataLoader`` as it is, or with a different number of workers or ranks by merging every
shard's state (:func:`merge_state_dicts`).

With ``metrics=``, the workers count what they hand out into a small file-backed block shared
with the training process (:class:`kafka_ml.metrics.SharedCounters`), which reports the sums to
Prometheus.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.utils.data

from .. import _native
from ..dataset import KafkaDataset, PositionSpec, _config
from ..exceptions import ConfigError
from ..sharding import (
    Interval,
    ShardState,
    Work,
    collect_shard_states,
    contains,
    intervals_from_offsets,
    merge_shard_states,
    normalize,
    split_work,
    work_size,
)
from .transport import _to_tensor, _worker_batch

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry
    from typing_extensions import Unpack

    from ..dataset import DatasetOptions
    from ..metrics import IterableDatasetMetrics, SharedCounters, SlotMeter

TopicPartition = tuple[str, int]

# A bounded read's internal batches close at `batch_size` rows, never on a timer: the row buffer
# yields whole batches only, so a batch cut short by ``max_wait`` (a slow first fetch) would reach
# the user no sooner, but would leave every later batch straddling two decoded ones, each then
# copied together instead of handed on as it is.
_BOUNDED_MAX_WAIT = 3600.0

# Metadata columns the dataset reads for itself (filtering and progress), dropped from the output
# unless the user asked for them.
_POSITION_COLUMNS = ("partition", "offset")


def merge_state_dicts(*states: object) -> dict[str, Any]:
    """One whole state from the states of every shard: ``StatefulDataLoader.state_dict()`` of
    each rank, :meth:`KafkaIterableDataset.state_dict` of each worker, or lists of them.

    Load the result with :meth:`KafkaIterableDataset.load_state_dict` to resume with any number
    of workers and ranks. Raises :class:`~kafka_ml.ConfigError` if a shard is missing.
    """
    return merge_shard_states(collect_shard_states(list(states))).to_dict()


def _layout(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """This process's DDP rank and the world size: given, from torch.distributed, or the env."""
    if rank is not None and world_size is not None:
        return rank, world_size
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class _RowBuffer:
    """Rows read but not yet handed out: a FIFO (exact batch sizes) or a shuffle buffer."""

    def __init__(self, rng: np.random.Generator | None) -> None:
        self.rng = rng
        self.chunks: list[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]] = []
        self.rows = 0

    def add(self, cols: dict[str, np.ndarray], partitions: np.ndarray, offsets: np.ndarray) -> None:
        if len(offsets):
            self.chunks.append((cols, partitions, offsets))
            self.rows += len(offsets)

    def pending(self) -> tuple[np.ndarray, np.ndarray]:
        """``(partitions, offsets)`` of the rows held."""
        if not self.chunks:
            return np.empty(0, np.int32), np.empty(0, np.int64)
        return (
            np.concatenate([c[1] for c in self.chunks]),
            np.concatenate([c[2] for c in self.chunks]),
        )

    def _consolidate(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        if len(self.chunks) > 1:
            names = self.chunks[0][0].keys()
            cols = {n: np.concatenate([c[0][n] for c in self.chunks]) for n in names}
            parts, offs = self.pending()
            self.chunks = [(cols, parts, offs)]
        return self.chunks[0]

    def take(self, n: int) -> dict[str, np.ndarray]:
        """``n`` rows (all that are left if fewer): the oldest, or random ones when shuffling."""
        n = min(n, self.rows)
        if self.rng is None:
            first = self.chunks[0]
            if len(first[2]) == n:  # the common case: a whole decoded batch, handed on without a copy
                self.chunks.pop(0)
                self.rows -= n
                return first[0]
            out: list[dict[str, np.ndarray]] = []
            need = n
            while need:
                cols, parts, offs = self.chunks[0]
                k = min(need, len(offs))
                out.append({name: a[:k] for name, a in cols.items()})
                if k == len(offs):
                    self.chunks.pop(0)
                else:
                    self.chunks[0] = ({name: a[k:] for name, a in cols.items()}, parts[k:], offs[k:])
                need -= k
            self.rows -= n
            return {name: np.concatenate([o[name] for o in out]) for name in out[0]}
        cols, parts, offs = self._consolidate()
        picked = self.rng.choice(len(offs), size=n, replace=False)
        keep = np.ones(len(offs), dtype=bool)
        keep[picked] = False
        self.chunks = [({k: a[keep] for k, a in cols.items()}, parts[keep], offs[keep])] if keep.any() else []
        self.rows -= n
        return {k: a[picked] for k, a in cols.items()}


class _ShardProgress:
    """What one shard has read and handed out in the current pass: its live state."""

    def __init__(self, epoch: int, shard: int, num_shards: int, assignment: Work) -> None:
        self.epoch = epoch
        self.shard = shard
        self.num_shards = num_shards
        self.assignment = assignment
        # Next offset to read per partition: below it every assigned offset is handed out,
        # buffered, or was not in the assignment.
        self.read_to: dict[TopicPartition, int] = {}
        self.buffer: _RowBuffer | None = None
        self.topic_of_buffer: str | None = None
        # This pass's writer of the shared metrics counters (metrics on), in its own process.
        self.meter: SlotMeter | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "meter": None}

    def state(self) -> ShardState:
        pending: dict[TopicPartition, list[Interval]] = {}
        if self.buffer is not None and self.buffer.rows and self.topic_of_buffer is not None:
            parts, offs = self.buffer.pending()
            for p in np.unique(parts):
                pending[(self.topic_of_buffer, int(p))] = intervals_from_offsets(offs[parts == p])
        remaining: Work = {}
        for tp, ivs in self.assignment.items():
            cursor = self.read_to.get(tp)
            left: list[Interval] = []
            for lo, hi in ivs:
                if cursor is not None:
                    if hi is not None and hi <= cursor:
                        continue
                    lo = max(lo, cursor)
                left.append((lo, hi))
            left.extend(pending.get(tp, []))
            if left:
                remaining[tp] = normalize(left)
        return ShardState(self.epoch, remaining, self.shard, self.num_shards)


class KafkaIterableDataset(torch.utils.data.IterableDataset[dict[str, Any]]):
    """A Kafka read as a ``torch.utils.data.IterableDataset`` of batches (dicts of tensors).

    Takes :class:`~kafka_ml.KafkaDataset`'s arguments (topics, config, format, schema, start,
    end, ...), plus:

    Args:
        batch_size: rows per yielded batch (every batch has exactly this many rows but the last
            of each shard, unless ``drop_last``). Streaming reads yield batches as they arrive.
        shuffle_buffer: rows held and drawn from at random (0: no shuffling, batches in offset
            order). Seeded by ``seed``, the epoch and the shard, so a run is reproducible.
        rank, world_size: the DDP layout; by default from ``torch.distributed`` or the ``RANK`` /
            ``WORLD_SIZE`` environment variables.
        num_workers: the DataLoader's ``num_workers``, only to make ``len()`` exact (it is
            checked against the real number when iterating).
        max_wait: the latency bound of a streaming read (seconds before a partial batch is
            yielded); a bounded read yields whole batches as soon as they are read.
        metrics: ``True`` (prometheus-client's default registry) or a ``CollectorRegistry``:
            :class:`~kafka_ml.KafkaDataset`'s metrics (rows and batches handed out, decoded
            bytes, decode errors, queued bytes, consumer lag per partition), counted by every
            DataLoader worker of this process into a shared file-backed block and summed at
            scrape time; see :mod:`kafka_ml.metrics`. Needs ``pip install 'kafka-ml[metrics]'``.
        metrics_name: the ``dataset`` label (default: the topics joined by ``,``, with
            ``#rank<N>`` added when ``world_size > 1``; a name given is used as it is).

    Call :meth:`set_epoch` at the start of every epoch (as with ``DistributedSampler``): the
    shuffle order depends on it, and a loaded state applies to its own epoch only.
    """

    def __init__(
        self,
        topics: str | Sequence[str] | None = None,
        config: Mapping[str, object] | None = None,
        *,
        partitions: Sequence[tuple[str, int]] | None = None,
        batch_size: int = 1024,
        drop_last: bool = False,
        shuffle_buffer: int = 0,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        num_workers: int | None = None,
        start: PositionSpec | None = None,
        end: PositionSpec | None = None,
        max_wait: float = 0.1,
        metadata: Sequence[str] = (),
        metrics: bool | CollectorRegistry = False,
        metrics_name: str | None = None,
        **dataset_options: Unpack[DatasetOptions],
    ) -> None:
        super().__init__()
        registry = None
        if metrics is not False:
            from ..metrics import metrics_registry

            # Resolved before anything connects: a missing prometheus-client fails at once.
            registry = metrics_registry(metrics)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if shuffle_buffer < 0:
            raise ConfigError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.rank, self.world_size = _layout(rank, world_size)
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank {self.rank} is not in a world of size {self.world_size}")
        self.num_workers = num_workers
        self.bounded = end is not None
        if shuffle_buffer and not self.bounded:
            raise ConfigError(
                "shuffle_buffer needs a bounded read (end=...): a stream has no epoch to shuffle"
            )
        self._config = dict(config or {})
        self._metadata = list(metadata)
        # Never metrics: the probe and each pass's KafkaDataset would report on a registry of the
        # worker's process (unseen) or clash by name; this dataset reports for them.
        self._options: dict[str, Any] = {"max_wait": max_wait, **dataset_options}
        # Resolve the plan once, here: every worker and rank then splits the same snapshot.
        probe = KafkaDataset(
            topics,
            self._config,
            partitions=partitions,
            start=start,
            end=end if end is not None else "latest",
            metadata=self._metadata,
            **self._options,
        )
        try:
            plan = probe.plan
            self.columns = probe.columns
        finally:
            probe.close()
        assert plan is not None
        self.plan = plan
        self._work: Work = {}
        for t, p, lo, hi in plan:
            if not self.bounded:
                self._work[(t, p)] = [(lo, None)]
            elif hi is not None and hi > lo:
                self._work[(t, p)] = [(lo, hi)]
        self._epoch = 0
        self._resume: ShardState | None = None
        self._progress: _ShardProgress | None = None
        self._counters: SharedCounters | None = None
        self._metrics: IterableDatasetMetrics | None = None
        if registry is not None:
            from ..metrics import MIN_SLOTS, IterableDatasetMetrics, SharedCounters

            if metrics_name is None:
                names = [topics] if isinstance(topics, str) else list(topics or [])
                metrics_name = ",".join(names or sorted({t for t, _ in partitions or []}))
                if self.world_size > 1:
                    metrics_name += f"#rank{self.rank}"
            slots = max(num_workers or 0, MIN_SLOTS)
            self._counters = SharedCounters.create(self, slots, [(t, p) for t, p, _, _ in plan])
            self._metrics = IterableDatasetMetrics(self._counters, registry, metrics_name)

    def __getstate__(self) -> dict[str, Any]:
        # A DataLoader worker (spawn) gets the counters' path, not the registry's source.
        state = dict(self.__dict__)
        state["_metrics"] = None
        return state

    # -- layout ------------------------------------------------------------------------------

    def _shard(self) -> tuple[int, int]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if self.num_workers is not None and info is not None and workers != self.num_workers:
            raise ConfigError(
                f"KafkaIterableDataset(num_workers={self.num_workers}) runs in a DataLoader with "
                f"num_workers={workers}"
            )
        return self.rank * workers + worker, self.world_size * workers

    def _assignment(self, shard: int, num_shards: int) -> Work:
        resume = self._resume
        if resume is not None and resume.epoch == self._epoch:
            if resume.is_whole:
                return split_work(resume.remaining, num_shards)[shard]
            if (resume.shard, resume.num_shards) == (shard, num_shards):
                return resume.remaining
            raise ConfigError(
                f"the loaded state is shard {resume.shard} of {resume.num_shards}, this is shard "
                f"{shard} of {num_shards}: to resume with another layout, load "
                "kafka_ml.torch.merge_state_dicts(<the states of every shard>)"
            )
        return split_work(self._work, num_shards)[shard]

    # -- epochs and length -------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch: the shuffle seed, and which loaded state applies."""
        self._epoch = epoch

    @property
    def epoch(self) -> int:
        return self._epoch

    def num_samples(self) -> int:
        """Messages this rank delivers in the current epoch (an upper bound where the topic has
        offset gaps: compacted records or transaction markers)."""
        size = self._rank_sizes(self.num_workers or 1)
        if size is None:
            raise TypeError("a streaming KafkaIterableDataset (no end) has no length")
        return sum(size)

    def _rank_sizes(self, workers: int) -> list[int] | None:
        n = self.world_size * workers
        shards = range(self.rank * workers, (self.rank + 1) * workers)
        sizes = []
        for s in shards:
            size = work_size(self._assignment(s, n))
            if size is None:
                return None
            sizes.append(size)
        return sizes

    def __len__(self) -> int:
        """Batches this rank yields in the current epoch (see :meth:`num_samples`)."""
        sizes = self._rank_sizes(self.num_workers or 1)
        if sizes is None:
            raise TypeError("a streaming KafkaIterableDataset (no end) has no length")
        if self.drop_last:
            return sum(s // self.batch_size for s in sizes)
        return sum(-(-s // self.batch_size) for s in sizes)

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """This shard's state: the epoch and the offsets it has not handed out yet.

        In a DataLoader worker (where ``StatefulDataLoader`` calls it) it is that worker's
        shard; in the main process, the shard of the in-process iteration.
        """
        if self._progress is not None:
            return self._progress.state().to_dict()
        shard, num_shards = self._shard()
        if self._resume is not None and self._resume.epoch == self._epoch and not self._resume.is_whole:
            return self._resume.to_dict()
        return ShardState(self._epoch, self._assignment(shard, num_shards), shard, num_shards).to_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resumes from a shard's state, or from a merged one (any layout; see
        :func:`merge_state_dicts`). The next pass of the state's epoch skips everything that
        was handed out before it was saved."""
        states = collect_shard_states(state)
        if len(states) != 1:
            merged = merge_shard_states(states)
        else:
            merged = states[0]
        self._resume = merged
        self._epoch = merged.epoch
        self._progress = None

    def commit(self, state: object, timeout: float = 30.0) -> dict[TopicPartition, int]:
        """Commits a checkpoint (the merged states of every shard) to the consumer group of the
        config's ``group.id``: per partition, the first offset not handed out; for partitions
        fully handed out, the end of the read. Returns the committed offsets."""
        merged = merge_shard_states(collect_shard_states([state]))
        offsets: dict[TopicPartition, int] = {}
        for t, p, _lo, hi in self.plan:
            left = merged.remaining.get((t, p))
            if left:
                offsets[(t, p)] = left[0][0]
            elif hi is not None and self.bounded:
                offsets[(t, p)] = hi
        _native.commit_offsets(_config(self._config), offsets, timeout)
        return offsets

    # -- iteration ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        shard, num_shards = self._shard()
        assignment = self._assignment(shard, num_shards)
        # A loaded state is used by one pass only (persistent workers, in-process iteration).
        self._resume = None
        progress = _ShardProgress(self._epoch, shard, num_shards, assignment)
        if self._counters is not None:
            info = torch.utils.data.get_worker_info()
            progress.meter = self._counters.slot(info.id if info is not None else 0)
        self._progress = progress
        return self._iterate(progress)

    def _iterate(self, progress: _ShardProgress) -> Iterator[dict[str, Any]]:
        if not progress.assignment:
            return
        if not self.bounded:
            yield from self._stream(progress)
            return
        rng = (
            np.random.default_rng([self.seed, progress.epoch, progress.shard])
            if self.shuffle_buffer
            else None
        )
        hold = max(self.shuffle_buffer, self.batch_size)
        topics = sorted({t for t, _ in progress.assignment})
        for topic in topics:
            work = {p: ivs for (t, p), ivs in progress.assignment.items() if t == topic}
            buffer = _RowBuffer(rng)
            progress.buffer, progress.topic_of_buffer = buffer, topic
            for cols, parts, offs in self._read_topic(topic, work, progress):
                buffer.add(cols, parts, offs)
                while buffer.rows >= hold:
                    yield self._hand_out(buffer.take(self.batch_size), progress)
            while buffer.rows >= self.batch_size or (buffer.rows and not self.drop_last):
                yield self._hand_out(buffer.take(self.batch_size), progress)
            # drop_last: the rows left over are dropped on purpose, not owed to a later pass.
            buffer.chunks, buffer.rows = [], 0

    def _read_topic(
        self, topic: str, work: dict[int, list[Interval]], progress: _ShardProgress
    ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
        """The assigned rows of ``topic``'s partitions: columns, partition ids, offsets."""
        metadata = self._metadata + [c for c in _POSITION_COLUMNS if c not in self._metadata]
        spans = {(topic, p): (ivs[0][0], ivs[-1][1]) for p, ivs in work.items()}
        needs_filter = {p for p, ivs in work.items() if len(ivs) > 1}
        dataset = KafkaDataset(
            None,
            self._config,
            partitions=sorted(spans),
            start={tp: lo for tp, (lo, _) in spans.items()},
            end={tp: hi for tp, (_, hi) in spans.items() if hi is not None},
            metadata=metadata,
            batch_size=self.batch_size,
            commit=False,
            **{**self._options, "max_wait": _BOUNDED_MAX_WAIT},
        )
        meter = progress.meter
        with dataset:
            try:
                for batch in dataset:
                    if meter is not None:
                        meter.read(batch, dataset._reader)
                    arrays = batch.to_numpy()
                    parts = arrays["partition"]
                    offs = arrays["offset"]
                    for (t, p), next_offset in batch.offsets.items():
                        progress.read_to[(t, p)] = next_offset
                    cols = {c: arrays[c] for c in self.columns}
                    if needs_filter:
                        mask = np.ones(len(offs), dtype=bool)
                        for p in needs_filter:
                            rows = parts == p
                            if rows.any():
                                mask[rows] = contains(work[p], offs[rows])
                        if not mask.all():
                            cols = {c: a[mask] for c, a in cols.items()}
                            parts, offs = parts[mask], offs[mask]
                    yield cols, parts, offs
            finally:
                if meter is not None:
                    meter.end_reader(dataset._reader)
        # Read to the end: offsets left without a message (transaction markers, compacted
        # records) are not owed to a later pass.
        for tp, (_, hi) in spans.items():
            if hi is not None:
                progress.read_to[tp] = hi

    def _stream(self, progress: _ShardProgress) -> Iterator[dict[str, Any]]:
        """A streaming read: every assigned partition from its position, batches as they come."""
        dataset = KafkaDataset(
            None,
            self._config,
            partitions=sorted(progress.assignment),
            start={tp: ivs[0][0] for tp, ivs in progress.assignment.items()},
            metadata=self._metadata,
            batch_size=self.batch_size,
            commit=False,
            **self._options,
        )
        meter = progress.meter
        with dataset:
            try:
                for batch in dataset:
                    if meter is not None:
                        meter.read(batch, dataset._reader)
                    arrays = batch.to_numpy()
                    for tp, next_offset in batch.offsets.items():
                        progress.read_to[tp] = next_offset
                    yield self._hand_out(arrays, progress)
            finally:
                if meter is not None:
                    meter.end_reader(dataset._reader)

    def _hand_out(self, cols: dict[str, np.ndarray], progress: _ShardProgress) -> dict[str, Any]:
        if progress.meter is not None:
            progress.meter.handed_out(len(next(iter(cols.values()), ())))
        return self._output(cols)

    def _output(self, cols: dict[str, np.ndarray]) -> dict[str, Any]:
        if torch.utils.data.get_worker_info() is not None:
            return _worker_batch(cols, self.columns)
        return {name: _to_tensor(cols[name]) for name in self.columns}

    def __repr__(self) -> str:
        kind = "bounded" if self.bounded else "streaming"
        return (
            f"KafkaIterableDataset({kind}, {len(self.plan)} partitions, batch_size={self.batch_size}, "
            f"rank {self.rank}/{self.world_size}, epoch {self._epoch})"
        )
