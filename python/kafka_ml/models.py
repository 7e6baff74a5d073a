"""`ModelPublisher` / `ModelSubscriber`: versioned, chunked, verified model artifacts on a
compacted topic, hot-swapped in serving processes.

Wire format (one partition, partition 0, so offsets order everything):

- chunk ``i`` of a publication: key ``kafka-ml/chunk/<publication>/<i>``, value the artifact's
  bytes ``[offset, offset + len)``, headers ``kafka-ml.offset`` (decimal) and ``kafka-ml.sha256``
  (hex digest of the chunk);
- then its manifest: key ``kafka-ml/manifest/<version>``, value UTF-8 JSON (version, created,
  format, size, SHA-256, chunk count, metadata, lineage and, with a key, ``signature_algorithm``
  (``"hmac-sha256"`` or ``"ed25519"``), ``key_id`` and a hex ``signature`` over the canonical
  JSON of the rest, algorithm and key id included; a manifest with a ``signature`` but no
  algorithm, as written before Ed25519 was supported, is HMAC-SHA256);
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
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Union

import numpy as np

from . import _native
from .dataset import KafkaDataset, _config
from .exceptions import ClosedError, ConfigError, KafkaTimeoutError, ModelIntegrityError, UnknownTopicError
from .producer import Producer, SendReport

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["ModelPublisher", "ModelSubscriber", "ModelVersion", "key_fingerprint"]

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
# What ModelPublisher(signing_key=) takes: an HMAC secret (bytes, or a str that is neither PEM
# nor a file), or an Ed25519 private key (the object, PEM text, or a PEM file).
SigningKey = Union[bytes, str, "os.PathLike[str]", "Ed25519PrivateKey"]
# What ModelSubscriber(verify_keys=) takes for each key: an Ed25519 public key object, PEM text,
# a PEM file, or the raw 32 bytes.
VerifyKey = Union[bytes, str, "os.PathLike[str]", "Ed25519PublicKey"]

HMAC_SHA256 = "hmac-sha256"
ED25519 = "ed25519"


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
    signature_algorithm: str | None = None
    key_id: str | None = None

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
            signature_algorithm=str(_algorithm(m)) if "signature" in m else None,
            key_id=str(m["key_id"]) if m.get("key_id") is not None else None,
        )


# -- shared helpers ------------------------------------------------------------------------------


def _canonical(manifest: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _algorithm(manifest: Mapping[str, Any]) -> object:
    # Manifests signed before Ed25519 existed carry no algorithm: they are HMAC-SHA256.
    return manifest.get("signature_algorithm", HMAC_SHA256)


def _need_cryptography() -> None:
    """Ed25519 needs cryptography (HMAC does not): an error naming the extra that installs it."""
    import importlib.util

    if importlib.util.find_spec("cryptography") is None:
        raise ImportError("Ed25519 model signatures need cryptography: pip install 'kafka-ml[models]'")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_fingerprint(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The default key id of an Ed25519 key: the first 16 hex digits of the SHA-256 of its raw
    public key. A name, not a secret: a signature is checked with the key the id names, so a
    matching id proves nothing by itself."""
    _need_cryptography()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    if not isinstance(public, Ed25519PublicKey):
        raise ConfigError(f"key_fingerprint takes an Ed25519 key, got a {type(key).__name__}")
    return hashlib.sha256(_raw_public(public)).hexdigest()[:16]


def _check_key_id(key_id: object, what: str) -> str:
    # Key ids travel in manifests and appear in logs: short printable names.
    if not isinstance(key_id, str) or not key_id or len(key_id) > 128 or not key_id.isprintable():
        raise ConfigError(f"{what} must be a non-empty printable string of at most 128 characters")
    return key_id


def _pem_source(key: object, what: str) -> tuple[bytes, str] | None:
    """PEM text and where it came from ("PEM text" or the file), or None when ``key`` is neither
    PEM nor a file (then, for a signing key, an HMAC secret).

    Error messages name the file, never the key's bytes."""
    if isinstance(key, os.PathLike):
        path = Path(key)
    elif isinstance(key, (bytes, bytearray, memoryview)):
        data = bytes(key)
        return (data, "PEM text") if data.lstrip().startswith(b"-----BEGIN") else None
    elif isinstance(key, str):
        if key.lstrip().startswith("-----BEGIN"):
            return key.encode(), "PEM text"
        if not os.path.isfile(key):
            if key.endswith((".pem", ".key", ".pub")):
                # Looks like a path: using it as an HMAC secret would sign with the file's name.
                raise ConfigError(f"{what}: no such key file {key!r}")
            return None
        path = Path(key)
    else:
        return None
    try:
        return path.read_bytes(), f"file {str(path)!r}"
    except OSError as e:
        raise ConfigError(f"{what}: cannot read key file {str(path)!r}: {e.strerror}") from None


