"""The `kafka-ml` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__, librdkafka_version
from ._secrets import redact
from .cli_args import add_kafka_options, kafka_config, secret_from_env
from .cli_files import add_files_parsers, files_command
from .cli_serve import add_serve_parser, serve_command
from .exceptions import ConfigError, KafkaMLError


def add_connect_parser(sub: Any) -> None:
    """`kafka-ml connect ...`: the Kafka Connect REST API from the shell."""
    c = sub.add_parser("connect", help="manage Kafka Connect connectors (needs the connect extra)")
    c.add_argument(
        "--url",
        default=os.environ.get("KAFKA_CONNECT_URL", "http://localhost:8083"),
        help="the Connect worker's REST address (default: $KAFKA_CONNECT_URL or http://localhost:8083)",
    )
    tls = c.add_mutually_exclusive_group()
    tls.add_argument(
        "--ca", type=Path, metavar="FILE", help="CA bundle (PEM) that signed the worker's certificate"
    )
    tls.add_argument("--insecure", action="store_true", help="do not verify the worker's TLS certificate")
    c.add_argument("--cert", type=Path, metavar="FILE", help="client certificate (PEM) for mutual TLS")
    c.add_argument(
        "--key", type=Path, metavar="FILE", help="the client certificate's private key, if not in --cert"
    )
    c.add_argument("--user", help="basic auth user (the password comes from --password-env)")
    c.add_argument(
        "--password-env",
        metavar="VAR",
        help="environment variable holding the basic auth password (never a flag: flags are visible in ps)",
    )
    c.add_argument("--token-env", metavar="VAR", help="environment variable holding a bearer token")
    actions = c.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="list connectors with their states")
    actions.add_parser("plugins", help="list installed connector plugins")
    for action, what in [
        ("status", "show a connector's and its tasks' states (with failure traces)"),
        ("config", "print a connector's configuration"),
        ("pause", "pause a connector"),
        ("resume", "resume a paused connector"),
        ("restart", "restart a connector and its failed tasks"),
        ("delete", "delete a connector"),
    ]:
        actions.add_parser(action, help=what).add_argument("name")
    for action, what in [
        ("create", "create a connector from a JSON file ({'name': ..., 'config': {...}})"),
        ("validate", "validate a connector configuration from a JSON file"),
    ]:
        a = actions.add_parser(action, help=what)
        a.add_argument("-f", "--file", required=True, type=Path, help="JSON file, '-' for stdin")
    w = actions.add_parser("wait", help="wait until a connector and its tasks are RUNNING")
    w.add_argument("name")
    w.add_argument("--timeout", type=float, default=60.0)


def _connector_file(path: Path) -> tuple[str | None, dict[str, Any]]:
    """Reads Connect's own `{"name": ..., "config": {...}}`, or a bare config with its `name`."""
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    body = json.loads(text)
    if not isinstance(body, dict):
        raise ValueError(f"{path}: expected a JSON object")
    config = dict(body["config"]) if isinstance(body.get("config"), dict) else dict(body)
    name = body.get("name") or config.get("name")
    config.pop("name", None)
    return (str(name) if name else None), config


def connect_client_options(args: argparse.Namespace) -> dict[str, Any]:
    """ConnectClient's keyword arguments from the `connect` flags."""
    if args.key is not None and args.cert is None:
        raise ConfigError("--key needs --cert")
    if args.user is not None and args.password_env is None:
        raise ConfigError("--user needs --password-env VAR (the environment variable holding the password)")
    if args.password_env is not None and args.user is None:
        raise ConfigError("--password-env needs --user")
    if args.user is not None and args.token_env is not None:
        raise ConfigError("--user and --token-env: give one way to authenticate")
    options: dict[str, Any] = {}
    if args.ca is not None:
        options["verify"] = str(args.ca)
    elif args.insecure:
        options["verify"] = False
    if args.cert is not None:
        options["cert"] = (str(args.cert), str(args.key)) if args.key is not None else str(args.cert)
    password = secret_from_env(args.password_env, "--password-env")
    if args.user is not None and password is not None:
        options["auth"] = (args.user, password)
    token = secret_from_env(args.token_env, "--token-env")
    if token is not None:
        options["token"] = token
    return options


