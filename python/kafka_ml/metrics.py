"""Prometheus metrics of inference loops and datasets (needs prometheus-client:
``pip install 'kafka-ml[metrics]'``).

``InferenceLoop(metrics_port=9464)`` (``kafka-ml serve --metrics-port 9464``) serves
``/metrics`` over HTTP; ``KafkaDataset(metrics=True)`` puts a dataset's counters on
prometheus-client's default registry (or ``metrics=registry`` on another), for a training job
to expose with :func:`start_metrics_server` or its own exporter.
``kafka_ml.torch.KafkaIterableDataset(metrics=True)`` reports the same metrics, counted by its
DataLoader workers in other processes into a small file-backed block of counters
(:class:`SharedCounters`) that the training process sums at scrape time.

Values are read from the loop and the dataset when Prometheus scrapes (a collector, not a second
set of counters kept alongside theirs); only the latency histogram is fed as results are
acknowledged, a group of results at a time with NumPy (``Histogram.observe`` per result would
cost a Python call and a lock per message on the serving path). Every source on a registry is
labelled (``group`` and ``replica`` for a loop, ``dataset`` for a dataset), so several loops and
datasets share one registry and one port without clashing.

This module imports prometheus-client only when a metric is asked for: ``import kafka_ml``
never does.
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .exceptions import ConfigError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from ._native import Batch, BatchReader
    from .dataset import KafkaDataset
    from .inference import InferenceLoop

__all__ = ["LATENCY_BUCKETS", "MetricsServer", "start_metrics_server"]

INSTALL_HINT = "pip install 'kafka-ml[metrics]'"

#: Upper bounds (seconds) of the end-to-end latency histogram: from a 1 ms answer of an idle
#: at-least-once loop to the seconds of a loop that has fallen behind.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def prometheus() -> ModuleType:
    """The prometheus_client module, or an ImportError saying how to install it."""
    try:
        import prometheus_client
    except ImportError as e:
        raise ImportError(f"Prometheus metrics need prometheus-client: {INSTALL_HINT}") from e
    return prometheus_client


# -- the one collector of a registry ------------------------------------------------------------


class _Source(Protocol):
    def collect_into(self, families: _Families) -> None: ...


class _Families:
    """The metric families of one scrape, each created when a source first adds to it."""

    def __init__(self) -> None:
        self._core = prometheus().metrics_core
        self._by_name: dict[str, Metric] = {}

    def _family(self, kind: str, name: str, doc: str, labels: list[str]) -> Any:
        family = self._by_name.get(name)
        if family is None:
            family = getattr(self._core, kind)(name, doc, labels=labels)
            self._by_name[name] = family
        return family

    def counter(self, name: str, doc: str, labels: Mapping[str, str], value: float) -> None:
        self._family("CounterMetricFamily", name, doc, list(labels)).add_metric(list(labels.values()), value)

    def gauge(self, name: str, doc: str, labels: Mapping[str, str], value: float) -> None:
        self._family("GaugeMetricFamily", name, doc, list(labels)).add_metric(list(labels.values()), value)

    def info(self, name: str, doc: str, labels: Mapping[str, str], info: Mapping[str, str]) -> None:
        family = self._family("InfoMetricFamily", name, doc, list(labels))
        family.add_metric(list(labels.values()), dict(info))

    def histogram(
        self, name: str, doc: str, labels: Mapping[str, str], buckets: list[tuple[str, float]], total: float
    ) -> None:
        family = self._family("HistogramMetricFamily", name, doc, list(labels))
        family.add_metric(list(labels.values()), buckets, total)

    def all(self) -> list[Metric]:
        return list(self._by_name.values())


class _RegistryCollector:
    """Registered once on a registry; at each scrape it asks every live source for its samples.
    Sources are held weakly: a loop or dataset that is gone stops being reported."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[tuple[str, ...], weakref.ref[Any]] = {}

    def add(self, key: tuple[str, ...], source: _Source) -> None:
        with self._lock:
            existing = self._sources.get(key)
            if existing is not None and existing() is not None:
                raise ConfigError(
                    f"metrics: {key[0]} {'/'.join(key[1:])!r} is already reported on this registry "
                    "(give each loop its own instance name or group, each dataset its own metrics_name)"
                )
            self._sources[key] = weakref.ref(source)

    def remove(self, key: tuple[str, ...], source: _Source) -> None:
        with self._lock:
            ref = self._sources.get(key)
            if ref is not None and ref() in (None, source):
                del self._sources[key]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            sources = [s for s in (ref() for ref in self._sources.values()) if s is not None]
        families = _Families()
        for source in sources:
            source.collect_into(families)
        yield from families.all()