class _Signer:
    """The publisher's key. Its repr names the algorithm and key id, never the key."""

    def __init__(self, algorithm: str, key_id: str | None, key: bytes | Ed25519PrivateKey) -> None:
        self.algorithm = algorithm
        self.key_id = key_id
        self._key = key

    def sign(self, manifest: dict[str, Any]) -> None:
        """Adds the algorithm, the key id and the signature over both and the rest."""
        manifest["signature_algorithm"] = self.algorithm
        if self.key_id is not None:
            manifest["key_id"] = self.key_id
        body = _canonical(manifest)
        if isinstance(self._key, bytes):
            manifest["signature"] = hmac.new(self._key, body, hashlib.sha256).hexdigest()
        else:
            manifest["signature"] = self._key.sign(body).hex()

    def __repr__(self) -> str:
        return f"<{self.algorithm} signing key {self.key_id!r}>"


def _signer(signing_key: SigningKey | None, key_id: str | None) -> _Signer | None:
    what = "signing_key"
    if signing_key is None:
        if key_id is not None:
            raise ConfigError("key_id is set but signing_key is not")
        return None
    if key_id is not None:
        _check_key_id(key_id, "key_id")
    pem = _pem_source(signing_key, what)
    if pem is None and isinstance(signing_key, (bytes, bytearray, memoryview, str)):
        secret = signing_key.encode() if isinstance(signing_key, str) else bytes(signing_key)
        if not secret:
            # An unset environment variable read as "" would otherwise sign with an empty key.
            raise ConfigError(f"{what} is empty")
        return _Signer(HMAC_SHA256, key_id, secret)
    _need_cryptography()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    if pem is not None:
        private = _load_private_pem(*pem, what)
    elif isinstance(signing_key, Ed25519PrivateKey):
        private = signing_key
    elif isinstance(signing_key, Ed25519PublicKey):
        raise ConfigError(f"{what} is a public key: a publisher signs with the Ed25519 private key")
    else:
        raise ConfigError(
            f"{what} must be bytes or str (an HMAC secret) or an Ed25519 private key (the object, PEM "
            f"text or a PEM file), got a {type(signing_key).__name__}"
        )
    return _Signer(ED25519, key_id if key_id is not None else key_fingerprint(private), private)


def _load_private_pem(data: bytes, source: str, what: str) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if b"PUBLIC KEY" in data.lstrip().split(b"\n", 1)[0]:
        raise ConfigError(f"{what} ({source}) is a public key: a publisher signs with the private key")
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            f"{what} ({source}) is an encrypted private key: load it with cryptography's "
            "load_pem_private_key(data, password) and pass the key object"
        ) from None
    except ValueError:
        # cryptography's own message is not repeated: it adds nothing a user can act on.
        raise ConfigError(f"{what} ({source}) is not a readable PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{what} ({source}) is a {type(key).__name__}: only Ed25519 keys are supported")
    return key


def _verify_key(key: VerifyKey, what: str) -> Ed25519PublicKey:
    _need_cryptography()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    if isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"{what} is a private key: give the subscriber its public_key(), so that a serving "
            "process holds no key that can sign"
        )
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return Ed25519PublicKey.from_public_bytes(bytes(key))
    pem = _pem_source(key, what)
    if pem is None:
        raise ConfigError(
            f"{what} must be an Ed25519 public key: the object, PEM text, a PEM file or the raw 32 bytes "
            f"(got a {type(key).__name__})"
        )
    data, source = pem
    if b"PRIVATE KEY" in data:
        raise ConfigError(
            f"{what} ({source}) is a private key: give the subscriber the public key, so that a "
            "serving process holds no key that can sign"
        )
    try:
        public = load_pem_public_key(data)
    except ValueError:
        raise ConfigError(f"{what} ({source}) is not a readable PEM public key") from None
    if not isinstance(public, Ed25519PublicKey):
        raise ConfigError(f"{what} ({source}) is a {type(public).__name__}: only Ed25519 keys are supported")
    return public


