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


_JSON_SCALARS = {"integer": "int64", "number": "float64", "string": "string", "boolean": "bool"}


def json_schema_columns(json_schema: Mapping[str, Any] | str) -> dict[str, str]:
    """The columns of an object JSON Schema, as ``KafkaDataset(format="json")`` declares them:
    ``integer`` → int64, ``number`` → float64, ``string``, ``boolean``; an ``array`` of numbers
    or integers → a list column (fixed length where ``minItems == maxItems``). A property that
    may be ``null`` or is not ``required`` is nullable. Other property types raise
    :class:`ConfigError` naming the property."""
    schema = json.loads(json_schema) if isinstance(json_schema, str) else json_schema
    if not isinstance(schema, Mapping) or schema.get("type") != "object" or "properties" not in schema:
        raise ConfigError('the JSON Schema must be {"type": "object", "properties": {...}}')
    required = set(schema.get("required", ()))
    columns: dict[str, str] = {}
    for name, prop in schema["properties"].items():
        types = prop.get("type") if isinstance(prop, Mapping) else None
        kinds = [types] if isinstance(types, str) else list(types or [])
        nullable = "null" in kinds or name not in required
        kinds = [k for k in kinds if k != "null"]
        if len(kinds) != 1:
            raise ConfigError(f"JSON Schema property '{name}': needs one type (besides null), got {types!r}")
        kind = kinds[0]
        if kind in _JSON_SCALARS:
            decl = _JSON_SCALARS[kind]
        elif kind == "array":
            items = prop.get("items", {})
            item = items.get("type") if isinstance(items, Mapping) else None
            if item not in ("integer", "number"):
                raise ConfigError(
                    f"JSON Schema property '{name}': only arrays of numbers or integers are supported"
                )
            width = prop.get("minItems")
            fixed = width is not None and width == prop.get("maxItems")
            decl = f"{_JSON_SCALARS[item]}[{width if fixed else ''}]"
        else:
            raise ConfigError(f"JSON Schema property '{name}': type {kind!r} is not supported")
        columns[name] = decl + ("?" if nullable else "")
    return columns


def latest_schema_text(client: SchemaRegistry, subject: str, schema_type: str) -> str:
    """The text of ``subject``'s latest schema, which must be of ``schema_type``."""
    latest = client.subject_version(subject)
    if latest["schema_type"] != schema_type:
        raise ConfigError(
            f"the latest schema of subject '{subject}' is {latest['schema_type']}, not {schema_type}"
        )
    return str(latest["schema"])
