"""Test fixtures: a real Apache Kafka broker for the whole session.

`KAFKA_BOOTSTRAP_SERVERS` points the tests at an existing cluster instead (Kafka or Redpanda).
Otherwise one KRaft broker is resolved from Maven Central (kafka/pom.xml) and started on free
loopback ports; its log is printed if it fails to start and kept in its temp dir.

`secure_broker` is a second, secured broker (TLS, mTLS, SASL, ACLs: kafka/secure_launcher.py),
started only by the first test that asks for it.

`schema_registry_url` is a Schema Registry's Confluent-compatible API: `SCHEMA_REGISTRY_URL` if
set, otherwise a local Apicurio Registry (kafka/registry_launcher.py, global compatibility
BACKWARD like Confluent's default), started only by the first test that asks for it.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Producer as CkProducer
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kafka"))
from launcher import KafkaBroker

if TYPE_CHECKING:
    from secure_launcher import SecureKafkaBroker


@pytest.fixture(scope="session")
def bootstrap_servers() -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = KafkaBroker(num_partitions=1)
    broker.start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def secure_broker() -> Iterator[SecureKafkaBroker]:
    """The secured broker; its configs come from `secure_broker.client_config(case, user=...)`.

    Always a local one (an external cluster would not have these listeners, users and ACLs).
    Imported here rather than at the top so that sessions which never ask for it do not even
    load `cryptography`."""
    from secure_launcher import SecureKafkaBroker

    broker = SecureKafkaBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def schema_registry_url() -> Iterator[str]:
    """A Schema Registry's Confluent-compatible API base URL (no trailing slash)."""
    external = os.environ.get("SCHEMA_REGISTRY_URL")
    if external:
        yield external.rstrip("/")
        return
    from registry_launcher import RegistryServer

    registry = RegistryServer()
    registry.start()
    try:
        yield registry.url
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def config(bootstrap_servers: str) -> dict[str, str]:
    return {"bootstrap.servers": bootstrap_servers}


@pytest.fixture(scope="session")
def new_topic(bootstrap_servers: str) -> Callable[..., str]:
    """Creates a uniquely named topic; returns its name."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})

    def create(partitions: int = 1, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        futures[name].result(timeout=30)
        return name

    return create


Message = tuple[bytes | None, bytes | None] | bytes


@pytest.fixture(scope="session")
def produce(bootstrap_servers: str) -> Callable[..., None]:
    """Writes messages with confluent-kafka (an independent client), waiting for delivery.

    Each message is a value, or a dict with value/key/partition/headers/timestamp.
    """

    def send(
        topic: str, messages: list[bytes | dict[str, object] | None], partition: int | None = None
    ) -> None:
        p = CkProducer({"bootstrap.servers": bootstrap_servers, "linger.ms": 5})
        errors: list[object] = []

        def on_delivery(err: object, _msg: object) -> None:
            if err is not None:
                errors.append(err)

        for m in messages:
            kw: dict[str, object] = {}
            if isinstance(m, dict):
                kw = dict(m)
            else:
                kw["value"] = m
            if partition is not None and "partition" not in kw:
                kw["partition"] = partition
            p.produce(topic, on_delivery=on_delivery, **kw)  # type: ignore[arg-type]
            p.poll(0)
        assert p.flush(30) == 0
        assert not errors, errors

    return send