class _Verifier:
    """The subscriber's keys: an HMAC secret and/or Ed25519 public keys by key id."""

    def __init__(
        self,
        signing_key: bytes | str | None,
        verify_keys: Mapping[str, VerifyKey] | Sequence[VerifyKey] | None,
    ) -> None:
        self._hmac: bytes | None = None
        if signing_key is not None:
            if not isinstance(signing_key, (bytes, bytearray, str)):
                raise ConfigError(
                    f"signing_key is the HMAC secret (bytes or str), got a {type(signing_key).__name__}; "
                    "Ed25519 public keys go in verify_keys"
                )
            self._hmac = signing_key.encode() if isinstance(signing_key, str) else bytes(signing_key)
            if not self._hmac:
                raise ConfigError("signing_key is empty")
        self._ed25519: dict[str, Ed25519PublicKey] = {}
        if verify_keys is None:
            return
        if isinstance(verify_keys, (str, bytes, bytearray, os.PathLike)) or not isinstance(
            verify_keys, (Mapping, Sequence)
        ):
            raise ConfigError(
                "verify_keys must be a dict {key_id: public key} or a list of public keys "
                f"(got a {type(verify_keys).__name__})"
            )
        if isinstance(verify_keys, Mapping):
            for key_id, key in verify_keys.items():
                _check_key_id(key_id, "a key id of verify_keys")
                self._ed25519[key_id] = _verify_key(key, f"verify_keys[{key_id!r}]")
        else:
            for i, key in enumerate(verify_keys):
                public = _verify_key(key, f"verify_keys[{i}]")
                self._ed25519[key_fingerprint(public)] = public
        if not self._ed25519:
            raise ConfigError("verify_keys is empty: give at least one Ed25519 public key, or None")

    @property
    def required(self) -> bool:
        return self._hmac is not None or bool(self._ed25519)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._ed25519)

    def problem(self, m: Mapping[str, Any]) -> str | None:
        """Why the manifest's signature is not acceptable, or None (also when no key is set)."""
        if not self.required:
            return None
        signature = m.get("signature")
        if not isinstance(signature, str):
            return "unsigned manifest (this subscriber requires a signature)"
        algorithm = _algorithm(m)
        if algorithm == HMAC_SHA256:
            if self._hmac is None:
                return "signed with hmac-sha256, but this subscriber has no HMAC signing_key"
            expected = hmac.new(self._hmac, _canonical(m), hashlib.sha256).hexdigest()
            # Bytes: compare_digest refuses str with non-ASCII characters, which a forged manifest may hold.
            ok = hmac.compare_digest(signature.encode(), expected.encode())
            return None if ok else "bad signature (hmac-sha256)"
        if algorithm == ED25519:
            if not self._ed25519:
                return "signed with ed25519, but this subscriber has no verify_keys"
            key_id = m.get("key_id")
            public = self._ed25519.get(key_id) if isinstance(key_id, str) else None
            if public is None:
                trusted = ", ".join(repr(k) for k in self.key_ids)
                return f"unknown key id {_shorten(key_id)} (verify_keys has {trusted})"
            from cryptography.exceptions import InvalidSignature

            try:
                public.verify(bytes.fromhex(signature), _canonical(m))
            except (ValueError, InvalidSignature):
                return f"bad signature (ed25519, key id {key_id!r})"
            return None
        return f"unknown signature algorithm {_shorten(algorithm)}"

    def __repr__(self) -> str:
        parts = ([HMAC_SHA256] if self._hmac is not None else []) + [f"{ED25519} {k!r}" for k in self.key_ids]
        return f"<verify keys: {', '.join(parts) or 'none'}>"


def _shorten(value: object) -> str:
    # Values read from the topic go into log lines: bounded, and repr()-escaped.
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _chunk_key(publication: str, index: int) -> bytes:
    return _CHUNK + f"{publication}/{index}".encode()


def _manifest_key(version: str) -> bytes:
    return _MANIFEST + version.encode()


def _ensure_topic(config: Mapping[str, str], topic: str, replication_factor: int, timeout: float) -> None:
    """Creates the model topic compacted with one partition, unless it exists; returns once the
    cluster's metadata knows it."""
    created = _native.create_topic(dict(config), topic, 1, replication_factor, dict(_TOPIC_CONFIG), timeout)
    if created:
        log.info("created compacted model topic %r", topic)
        # The controller has created it, but a broker applies that a moment later: until then
        # its metadata answers UNKNOWN_TOPIC_OR_PART, and the first read would fail.
        deadline = time.monotonic() + timeout
        while True:
            try:
                _native.watermarks(dict(config), [(topic, _PARTITION)], max(0.1, deadline - time.monotonic()))
                return
            except UnknownTopicError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)


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
