"""`ModelSubscriber`: follows a model topic in a background thread, verifies each publication
and swaps in the newest verified version."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ..dataset import KafkaDataset
from ..exceptions import ClosedError, ConfigError, KafkaTimeoutError, ModelIntegrityError
from .artifacts import _require
from .signing import VerifyKey, _Verifier
from .spool import _Spool
from .topic import _ensure_topic, _read_range, _Record, _records, _watermarks, _with_defaults
from .wire import _CHUNK, _H_OFFSET, _H_SHA256, _MANIFEST, _PARTITION, _PREFIX, ModelVersion, _parse_chunk_key

log = logging.getLogger("kafka_ml.models")

Loader = Literal["auto", "numpy", "torch", "bytes", "path"] | Callable[["ModelVersion"], Any]


@dataclass
class _Candidate:
    """A manifest seen on the topic, its chunks' spool, and what verification found."""

    manifest: dict[str, Any]
    offset: int
    spool: _Spool | None
    verified: ModelVersion | None = None
    rejected: str | None = None


class ModelSubscriber:
    """Follows a model topic in a background thread and always holds the newest verified version.

    On start it replays the topic and exposes the newest complete, verified version; then it
    follows new publications. ``latest`` is swapped atomically (read it once per request or
    batch); it moves only forward in publication order unless pinned (``pin``, ``rollback``).
    Chunks are assembled on disk (in ``directory``, a temporary one by default), so memory stays
    bounded whatever the artifact size; the directory keeps the verified artifacts of the
    versions still live on the topic.

    With ``signing_key`` (the HMAC secret shared with the publisher) or ``verify_keys`` (Ed25519
    public keys: ``{key_id: key}``, or a list whose ids are their :func:`key_fingerprint`; each
    an ``Ed25519PublicKey``, PEM text, a PEM file or the raw 32 bytes) every manifest must
    carry a valid signature by one of these keys: unsigned manifests, other algorithms and
    unknown key ids are rejected. With both, either kind is accepted (a migration). A version
    that fails a check is rejected with a logged error and counted in ``stats``; the previous
    version stays.

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
        verify_keys: Mapping[str, VerifyKey] | Sequence[VerifyKey] | None = None,
        loader: Loader = "auto",
        directory: str | os.PathLike[str] | None = None,
        create_topic: bool = True,
        replication_factor: int = -1,
        timeout: float = 30.0,
    ) -> None:
        if not callable(loader) and loader not in ("auto", "numpy", "torch", "bytes", "path"):
            raise ConfigError(f"unknown loader {loader!r} (expected auto, numpy, torch, bytes, path)")
        self._verifier = _Verifier(signing_key, verify_keys)
        # A small prefetch: chunks go to disk as they come, so memory stays bounded.
        self._config = _with_defaults(
            config, {"queued.max.messages.kbytes": "8192", "fetch.max.bytes": "4194304"}
        )
        self.topic = topic
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

    def __repr__(self) -> str:
        latest = self._latest
        return (
            f"ModelSubscriber(topic={self.topic!r}, {self._verifier!r}, "
            f"latest={latest.version if latest is not None else None!r})"
        )

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
        return self._verifier.problem(m)

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
