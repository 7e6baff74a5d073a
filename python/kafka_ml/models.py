"""`ModelPublisher` / `ModelSubscriber`: versioned, chunked, verified model artifacts on a
compacted topic, hot-swapped in serving processes.

Wire format (one partition, partition 0, so offsets order everything):

- chunk ``i`` of a publication: key ``kafka-ml/chunk/<publication>/<i>``, value the artifact's
  bytes ``[offset, offset + len)``, headers ``kafka-ml.offset`` (decimal) and ``kafka-ml.sha256``
  (hex digest of the chunk);
- then its manifest: key ``kafka-ml/manifest/<version>``, value UTF-8 JSON (version, created,
  format, size, SHA-256, chunk count, metadata, lineage and, with a key, an HMAC-SHA256
  ``signature`` over the canonical JSON of the rest);
- then tombstones for the chunks and manifests of versions beyond ``keep_last``;
- last the index: key ``kafka-ml/index``, value JSON listing the live publications, which lets
  the next ``publish`` find what to remove by reading the tail of the topic only.

A manifest is written only once every chunk before it is acknowledged, so a publisher that dies
half-way leaves chunks without a manifest: subscribers never expose them, and the next
``publish`` tombstones them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from . import _native
from .dataset import KafkaDataset, _config
from .exceptions import ClosedError, ConfigError, KafkaTimeoutError, ModelIntegrityError
from .producer import Producer, SendReport

__all__ = ["ModelPublisher", "ModelSubscriber", "ModelVersion"]

log = logging.getLogger("kafka_ml.models")

_PREFIX = b"kafka-ml/"
_CHUNK = b"kafka-ml/chunk/"
_MANIFEST = b"kafka-ml/manifest/"
_INDEX_KEY = b"kafka-ml/index"
_H_OFFSET = "kafka-ml.offset"
_H_SHA256 = "kafka-ml.sha256"
_MANIFEST_VERSION = 1
_PARTITION = 0
# Headroom under `message.max.bytes` for the record's key, headers and batch framing.
_FRAMING = 16 << 10
# Topic properties of a model topic: compacted, so only live versions take space.
_TOPIC_CONFIG = {"cleanup.policy": "compact"}

Loader = Literal["auto", "numpy", "torch", "bytes", "path"] | Callable[["ModelVersion"], Any]


@dataclass(frozen=True)
class ModelVersion:
    """One published version of a model.

    ``offset`` is the manifest's offset in the topic: publications order by it. On the
    subscriber side ``path`` is the verified artifact on disk and ``model`` what the loader made
    of it (a dict of arrays for safetensors, the bytes for other formats by default).
    """

    version: str
    format: str
    size: int
    sha256: str
    created: float
    metadata: dict[str, Any]
    lineage: dict[str, Any] | None
    publication: str
    chunks: int
    signed: bool
    offset: int | None = None
    path: Path | None = None
    model: Any = field(default=None, repr=False, compare=False)
    framework: str | None = None
    filename: str | None = None

    def read_bytes(self) -> bytes:
        """The artifact's bytes, from the verified file."""
        if self.path is None:
            raise ConfigError(f"model version {self.version!r} has no local artifact")
        return self.path.read_bytes()

    @classmethod
    def _from_manifest(cls, m: Mapping[str, Any], offset: int | None) -> ModelVersion:
        return cls(
            version=str(m["version"]),
            format=str(m["format"]),
            size=int(m["size"]),
            sha256=str(m["sha256"]),
            created=float(m["created"]),
            metadata=dict(m.get("metadata") or {}),
            lineage=m.get("lineage"),
            publication=str(m["publication"]),
            chunks=int(m["chunks"]),
            signed="signature" in m,
            offset=offset,
            framework=m.get("framework"),
            filename=m.get("filename"),
        )


# -- shared helpers ------------------------------------------------------------------------------