_COLLECTORS: weakref.WeakKeyDictionary[Any, _RegistryCollector] = weakref.WeakKeyDictionary()
_COLLECTORS_LOCK = threading.Lock()


def _collector(registry: CollectorRegistry) -> _RegistryCollector:
    with _COLLECTORS_LOCK:
        collector = _COLLECTORS.get(registry)
        if collector is None:
            collector = _RegistryCollector()
            registry.register(collector)
            _COLLECTORS[registry] = collector
        return collector


def metrics_registry(metrics: object) -> CollectorRegistry:
    """``True``: prometheus-client's default registry; else the ``CollectorRegistry`` given."""
    prometheus()
    from prometheus_client import REGISTRY, CollectorRegistry

    if metrics is True:
        return REGISTRY
    if isinstance(metrics, CollectorRegistry):
        return metrics
    raise ConfigError(f"metrics={metrics!r}: expected True or a prometheus_client.CollectorRegistry")


# -- the HTTP endpoint --------------------------------------------------------------------------


class MetricsServer:
    """``/metrics`` of a registry over HTTP, on a thread of its own, until :meth:`close`."""

    def __init__(self, registry: CollectorRegistry, port: int, addr: str = "0.0.0.0") -> None:
        prom = prometheus()
        if not 0 <= port <= 65535:
            raise ConfigError(f"metrics port {port}: expected 0..65535 (0: any free port)")
        self.addr = addr
        try:
            self._server, self._thread = prom.start_http_server(port, addr=addr, registry=registry)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ConfigError(f"metrics port {port} on {addr}: address already in use") from None
            raise ConfigError(f"cannot serve metrics on {addr}:{port}: {e.strerror or e}") from None
        self.port: int = self._server.server_port
        self._closed = False

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.addr in ("0.0.0.0", "") else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stops serving and frees the port. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(port: int, addr: str = "0.0.0.0", registry: Any = True) -> MetricsServer:
    """Serves ``registry`` (default: prometheus-client's default registry, where
    ``KafkaDataset(metrics=True)`` reports) on ``addr:port``; a port in use is a
    :class:`~kafka_ml.ConfigError` naming it. ``port=0`` takes a free one (``server.port``)."""
    return MetricsServer(metrics_registry(registry), port, addr)


# -- end-to-end latency -------------------------------------------------------------------------