def connect_command(args: argparse.Namespace) -> int:
    from .connect import ConnectClient, ConnectorStatus
    from .exceptions import ConnectError, ConnectorFailedError

    def show(value: object) -> None:
        print(json.dumps(value, indent=2, sort_keys=True))

    def status_json(s: ConnectorStatus) -> dict[str, Any]:
        return {
            "name": s.name,
            "state": s.state,
            "worker_id": s.worker_id,
            "type": s.type,
            "trace": s.trace,
            "tasks": [
                {"id": t.id, "state": t.state, "worker_id": t.worker_id, "trace": t.trace} for t in s.tasks
            ],
        }

    try:
        with ConnectClient(args.url, **connect_client_options(args)) as client:
            if args.action == "list":
                for connector, s in client.statuses().items():
                    tasks = ", ".join(f"{t.id}:{t.state}" for t in s.tasks) or "no tasks"
                    print(f"{connector}\t{s.state}\t{s.type or ''}\t{tasks}")
            elif args.action == "plugins":
                for p in client.plugins():
                    print(f"{p['class']}\t{p.get('type', '')}\t{p.get('version', '')}")
            elif args.action == "status":
                show(status_json(client.status(args.name)))
            elif args.action == "config":
                show(redact(client.config(args.name)))
            elif args.action in ("pause", "resume", "delete"):
                getattr(client, args.action)(args.name)
                print(f"{args.action}: {args.name}")
            elif args.action == "restart":
                client.restart(args.name, include_tasks=True, only_failed=True)
                print(f"restart: {args.name}")
            elif args.action == "wait":
                show(status_json(client.wait_until_running(args.name, args.timeout)))
            elif args.action in ("create", "validate"):
                name, config = _connector_file(args.file)
                if args.action == "validate":
                    result = client.validate(config, name=name)
                    show({"error_count": result.error_count, "errors": result.errors})
                    return 0 if result.valid else 1
                if name is None:
                    print(f"kafka-ml connect: {args.file} names no connector ('name')", file=sys.stderr)
                    return 2
                created = client.create(name, config)
                show({**created, "config": redact(created.get("config") or {})})
    except ConnectorFailedError as e:
        print(f"kafka-ml connect: {e}\n{e.trace or ''}", file=sys.stderr)
        return 1
    except ConnectError as e:
        print(f"kafka-ml connect: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:  # ConfigError too: a bad flag, file or CA bundle
        print(f"kafka-ml connect: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kafka-ml", description=__doc__)
    parser.add_argument(
        "--version", action="version", version=f"kafka-ml {__version__} (librdkafka {librdkafka_version})"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser(
        "demo", help="the whole pipeline: ingest digits, train from Kafka, publish the model, serve it"
    )
    add_kafka_options(
        d, bootstrap_help="a real Kafka cluster (default: an embedded one, unless --config names one)"
    )
    d.add_argument("--epochs", type=int, default=10)
    d.add_argument("--rate", type=int, default=2000, help="held-out inputs per second offered to serving")
    d.add_argument("--repeat", type=int, default=4, help="times the held-out set is streamed")
    add_connect_parser(sub)
    add_files_parsers(sub)
    add_serve_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        try:
            config = kafka_config(args)
        except ConfigError as e:
            print(f"kafka-ml demo: {e}", file=sys.stderr)
            return 2
        try:
            return run_demo(epochs=args.epochs, rate=args.rate, repeat=args.repeat, client_config=config)
        except KafkaMLError as e:
            # The library's messages say what failed and never carry a secret.
            print(f"kafka-ml demo: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
    if args.command == "connect":
        return connect_command(args)
    if args.command in ("export", "ingest", "peek"):
        return files_command(args)
    if args.command == "serve":
        return serve_command(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
