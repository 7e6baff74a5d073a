"""`InferenceLoop` and `serve`: consume, predict, produce one result per input, commit.

The loop's parts: ``predict`` (calling predict and checking its output), ``inflight`` (results
on their way), ``latency`` (the sliding latency window).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from ..config import shared_client_config
from ..dataset import Batch, KafkaDataset, _config
from ..exceptions import ConfigError, InferenceError
from ..headers import ERROR, MODEL_VERSION, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC
from ..producer import Producer
from ..registry import SchemaRegistry, registry_client, subject_name
from .inflight import _METADATA, _describe, _InFlight, _inputs_as_sent
from .latency import _Latencies
from .predict import _EventLoopThread, _Failed, _Predicting, _result_data

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..dataset import DecodeOptions
    from ..metrics import LoopMetrics

log = logging.getLogger("kafka_ml.inference")

Delivery = Literal["at_least_once", "exactly_once"]


# How long an idle loop waits for input before looking at its stop flag and metrics again.
_IDLE_POLL = 0.2
# Groups whose results may be on their way while the next ones are predicted (at-least-once).
_MAX_IN_FLIGHT = 4
# How long one wait for input or a group's acknowledgements lasts before the loop looks at its
# stop flag again (and how long one look at the predictions of an `async def predict` waits).
_ACK_WAIT = 0.05


class ModelSource(Protocol):
    """Where the loop takes its model from: a ``kafka_ml.ModelSubscriber``, or anything whose
    ``latest`` is ``None`` or has ``version`` and ``model``."""

    @property
    def latest(self) -> Any: ...


class InferenceLoop:
    """Consume → ``predict`` → produce, one result per input, until stopped.

    Args:
        predict: ``predict(batch)`` (or ``predict(batch, model)`` with ``model=``) taking a
            :class:`~kafka_ml.Batch` (NumPy via ``batch["x"]`` / ``to_numpy()``, Arrow via the
            PyCapsule interface) and returning one result per row: a dict of arrays, a NumPy
            array, or an Arrow table / record batch. It may be ``async def``: it then runs on
            an event loop of the inference loop's own, several batches at a time.
        input_topic, output_topic: where inputs come from and results go.
        config: librdkafka properties; needs a ``group.id`` (the loop is a consumer group).
        delivery: ``"at_least_once"`` or ``"exactly_once"`` (Kafka transactions).
        model: a :class:`ModelSource` (e.g. ``ModelSubscriber``); each batch uses its newest
            version, waiting up to ``model_timeout`` seconds for a first one.
        output_format, output_schema, output_avro_schema, output_schema_id: how results are
            encoded (``Producer.send``'s ``format``, ``schema``, ``avro_schema``, ``schema_id``);
            ``output_format="connect_json"`` with an ``output_schema`` writes Kafka Connect's
            JSON envelope, for a sink connector (e.g. a JDBC sink into a database table).
        output_schema_registry: with ``output_format="avro"`` and an ``output_avro_schema``, a
            Schema Registry (URL or :class:`~kafka_ml.SchemaRegistry`): the schema is registered
            under ``<output_topic>-value`` when :meth:`run` starts (a schema the subject's
            compatibility rule refuses is a :class:`~kafka_ml.SchemaRegistryError` before any
            input is taken) and results are framed with its id, so registry-aware readers
            (confluent's ``AvroDeserializer``, kafka-ml with only the URL) decode them.
        on_predict_error: ``"dead_letter"`` (the batch's inputs go to ``dead_letter_topic`` with
            the error and lineage headers, and the loop goes on) or ``"stop"``
            (:class:`InferenceError`; nothing of the batch is committed).
        instance: a stable name of this replica (``transactional.id`` is derived from it, so a
            restarted replica fences its predecessor and aborts its open transaction).
        batch_size, max_wait: a decoded batch closes at ``batch_size`` inputs or, by default
            (``max_wait=0``), as soon as no more input is waiting: a lone input is predicted at
            once, and under load batches grow towards ``batch_size``. A ``max_wait`` above 0
            holds a partial batch up to that many seconds for more input instead.
            ``predict`` is called once per decoded batch.
        max_batch_rows: when batches are waiting (the loop is behind), up to this many inputs
            (default ``8 * batch_size``) are written and committed together, in one transaction.
        max_in_flight: with an ``async def predict`` (e.g. calling a remote model server), how
            many groups of batches may be predicted concurrently; results are still written in
            input order and offsets committed only up to the oldest unfinished group.
        metrics_interval: seconds between metrics log lines (and consumer-lag refreshes).
        progress: show a tqdm bar with throughput and latency.
        metrics_port: serve Prometheus metrics on this port while the loop runs (0: any free
            port, see ``loop.prometheus.server.port``); a port in use is a ``ConfigError`` here.
            Needs ``pip install 'kafka-ml[metrics]'``; see :mod:`kafka_ml.metrics`.
        metrics_addr: the address the metrics endpoint listens on (default all interfaces:
            Prometheus scrapes from another host or container).
        metrics_registry: a ``prometheus_client.CollectorRegistry`` to report on (shared with
            other loops or datasets, or served by the application itself); default: the loop's own.
        dataset_options: how inputs are decoded (``format``, ``schema``, ``dtype``, ``shape``,
            ``avro_schema``, ``on_error``, ...: :class:`~kafka_ml.dataset.DecodeOptions`; see
            :class:`~kafka_ml.KafkaDataset`).
    """

    def __init__(
        self,
        predict: Callable[..., Any],
        input_topic: str | Sequence[str],
        output_topic: str,
        config: Mapping[str, object],
        *,
        delivery: Delivery = "at_least_once",
        model: ModelSource | None = None,
        model_timeout: float = 30.0,
        output_format: Literal["json", "connect_json", "avro", "tensor", "raw"] = "json",
        output_schema: Mapping[str, Any] | None = None,
        output_avro_schema: Mapping[str, Any] | str | None = None,
        output_schema_id: int | None = None,
        output_schema_registry: str | SchemaRegistry | None = None,
        on_predict_error: Literal["dead_letter", "stop"] = "stop",
        dead_letter_topic: str | None = None,
        instance: str = "0",
        batch_size: int = 1024,
        max_wait: float = 0.0,
        max_batch_rows: int | None = None,
        max_in_flight: int = 8,
        metrics_interval: float = 10.0,
        progress: bool = False,
        producer_config: Mapping[str, object] | None = None,
        metrics_port: int | None = None,
        metrics_addr: str = "0.0.0.0",
        metrics_registry: Any = None,
        **dataset_options: Unpack[DecodeOptions],
    ) -> None:
        if delivery not in ("at_least_once", "exactly_once"):
            raise ConfigError(f"delivery={delivery!r}: expected 'at_least_once' or 'exactly_once'")
        if on_predict_error not in ("dead_letter", "stop"):
            raise ConfigError(f"on_predict_error={on_predict_error!r}: expected 'dead_letter' or 'stop'")
        if on_predict_error == "dead_letter" and not dead_letter_topic:
            raise ConfigError("on_predict_error='dead_letter' needs a dead_letter_topic")
        cfg = _config(config)
        group = cfg.get("group.id")
        if not group:
            raise ConfigError(
                "an inference loop needs a 'group.id' in the config: it commits its input offsets"
            )
        if max_in_flight < 1:
            raise ConfigError(f"max_in_flight={max_in_flight}: expected 1 or more")
        if output_schema_registry is not None:
            if output_format != "avro" or output_avro_schema is None:
                raise ConfigError("output_schema_registry needs output_format='avro' and output_avro_schema")
            if output_schema_id is not None:
                raise ConfigError("give output_schema_registry or output_schema_id, not both")
        self.predict = predict
        # A function, or an object whose __call__ is, declared `async def`.
        self._async_predict = inspect.iscoroutinefunction(predict) or inspect.iscoroutinefunction(
            type(predict).__call__
        )
        self.max_in_flight = max_in_flight
        self.input_topics = [input_topic] if isinstance(input_topic, str) else list(input_topic)
        self.output_topic = output_topic
        self.delivery = delivery
        self.model = model
        self.model_timeout = model_timeout
        self.on_predict_error = on_predict_error
        self.dead_letter_topic = dead_letter_topic
        self.metrics_interval = metrics_interval
        self.max_batch_rows = max_batch_rows if max_batch_rows is not None else 8 * batch_size
        self.progress = progress
        self._send_options: dict[str, Any] = {
            "format": output_format,
            "schema": output_schema,
            "avro_schema": output_avro_schema,
            "schema_id": output_schema_id,
        }
        self.output_schema_registry = output_schema_registry
        self._consumer_config: dict[str, object] = dict(cfg)
        if delivery == "exactly_once":
            # Inputs written transactionally upstream count only once committed.
            self._consumer_config.setdefault("isolation.level", "read_committed")
        self._producer_config = shared_client_config(cfg)
        if delivery == "exactly_once":
            self._producer_config.setdefault("transactional.id", f"kafka-ml-{group}-{instance}")
            # Right after a commit the coordinator answers the next transaction's first requests
            # with CONCURRENT_TRANSACTIONS until its markers are written; librdkafka's 100 ms
            # default back-off would then add ~100 ms to every batch.
            self._producer_config.setdefault("retry.backoff.ms", "10")
        # Results are sent a batch at a time: waiting for more to join them only adds latency
        # (while a request is in flight, librdkafka batches what queues up meanwhile anyway).
        self._producer_config.setdefault("linger.ms", "0")
        # Small requests go out at once. With Nagle's algorithm on (librdkafka's default; Kafka's
        # Java client always turns it off) a request written while an earlier one is unacknowledged
        # waits for the broker's delayed ACK, up to 40 ms on Linux: at 10 k msg/s such waits set
        # the p99 (three alternating 8 s runs: p99 54-79 ms with Nagle, 11-50 ms without).
        self._producer_config.setdefault("socket.nagle.disable", "true")
        self._consumer_config.setdefault("socket.nagle.disable", "true")
        self._producer_config.update(producer_config or {})
        self._dataset_options: dict[str, Any] = {
            "batch_size": batch_size,
            "max_wait": max_wait,
            **dataset_options,
        }
        self._input_format = str(dataset_options.get("format", "raw"))
        self._stop = threading.Event()
        self._latencies = _Latencies()
        self._counts = {
            "messages": 0,
            "batches": 0,
            "predict_errors": 0,
            "dead_lettered": 0,
            "model_updates": 0,
            "transaction_aborts": 0,
        }
        self._lag: dict[tuple[str, int], int] = {}
        self._in_flight: deque[_InFlight] = deque()
        self._predicting: deque[_Predicting] = deque()
        self._event_loop: _EventLoopThread | None = None
        self._model_version: str | None = None
        self._started: float | None = None
        self._dataset: KafkaDataset | None = None
        #: The loop's Prometheus metrics (``registry``, ``server``), or None without them.
        self.prometheus: LoopMetrics | None = None
        if metrics_port is not None or metrics_registry is not None:
            from ..metrics import LoopMetrics

            self.prometheus = LoopMetrics(
                self,
                group=str(group),
                instance=instance,
                registry=metrics_registry,
                port=metrics_port,
                addr=metrics_addr,
            )

    # -- control ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Asks the loop to stop after the batch in flight (safe from any thread or a signal)."""
        self._stop.set()

    def wait_until_assigned(self, timeout: float = 60.0) -> list[tuple[str, int]]:
        """Waits (from another thread than :meth:`run`'s) until the group has assigned input
        partitions to this loop; returns them. For feeding a measurement only once serving is
        possible."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dataset = self._dataset
            assigned = dataset.assignment if dataset is not None else []
            if assigned:
                return assigned
            time.sleep(0.02)
        raise InferenceError(f"no input partition was assigned within {timeout} s")

    def reset_metrics(self) -> None:
        """Starts the counters, throughput and latency window afresh (e.g. after a warm-up)."""
        self._latencies = _Latencies()
        self._counts = dict.fromkeys(self._counts, 0)
        if self.prometheus is not None:
            self.prometheus.histogram.reset()
        self._started = time.monotonic()

    @property
    def metrics(self) -> dict[str, Any]:
        """Messages, batches, throughput (messages/s), end-to-end latency percentiles (input
        timestamp → result delivered, ms), consumer lag per partition, errors, model version."""
        elapsed = time.monotonic() - self._started if self._started is not None else 0.0
        return {
            **self._counts,
            "throughput": self._counts["messages"] / elapsed if elapsed > 0 else 0.0,
            "latency_ms": self._latencies.percentiles(),
            "lag": dict(self._lag),
            "model_version": self._model_version,
            "uptime_s": elapsed,
        }

    # -- the loop ----------------------------------------------------------------------------

    def _register_output_schema(self) -> int:
        """Registers the results' Avro schema under ``<output_topic>-value``; returns its id."""
        client = registry_client(self.output_schema_registry)
        assert client is not None
        schema = self._send_options["avro_schema"]
        text = schema if isinstance(schema, str) else json.dumps(schema)
        schema_id = client.register(subject_name(self.output_topic, "topic"), text, "AVRO")
        log.info("inference: results framed with schema id %d of %s-value", schema_id, self.output_topic)
        return schema_id

    def run(
        self,
        *,
        max_messages: int | None = None,
        idle_timeout: float | None = None,
        handle_signals: bool = True,
    ) -> dict[str, Any]:
        """Serves until :meth:`stop`, SIGTERM / SIGINT (the batch in flight is finished and
        committed first), ``max_messages`` inputs, or ``idle_timeout`` seconds without input
        (counted from the first input, so joining the group is not idleness).
        Returns the final :attr:`metrics`."""
        if self.output_schema_registry is not None and self._send_options["schema_id"] is None:
            self._send_options["schema_id"] = self._register_output_schema()
        restore = self._install_signal_handlers() if handle_signals else {}
        if self._async_predict:
            self._event_loop = _EventLoopThread()
        producer = Producer(self._producer_config)
        dataset = KafkaDataset(
            self.input_topics,
            self._consumer_config,
            metadata=_METADATA,
            commit=False,  # offsets are committed here, once results are safe
            **(self.prometheus.dataset_options() if self.prometheus is not None else {}),
            **self._dataset_options,
        )
        self._dataset = dataset
        bar = self._progress_bar()
        self._started = time.monotonic()
        last_metrics = time.monotonic()
        last_input: float | None = None  # idle time counts from the first input
        taken = 0
        clean = False
        if self.prometheus is not None:
            self.prometheus.start()  # again, if a previous run stopped it
        try:
            if self.delivery == "exactly_once":
                producer.init_transactions()
            while not self._stop.is_set():
                if max_messages is not None and taken >= max_messages:
                    break
                busy = bool(self._predicting or self._in_flight)
                if self._predicting:
                    # Only input that is already there: waiting for predictions (below) comes first.
                    batch = dataset.poll(0.0)
                elif self._in_flight:
                    # Results on their way: one wait for the next input or their acknowledgement,
                    # whichever comes first. Waiting for the acknowledgement alone held input
                    # that arrived meanwhile back for as long as the broker took to answer.
                    batch = dataset.poll(_ACK_WAIT, until_delivered=self._in_flight[0].reports)
                else:
                    batch = dataset.poll(_IDLE_POLL)
                now = time.monotonic()
                if batch is not None and batch.num_rows:
                    group = self._take_waiting(dataset, batch)
                    self._start_predict(group)
                    rows = sum(b.num_rows for b in group)
                    taken += rows
                    last_input = now
                    if bar is not None:
                        bar.update(rows)
                        lat = self._latencies.percentiles()
                        bar.set_postfix(p50_ms=f"{lat['p50']:.1f}", p99_ms=f"{lat['p99']:.1f}", refresh=False)
                elif not busy and (
                    idle_timeout is not None and last_input is not None and now - last_input >= idle_timeout
                ):
                    break
                # Without new input the oldest predictions are waited for (acknowledgements were,
                # in the poll); with input, only as many groups as `max_in_flight` (predictions)
                # and `_MAX_IN_FLIGHT` (acknowledgements) stay unfinished while the next are taken.
                idle = batch is None
                self._deliver_ready(
                    producer, dataset, wait=idle or len(self._predicting) >= self.max_in_flight
                )
                self._settle(dataset, wait=len(self._in_flight) >= _MAX_IN_FLIGHT)
                if now - last_metrics >= self.metrics_interval:
                    self._refresh_lag(dataset)
                    log.info("inference: %s", self._summary())
                    last_metrics = now
            while self._predicting:  # every input taken is answered before stopping
                self._deliver_ready(producer, dataset, wait=True)
            self._settle(dataset, wait=True, final=True)
            clean = True
            self._refresh_lag(dataset)
        finally:
            if bar is not None:
                bar.close()
            # commit=False: closing commits nothing that was not finished above.
            dataset.close()
            if clean:
                producer.flush()
            self._in_flight.clear()
            for pending in self._predicting:
                pending.future.cancel()
            self._predicting.clear()
            if self._event_loop is not None:
                self._event_loop.close()
                self._event_loop = None
            for sig, handler in restore.items():
                signal.signal(sig, handler)
            if self.prometheus is not None:
                self.prometheus.stop()
        log.info("inference stopped: %s", self._summary())
        return self.metrics

    def _take_waiting(self, dataset: KafkaDataset, first: Batch) -> list[Batch]:
        """``first`` and the batches already decoded behind it, up to ``max_batch_rows`` inputs:
        when the loop falls behind, one transaction (or one commit) covers all of them, so the
        per-commit cost is paid once per group and the loop catches up instead of lagging."""
        group, rows = [first], first.num_rows
        while rows < self.max_batch_rows:
            more = dataset.poll(0.0)
            if more is None:
                break
            if more.num_rows:
                group.append(more)
                rows += more.num_rows
        return group

    def _start_predict(self, batches: list[Batch]) -> None:
        """Predicts a group of batches with one model version: at once for a plain ``predict``;
        for an ``async def`` one, on the loop's event loop, while the next groups are taken."""
        version = self._current_model()
        model = None if version is None else version.model
        if self._event_loop is None:
            outcomes: list[Any] = []
            for batch in batches:
                try:
                    result = self.predict(batch) if self.model is None else self.predict(batch, model)
                    outcomes.append(_result_data(result, batch.num_rows))
                except Exception as e:
                    outcomes.append(_Failed(e))
            done: Future[list[Any]] = Future()
            done.set_result(outcomes)
            self._predicting.append(_Predicting(batches, version, done))
        else:
            future = asyncio.run_coroutine_threadsafe(
                self._predict_async(batches, model), self._event_loop.loop
            )
            self._predicting.append(_Predicting(batches, version, future))

    async def _predict_async(self, batches: list[Batch], model: Any) -> list[Any]:
        async def one(batch: Batch) -> Any:
            try:
                result = self.predict(batch) if self.model is None else self.predict(batch, model)
                if inspect.isawaitable(result):
                    result = await result
                return _result_data(result, batch.num_rows)
            except Exception as e:
                return _Failed(e)

        return list(await asyncio.gather(*(one(b) for b in batches)))

    def _deliver_ready(self, producer: Producer, dataset: KafkaDataset, *, wait: bool) -> None:
        """Writes the results of predicted groups, oldest first, so the results of a partition
        keep their inputs' order and no commit passes an unfinished batch. With ``wait`` it waits
        for the oldest group's predictions (briefly: the loop then looks at its input again)."""
        while self._predicting:
            head = self._predicting[0]
            if not head.future.done():
                if not wait:
                    return
                try:
                    head.future.result(timeout=_ACK_WAIT)
                except concurrent.futures.TimeoutError:
                    return
            self._predicting.popleft()
            self._deliver(head.batches, head.version, head.future.result(), producer, dataset)
            wait = False

    def _deliver(
        self,
        batches: list[Batch],
        version: Any,
        outcomes: list[Any],
        producer: Producer,
        dataset: KafkaDataset,
    ) -> None:
        """Sends a group's results (and dead letters) and commits its input offsets: in one
        transaction, or (at-least-once) once every result is acknowledged (`_settle`)."""
        sends: list[tuple[str, Any, Any, dict[str, Any], dict[str, Any]]] = []
        timestamps: list[np.ndarray] = []
        offsets: dict[tuple[str, int], int] = {}
        dead = 0
        for batch, outcome in zip(batches, outcomes, strict=True):
            n = batch.num_rows
            meta = {name: batch[name] for name in ("topic", "partition", "offset", "timestamp")}
            key = batch["key"]  # null keys stay null: results of keyless inputs are keyless
            lineage: dict[str, Any] = {
                SOURCE_TOPIC: meta["topic"],
                SOURCE_PARTITION: meta["partition"],
                SOURCE_OFFSET: meta["offset"],
            }
            if isinstance(outcome, _Failed):
                e = outcome.error
                self._counts["predict_errors"] += 1
                if self.on_predict_error == "stop":
                    # What came before this group is finished: commit it, so only this group and
                    # later ones are read again.
                    self._settle(dataset, wait=True, final=True)
                    raise InferenceError(
                        f"predict failed on a batch of {n} from {_describe(meta)}: {e!r}; "
                        "nothing of it was committed"
                    ) from e
                log.error("predict failed on a batch of %d from %s: %r; dead-lettered", n, _describe(meta), e)
                assert self.dead_letter_topic is not None
                lineage[ERROR] = np.full(n, f"predict failed: {e!r}")
                inputs, options = _inputs_as_sent(batch, self._input_format, self._dataset_options)
                sends.append((self.dead_letter_topic, inputs, key, lineage, options))
                dead += n
            else:
                if version is not None:
                    lineage[MODEL_VERSION] = np.full(n, str(version.version))
                sends.append((self.output_topic, outcome, key, lineage, self._send_options))
                timestamps.append(meta["timestamp"])
            offsets.update(batch.offsets)  # batches of a partition come in order: the last wins
        if self.delivery == "exactly_once":
            producer.begin_transaction()
            try:
                for topic, data, key, headers, options in sends:
                    producer.send(topic, data, key=key, headers=headers, **options)
                producer.send_offsets_to_transaction(dataset, offsets=offsets)
                producer.commit_transaction()
            except BaseException:
                self._counts["transaction_aborts"] += 1
                producer.abort_transaction()
                raise
            self._account(_InFlight([], offsets, timestamps, batches, dead))
        else:
            reports = [
                producer.send(topic, data, key=key, headers=headers, **options)
                for topic, data, key, headers, options in sends
            ]
            self._in_flight.append(_InFlight(reports, offsets, timestamps, batches, dead))

    def _settle(self, dataset: KafkaDataset, *, wait: bool, final: bool = False) -> None:
        """At-least-once: takes the groups whose results are all acknowledged, oldest first, and
        commits the input offsets after them. With ``wait`` it waits for the oldest group (for
        every group with ``final``). A failed delivery raises :class:`~kafka_ml.DeliveryError`
        naming the rows, and nothing from that group on is committed."""
        offsets: dict[tuple[str, int], int] = {}
        while self._in_flight:
            head = self._in_flight[0]
            if not all(report.done for report in head.reports):
                if not wait:
                    break
                for report in head.reports:
                    report.join(_ACK_WAIT)
                if not final:
                    wait = False  # one group waited for; later ones are taken only if done
                if not all(report.done for report in head.reports):
                    continue
            for report in head.reports:
                report.wait()  # raises DeliveryError naming failed rows
            self._in_flight.popleft()
            offsets.update(head.offsets)  # groups of a partition come in order: the last wins
            self._account(head)
        if offsets:
            # Asynchronous while serving (the next batch need not wait a round trip; a failed
            # commit is logged and the next one covers it); the last one before stopping waits.
            dataset.commit(offsets, asynchronous=not final)

    def _account(self, group: _InFlight) -> None:
        if group.timestamps:
            ms = time.time() * 1000.0 - np.concatenate(group.timestamps).astype(np.float64)
            self._latencies.add(ms)
            if self.prometheus is not None:
                self.prometheus.histogram.observe_ms(ms)
        rows = sum(b.num_rows for b in group.batches)
        self._counts["messages"] += rows - group.dead
        self._counts["dead_lettered"] += group.dead
        self._counts["batches"] += len(group.batches)

    def _current_model(self) -> Any:
        if self.model is None:
            return None
        latest = self.model.latest
        deadline = time.monotonic() + self.model_timeout
        while latest is None:
            if self._stop.is_set() or time.monotonic() >= deadline:
                raise InferenceError(f"no model version became available within {self.model_timeout} s")
            time.sleep(0.05)
            latest = self.model.latest
        version = str(latest.version)
        if version != self._model_version:
            if self._model_version is not None:
                self._counts["model_updates"] += 1
                log.info("inference: model %s -> %s from the next batch on", self._model_version, version)
            self._model_version = version
        return latest

    # -- metrics and signals -----------------------------------------------------------------

    def _refresh_lag(self, dataset: KafkaDataset) -> None:
        # From the high watermarks the consumer's fetches bring: no request on the serving path.
        if dataset._reader is not None:
            self._lag = dataset._reader.lag()

    def _summary(self) -> str:
        m = self.metrics
        lat = m["latency_ms"]
        lag = sum(m["lag"].values())
        return (
            f"{m['messages']} messages, {m['throughput']:.0f}/s, latency p50 {lat['p50']:.1f} ms "
            f"p99 {lat['p99']:.1f} ms, lag {lag}, errors {m['predict_errors']}, model {m['model_version']}"
        )

    def _progress_bar(self) -> Any:
        if not self.progress:
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError as e:
            raise ImportError("progress=True needs tqdm: pip install tqdm") from e
        return tqdm(unit="msg", desc=f"serve {','.join(self.input_topics)} -> {self.output_topic}")

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("inference: %s, stopping after the batch in flight", signal.Signals(signum).name)
            self.stop()

        previous: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
        return previous


def serve(
    predict: Callable[..., Any],
    input_topic: str | Sequence[str],
    output_topic: str,
    config: Mapping[str, object],
    *,
    max_messages: int | None = None,
    idle_timeout: float | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Runs an :class:`InferenceLoop` until SIGTERM / SIGINT (or ``max_messages`` /
    ``idle_timeout``); returns its final metrics."""
    loop = InferenceLoop(predict, input_topic, output_topic, config, **options)
    return loop.run(max_messages=max_messages, idle_timeout=idle_timeout)