class LatencyHistogram:
    """Cumulative end-to-end latencies in Prometheus buckets, fed a group of results at a time."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self._bounds = np.asarray(bounds, dtype=np.float64)
        self._lock = threading.Lock()  # observations on the loop's thread, snapshots on the server's
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._counts = np.zeros(len(self._bounds) + 1, dtype=np.int64)
            self._sum = 0.0

    def observe_ms(self, ms: np.ndarray) -> None:
        # An input stamped ahead of this host's clock would give a negative latency; counted as 0
        # so that the sum, which Prometheus treats as a counter, never goes down.
        seconds = np.maximum(ms, 0.0) / 1000.0
        # side="left": the first bound >= the value, as Prometheus' `le` (less or equal) means.
        slots = np.searchsorted(self._bounds, seconds, side="left")
        counts = np.bincount(slots, minlength=len(self._bounds) + 1)
        with self._lock:
            self._counts += counts
            self._sum += float(seconds.sum())

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        """``([(le, cumulative count), ..., ("+Inf", count)], sum)``."""
        with self._lock:
            counts, total = self._counts.copy(), self._sum
        cumulative = np.cumsum(counts)
        buckets = [(repr(float(b)), float(c)) for b, c in zip(self._bounds, cumulative[:-1], strict=True)]
        return [*buckets, ("+Inf", float(cumulative[-1]))], total


# -- an inference loop's metrics ----------------------------------------------------------------


class LoopMetrics:
    """What an :class:`~kafka_ml.inference.InferenceLoop` reports: its counters, read at scrape
    time, the latency histogram, the model version being served; its input dataset reports on
    the same registry. With a ``port``, the registry is served over HTTP while the loop runs."""

    def __init__(
        self,
        loop: InferenceLoop,
        *,
        group: str,
        instance: str,
        registry: CollectorRegistry | None,
        port: int | None,
        addr: str,
    ) -> None:
        prom = prometheus()
        # A registry of the loop's own unless one is given: a second loop in the process, on its
        # own port, then shows only itself.
        self.registry: CollectorRegistry = registry if registry is not None else prom.CollectorRegistry()
        self.histogram = LatencyHistogram()
        self.labels = {"group": group, "replica": instance}
        self._loop = weakref.ref(loop)
        self._port, self._addr = port, addr
        self.server: MetricsServer | None = None
        self._key = ("inference loop", group, instance)
        _collector(self.registry).add(self._key, self)
        if port is not None:
            # Bound now, so that a port in use is an error when the loop is made, not when it
            # runs; freed when the loop is collected, should it never run.
            self.start()
            weakref.finalize(loop, _close_server, self)

    def start(self) -> None:
        if self._port is not None and self.server is None:
            self.server = MetricsServer(self.registry, self._port, self._addr)

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def dataset_options(self) -> dict[str, Any]:
        return {"metrics": self.registry, "metrics_name": f"{self.labels['group']}/{self.labels['replica']}"}

    def collect_into(self, f: _Families) -> None:
        loop = self._loop()
        if loop is None:
            return
        labels, counts = self.labels, loop._counts
        f.info(
            "kafka_ml_inference",
            "What the inference loop serves",
            labels,
            {
                "input_topic": ",".join(loop.input_topics),
                "output_topic": loop.output_topic,
                "delivery": loop.delivery,
            },
        )
        for key, name, doc in _LOOP_COUNTERS:
            f.counter(name, doc, labels, counts[key])
        buckets, total = self.histogram.snapshot()
        f.histogram(
            "kafka_ml_inference_latency_seconds",
            "End-to-end latency: input timestamp to result acknowledged (or its transaction committed)",
            labels,
            buckets,
            total,
        )
        if loop._model_version is not None:
            f.info(
                "kafka_ml_inference_model",
                "The model version the loop predicts with",
                labels,
                {"version": loop._model_version},
            )


_LOOP_COUNTERS = (
    ("messages", "kafka_ml_inference_messages", "Inputs answered (results acknowledged or committed)"),
    ("batches", "kafka_ml_inference_batches", "Input batches predicted and written"),
    ("predict_errors", "kafka_ml_inference_predict_errors", "Batches on which predict raised"),
    ("dead_lettered", "kafka_ml_inference_dead_letters", "Inputs sent to the dead-letter topic"),
    ("transaction_aborts", "kafka_ml_inference_transaction_aborts", "Transactions aborted (exactly_once)"),
    ("model_updates", "kafka_ml_inference_model_updates", "Model versions swapped in while serving"),
)


def _close_server(metrics: LoopMetrics) -> None:
    metrics.stop()


# -- a dataset's metrics ------------------------------------------------------------------------


class DatasetMetrics:
    """A :class:`~kafka_ml.KafkaDataset`'s batches, messages and decoded bytes (counted as they
    are handed out), decode errors, queued bytes and consumer lag per partition (read from its
    reader at scrape time)."""

    def __init__(self, dataset: KafkaDataset, registry: CollectorRegistry, name: str) -> None:
        self.registry = registry
        self.labels = {"dataset": name}
        self.messages = self.batches = self.bytes = 0
        # Decode counters of finished passes: a reader's own start at 0 with each pass.
        self._skipped = self._dead_lettered = 0
        self._dataset = weakref.ref(dataset)
        self._key = ("dataset", name)
        self._collector = _collector(self.registry)
        self._collector.add(self._key, self)

    def count(self, batch: Batch) -> None:
        self.messages += batch.num_rows
        self.batches += 1
        self.bytes += batch.nbytes

    def iterate(self, reader: BatchReader) -> Iterator[Batch]:
        for batch in reader:
            self.count(batch)
            yield batch

    async def aiterate(self, reader: BatchReader) -> AsyncIterator[Batch]:
        async for batch in reader:
            self.count(batch)
            yield batch

    def end_pass(self, reader: BatchReader) -> None:
        """Keeps the decode counters of a reader about to be closed."""
        try:
            skipped, dead_lettered, _, _ = reader.stats()
        except Exception:  # already closed: its counters were kept then
            return
        self._skipped += skipped
        self._dead_lettered += dead_lettered

    def close(self) -> None:
        self._collector.remove(self._key, self)

    def collect_into(self, f: _Families) -> None:
        dataset = self._dataset()
        reader = dataset._reader if dataset is not None else None
        skipped, dead_lettered, queued, lag = self._skipped, self._dead_lettered, 0, {}
        if reader is not None:
            try:
                s, d, queued, _ = reader.stats()
                skipped, dead_lettered = skipped + s, dead_lettered + d
                lag = reader.lag()
            except Exception:  # closed between the look and the call: report what was kept
                pass
        _dataset_samples(
            f, self.labels, (self.messages, self.batches, self.bytes, skipped, dead_lettered, queued), lag
        )


def _dataset_samples(
    f: _Families, labels: Mapping[str, str], values: Sequence[int], lag: Mapping[tuple[str, int], int]
) -> None:
    """A dataset's samples: ``values`` in the order of :data:`DATASET_FIELDS`, and the consumer
    lag per partition. One definition for :class:`DatasetMetrics` and
    :class:`IterableDatasetMetrics`, which report the same metrics."""
    messages, batches, decoded_bytes, skipped, dead_lettered, queued = (int(v) for v in values)
    f.counter("kafka_ml_dataset_messages", "Messages handed out in batches", labels, messages)
    f.counter("kafka_ml_dataset_batches", "Batches handed out", labels, batches)
    f.counter("kafka_ml_dataset_decoded_bytes", "Bytes of the decoded Arrow batches", labels, decoded_bytes)
    f.counter("kafka_ml_dataset_skipped", "Undecodable messages skipped", labels, skipped)
    f.counter(
        "kafka_ml_dataset_dead_lettered", "Undecodable messages sent to the dead-letter topic", labels,
        dead_lettered,
    )  # fmt: skip
    f.gauge("kafka_ml_dataset_queued_bytes", "Decoded bytes waiting to be taken", labels, queued)
    for (topic, partition), messages in sorted(lag.items()):
        f.gauge(
            "kafka_ml_consumer_lag",
            "Messages in the partition after those handed out (by the last fetch's high watermark)",
            {**labels, "topic": topic, "partition": str(partition)},
            messages,
        )


# -- a KafkaIterableDataset's metrics, counted in its DataLoader workers ------------------------

#: The counters of a slot of :class:`SharedCounters`, in their order; the slot's consumer lag
#: per partition of the plan follows them.
DATASET_FIELDS = ("messages", "batches", "decoded_bytes", "skipped", "dead_lettered", "queued_bytes")
_MESSAGES, _BATCHES, _DECODED_BYTES, _SKIPPED, _DEAD_LETTERED, _QUEUED_BYTES = range(len(DATASET_FIELDS))
_LAG = len(DATASET_FIELDS)

#: Worker slots of a block unless the dataset is told of more workers (``num_workers=``).
MIN_SLOTS = 64

#: Seconds between two looks at a reader's decode counters, queued bytes and lag while batches
#: flow (and once more when the reader ends).
LOOK_INTERVAL = 0.5


def _block_directory() -> str:
    """/dev/shm (memory, never written to a disk) where there is one, else the temp directory."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return tempfile.gettempdir()


