"""Online learning: train continuously from a stream and publish a model version every N batches
or T seconds, with the exact offsets trained on as each version's lineage.

``OnlineTrainer`` reads every partition of its topics, calls ``train_step(batch, model)`` on each
batch and publishes the model through a :class:`~kafka_ml.ModelPublisher`; serving processes
follow the model topic with a :class:`~kafka_ml.ModelSubscriber` (e.g. inside an
``InferenceLoop``) and hot-swap to each version.

Guarantees:

- a version's lineage is exactly what its model was trained on: ``offsets`` (the next offset of
  every partition, in :meth:`KafkaDataset.state_dict` form, so ``load_state_dict(lineage)``
  replays from there), ``trained_from`` (where the model's line of training began) and
  ``previous_offsets`` (the parent version's offsets: this version added
  ``[previous_offsets, offsets)``);
- the group's offsets are committed only once the version holding them is published, so the
  committed offsets never run ahead of a published model;
- on restart the trainer resumes from the newest version on the model topic: its model, its
  lineage offsets (whatever the group holds: a crash between publish and commit loses nothing and
  trains nothing twice) and its version sequence. What was trained after that version and never
  published is trained again.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any, Generic, TypeVar

from . import _native
from .config import shared_client_config
from .dataset import KafkaDataset, _config
from .exceptions import ConfigError, KafkaMLError, KafkaTimeoutError
from .models import ModelPublisher, ModelSubscriber, ModelVersion

__all__ = ["LINEAGE_KIND", "OnlineTrainer"]

log = logging.getLogger("kafka_ml.online")

M = TypeVar("M")
Offsets = dict[tuple[str, int], int]

#: ``lineage["kind"]`` of versions published by an ``OnlineTrainer``.
LINEAGE_KIND = "kafka_ml.online"
_STATE_VERSION = 1  # KafkaDataset.state_dict's format, which lineage["offsets"] follows
# The trainer decides where reading starts and what is committed; these would contradict it.
_REFUSED_OPTIONS = {
    "start": "the trainer starts from the newest version's lineage, else the group's committed "
    "offsets, else auto.offset.reset",
    "end": "an online trainer streams; stop it with run(max_batches=, idle_timeout=) or stop()",
    "partitions": "the trainer reads every partition of its topics",
    "commit": "the trainer commits the group's offsets itself, once the version holding them is published",
}
_EARLIEST = ("earliest", "smallest", "beginning")
_LATEST = ("latest", "largest", "end")


def _nested(offsets: Mapping[tuple[str, int], int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (topic, partition), offset in sorted(offsets.items()):
        out.setdefault(topic, {})[str(partition)] = int(offset)
    return out


def _flat(nested: object) -> Offsets:
    """``{topic: {partition: offset}}`` (a state_dict's offsets) as ``{(topic, partition): offset}``."""
    if not isinstance(nested, Mapping):
        return {}
    return {
        (str(topic), int(partition)): int(offset)
        for topic, parts in nested.items()
        if isinstance(parts, Mapping)
        for partition, offset in parts.items()
    }


class OnlineTrainer(Generic[M]):
    """Trains from a stream and publishes a new model version every N batches or T seconds.

    Args:
        topics: the training topic, or a list of them (every partition is read).
        config: librdkafka properties with a ``group.id``: the group the trained offsets are
            committed to (consumer lag is the data not yet in a published model). The trainer
            reads the partitions itself rather than joining the group, so a restart does not
            wait for a rebalance; run one trainer per group. ``auto.offset.reset`` (where the
            group has no offsets) defaults to ``earliest``.
        train_step: ``train_step(batch, model) -> model`` on each :class:`~kafka_ml.Batch`;
            returning ``None`` means the model was updated in place.
        model_topic: the model topic's name, or a :class:`~kafka_ml.ModelPublisher` (e.g. one
            with a ``signing_key``; it stays open when the trainer closes).
        initial_model: the model to start from when the model topic holds no version (or with
            ``resume=False``).
        publish_every_batches, publish_every_seconds: a version is published once this many
            batches were trained since the last one, or this many seconds after the oldest batch
            not in a version yet, whichever comes first (give one or both): trained data reaches
            the model topic within T seconds, and no version is published without new batches.
        to_artifact: the model as ``ModelPublisher.publish`` takes it (a dict of NumPy arrays,
            a torch ``state_dict``, bytes or a file path); by default the model itself.
        from_version: the model from a :class:`~kafka_ml.ModelVersion` read on resume; by
            default its loaded ``model`` (a dict of arrays for safetensors, bytes otherwise).
        artifact_format: ``ModelPublisher.publish``'s ``format`` (e.g. ``"onnx"`` for bytes).
        metadata: ``metadata(model) -> dict`` stored with each version (metrics, ...).
        version_name: the name of the n-th version (``n`` from 1, continued across restarts);
            default ``str(n)``.
        resume: ``True`` resumes from the newest version on the model topic (read without
            signature checks); a ``ModelSubscriber`` (e.g. one with ``verify_keys``) is read
            instead; ``False`` always starts from ``initial_model`` and the group's offsets.
        publish_on_stop: when ``run`` ends cleanly, publish what was trained since the last
            version (otherwise it is trained again after a restart).
        timeout: seconds for metadata, offset and model topic round trips.
        dataset_options: how batches are decoded (``format``, ``schema``, ``batch_size``,
            ``max_wait``, ...; see :class:`~kafka_ml.KafkaDataset`).
    """

    def __init__(
        self,
        topics: str | Sequence[str],
        config: Mapping[str, object],
        train_step: Callable[[Any, M], M | None],
        model_topic: str | ModelPublisher,
        *,
        initial_model: M | None = None,
        publish_every_batches: int | None = None,
        publish_every_seconds: float | None = None,
        to_artifact: Callable[[M], Any] | None = None,
        from_version: Callable[[ModelVersion], M] | None = None,
        artifact_format: str | None = None,
        metadata: Callable[[M], Mapping[str, Any]] | None = None,
        version_name: Callable[[int], str] = str,
        resume: bool | ModelSubscriber = True,
        publish_on_stop: bool = True,
        timeout: float = 30.0,
        **dataset_options: Any,
    ) -> None:
        names = [topics] if isinstance(topics, str) else list(topics)
        if not names or not all(isinstance(t, str) and t for t in names):
            raise ConfigError(f"topics must be a topic name or a non-empty list of them, got {topics!r}")
        cfg = _config(config)
        if not cfg.get("group.id"):
            raise ConfigError(
                "an OnlineTrainer needs a 'group.id' in the config: it commits the offsets of each "
                "published version to that group"
            )
        if not callable(train_step):
            raise ConfigError(f"train_step must be callable as train_step(batch, model), got {train_step!r}")
        if isinstance(model_topic, str):
            if not model_topic:
                raise ConfigError("model_topic must be a non-empty topic name or a ModelPublisher")
        elif not isinstance(model_topic, ModelPublisher):
            raise ConfigError(
                f"model_topic must be a topic name or a ModelPublisher, got a {type(model_topic).__name__}"
            )
        if publish_every_batches is None and publish_every_seconds is None:
            raise ConfigError("give publish_every_batches=N and/or publish_every_seconds=T")
        if publish_every_batches is not None and (
            isinstance(publish_every_batches, bool)
            or not isinstance(publish_every_batches, int)
            or publish_every_batches < 1
        ):
            raise ConfigError(f"publish_every_batches must be an integer >= 1, got {publish_every_batches!r}")
        if publish_every_seconds is not None and not publish_every_seconds > 0:
            raise ConfigError(f"publish_every_seconds must be > 0, got {publish_every_seconds!r}")
        callbacks = {"to_artifact": to_artifact, "from_version": from_version, "metadata": metadata}
        for name, value in callbacks.items():
            if value is not None and not callable(value):
                raise ConfigError(f"{name} must be callable, got {value!r}")
        if not callable(version_name):
            raise ConfigError(f"version_name must be callable as version_name(n), got {version_name!r}")
        if not isinstance(resume, (bool, ModelSubscriber)):
            raise ConfigError(f"resume must be True, False or a ModelSubscriber, got {resume!r}")
        if resume is False and initial_model is None:
            raise ConfigError("resume=False needs an initial_model to start from")
        topic = model_topic if isinstance(model_topic, str) else model_topic.topic
        if isinstance(resume, ModelSubscriber) and resume.topic != topic:
            raise ConfigError(
                f"resume= follows model topic {resume.topic!r}, but versions are published to {topic!r}"
            )
        refused = sorted(set(dataset_options) & set(_REFUSED_OPTIONS))
        if refused:
            raise ConfigError(f"{refused[0]}= is not an OnlineTrainer option: {_REFUSED_OPTIONS[refused[0]]}")

        self.topics = names
        self.group = cfg["group.id"]
        self.train_step = train_step
        self.publish_every_batches = publish_every_batches
        self.publish_every_seconds = publish_every_seconds
        self.publish_on_stop = publish_on_stop
        self._initial_model = initial_model
        self._to_artifact = to_artifact
        self._from_version = from_version
        self._artifact_format = artifact_format
        self._metadata = metadata
        self._version_name = version_name
        self._resume = resume
        self._timeout = timeout
        self._group_config = {**cfg, "auto.offset.reset": cfg.get("auto.offset.reset", "earliest")}
        # The reader is no group member: it is assigned every partition at exact offsets.
        # (with the same auto.offset.reset: it applies where a start offset is out of range).
        self._reader_config = {k: v for k, v in self._group_config.items() if not k.startswith("group.")}
        self._client_config = shared_client_config(cfg)
        self._dataset_options = {"timeout": timeout, **dataset_options}
        self._own_publisher = isinstance(model_topic, str)
        self.publisher = (
            ModelPublisher(model_topic, self._client_config, timeout=timeout)
            if isinstance(model_topic, str)
            else model_topic
        )
        self._stop = threading.Event()
        self._running = threading.Lock()
        self.model: M | None = initial_model
        self._state = _Progress()
        self.published: list[ModelVersion] = []  # the versions this trainer published, in order
        self.resumed_from: ModelVersion | None = None

    # -- control -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Asks ``run`` to return after the batch in flight (safe from any thread or a signal);
        with ``publish_on_stop`` it publishes what was trained since the last version first."""
        self._stop.set()

    @property
    def stats(self) -> dict[str, Any]:
        """``batches`` and ``messages`` trained (rows, over the model's whole line of training),
        ``versions`` published by this trainer, the ``model_version`` last published or resumed
        from, and the ``offsets`` trained up to."""
        s = self._state
        return {
            "batches": s.batches,
            "messages": s.messages,
            "versions": len(self.published),
            "model_version": s.version,
            "offsets": dict(s.offsets),
        }

    # -- the loop ----------------------------------------------------------------------------

    def run(
        self,
        *,
        max_batches: int | None = None,
        idle_timeout: float | None = None,
        handle_signals: bool = True,
    ) -> dict[str, Any]:
        """Trains until :meth:`stop`, SIGTERM / SIGINT, ``max_batches`` trained batches (in this
        run), or ``idle_timeout`` seconds without input (counted from the first batch, or from
        the start when the topics hold nothing to read). Returns :attr:`stats`.

        Where it starts: the newest version on the model topic (its model and lineage offsets),
        unless ``resume=False``; else ``initial_model`` and the group's committed offsets (or
        ``auto.offset.reset`` where it has none). If ``train_step`` raises, nothing of what it
        trained since the last version is published or committed, and the error propagates."""
        if not self._running.acquire(blocking=False):
            raise ConfigError("this OnlineTrainer is already running")
        restore = self._install_signal_handlers() if handle_signals else {}
        try:
            start = self._prepare()
            with KafkaDataset(
                config=self._reader_config,
                partitions=sorted(start),
                start=start,
                commit=False,
                **self._dataset_options,
            ) as dataset:
                self._train(dataset, max_batches, idle_timeout)
        finally:
            self._stop.clear()
            for sig, handler in restore.items():
                signal.signal(sig, handler)
            self._running.release()
        return self.stats

    def _train(self, dataset: KafkaDataset, max_batches: int | None, idle_timeout: float | None) -> None:
        s = self._state
        trained = 0
        last_input = time.monotonic()
        # When the oldest batch not yet in a version was trained: it is published within T s.
        oldest_pending: float | None = None
        while not self._stop.is_set():
            if max_batches is not None and trained >= max_batches:
                break
            batch = dataset.poll(0.05)
            now = time.monotonic()
            if batch is not None and batch.num_rows:
                model = self.train_step(batch, self.model)  # type: ignore[arg-type]
                if model is not None:
                    self.model = model
                s.offsets.update(batch.offsets)
                s.batches += 1
                s.messages += batch.num_rows
                s.pending += 1
                trained += 1
                last_input = now
                if oldest_pending is None:
                    oldest_pending = now
            elif idle_timeout is not None and now - last_input >= idle_timeout:
                break
            due_by_count = self.publish_every_batches is not None and s.pending >= self.publish_every_batches
            due_by_time = (
                self.publish_every_seconds is not None
                and oldest_pending is not None
                and time.monotonic() - oldest_pending >= self.publish_every_seconds
            )
            if due_by_count or due_by_time:
                self._publish()
                oldest_pending = None
        if self.publish_on_stop and s.pending:
            self._publish()

    def _prepare(self) -> Offsets:
        """Resumes from the newest version (or starts afresh); returns every partition's start."""
        latest = self._newest_version()
        s = _Progress()
        lineage = latest.lineage if latest is not None else None
        ours = isinstance(lineage, Mapping) and lineage.get("kind") == LINEAGE_KIND
        if latest is not None:
            self.model = self._from_version(latest) if self._from_version is not None else latest.model
            s.version = latest.version
            if ours:
                assert isinstance(lineage, Mapping)
                s.sequence = int(lineage.get("sequence", 0))
                s.batches = int(lineage.get("batches", 0))
                s.messages = int(lineage.get("messages", 0))
                s.trained_from = _flat(lineage.get("trained_from"))
            log.info("online training resumes from model version %r", latest.version)
        elif self._initial_model is None:
            raise ConfigError(
                f"model topic {self.publisher.topic!r} has no version to resume from, and no "
                "initial_model was given"
            )
        else:
            self.model = self._initial_model
        self.resumed_from = latest

        partitions = self._partitions()
        committed = _native.committed_offsets(self._group_config, sorted(partitions), self._timeout)
        resumed = _flat(lineage.get("offsets")) if ours and isinstance(lineage, Mapping) else {}
        reset = self._group_config["auto.offset.reset"].lower()
        start: Offsets = {}
        for tp, (low, high) in partitions.items():
            if tp in resumed:
                start[tp] = resumed[tp]  # the published model's lineage, whatever the group holds
            elif committed.get(tp) is not None:
                start[tp] = int(committed[tp] or 0)
            elif reset in _EARLIEST:
                start[tp] = low
            elif reset in _LATEST:
                start[tp] = high
            else:
                raise ConfigError(
                    f"group {self.group!r} has no committed offset for {tp[0]!r} [{tp[1]}] and "
                    f"auto.offset.reset={reset!r}: set it to 'earliest' or 'latest'"
                )
        s.offsets = dict(start)
        s.previous = dict(start)
        s.trained_from = {**start, **{tp: o for tp, o in s.trained_from.items() if tp in start}}
        self._state = s
        return start

    def _newest_version(self) -> ModelVersion | None:
        if self._resume is False:
            return None
        if isinstance(self._resume, ModelSubscriber):
            return self._await_replay(self._resume)
        # The publisher has created the topic already (on a mock cluster it cannot be created).
        with ModelSubscriber(
            self.publisher.topic, self._client_config, create_topic=False, timeout=self._timeout
        ) as subscriber:
            return self._await_replay(subscriber)

    def _await_replay(self, subscriber: ModelSubscriber) -> ModelVersion | None:
        deadline = time.monotonic() + self._timeout
        while not subscriber.ready:
            if time.monotonic() >= deadline:
                raise KafkaTimeoutError(
                    f"the model topic {subscriber.topic!r} could not be read within {self._timeout} s "
                    "to find the version to resume from"
                )
            time.sleep(0.02)
        return subscriber.latest

    def _partitions(self) -> dict[tuple[str, int], tuple[int, int]]:
        """Every partition of the topics with its ``(low, high)`` watermarks."""
        with KafkaDataset(
            self.topics, self._reader_config, start="earliest", end="latest", timeout=self._timeout
        ) as probe:
            plan = probe.plan or []
        return {(t, p): (low, high if high is not None else low) for t, p, low, high in plan}

    def _publish(self) -> None:
        """Publishes the model with its lineage, then commits exactly those offsets."""
        s = self._state
        sequence = s.sequence + 1
        version = self._version_name(sequence)
        model = self.model
        assert model is not None
        artifact = self._to_artifact(model) if self._to_artifact is not None else model
        lineage = {
            "version": _STATE_VERSION,
            "kind": LINEAGE_KIND,
            "offsets": _nested(s.offsets),
            "trained_from": _nested(s.trained_from),
            "previous_offsets": _nested(s.previous),
            "previous_version": s.version,
            "group": self.group,
            "sequence": sequence,
            "batches": s.batches,
            "messages": s.messages,
        }
        metadata = dict(self._metadata(model)) if self._metadata is not None else {}
        published = self.publisher.publish(
            artifact, version, metadata, lineage=lineage, format=self._artifact_format
        )
        log.info("online training published model version %r (%d batches in all)", version, s.batches)
        self.published.append(published)
        s.sequence, s.version, s.pending = sequence, version, 0
        s.previous = dict(s.offsets)
        try:
            _native.commit_offsets(self._group_config, dict(s.offsets), self._timeout)
        except KafkaMLError as e:
            # The version and its lineage are published: a restart resumes from them, so a
            # failed commit only leaves the group's lag reading high until the next one.
            log.warning("online training: committing the offsets of version %r failed: %s", version, e)

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("online training: %s, stopping after the batch in flight", signal.Signals(signum).name)
            self.stop()

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the publisher if the trainer made it. Idempotent."""
        if self._own_publisher:
            self.publisher.close()

    def __enter__(self) -> OnlineTrainer[M]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Progress:
    """Where training stands: offsets trained up to, counts, and the last published version."""

    def __init__(self) -> None:
        self.offsets: Offsets = {}  # next offset per partition, after what the model was trained on
        self.previous: Offsets = {}  # the offsets of the last published (or resumed) version
        self.trained_from: Offsets = {}  # where this model's line of training began
        self.version: str | None = None
        self.sequence = 0
        self.batches = 0
        self.messages = 0
        self.pending = 0  # batches trained since the last version
