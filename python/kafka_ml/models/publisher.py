"""`ModelPublisher`: chunks, manifest, then tombstones and the index, in that order."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any, BinaryIO

from ..dataset import KafkaDataset, _config
from ..exceptions import ConfigError
from ..producer import Producer, SendReport
from .artifacts import _source
from .signing import SigningKey, _signer
from .topic import _ensure_topic, _read_range, _watermarks, _with_defaults
from .wire import (
    _CHUNK,
    _FRAMING,
    _H_OFFSET,
    _H_SHA256,
    _INDEX_KEY,
    _MANIFEST_VERSION,
    _PARTITION,
    _PREFIX,
    ModelVersion,
    _chunk_key,
    _manifest_key,
)


class ModelPublisher:
    """Publishes model versions to a compacted topic (created if missing, one partition).

    ``publish`` splits the artifact into chunks below ``message.max.bytes``, waits until all are
    acknowledged, then writes the manifest (signed with ``signing_key`` if given), then
    tombstones versions beyond ``keep_last``. One publisher per topic at a time.

    ``signing_key``: an HMAC-SHA256 secret (bytes, or a str that is neither PEM text nor a file),
    which every subscriber must share, or an Ed25519 private key (a cryptography
    ``Ed25519PrivateKey``, unencrypted PEM text, or the path of a PEM file; a str ending in
    ``.pem``/``.key`` that is no file is an error, not a secret), whose public key is all a
    subscriber needs. ``key_id`` names the key in the manifest, so that subscribers can hold
    several during a rotation; for Ed25519 it defaults to :func:`key_fingerprint`.
    """

    def __init__(
        self,
        topic: str,
        config: Mapping[str, object],
        *,
        signing_key: SigningKey | None = None,
        key_id: str | None = None,
        keep_last: int = 3,
        chunk_size: int | None = None,
        create_topic: bool = True,
        replication_factor: int = -1,
        timeout: float = 60.0,
    ) -> None:
        if keep_last < 1:
            raise ConfigError(f"keep_last must be at least 1, got {keep_last}")
        # Before anything connects: a bad key fails fast, whatever the broker.
        self._signer = _signer(signing_key, key_id)
        # The publisher's reads (watermarks, its own index) use the user's config as is: the
        # producer settings below would make librdkafka warn in every consumer.
        self._config = _config(config)
        # A bounded librdkafka queue keeps a large artifact from being buffered whole in memory.
        producer_config = _with_defaults(config, {"queue.buffering.max.kbytes": "16384", "linger.ms": "5"})
        max_message = int(self._config.get("message.max.bytes", "1000000"))
        limit = max_message - _FRAMING
        if chunk_size is None:
            chunk_size = limit
        if not 1 <= chunk_size <= limit:
            raise ConfigError(
                f"chunk_size {chunk_size} must be between 1 and message.max.bytes - {_FRAMING} = {limit}"
            )
        self.topic = topic
        self.chunk_size = chunk_size
        self.keep_last = keep_last
        self._timeout = timeout
        if create_topic:
            _ensure_topic(self._config, topic, replication_factor, timeout)
        self._producer = Producer(producer_config)

    @property
    def signature_algorithm(self) -> str | None:
        """``"hmac-sha256"``, ``"ed25519"``, or None for unsigned publications."""
        return self._signer.algorithm if self._signer is not None else None

    @property
    def key_id(self) -> str | None:
        """The key id written into each manifest (None: unsigned, or HMAC without one)."""
        return self._signer.key_id if self._signer is not None else None

    def __repr__(self) -> str:
        # Names the key, never shows it.
        signing = f"{self._signer.algorithm}, key_id={self._signer.key_id!r}" if self._signer else "unsigned"
        return f"ModelPublisher(topic={self.topic!r}, {signing}, keep_last={self.keep_last})"

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
        if self._signer is not None:
            self._signer.sign(manifest)
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
