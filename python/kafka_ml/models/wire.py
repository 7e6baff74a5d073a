"""The wire format of a model topic, and `ModelVersion`, what a manifest describes.

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

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError
from .signing import _algorithm

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


def _chunk_key(publication: str, index: int) -> bytes:
    return _CHUNK + f"{publication}/{index}".encode()


def _manifest_key(version: str) -> bytes:
    return _MANIFEST + version.encode()


def _parse_chunk_key(key: bytes) -> tuple[str, int] | None:
    try:
        publication, index = key[len(_CHUNK) :].decode().rsplit("/", 1)
        return publication, int(index)
    except (UnicodeDecodeError, ValueError):
        return None
