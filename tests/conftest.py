"""Test fixtures: a real Apache Kafka broker for the whole session.

`KAFKA_BOOTSTRAP_SERVERS` points the tests at an existing cluster instead (Kafka or Redpanda).
Otherwise one KRaft broker is resolved from Maven Central (kafka/pom.xml) and started on free
loopback ports; its log is printed if it fails to start and kept in its temp dir.

`secure_broker` is a second, secured broker (TLS, mTLS, SASL, ACLs: kafka/secure_launcher.py),
started only by the first test that asks for it.

`kafka_cluster` is a 3-node KRaft cluster (kafka/launcher.py's `KafkaCluster`: replication factor 3,
`min.insync.replicas=2`) for the failure tests in tests/test_cluster.py, which SIGKILL and restart
its nodes; started only by the first test that asks for it, always a local one.

`ray_cluster` is a local two-node Ray cluster on loopback (`ray.cluster_utils.Cluster`, one CPU per
node), one per test module that asks for it, with the driver connected; skipped without Ray.

`schema_registry_url` is a Schema Registry's Confluent-compatible API: `SCHEMA_REGISTRY_URL` if
set, otherwise a local Apicurio Registry (kafka/registry_launcher.py, global compatibility
BACKWARD like Confluent's default), started only by the first test that asks for it.
`tls_registry` is that local registry, for its HTTPS listener (skipped with an external one).

Every test that needs none of the fixtures in `SERVICE_FIXTURES` (directly or through other
fixtures) is marked `unit`: `pytest -m unit` (`make unit`) runs that tier with no broker, registry,
Connect worker or PostgreSQL. With `KAFKA_ML_NO_SERVICES=1` a service fixture fails instead of
starting anything, so that tier is checked to start none.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Producer as CkProducer
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kafka"))
from launcher import KafkaBroker, KafkaCluster

REPO = Path(__file__).resolve().parents[1]

# Ray's nodes, GCS and workers on loopback only: Ray otherwise swaps 127.0.0.1 for the machine's
# routable address (it builds multi-machine clusters). Read when ray is imported, which test
# modules do at collection: set before any of them is.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

if TYPE_CHECKING:
    from registry_launcher import RegistryServer
    from secure_launcher import SecureKafkaBroker


# A test about to time out gets the native stacks of its child processes (DataLoader workers)
# printed: pytest-timeout shows only the test process's own Python stacks, and a hang in a worker
# would otherwise leave no trace of where it was.
_STACKS_BEFORE_TIMEOUT_S = 15


def _child_pids(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return children + [g for c in children for g in _child_pids(c)]


def _print_child_stacks(test: str) -> None:
    # The test's own children (DataLoader workers, loop subprocesses) first: services (brokers,
    # the registry, Connect) run in sessions of their own and take long to dump (a JVM's threads).
    own = os.getsid(0)

    def session(pid: int) -> int:
        try:
            return os.getsid(pid)
        except OSError:
            return -1

    for pid in sorted(_child_pids(os.getpid()), key=lambda pid: session(pid) != own):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
            out = subprocess.run(
                ["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt 30"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout
        except (OSError, subprocess.TimeoutExpired) as e:
            out = f"(no stacks: {e})"
        print(f"--- {test}: native stacks of child process {pid} ({cmdline}) ---\n{out}", file=sys.stderr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    marker = item.get_closest_marker("timeout")
    timeout = float(marker.args[0] if marker and marker.args else item.config.getini("timeout") or 0)
    timer = None
    if timeout > _STACKS_BEFORE_TIMEOUT_S and shutil.which("gdb"):
        timer = threading.Timer(timeout - _STACKS_BEFORE_TIMEOUT_S, _print_child_stacks, (item.nodeid,))
        timer.daemon = True
        timer.start()
    try:
        return (yield)
    finally:
        if timer is not None:
            timer.cancel()


# The fixtures that start (or reach) a service; the modules' own (Connect worker, PostgreSQL, the
# secured registry) are named here too.
SERVICE_FIXTURES = frozenset(
    {
        "bootstrap_servers",
        "secure_broker",
        "kafka_cluster",
        "local_registry",
        "postgres",
        "connect",
        "secured_registry",
    }
)


# Each phase's report, on the test item: a fixture's teardown can then tell whether its test failed
# (`cluster` prints the nodes' logs then).
REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, object, object]:
    report = yield
    assert isinstance(report, pytest.TestReport)
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        # `fixturenames` is the closure: the fixtures a test asks for and those they ask for.
        if not SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.unit)


def _no_services(what: str) -> None:
    if os.environ.get("KAFKA_ML_NO_SERVICES") == "1":
        pytest.fail(f"KAFKA_ML_NO_SERVICES=1, and this test would start {what}: it is not a unit test")


@pytest.fixture(scope="session")
def bootstrap_servers() -> Iterator[str]:
    _no_services("a Kafka broker")
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
    _no_services("the secured Kafka broker")
    from secure_launcher import SecureKafkaBroker

    broker = SecureKafkaBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[KafkaCluster]:
    """Three combined broker/controller nodes on loopback, for tests that kill nodes; killed at the
    end of the session (their logs stay in `kafka_cluster.workdir`)."""
    _no_services("a 3-node Kafka cluster")
    cluster = KafkaCluster(size=3)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(kafka_cluster: KafkaCluster, request: pytest.FixtureRequest) -> Iterator[KafkaCluster]:
    """`kafka_cluster`, healthy when the test starts: a node an earlier test left down is
    restarted, and every partition has its full ISR. If the test fails, the tail of every node's
    log is printed (the whole logs stay in the cluster's workdir)."""
    for node in kafka_cluster.nodes:
        if not kafka_cluster.running(node):
            kafka_cluster.restart(node)
    kafka_cluster.wait_healthy(timeout=60)
    yield kafka_cluster
    reports = request.node.stash.get(REPORTS, {})
    if any(r.failed for r in reports.values()):
        print(f"cluster workdir: {kafka_cluster.workdir}\n{kafka_cluster.log_tails()}")


# Module scope: the raylets, object stores and workers (about 1 GiB) go away when the module that
# started them ends, instead of running beside every later test file; each module that uses Ray
# pays its start (a few seconds). Not a service fixture: it starts no broker, registry, Connect
# worker or database, and every test using it asks for a broker as well.
@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    # Workers unpickle the test modules' helpers and the example's training loop by reference, and
    # import kafka_ml (and, through tests/test_cluster.py, kafka/launcher.py): those directories
    # go on the path the raylets (and their workers) inherit.
    dirs = ("tests", "examples", "python", "kafka")
    paths = [str(REPO / d) for d in dirs] + [os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    node_args = {
        "num_cpus": 1,
        "object_store_memory": 200 << 20,
        "node_ip_address": "127.0.0.1",
    }
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**node_args, "include_dashboard": False},
    )
    try:
        cluster.add_node(**node_args)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        try:
            assert len([n for n in ray.nodes() if n["Alive"]]) == 2
            yield cluster.address
        finally:
            ray.shutdown()
    finally:
        cluster.shutdown()


@pytest.fixture(scope="session")
def local_registry() -> Iterator[RegistryServer | None]:
    """The local Apicurio Registry (with an HTTPS listener too), or None with SCHEMA_REGISTRY_URL."""
    _no_services("a Schema Registry")
    if os.environ.get("SCHEMA_REGISTRY_URL"):
        yield None
        return
    from registry_launcher import RegistryServer

    registry = RegistryServer(tls=True)
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def schema_registry_url(local_registry: RegistryServer | None) -> str:
    """A Schema Registry's Confluent-compatible API base URL (no trailing slash)."""
    if local_registry is None:
        return os.environ["SCHEMA_REGISTRY_URL"].rstrip("/")
    return local_registry.url


@pytest.fixture(scope="session")
def tls_registry(local_registry: RegistryServer | None) -> RegistryServer:
    """The local registry, whose `tls_url` serves HTTPS with a certificate signed by `ca_path`."""
    if local_registry is None:
        pytest.skip("SCHEMA_REGISTRY_URL names an external registry: no HTTPS listener of ours")
    return local_registry


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
