"""The command-line options the subcommands share, defined once: the client config (``--config``,
``--bootstrap-servers``), the payload format and schema (``--format``, ``--schema``, the Schema
Registry, ...), and how they become a client config and a ``KafkaDataset`` / ``Producer.send``'s
format arguments."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from .exceptions import ConfigError

# Properties of a client.properties file that configure the Schema Registry client rather than
# librdkafka (the names Confluent's tools read from the same file); taken out of the Kafka config.
REGISTRY_URL = "schema.registry.url"
REGISTRY_USER_INFO = ("basic.auth.user.info", "schema.registry.basic.auth.user.info")
REGISTRY_CA = "schema.registry.ssl.ca.location"
_REGISTRY_PROPERTIES = (REGISTRY_URL, *REGISTRY_USER_INFO, REGISTRY_CA, "basic.auth.credentials.source")

READ_FORMATS = ("json", "json_schema", "avro", "protobuf", "tensor", "raw", "debezium")
WRITE_FORMATS = ("json", "json_schema", "avro", "protobuf", "tensor", "raw")


# The input formats a Schema Registry serves (registry-framed values).
REGISTRY_FORMATS = ("avro", "json_schema", "protobuf")


def add_kafka_options(
    parser: argparse.ArgumentParser, *, bootstrap_help: str = "the Kafka cluster (host:port,...)"
) -> None:
    """The connection options of every subcommand that talks to Kafka."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="client properties (key=value lines, as Kafka's tools take with --command-config: "
        "security.protocol, sasl.*, ssl.*, ...); the flags below win over the file",
    )
    parser.add_argument("--bootstrap-servers", help=bootstrap_help)


def kafka_config(args: argparse.Namespace) -> dict[str, str]:
    """The client configuration of a subcommand: the ``--config`` file, then the explicit flags
    over it. Raises :class:`ConfigError` naming the file and line of a bad file."""
    from .config import load_properties

    config = load_properties(args.config) if args.config is not None else {}
    if args.bootstrap_servers:
        config["bootstrap.servers"] = args.bootstrap_servers
    return config


def secret_from_env(variable: str | None, flag: str) -> str | None:
    # Secrets come from the environment, never from a flag's value: flags end up in shell
    # histories and in `ps` output.
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise ConfigError(f"{flag} {variable}: that environment variable is not set or empty")
    return value


def add_decoding(
    parser: argparse.ArgumentParser, formats: tuple[str, ...], default: str, reading: bool = True
) -> None:
    """The payload options: format, schema (inline, a file, or the registry's) and their details."""
    parser.add_argument(
        "--format", choices=formats, default=default, help=f"the payload format (default {default})"
    )
    parser.add_argument(
        "--schema",
        metavar="SCHEMA",
        help="json/debezium: columns as 'id:int64,x:float32[16],note:string?' or a JSON object (or a file "
        "holding one); avro: the record schema (.avsc file or JSON); json_schema: the JSON Schema; "
        "protobuf: a .proto file or a descriptor set file. With --schema-registry and no --schema the "
        "subject's latest schema is used",
    )
    parser.add_argument("--message", help="protobuf: the message's full name (default: the file's first)")
    if reading:
        parser.add_argument("--dtype", help="tensor: the element type, e.g. float32")
        parser.add_argument("--shape", help="tensor: the shape of one message, e.g. 64 or 8,8")
    parser.add_argument(
        "--schema-registry",
        metavar="URL",
        help="the Schema Registry (Confluent wire format); also schema.registry.url in --config, with "
        "basic.auth.user.info and schema.registry.ssl.ca.location",
    )
    parser.add_argument("--subject", help="the registry subject (default <topic>-value)")


def split_registry(config: dict[str, str], url: str | None) -> tuple[dict[str, str], Any]:
    """The Kafka config without the registry's properties, and the registry client (or None)."""
    kafka = {k: v for k, v in config.items() if k not in _REGISTRY_PROPERTIES}
    url = url or config.get(REGISTRY_URL)
    if not url:
        return kafka, None
    from .registry import SchemaRegistry

    user_info = next((config[k] for k in REGISTRY_USER_INFO if config.get(k)), None)
    auth: tuple[str, str] | None = None
    if user_info is not None:
        user, sep, secret = user_info.partition(":")
        if not sep:
            raise ConfigError("basic.auth.user.info must be USER:PASSWORD")
        auth = (user, secret)
    return kafka, SchemaRegistry(url, auth=auth, verify=config.get(REGISTRY_CA))


def schema_text(value: str) -> str:
    """A schema given inline or as a file's path."""
    path = Path(value)
    if len(value) < 4096 and not value.lstrip().startswith(("{", "[")) and path.is_file():
        return path.read_text()
    return value


def parse_columns(value: str, flag: str = "--schema") -> dict[str, str]:
    """``id:int64,x:float32[16]`` or a JSON object (inline or in a file) as column declarations;
    ``flag`` names the option in errors."""
    text = schema_text(value).strip()
    if text.startswith("{"):
        try:
            columns = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"{flag}: not valid JSON ({e})") from None
        if not isinstance(columns, dict):
            raise ConfigError(f"{flag}: expected a JSON object of column: type")
        return {str(k): v if isinstance(v, str) else f"{v[0]}[{v[1]}]" for k, v in columns.items()}
    out: dict[str, str] = {}
    for item in text.split(","):
        name, sep, decl = item.partition(":")
        if not sep or not name.strip() or not decl.strip():
            raise ConfigError(f"{flag}: expected name:type, got {item.strip()!r}")
        out[name.strip()] = decl.strip()
    return out


def decoding_options(args: argparse.Namespace, registry: Any) -> dict[str, Any]:
    """The format arguments of a KafkaDataset / Producer.send from the flags."""
    fmt = args.format
    schema = args.schema
    options: dict[str, Any] = {"format": fmt}
    if schema is not None:
        if fmt in ("json", "debezium"):
            options["schema"] = parse_columns(schema)
        elif fmt == "avro":
            options["avro_schema"] = schema_text(schema)
        elif fmt == "json_schema":
            options["json_schema"] = schema_text(schema)
        elif fmt == "protobuf":
            if schema.endswith(".proto"):
                options["proto_file"] = schema
            elif Path(schema).is_file():
                options["descriptor_set"] = schema
            else:
                options["proto_schema"] = schema
        else:
            raise ConfigError(f"--schema is not used by --format {fmt}")
    if args.message is not None:
        if fmt != "protobuf":
            raise ConfigError("--message is for --format protobuf")
        options["message"] = args.message
    if getattr(args, "dtype", None) is not None or getattr(args, "shape", None) is not None:
        if fmt != "tensor":
            raise ConfigError("--dtype and --shape are for --format tensor")
        options["dtype"] = args.dtype or "float32"
        if args.shape is not None:
            try:
                options["shape"] = tuple(int(d) for d in args.shape.split(","))
            except ValueError:
                raise ConfigError(f"--shape: expected sizes like 64 or 8,8, got {args.shape!r}") from None
    if registry is not None:
        if fmt not in REGISTRY_FORMATS:
            raise ConfigError(f"--schema-registry is for --format avro, json_schema or protobuf, not {fmt}")
        options["schema_registry"] = registry
    if args.subject is not None:
        options["subject"] = args.subject
    return options