def _remove_block(path: str, pid: int) -> None:
    # Only in the process that made the block: a forked DataLoader worker holds a copy of the
    # dataset (and of this finalizer) and must leave the file to its owner.
    if os.getpid() == pid:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class SharedCounters:
    """The counters of one :class:`~kafka_ml.torch.KafkaIterableDataset`, shared by the
    processes that read for it: an int64 ``numpy.memmap`` of a small file, one row per worker
    slot (``get_worker_info().id``; 0 when iterated in-process) holding :data:`DATASET_FIELDS`
    and then, per partition of the plan, the consumer lag that slot last saw (-1: not known).

    Made by the dataset in the training process (:meth:`create`), which owns the file: it is
    removed when the dataset is collected. A worker gets a copy (pickled for ``spawn``,
    inherited with ``fork``) that carries the path only and opens the file again, ``r+``, in
    its own process; only the owner removes it. Each slot has one writer, which adds to its
    counters (a worker of a later epoch goes on from the totals of the earlier ones) and
    overwrites only its gauges (queued bytes, lag). ``multiprocessing.shared_memory`` is not
    used: before Python 3.13 its resource tracker unlinks a segment a child process attached.
    """

    def __init__(self, path: str, slots: int, partitions: Sequence[tuple[str, int]]) -> None:
        self.path = path
        self.slots = slots
        self.partitions = [(str(t), int(p)) for t, p in partitions]
        self._owner: weakref.finalize[Any, Any] | None = None
        self._array: np.ndarray[Any, np.dtype[np.int64]] | None = None
        self._pid = 0

    @property
    def width(self) -> int:
        return _LAG + len(self.partitions)

    @classmethod
    def create(cls, owner: object, slots: int, partitions: Sequence[tuple[str, int]]) -> SharedCounters:
        """A new block of zeroed counters (lag: -1), removed when ``owner`` is collected or at
        exit of this process."""
        fd, path = tempfile.mkstemp(prefix="kafka-ml-counters-", suffix=".i64", dir=_block_directory())
        counters = cls(path, slots, partitions)
        try:
            os.ftruncate(fd, slots * counters.width * 8)
        finally:
            os.close(fd)
        counters._owner = weakref.finalize(owner, _remove_block, path, os.getpid())
        counters.array()[:, _LAG:] = -1
        return counters

    @property
    def owned(self) -> bool:
        """Whether this copy removes the file (the training process's, while its dataset lives)."""
        return self._owner is not None and self._owner.alive

    def array(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        """The block, ``(slots, width)``, mapped in this process (again after a fork)."""
        pid = os.getpid()
        if self._array is None or self._pid != pid:
            mapped = np.memmap(self.path, dtype=np.int64, mode="r+", shape=(self.slots, self.width))
            self._array = np.asarray(mapped)  # a plain view: no memmap subclass on the hot path
            self._pid = pid
        return self._array

    def slot(self, slot: int) -> SlotMeter:
        """The writer of ``slot``, for one pass of its shard."""
        if not 0 <= slot < self.slots:
            raise ConfigError(
                f"metrics: DataLoader worker {slot} is beyond the {self.slots} worker slots of this "
                f"dataset's counters (at least {MIN_SLOTS}, or num_workers=): pass "
                "num_workers=<the DataLoader's> to KafkaIterableDataset"
            )
        return SlotMeter(self, slot)

    def totals(self) -> tuple[list[int], dict[tuple[str, int], int]]:
        """The counters summed over the slots (in the order of :data:`DATASET_FIELDS`), and per
        partition the smallest lag a slot reports (the shard furthest along in it); partitions
        no slot knows of are left out."""
        block = self.array().copy()  # one read of every slot
        sums = [int(v) for v in block[:, :_LAG].sum(axis=0)]
        lag: dict[tuple[str, int], int] = {}
        for i, tp in enumerate(self.partitions):
            known = block[:, _LAG + i]
            known = known[known >= 0]
            if len(known):
                lag[tp] = int(known.min())
        return sums, lag

    def __getstate__(self) -> dict[str, Any]:
        # The path, never the owner's finalizer: a worker must not remove the file.
        return {"path": self.path, "slots": self.slots, "partitions": self.partitions}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.slots, self.partitions = state["path"], state["slots"], state["partitions"]
        self._owner, self._array, self._pid = None, None, 0


class SlotMeter:
    """What one shard's pass adds to its slot. The hot path is :meth:`handed_out` (two NumPy
    scalar additions per batch) and :meth:`read` (one, and a clock check); the reader's decode
    counters, queued bytes and lag are looked at every :data:`LOOK_INTERVAL` seconds at most,
    and once more when it ends (:meth:`end_reader`)."""

    def __init__(self, counters: SharedCounters, slot: int) -> None:
        self.row = counters.array()[slot]
        self._lag_columns = {tp: _LAG + i for i, tp in enumerate(counters.partitions)}
        # What the live reader's decode counters had reached at the last look (already added).
        self._skipped = self._dead_lettered = 0
        self._next_look = 0.0
        self.row[_LAG:] = -1  # a new pass: nothing known of its partitions yet
        self.row[_QUEUED_BYTES] = 0

    def handed_out(self, rows: int) -> None:
        row = self.row
        row[_MESSAGES] += rows
        row[_BATCHES] += 1

    def read(self, batch: Batch, reader: BatchReader | None) -> None:
        self.row[_DECODED_BYTES] += batch.nbytes
        if reader is not None and time.monotonic() >= self._next_look:
            self.look(reader)

    def look(self, reader: BatchReader) -> None:
        self._next_look = time.monotonic() + LOOK_INTERVAL
        try:
            skipped, dead_lettered, queued, _ = reader.stats()
            lag = reader.lag()
        except Exception:  # closed: its counters were kept at its last look
            return
        row = self.row
        # Deltas: the slot goes on from what earlier readers, passes and epochs added.
        row[_SKIPPED] += skipped - self._skipped
        row[_DEAD_LETTERED] += dead_lettered - self._dead_lettered
        self._skipped, self._dead_lettered = skipped, dead_lettered
        row[_QUEUED_BYTES] = queued
        columns = self._lag_columns
        for tp, messages in lag.items():
            column = columns.get(tp)
            if column is not None:
                row[column] = messages

    def end_reader(self, reader: BatchReader | None) -> None:
        """The last look at a reader about to be closed; the next one counts from 0."""
        if reader is not None:
            self.look(reader)
        self._skipped = self._dead_lettered = 0
        self._next_look = 0.0
        self.row[_QUEUED_BYTES] = 0


class IterableDatasetMetrics:
    """A :class:`~kafka_ml.torch.KafkaIterableDataset`'s metrics: its :class:`SharedCounters`
    summed over the worker slots when Prometheus scrapes, under the same names and help texts
    as :class:`DatasetMetrics`."""

    def __init__(self, counters: SharedCounters, registry: CollectorRegistry, name: str) -> None:
        self.registry = registry
        self.labels = {"dataset": name}
        self.counters = counters
        self._key = ("dataset", name)
        self._collector = _collector(registry)
        self._collector.add(self._key, self)

    def close(self) -> None:
        self._collector.remove(self._key, self)

    def collect_into(self, f: _Families) -> None:
        values, lag = self.counters.totals()
        _dataset_samples(f, self.labels, values, lag)
