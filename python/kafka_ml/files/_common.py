"""What export, ingest and peek share: the file types, the pyarrow import."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigError

if TYPE_CHECKING:
    pass


#: The Parquet key-value metadata key of an export's description (a JSON document).
EXPORT_METADATA_KEY = "kafka_ml.export"
_METADATA_VERSION = 1

#: File name suffixes and the file formats they mean.
_SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".arrow": "ipc",
    ".feather": "ipc",
    ".ipc": "ipc",
    ".arrows": "ipc",
}
_EXPORT_FORMATS = ("parquet", "csv", "jsonl")
_EXTENSION = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}
# Formats whose values carry a Schema Registry id (magic byte 0, then the id, big-endian).
_REGISTRY_FORMATS = ("avro", "json_schema", "protobuf")
# Columns an export reads for its own accounting and drops unless the dataset asked for them.
_ACCOUNTING = ("topic", "partition", "offset")


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.compute
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("files need pyarrow: pip install 'kafka-ml[arrow]'") from e
    return pyarrow


def _file_format(path: Path, given: str | None, allowed: Sequence[str]) -> str:
    if given is not None:
        if given not in allowed:
            raise ConfigError(f"file format {given!r}: expected one of {', '.join(allowed)}")
        return given
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None or kind not in allowed:
        names = ", ".join(s for s, k in _SUFFIXES.items() if k in allowed)
        raise ConfigError(f"{path}: cannot tell the file format from the name (expected {names})")
    return kind
