"""Schema Registry: the client (:class:`SchemaRegistry`, implemented in Rust) and how datasets
and producers find subjects.

``schema_registry=`` takes a URL, a :class:`SchemaRegistry` (credentials, CA, timeout), or —
for offline use — a ``{schema_id: writer_schema}`` dict. Subject names follow Confluent's
strategies: ``"topic"`` (``<topic>-value``, the default), ``"record"`` (the record's full
name) and ``"topic_record"`` (``<topic>-<full name>``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from ._native import SchemaRegistry
from .exceptions import ConfigError

__all__ = ["SchemaRegistry", "SubjectNameStrategy", "registry_client", "subject_name"]

SubjectNameStrategy = Literal["topic", "record", "topic_record"]

RegistrySpec = str | SchemaRegistry | Mapping[int, Mapping[str, Any] | str]


def registry_client(spec: object) -> SchemaRegistry | None:
    """The client for a ``schema_registry=`` argument (``None`` for the offline dict form)."""
    if spec is None or isinstance(spec, Mapping):
        return None
    if isinstance(spec, SchemaRegistry):
        return spec
    if isinstance(spec, str):
        return SchemaRegistry(spec)
    raise ConfigError(
        "schema_registry must be a URL, a kafka_ml.SchemaRegistry or {schema_id: schema}, "
        f"got {type(spec).__name__}"
    )


def record_full_name(avro_schema: Mapping[str, Any] | str) -> str:
    """The full name (``namespace.name``) of an Avro record schema."""
    schema = json.loads(avro_schema) if isinstance(avro_schema, str) else avro_schema
    if not isinstance(schema, Mapping) or "name" not in schema:
        raise ConfigError("the record subject name strategies need a named Avro record schema")
    name = str(schema["name"])
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def subject_name(
    topic: str, strategy: SubjectNameStrategy, avro_schema: Mapping[str, Any] | str | None = None
) -> str:
    """The value subject of ``topic`` under ``strategy``."""
    if strategy == "topic":
        return f"{topic}-value"
    if avro_schema is None:
        raise ConfigError(f"subject_name_strategy={strategy!r} needs the record schema")
    if strategy == "record":
        return record_full_name(avro_schema)
    if strategy == "topic_record":
        return f"{topic}-{record_full_name(avro_schema)}"
    raise ConfigError(f"unknown subject_name_strategy {strategy!r} (expected topic, record or topic_record)")
