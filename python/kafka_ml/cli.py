"""The `kafka-ml` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import EmbeddedCluster, KafkaDataset, Producer, __version__, librdkafka_version


def demo(bootstrap_servers: str | None, rows: int, partitions: int) -> int:
    """Produces a generated feature dataset and reads it back as NumPy, with throughput."""
    cluster = None
    if bootstrap_servers is None:
        cluster = EmbeddedCluster()
        bootstrap_servers = cluster.bootstrap_servers
        print(f"embedded cluster (librdkafka mock) at {bootstrap_servers}")
    topic = f"kafka-ml-demo-{int(time.time())}"
    if cluster is not None:
        cluster.create_topic(topic, partitions=partitions)
    config = {"bootstrap.servers": bootstrap_servers}

    rng = np.random.default_rng(0)
    features = rng.standard_normal((rows, 64), dtype=np.float32)
    t0 = time.perf_counter()
    with Producer({**config, "linger.ms": 5}) as producer:
        if cluster is not None:
            # Spread evenly: the mock cluster keeps only a few MB per partition.
            for p in range(partitions):
                producer.send(topic, features[p::partitions], partition=p)
        else:
            # A real cluster creates the topic on first use (with its default partition count).
            producer.send(topic, features)
    produce_s = time.perf_counter() - t0
    print(f"produced {rows:,} rows of float32x64 in {produce_s:.2f}s ({rows / produce_s:,.0f} rows/s)")

    t0 = time.perf_counter()
    received = 0
    checksum = 0.0
    with KafkaDataset(
        topic, config, format="tensor", dtype="float32", shape=64, end="latest", batch_size=8192
    ) as dataset:
        for batch in dataset:
            values = batch["value"]  # a zero-copy NumPy view of the Arrow batch
            received += values.shape[0]
            checksum += float(values.sum(dtype=np.float64))
    consume_s = time.perf_counter() - t0
    print(f"read back {received:,} rows as NumPy in {consume_s:.2f}s ({received / consume_s:,.0f} rows/s)")
    expected = float(features.sum(dtype=np.float64))  # order-independent: rows may interleave
    ok = received == rows and np.isclose(checksum, expected, rtol=1e-6)
    print(f"checksum {'matches' if ok else 'DIFFERS'}: {checksum:.3f} (expected {expected:.3f})")
    if cluster is not None:
        cluster.close()
    return 0 if ok else 1


def add_connect_parser(sub: Any) -> None:
    """`kafka-ml connect ...`: the Kafka Connect REST API from the shell."""
    c = sub.add_parser("connect", help="manage Kafka Connect connectors (needs the connect extra)")
    c.add_argument(
        "--url",
        default=os.environ.get("KAFKA_CONNECT_URL", "http://localhost:8083"),
        help="the Connect worker's REST address (default: $KAFKA_CONNECT_URL or http://localhost:8083)",
    )
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
        with ConnectClient(args.url) as client:
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
                show(client.config(args.name))
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
                show(client.create(name, config))
    except ConnectorFailedError as e:
        print(f"kafka-ml connect: {e}\n{e.trace or ''}", file=sys.stderr)
        return 1
    except ConnectError as e:
        print(f"kafka-ml connect: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"kafka-ml connect: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kafka-ml", description=__doc__)
    parser.add_argument(
        "--version", action="version", version=f"kafka-ml {__version__} (librdkafka {librdkafka_version})"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="produce a generated dataset and read it back as NumPy")
    d.add_argument("--bootstrap-servers", help="a real Kafka cluster (default: an embedded one)")
    d.add_argument("--rows", type=int, default=50_000)
    d.add_argument("--partitions", type=int, default=4)
    add_connect_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.bootstrap_servers, args.rows, args.partitions)
    if args.command == "connect":
        return connect_command(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