def _key_bytes(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else bytes(key)


def _canonical(manifest: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _sign(manifest: Mapping[str, Any], key: bytes) -> str:
    return hmac.new(key, _canonical(manifest), hashlib.sha256).hexdigest()


def _chunk_key(publication: str, index: int) -> bytes:
    return _CHUNK + f"{publication}/{index}".encode()


def _manifest_key(version: str) -> bytes:
    return _MANIFEST + version.encode()


def _ensure_topic(config: Mapping[str, str], topic: str, replication_factor: int, timeout: float) -> None:
    """Creates the model topic compacted with one partition, unless it exists."""
    created = _native.create_topic(dict(config), topic, 1, replication_factor, dict(_TOPIC_CONFIG), timeout)
    if created:
        log.info("created compacted model topic %r", topic)


def _require(module: str, what: str) -> Any:
    """Imports an optional dependency, or says which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{what} needs {module.split('.')[0]}: pip install 'kafka-ml[models]'") from e


def _with_defaults(config: Mapping[str, object], defaults: Mapping[str, str]) -> dict[str, str]:
    out = _config(config)
    for k, v in defaults.items():
        out.setdefault(k, v)
    return out


@dataclass
class _Record:
    offset: int
    key: bytes | None
    value: memoryview | None  # a view of the Arrow buffer: chunks go to disk without a copy
    headers: dict[str, bytes]


def _records(batch: Any) -> Iterator[_Record]:
    """The messages of a raw batch with key, offset and headers metadata."""
    import pyarrow as pa

    rb = pa.record_batch(batch)
    keys = rb.column("key").to_pylist()
    values = rb.column("value")
    offsets = rb.column("offset").to_pylist()
    headers = rb.column("headers").to_pylist()
    for i, offset in enumerate(offsets):
        value = values[i]
        yield _Record(
            offset=offset,
            key=keys[i],
            value=memoryview(value.as_buffer()) if value.is_valid else None,
            headers={k: v for k, v in headers[i] if v is not None},
        )


def _read_range(
    config: Mapping[str, str], topic: str, start: int, end: int, timeout: float
) -> Iterator[_Record]:
    """Messages of partition 0 in offsets ``[start, end)``, in order, with bounded memory."""
    if start >= end:
        return
    tp = (topic, _PARTITION)
    with KafkaDataset(
        config=config,
        partitions=[tp],
        format="raw",
        metadata=["offset", "headers"],
        start={tp: start},
        end={tp: end},
        batch_size=4,
        queue_bytes=8 << 20,
        timeout=timeout,
    ) as ds:
        for batch in ds:
            yield from _records(batch)


def _watermarks(config: Mapping[str, str], topic: str, timeout: float) -> tuple[int, int]:
    tp = (topic, _PARTITION)
    with KafkaDataset(
        config=config, partitions=[tp], format="raw", start="earliest", end="latest", timeout=timeout
    ) as ds:
        plan = ds.plan or []
    for _t, _p, low, high in plan:
        return low, high if high is not None else low
    return 0, 0


# -- publishing ----------------------------------------------------------------------------------


@dataclass
class _Source:
    """An artifact ready to be chunked: a readable stream and how to describe it."""

    stream: BinaryIO
    format: str
    framework: str | None = None
    filename: str | None = None
    cleanup: Callable[[], None] | None = None


def _is_torch_tensor(value: object) -> bool:
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def _source(artifact: Any, format: str | None) -> _Source:
    import io

    if isinstance(artifact, (bytes, bytearray, memoryview)):
        return _Source(io.BytesIO(bytes(artifact)), format or "bytes")
    if isinstance(artifact, (str, os.PathLike)):
        path = Path(artifact)
        if not path.is_file():
            raise ConfigError(f"artifact path {str(path)!r} is not a file")
        suffix = path.suffix.lower().lstrip(".")
        guessed = suffix if suffix in ("onnx", "safetensors") else "file"
        return _Source(path.open("rb"), format or guessed, filename=path.name)
    if isinstance(artifact, Mapping):
        return _safetensors_source(artifact)
    if hasattr(artifact, "state_dict") and callable(artifact.state_dict):
        raise ConfigError(
            f"cannot publish a {type(artifact).__name__} object: pass its state_dict() "
            "(models are serialized with safetensors, never pickled)"
        )
    raise ConfigError(
        f"cannot publish a {type(artifact).__name__}: expected bytes, a file path, a dict of NumPy "
        "arrays or a torch state_dict"
    )


def _safetensors_source(tensors: Mapping[Any, Any]) -> _Source:
    """A dict of NumPy arrays or torch tensors, written with safetensors to a temporary file."""
    if not tensors:
        raise ConfigError("cannot publish an empty dict of tensors")
    kinds = set()
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise ConfigError(f"tensor names must be strings, got {name!r}")
        if isinstance(value, np.ndarray):
            kinds.add("numpy")
        elif _is_torch_tensor(value):
            kinds.add("torch")
        else:
            raise ConfigError(
                f"tensor {name!r} is a {type(value).__name__}: expected NumPy arrays or torch tensors"
            )
    if len(kinds) > 1:
        raise ConfigError("a dict of tensors must be all NumPy arrays or all torch tensors, not a mix")
    framework = kinds.pop()
    fd, tmp = tempfile.mkstemp(prefix="kafka-ml-", suffix=".safetensors")
    os.close(fd)

    def cleanup() -> None:
        Path(tmp).unlink(missing_ok=True)

    try:
        if framework == "torch":
            _require("safetensors.torch", "publishing tensors").save_file(dict(tensors), tmp)
        else:
            arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
            _require("safetensors.numpy", "publishing tensors").save_file(arrays, tmp)
    except BaseException:
        cleanup()
        raise
    return _Source(open(tmp, "rb"), "safetensors", framework=framework, cleanup=cleanup)


class ModelPublisher:
    """Publishes model versions to a compacted topic (created if missing, one partition).

    ``publish`` splits the artifact into chunks below ``message.max.bytes``, waits until all are
    acknowledged, then writes the manifest (signed with ``signing_key`` if given), then
    tombstones versions beyond ``keep_last``. One publisher per topic at a time.
    """

    def __init__(
        self,
        topic: str,
        config: Mapping[str, object],
        *,
        signing_key: bytes | str | None = None,
        keep_last: int = 3,
        chunk_size: int | None = None,
        create_topic: bool = True,
        replication_factor: int = -1,
        timeout: float = 60.0,
    ) -> None:
        if keep_last < 1:
            raise ConfigError(f"keep_last must be at least 1, got {keep_last}")
        # A bounded librdkafka queue keeps a large artifact from being buffered whole in memory.
        self._config = _with_defaults(config, {"queue.buffering.max.kbytes": "16384", "linger.ms": "5"})
        max_message = int(self._config.get("message.max.bytes", "1000000"))
        limit = max_message - _FRAMING
        if chunk_size is None:
            chunk_size = limit
        if not 1 <= chunk_size <= limit:
            raise ConfigError(
                f"chunk_size {chunk_size} must be between 1 and message.max.bytes - {_FRAMING} = {limit}"
            )
        _require("pyarrow", "ModelPublisher")  # reads the topic's tail
        self.topic = topic
        self.chunk_size = chunk_size
        self.keep_last = keep_last
        self._key = _key_bytes(signing_key) if signing_key is not None else None
        self._timeout = timeout
        if create_topic:
            _ensure_topic(self._config, topic, replication_factor, timeout)
        self._producer = Producer(self._config)

    def publish(
        self,
        artifact: Any,
        version: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        lineage: KafkaDataset | Mapping[str, Any] | None = None,
        format: str | None = None,
    ) -> ModelVersion:
        """Publishes ``artifact`` as ``version``; returns when every message is acknowledged.

        ``artifact``: bytes (e.g. ONNX, with ``format="onnx"``), a file path, a dict of NumPy
        arrays or a torch ``state_dict`` (both written with safetensors). ``metadata`` is any
        JSON-serializable dict (metrics, ...). ``lineage`` is a ``KafkaDataset`` (its
        ``state_dict()``: the offsets the model was trained up to) or such a dict.
        """
        if not isinstance(version, str) or not version:
            raise ConfigError(f"version must be a non-empty string, got {version!r}")
        if isinstance(lineage, KafkaDataset):
            lineage = lineage.state_dict()
        try:
            json.dumps(metadata or {})
            json.dumps(lineage)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"metadata and lineage must be JSON-serializable: {e}") from e
        source = _source(artifact, format)
        publication = uuid.uuid4().hex
        try:
            # The end of the topic before the new chunks: what lies before it is read (to find what
            # to retire) while the chunks are being sent.
            low, high = _watermarks(self._config, self.topic, self._timeout)
            tail: dict[str, Any] = {}

            def read_tail() -> None:
                try:
                    tail["live"] = self._live_publications(low, high)
                except BaseException as e:
                    tail["error"] = e

            reader = threading.Thread(target=read_tail, name="kafka-ml-publish-tail", daemon=True)
            reader.start()
            try:
                size, digest, chunks = self._send_chunks(source.stream, publication)
            finally:
                reader.join()
        finally:
            source.stream.close()
            if source.cleanup is not None:
                source.cleanup()
        if "error" in tail:
            raise tail["error"]
        live, orphans = tail["live"]
        manifest: dict[str, Any] = {
            "kafka_ml_model": _MANIFEST_VERSION,
            "version": version,
            "publication": publication,
            "created": time.time(),
            "format": source.format,
            "size": size,
            "sha256": digest,
            "chunks": chunks,
            "chunk_size": self.chunk_size,
            "metadata": dict(metadata or {}),
            "lineage": dict(lineage) if lineage is not None else None,
        }
        if source.framework is not None:
            manifest["framework"] = source.framework
        if source.filename is not None:
            manifest["filename"] = source.filename
        if self._key is not None:
            manifest["signature"] = _sign(manifest, self._key)
        value = json.dumps(manifest).encode()
        if len(value) > self.chunk_size:
            raise ConfigError(f"the manifest of {version!r} is {len(value)} bytes: metadata is too large")
        self._producer.produce(self.topic, value, _manifest_key(version), partition=_PARTITION).wait(
            self._timeout
        )
        self._retire(live, orphans, {"version": version, "publication": publication, "chunks": chunks})
        return ModelVersion._from_manifest(manifest, None)

    def _send_chunks(self, stream: BinaryIO, publication: str) -> tuple[int, str, int]:
        """Writes the chunks and waits for every acknowledgement; (size, sha256, count)."""
        digest = hashlib.sha256()
        reports: list[SendReport] = []
        offset = index = 0
        while True:
            data = stream.read(self.chunk_size)
            if not data and index > 0:
                break
            digest.update(data)
            headers = [
                (_H_OFFSET, str(offset).encode()),
                (_H_SHA256, hashlib.sha256(data).hexdigest().encode()),
            ]
            reports.append(
                self._producer.produce(
                    self.topic, data, _chunk_key(publication, index), partition=_PARTITION, headers=headers
                )
            )
            offset += len(data)
            index += 1
            if not data:  # an empty artifact is one empty chunk
                break
        deadline = time.monotonic() + self._timeout
        for report in reports:
            report.wait(max(0.0, deadline - time.monotonic()))
        return offset, digest.hexdigest(), index

    def _live_publications(self, low: int, high: int) -> tuple[list[dict[str, Any]], list[bytes]]:
        """The live publications (oldest first) from the index at the topic's tail, and the keys of
        chunks written after it by an interrupted publication.

        Reads backwards from the end in growing windows until the index: only the tail of an
        interrupted publication is read, never the whole topic. ``[low, high)``: the offsets to
        look at.
        """
        orphans: list[bytes] = []
        deleted: set[bytes] = set()
        end, window = high, 4
        while end > low:
            start = max(low, end - window)
            records = list(
                (
                    r.offset,
                    r.key,
                    bytes(r.value)
                    if r.key == _INDEX_KEY and r.value is not None
                    else b""
                    if r.value is not None
                    else None,
                )
                for r in _read_range(self._config, self.topic, start, end, self._timeout)
            )
            for _offset, key, value in reversed(records):
                if key is None or not key.startswith(_PREFIX):
                    continue
                if value is None:
                    deleted.add(key)
                elif key == _INDEX_KEY:
                    live = list(json.loads(value)["live"])
                    return live, orphans
                elif key.startswith(_CHUNK) and key not in deleted:
                    orphans.append(key)
            end, window = start, window * 4
        return [], orphans

    def _retire(self, live: list[dict[str, Any]], orphans: list[bytes], new: dict[str, Any]) -> None:
        """Tombstones what the new publication replaces, then writes the new index."""
        tombstones = list(orphans)
        kept = [p for p in live if p["version"] != new["version"]]
        for p in live:
            if p["version"] == new["version"]:  # republished: its old chunks go, the manifest key stays
                tombstones += [_chunk_key(p["publication"], i) for i in range(p["chunks"])]
        kept.append(new)
        dropped, kept = kept[: -self.keep_last], kept[-self.keep_last :]
        for p in dropped:
            tombstones += [_chunk_key(p["publication"], i) for i in range(p["chunks"])]
            tombstones.append(_manifest_key(p["version"]))
        reports = [self._producer.produce(self.topic, None, k, partition=_PARTITION) for k in tombstones]
        reports.append(
            self._producer.produce(
                self.topic, json.dumps({"live": kept}).encode(), _INDEX_KEY, partition=_PARTITION
            )
        )
        deadline = time.monotonic() + self._timeout
        for report in reports:
            report.wait(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self._producer.close(self._timeout)

    def __enter__(self) -> ModelPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- subscribing ---------------------------------------------------------------------------------


class _Spool:
    """The chunks of one publication received so far, written in place into a sparse file.

    In-order chunks also feed a running SHA-256, so a complete artifact is usually verified
    without reading it back. Chunk checksums are checked only when needed (a repeated chunk, or an
    artifact whose SHA-256 does not match, to name the corrupt chunks): hashing every chunk twice
    would double the subscriber's CPU per byte."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.extents: dict[int, tuple[int, int]] = {}  # index -> (offset, length)
        self.checksums: dict[int, str] = {}  # index -> the chunk's SHA-256 (hex) from its header
        self.hasher = hashlib.sha256()
        self.hashed = 0  # bytes [0, hashed) are in `hasher`
        self.pending: dict[int, int] = {}  # offset -> length, written beyond `hashed`

    def write(self, index: int, offset: int, data: memoryview, checksum: str) -> bool:
        """Writes chunk ``index``; False for a duplicate (the first good copy wins)."""
        if index in self.extents:
            if self.chunk_ok(index) or hashlib.sha256(data).hexdigest() != checksum:
                return False
            # The first copy was corrupt and this one is good: it replaces it, and the running
            # hash, which may hold the bad copy, is recomputed from the file.
            self.extents[index] = (offset, len(data))
            self.checksums[index] = checksum
            os.pwrite(self.fd, data, offset)
            self.hasher, self.hashed = hashlib.sha256(), 0
            self.pending = dict(self.extents.values())
            self._catch_up()
            return False
        self.extents[index] = (offset, len(data))
        self.checksums[index] = checksum
        os.pwrite(self.fd, data, offset)
        if offset == self.hashed:
            self.hasher.update(data)
            self.hashed += len(data)
            self._catch_up()
        elif offset > self.hashed:
            self.pending[offset] = len(data)
        return True

    def chunk_ok(self, index: int) -> bool:
        offset, length = self.extents[index]
        return hashlib.sha256(os.pread(self.fd, length, offset)).hexdigest() == self.checksums[index]

    def corrupt_chunks(self) -> list[int]:
        """The chunks whose bytes do not match their own checksum."""
        return [i for i in sorted(self.extents) if not self.chunk_ok(i)]

    def _catch_up(self) -> None:
        while self.hashed in self.pending:
            length = self.pending.pop(self.hashed)
            self.hasher.update(os.pread(self.fd, length, self.hashed))
            self.hashed += length

    def problem(self, size: int, chunks: int) -> str | None:
        """Why the received chunks do not make up the artifact, or None if they do."""
        missing = [i for i in range(chunks) if i not in self.extents]
        if missing:
            return f"chunks missing: {missing[:10]}{' ...' if len(missing) > 10 else ''}"
        position = 0
        for i in range(chunks):
            offset, length = self.extents[i]
            if offset != position:
                return f"chunk {i} starts at byte {offset}, expected {position}"
            position += length
        if position != size:
            return f"chunks hold {position} bytes, the manifest says {size}"
        return None

    def sha256(self, size: int) -> str:
        # Out-of-order chunks beyond the running hash are read back from disk in bounded steps.
        step = 8 << 20
        while self.hashed < size:
            data = os.pread(self.fd, min(step, size - self.hashed), self.hashed)
            if not data:
                break
            self.hasher.update(data)
            self.hashed += len(data)
        return self.hasher.copy().hexdigest()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


@dataclass
class _Candidate:
    """A manifest seen on the topic, its chunks' spool, and what verification found."""

    manifest: dict[str, Any]
    offset: int
    spool: _Spool | None
    verified: ModelVersion | None = None
    rejected: str | None = None


def _parse_chunk_key(key: bytes) -> tuple[str, int] | None:
    try:
        publication, index = key[len(_CHUNK) :].decode().rsplit("/", 1)
        return publication, int(index)
    except (UnicodeDecodeError, ValueError):
        return None


class ModelSubscriber:
    """Follows a model topic in a background thread and always holds the newest verified version.

    On start it replays the topic and exposes the newest complete, verified version; then it
    follows new publications. ``latest`` is swapped atomically (read it once per request or
    batch); it moves only forward in publication order unless pinned (``pin``, ``rollback``).
    Chunks are assembled on disk (in ``directory``, a temporary one by default), so memory stays
    bounded whatever the artifact size; the directory keeps the verified artifacts of the
    versions still live on the topic.

    With ``signing_key`` every manifest must carry a valid HMAC-SHA256 signature. A version that
    fails a check is rejected with a logged error and counted in ``stats``; the previous version
    stays.

    ``loader`` turns a verified artifact into ``ModelVersion.model``: ``"auto"`` (safetensors →
    dict of NumPy arrays, or torch tensors if published from torch and torch is installed; other
    formats → bytes), ``"numpy"``, ``"torch"``, ``"bytes"``, ``"path"`` (nothing loaded), or a
    callable taking the :class:`ModelVersion`. It runs in the background before the swap, so
    serving never waits for it.
    """

    def __init__(
        self,
        topic: str,
        config: Mapping[str, object],
        *,
        on_update: Callable[[ModelVersion], None] | Sequence[Callable[[ModelVersion], None]] = (),
        signing_key: bytes | str | None = None,
        loader: Loader = "auto",
        directory: str | os.PathLike[str] | None = None,
        create_topic: bool = True,
        replication_factor: int = -1,
        timeout: float = 30.0,
    ) -> None:
        if not callable(loader) and loader not in ("auto", "numpy", "torch", "bytes", "path"):
            raise ConfigError(f"unknown loader {loader!r} (expected auto, numpy, torch, bytes, path)")
        # A small prefetch: chunks go to disk as they come, so memory stays bounded.
        self._config = _with_defaults(
            config, {"queued.max.messages.kbytes": "8192", "fetch.max.bytes": "4194304"}
        )
        _require("pyarrow", "ModelSubscriber")  # reads the chunks
        self.topic = topic
        self._key = _key_bytes(signing_key) if signing_key is not None else None
        self._loader = loader
        self._timeout = timeout
        self._callbacks = [on_update] if callable(on_update) else list(on_update)
        self._own_directory = directory is None
        self._dir = Path(tempfile.mkdtemp(prefix="kafka-ml-models-") if directory is None else directory)
        self._dir.mkdir(parents=True, exist_ok=True)
        if create_topic:
            _ensure_topic(self._config, topic, replication_factor, timeout)

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._spools: dict[str, _Spool] = {}
        self._candidates: dict[str, _Candidate] = {}  # by version: the newest publication of it
        self._latest: ModelVersion | None = None
        self._pinned = False
        self._ready = False
        self._stats = {
            "updates": 0,
            "rejected": 0,
            "corrupt_chunks": 0,
            "duplicate_chunks": 0,
            "load_failures": 0,
        }
        self._error: BaseException | None = None
        self._closing = threading.Event()
        self._dataset: KafkaDataset | None = None
        self._thread = threading.Thread(target=self._run, name=f"kafka-ml-models-{topic}", daemon=True)
        self._thread.start()

    # -- what serving code reads ------------------------------------------------------------

    @property
    def latest(self) -> ModelVersion | None:
        """The version being served (None until one is verified); one atomic reference."""
        return self._latest

    @property
    def stats(self) -> dict[str, int]:
        """``updates`` (swaps), ``rejected`` versions, ``corrupt_chunks``, ``duplicate_chunks``,
        ``load_failures`` (verified but the loader raised)."""
        with self._lock:
            return dict(self._stats)

    @property
    def ready(self) -> bool:
        """Whether the replay of the topic at start is done."""
        return self._ready

    def versions(self) -> list[ModelVersion]:
        """The complete versions live on the topic, in publication order (not yet verified ones
        are verified when pinned)."""
        with self._lock:
            out = [
                c.verified or ModelVersion._from_manifest(c.manifest, c.offset)
                for c in self._candidates.values()
                if c.rejected is None
            ]
        return sorted(out, key=lambda v: v.offset or 0)

    def wait_for(self, version: str | None = None, timeout: float = 30.0) -> ModelVersion:
        """Waits until ``version`` is received and verified (any version if None); returns it
        (with its loaded ``model`` if it is the one being served).

        Raises :class:`ModelIntegrityError` if its publication was rejected, and
        :class:`KafkaTimeoutError` after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if self._error is not None:
                    raise self._error
                if version is None:
                    if self._ready and self._latest is not None:
                        return self._latest
                else:
                    c = self._candidates.get(version)
                    if c is not None and self._ready:
                        self._verify(c)  # versions older than the newest are verified on demand
                    if c is not None and c.verified is not None:
                        latest = self._latest
                        if latest is not None and latest.publication == c.verified.publication:
                            return latest  # with its loaded model
                        return c.verified
                    if c is not None and c.rejected is not None:
                        raise ModelIntegrityError(
                            f"model version {version!r} was rejected: {c.rejected}",
                            version=version,
                            reason=c.rejected,
                        )
                left = deadline - time.monotonic()
                if left <= 0:
                    what = f"model version {version!r}" if version is not None else "a model version"
                    raise KafkaTimeoutError(f"{what} did not arrive on topic {self.topic!r} in {timeout} s")
                self._changed.wait(min(left, 0.5))

    # -- pinning -----------------------------------------------------------------------------

    def pin(self, version: str) -> ModelVersion:
        """Serves ``version`` (verified first) and stops following new ones until ``unpin``."""
        with self._lock:
            c = self._candidates.get(version)
            if c is None:
                known = ", ".join(repr(v.version) for v in self.versions()) or "none"
                raise ConfigError(f"model version {version!r} is not on topic {self.topic!r} (live: {known})")
            verified = self._verify(c)
            if verified is None:
                raise ModelIntegrityError(
                    f"model version {version!r} was rejected: {c.rejected}",
                    version=version,
                    reason=c.rejected,
                )
            self._pinned = True
            self._swap(verified, force=True)
            return verified

    def rollback(self) -> ModelVersion:
        """Pins the version published before the one being served."""
        with self._lock:
            current = self._latest
            older = [v for v in self.versions() if current is None or (v.offset or 0) < (current.offset or 0)]
            if not older:
                raise ConfigError(
                    f"no version older than {current.version if current else None!r} to roll back to"
                )
            return self.pin(older[-1].version)

    def unpin(self) -> ModelVersion | None:
        """Follows publications again, starting from the newest verified version."""
        with self._lock:
            self._pinned = False
            newest = self._newest_verified()
            if newest is not None:
                self._swap(newest, force=True)
            return self._latest

    @property
    def pinned(self) -> bool:
        return self._pinned

    # -- the background thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            low, high = _watermarks(self._config, self.topic, self._timeout)
            position = low
            for record in _read_range(self._config, self.topic, low, high, self._timeout):
                if self._closing.is_set():
                    return
                with self._lock:
                    self._on_record(record, replaying=True)
                position = record.offset + 1
            with self._changed:
                newest = self._newest_verified()
                if newest is not None:
                    self._swap(newest)
                self._ready = True
                self._changed.notify_all()
            self._follow(max(position, high))
        except Exception as e:
            if not self._closing.is_set():
                log.exception("model subscriber of topic %r stopped", self.topic)
                with self._changed:
                    self._error = e
                    self._changed.notify_all()

    def _follow(self, position: int) -> None:
        tp = (self.topic, _PARTITION)
        while not self._closing.is_set():
            try:
                self._dataset = KafkaDataset(
                    config=self._config,
                    partitions=[tp],
                    format="raw",
                    metadata=["offset", "headers"],
                    start={tp: position},
                    batch_size=4,
                    max_wait=0.05,
                    queue_bytes=8 << 20,
                    timeout=self._timeout,
                )
                if self._closing.is_set():
                    return
                for batch in self._dataset:
                    with self._lock:
                        for record in _records(batch):
                            self._on_record(record, replaying=False)
                            position = record.offset + 1
            except ClosedError:
                return
            except Exception:
                if self._closing.is_set():
                    return
                # A broker outage: resume where we were after a pause.
                log.exception("model subscriber of topic %r: reading failed, retrying", self.topic)
                self._closing.wait(1.0)
            finally:
                if self._dataset is not None:
                    self._dataset.close()

    def _on_record(self, r: _Record, *, replaying: bool) -> None:
        key = r.key
        if key is None or not key.startswith(_PREFIX):
            return
        if key.startswith(_CHUNK):
            self._on_chunk(r)
        elif key.startswith(_MANIFEST):
            version = key[len(_MANIFEST) :].decode(errors="replace")
            if r.value is None:
                self._on_version_removed(version)
            else:
                self._on_manifest(version, r, replaying=replaying)

    def _on_chunk(self, r: _Record) -> None:
        parsed = _parse_chunk_key(r.key or b"")
        if parsed is None:
            return
        publication, index = parsed
        if r.value is None:  # tombstoned: the publication is gone
            spool = self._spools.pop(publication, None)
            if spool is not None:
                spool.discard()
            return
        data = r.value
        try:
            offset = int(r.headers[_H_OFFSET])
            expected = r.headers[_H_SHA256].decode()
        except (KeyError, ValueError):
            self._stats["corrupt_chunks"] += 1
            log.error(
                "topic %r offset %d: chunk %d of %s has no offset/sha256 header",
                self.topic,
                r.offset,
                index,
                publication,
            )
            return
        if offset < 0 or len(expected) != 64:
            self._stats["corrupt_chunks"] += 1
            log.error(
                "topic %r offset %d: chunk %d of publication %s has a bad offset or checksum header",
                self.topic,
                r.offset,
                index,
                publication,
            )
            return
        spool = self._spools.get(publication)
        if spool is None:
            spool = self._spools[publication] = _Spool(self._dir / f"{publication}.part")
        if not spool.write(index, offset, data, expected):
            self._stats["duplicate_chunks"] += 1

    def _on_manifest(self, version: str, r: _Record, *, replaying: bool) -> None:
        try:
            manifest = json.loads(bytes(r.value or b""))
            ModelVersion._from_manifest(manifest, r.offset)
        except (ValueError, KeyError, TypeError) as e:
            self._reject_record(version, r.offset, f"unreadable manifest ({e})")
            return
        if manifest.get("version") != version:
            self._reject_record(version, r.offset, f"manifest names version {manifest.get('version')!r}")
            return
        previous = self._candidates.get(version)
        if previous is not None and previous.manifest["publication"] != manifest["publication"]:
            self._drop_candidate(previous)
        spool = self._spools.pop(str(manifest["publication"]), None)
        candidate = _Candidate(manifest=manifest, offset=r.offset, spool=spool)
        self._candidates[version] = candidate
        if not replaying:
            verified = self._verify(candidate)
            if verified is not None and not self._pinned:
                self._swap(verified)
        self._changed.notify_all()

    def _on_version_removed(self, version: str) -> None:
        c = self._candidates.pop(version, None)
        if c is not None:
            self._drop_candidate(c)
            self._changed.notify_all()

    def _drop_candidate(self, c: _Candidate) -> None:
        if c.spool is not None:
            c.spool.discard()
        in_use = self._latest is not None and self._latest.publication == c.manifest["publication"]
        if c.verified is not None and c.verified.path is not None and not in_use:
            c.verified.path.unlink(missing_ok=True)

    def _reject_record(self, version: str, offset: int, reason: str) -> None:
        self._stats["rejected"] += 1
        log.error("topic %r offset %d: model version %r rejected: %s", self.topic, offset, version, reason)

    def _verify(self, c: _Candidate) -> ModelVersion | None:
        """Checks signature, completeness and SHA-256; the verified version, or None (rejected)."""
        if c.verified is not None or c.rejected is not None:
            return c.verified
        m = c.manifest
        reason = self._signature_problem(m)
        if reason is None:
            if c.spool is None:
                reason = "no chunks of its publication were received"
            else:
                reason = c.spool.problem(int(m["size"]), int(m["chunks"]))
        if reason is None and c.spool is not None:
            digest = c.spool.sha256(int(m["size"]))
            if digest != m["sha256"]:
                corrupt = c.spool.corrupt_chunks()
                self._stats["corrupt_chunks"] += len(corrupt)
                if corrupt:
                    reason = f"chunks {corrupt} do not match their checksums (corrupted)"
                else:
                    reason = (
                        f"SHA-256 mismatch: the artifact hashes to {digest}, the manifest says {m['sha256']}"
                    )
        if reason is not None or c.spool is None:
            c.rejected = reason
            if c.spool is not None:
                c.spool.discard()
                c.spool = None
            self._reject_record(str(m["version"]), c.offset, reason or "")
            self._changed.notify_all()
            return None
        c.spool.close()
        final = c.spool.path.with_suffix(".artifact")
        os.replace(c.spool.path, final)
        c.spool = None
        c.verified = replace(ModelVersion._from_manifest(m, c.offset), path=final)
        return c.verified

    def _signature_problem(self, m: Mapping[str, Any]) -> str | None:
        if self._key is None:
            return None
        signature = m.get("signature")
        if not isinstance(signature, str):
            return "unsigned manifest (this subscriber requires a signature)"
        if not hmac.compare_digest(signature, _sign(m, self._key)):
            return "bad signature"
        return None

    def _newest_verified(self) -> ModelVersion | None:
        for c in sorted(self._candidates.values(), key=lambda c: c.offset, reverse=True):
            verified = self._verify(c)
            if verified is not None:
                return verified
        return None

    def _swap(self, v: ModelVersion, *, force: bool = False) -> None:
        """Loads ``v`` and makes it ``latest``; never backwards unless forced (pin/unpin)."""
        current = self._latest
        if current is not None and not force and (current.offset or 0) >= (v.offset or 0):
            return
        if current is not None and current.publication == v.publication and current.model is not None:
            return
        try:
            loaded = replace(v, model=self._load(v))
        except Exception as e:
            self._stats["load_failures"] += 1
            log.exception("model version %r could not be loaded, keeping the previous one", v.version)
            if force:
                raise ModelIntegrityError(
                    f"model version {v.version!r} could not be loaded: {e}", version=v.version, reason=str(e)
                ) from e
            return
        self._latest = loaded
        self._stats["updates"] += 1
        self._changed.notify_all()
        if current is not None and current.path is not None and current.publication != v.publication:
            if not any(
                c.verified is not None and c.verified.publication == current.publication
                for c in self._candidates.values()
            ):
                current.path.unlink(missing_ok=True)  # its version was removed from the topic meanwhile
        for callback in self._callbacks:
            try:
                callback(loaded)
            except Exception:
                log.exception("on_update callback failed for model version %r", v.version)

    def _load(self, v: ModelVersion) -> Any:
        assert v.path is not None
        loader = self._loader
        if callable(loader):
            return loader(v)
        if loader == "path":
            return v.path
        if loader == "bytes" or (loader == "auto" and v.format != "safetensors"):
            return v.read_bytes()
        if loader == "torch" or (loader == "auto" and v.framework == "torch" and _torch_available()):
            return _require("safetensors.torch", "loading tensors").load_file(str(v.path))
        return _require("safetensors.numpy", "loading tensors").load_file(str(v.path))

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stops the background thread and removes the temporary directory. Idempotent."""
        self._closing.set()
        # Closing the dataset wakes the thread blocked on it; repeated, because the thread may be
        # creating its reader at the moment of the first close.
        deadline = time.monotonic() + self._timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            dataset = self._dataset
            if dataset is not None:
                dataset.close()
            self._thread.join(timeout=0.1)
        with self._lock:
            for spool in self._spools.values():
                spool.discard()
            self._spools.clear()
            for c in self._candidates.values():
                if c.spool is not None:
                    c.spool.discard()
        if self._own_directory:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ModelSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None
