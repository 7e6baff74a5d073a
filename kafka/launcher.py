"""Start a real Apache Kafka 4.x broker (KRaft, one combined broker/controller node) on loopback.

Used by the test suite and the benchmarks. The jars come from Maven Central through
`kafka/pom.xml` (see `ensure_jars`); the broker runs with the machine's Java 17, its storage is
formatted in a temporary directory, and it listens on free loopback ports. The broker's log is
kept in that directory so a failed run can be diagnosed.

    python kafka/launcher.py            # start, print the bootstrap address, run until Ctrl-C
    python kafka/launcher.py 3          # the same with a 3-node cluster (`KafkaCluster`)

`KafkaCluster` starts several combined nodes of one cluster, replicated, for failure tests.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

KAFKA_DIR = Path(__file__).resolve().parent

# The JVM options `kafka-server-start.sh` runs a broker with (kafka-run-class.sh's
# KAFKA_JVM_PERFORMANCE_OPTS; its heap, KAFKA_HEAP_OPTS' 1 GiB fixed, is `KafkaBroker`'s default).
# Above all G1's pause goal: 20 ms instead of the JVM's default 200 ms, whose longer collections
# stall every client of the broker at once, and latency benchmarks measure them as the client's.
# The heap must start at its full size: with these options and the former 256 MiB start, the
# broker's ~160 MiB of live data sat above the 35 % threshold and G1 ran concurrent cycles back to
# back (67 pauses of up to 48 ms in a 50 s latency run, against 18-23 of at most ~20 ms with 1 GiB;
# with the JVM's own defaults G1's concurrent marking took 9 % of the CPU samples of an ingest).
# `gc-<pid>.log` in the work directory shows every pause.
SERVER_JVM_OPTIONS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
)
LIB_DIR = KAFKA_DIR / "target" / "lib"


def ensure_jars() -> Path:
    """Resolve the broker's jars with Maven (cached in ~/.m2) unless they are already there."""
    if not any(LIB_DIR.glob("kafka_2.13-*.jar")):
        subprocess.run(
            ["mvn", "-q", "-B", "-f", str(KAFKA_DIR / "pom.xml"), "dependency:copy-dependencies"],
            check=True,
        )
    return LIB_DIR


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_service(
    cmd: list[str], log_path: Path, append: bool = False, **popen: Any
) -> subprocess.Popen[bytes]:
    """Starts a server process in its own session, logging to `log_path` (appended to with
    `append`, so that a restarted server's log keeps what it wrote before)."""
    log = open(log_path, "ab" if append else "wb")
    try:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **popen)
    finally:
        log.close()  # the child has its own descriptor


def wait_service(
    proc: subprocess.Popen[bytes],
    log_path: Path,
    ready: Callable[[], bool],
    what: str,
    timeout: float,
    poll: float = 0.3,
) -> subprocess.Popen[bytes]:
    """Waits until `ready()`; its log's tail is in the error if the process exits first, and it
    is stopped if it is not ready in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{log_path.read_text()[-4000:]}")
        if ready():
            return proc
        time.sleep(poll)
    stop_service(proc)
    raise TimeoutError(f"{what} not ready after {timeout}s; log at {log_path}")


def start_service(
    cmd: list[str],
    log_path: Path,
    ready: Callable[[], bool],
    what: str,
    timeout: float,
    poll: float = 0.3,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """Starts a server process logging to `log_path` and waits until `ready()` (see
    `wait_service`)."""
    return wait_service(spawn_service(cmd, log_path, **popen), log_path, ready, what, timeout, poll)


def stop_service(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    """Stops a server process: `sig`, then SIGKILL if it has not exited within 30 s."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class KafkaBroker:
    """One KRaft node on 127.0.0.1; `bootstrap_servers` is set once `start()` returns."""

    def __init__(
        self,
        num_partitions: int = 1,
        workdir: str | None = None,
        *,
        node_id: int = 1,
        heap: tuple[str, str] = ("1g", "1g"),
    ) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kafka-ml-broker-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.controller_port = free_port()
        self.num_partitions = num_partitions
        self.node_id = node_id
        self.heap = heap  # (-Xms, -Xmx)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "broker.log"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self, main: str, *args: str, server: bool = False) -> list[str]:
        """The command line of a JVM running `main` on the broker's classpath: a tool, or with
        `server` the node itself, with the JVM options of Kafka's own start script and a GC log
        (`gc-<pid>.log` in the work directory, one line per collection)."""
        java = shutil.which("java") or "java"
        classpath = f"{ensure_jars()}/*"
        server_options = [*SERVER_JVM_OPTIONS, f"-Xlog:gc:file={self.workdir / 'gc-%p.log'}:time,uptime"]
        return [
            java,
            f"-Xms{self.heap[0]}",
            f"-Xmx{self.heap[1]}",
            *(server_options if server else ["-XX:+UseG1GC"]),
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            classpath,
            main,
            *args,
        ]

    def _properties(self) -> dict[str, str]:
        """The broker's server.properties (a hook: secure_launcher.py adds listeners and security)."""
        data = self.workdir / "data"
        return {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.quorum_voters(),
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": str(self.num_partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.segment.bytes": str(256 * 1024 * 1024),
        }

    def quorum_voters(self) -> str:
        """`controller.quorum.voters`: this node alone (a hook: a cluster's nodes list all)."""
        return f"{self.node_id}@127.0.0.1:{self.controller_port}"

    def _format_args(self) -> list[str]:
        """Extra `kafka-storage format` arguments (a hook: e.g. `--add-scram` for SASL users)."""
        return []

    def _write_config(self) -> Path:
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in self._properties().items()))
        (self.workdir / "log4j2.properties").write_text(
            "rootLogger.level = WARN\n"
            "rootLogger.appenderRef.stdout.ref = STDOUT\n"
            "appender.stdout.type = Console\n"
            "appender.stdout.name = STDOUT\n"
            "appender.stdout.layout.type = PatternLayout\n"
            "appender.stdout.layout.pattern = [%d] %p %m (%c)%n\n"
        )
        return path

    def format(self, cluster_id: str) -> None:
        """Writes the configuration and formats the storage (`kafka-storage format`) for the
        cluster `cluster_id` (every node of one cluster is formatted with the same id)."""
        config = self._write_config()
        fmt = subprocess.run(
            self._java(
                "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), *self._format_args()
            ),
            capture_output=True,
            text=True,
        )
        if fmt.returncode != 0:
            raise RuntimeError(f"kafka storage format failed:\n{fmt.stdout}\n{fmt.stderr}")

    def spawn(self) -> None:
        """Starts the formatted node's JVM without waiting for it (on the same data directory
        and ports as before, after a `stop` or a kill; the log is appended to)."""
        self.proc = spawn_service(
            self._java("kafka.Kafka", str(self.workdir / "server.properties"), server=True),
            self.log_path,
            append=True,
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        assert self.proc is not None, "spawn() first"
        wait_service(self.proc, self.log_path, self._ready, f"kafka node {self.node_id}", timeout)

    def start(self, timeout: float = 90.0) -> KafkaBroker:
        self.format(uuid.uuid4().hex[:22])
        self.spawn()
        self.wait_ready(timeout)
        return self

    def _ready(self) -> bool:
        # The port accepting connections is not enough: wait until the broker answers metadata.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
        except OSError:
            return False
        try:
            from confluent_kafka import KafkaException
            from confluent_kafka.admin import AdminClient
        except ImportError:  # pragma: no cover - the port check is the fallback
            return True
        try:
            md = AdminClient({"bootstrap.servers": self.bootstrap_servers}).list_topics(timeout=2)
        except KafkaException:  # listening, but not answering yet (e.g. a node still recovering)
            return False
        return bool(md.brokers)

    def stop(self) -> None:
        stop_service(self.proc)
        self.proc = None

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _ClusterNode(KafkaBroker):
    """One combined broker/controller node of a `KafkaCluster`."""

    def __init__(self, cluster: KafkaCluster, node_id: int) -> None:
        super().__init__(
            num_partitions=cluster.num_partitions,
            workdir=str(cluster.workdir / f"node-{node_id}"),
            node_id=node_id,
            heap=cluster.heap,
        )
        self.cluster = cluster

    def quorum_voters(self) -> str:
        return self.cluster.quorum_voters

    def _properties(self) -> dict[str, str]:
        return {**super()._properties(), **self.cluster.properties}


class KafkaCluster:
    """`size` combined broker/controller KRaft nodes on 127.0.0.1 (ids 1..size), one cluster id,
    every node a voter of the controller quorum, replicated for failure tests.

    Topics are replicated `size` times (at most 3) with `min.insync.replicas=2`, the consumer
    offsets and transaction state too, and unclean leader election is off: with `acks=all`, one
    node lost loses nothing acknowledged and does not stop writes. Failover is quicker than
    Kafka's defaults, but by settings still meant for real clusters: a node that stops
    heartbeating is fenced, and its partitions get new leaders, after 4 s (default 9 s).

    `kill(node)` SIGKILLs a node, `restart(node)` starts it again on the same data directory and
    ports, `wait_healthy()` waits until every partition has its full ISR. Each node's log is
    `workdir/node-<id>/broker.log` (kept; `log_tails()` for a test's failure report).
    """

    def __init__(
        self,
        size: int = 3,
        num_partitions: int = 3,
        workdir: str | None = None,
        heap: tuple[str, str] = ("128m", "512m"),
    ) -> None:
        if size < 3:
            raise ValueError("a failure-tolerant cluster with min.insync.replicas=2 needs 3 nodes or more")
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kafka-ml-cluster-"))
        self.num_partitions = num_partitions
        self.heap = heap
        self.nodes = {i: _ClusterNode(self, i) for i in range(1, size + 1)}
        self._admin: Any = None
        self.quorum_voters = ",".join(
            f"{i}@127.0.0.1:{node.controller_port}" for i, node in self.nodes.items()
        )
        rf = str(min(size, 3))
        self.properties = {
            "default.replication.factor": rf,
            "min.insync.replicas": "2",
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": "2",
            # 4 partitions instead of 50: their creation, on the first transaction, is quicker.
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": "2",
            "unclean.leader.election.enable": "false",
            # A SIGKILLed node stops heartbeating: the controller fences it (and moves its
            # leaderships) after the session timeout, 4 s here, 9 s by default.
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "500",
            # A follower that stops fetching leaves the ISR after 10 s (default 30 s): what
            # bounds how long acks=all writes wait on a follower that is alive but stuck.
            "replica.lag.time.max.ms": "10000",
        }

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap_servers for node in self.nodes.values())

    def start(self, timeout: float = 120.0) -> KafkaCluster:
        """Formats every node with one cluster id and starts them together (a lone node waits for
        a quorum of controllers), then waits until all are ready."""
        cluster_id = uuid.uuid4().hex[:22]
        try:
            for node in self.nodes.values():
                node.format(cluster_id)
            for node in self.nodes.values():
                node.spawn()
            deadline = time.monotonic() + timeout
            for node in self.nodes.values():
                node.wait_ready(max(1.0, deadline - time.monotonic()))
            self.wait_healthy(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self

    def running(self, node: int) -> bool:
        proc = self.nodes[node].proc
        return proc is not None and proc.poll() is None

    def kill(self, node: int) -> None:
        """SIGKILLs a node (no controlled shutdown: its leaderships move when it is fenced)."""
        proc = self.nodes[node].proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"node {node} is not running")
        proc.kill()
        proc.wait(timeout=30)

    def restart(self, node: int, timeout: float = 90.0) -> None:
        """Starts a killed or stopped node again, on the same data directory and ports, and waits
        until it answers (its replicas then catch up: see `wait_healthy`)."""
        if self.running(node):
            raise RuntimeError(f"node {node} is running")
        self.nodes[node].spawn()
        self.nodes[node].wait_ready(timeout)

    def wait_fenced(self, node: int, timeout: float = 30.0) -> None:
        """Waits until the controller has fenced a killed node: it is gone from the metadata
        (after `broker.session.timeout.ms`). A metadata request may itself time out while the
        client still tries the dead node; that is asked again, within `timeout`."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + timeout
        while True:
            try:
                if node not in self.admin().list_topics(timeout=5).brokers:
                    return
            except KafkaException:
                pass  # no answer in time: ask again
            if time.monotonic() >= deadline:
                raise TimeoutError(f"node {node} was not fenced within {timeout:.0f} s")
            time.sleep(0.1)

    def admin(self) -> Any:
        """The cluster's AdminClient (one, reused). It logs only critical errors: the refused
        connections to a killed node are expected."""
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            self._admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 2})
        return self._admin

    def unhealthy(self, timeout: float = 5.0) -> list[str]:
        """What keeps the cluster from being healthy: nodes not running or not registered, and
        partitions without a leader or with replicas out of their ISR (empty when healthy)."""
        problems = [f"node {i} is not running" for i in self.nodes if not self.running(i)]
        md = self.admin().list_topics(timeout=timeout)
        problems += [f"node {i} is not in the metadata" for i in self.nodes if i not in md.brokers]
        for name, topic in sorted(md.topics.items()):
            if topic.error is not None:
                problems.append(f"{name}: {topic.error}")
            for p, part in sorted(topic.partitions.items()):
                if part.leader < 0 or sorted(part.isrs) != sorted(part.replicas):
                    problems.append(
                        f"{name}[{p}]: leader {part.leader}, replicas {part.replicas}, isr {part.isrs}"
                    )
        return problems

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Waits until every node runs and every partition has a leader and all its replicas in
        sync; raises TimeoutError naming what is not, with the nodes' log tails."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + timeout
        problems: list[str] = []
        while time.monotonic() < deadline:
            try:
                problems = self.unhealthy(timeout=max(0.5, min(5.0, deadline - time.monotonic())))
            except KafkaException as e:
                problems = [f"metadata: {e}"]
            if not problems:
                return
            time.sleep(0.2)
        raise TimeoutError(
            f"cluster not healthy after {timeout}s: {'; '.join(problems[:20])}\n{self.log_tails()}"
        )

    def leader_of(self, topic: str, partition: int, timeout: float = 30.0) -> int:
        """The node id leading `topic`'s `partition` (waiting while it has none)."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + timeout
        while True:
            try:
                md = self.admin().list_topics(topic, timeout=5)
                t = md.topics.get(topic)
                part = t.partitions.get(partition) if t is not None and t.error is None else None
                if part is not None and part.leader >= 0:
                    return int(part.leader)
            except KafkaException:
                pass
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{topic}[{partition}] has no leader after {timeout}s")
            time.sleep(0.2)

    def move_leader(self, topic: str, partition: int, to: int, timeout: float = 60.0) -> None:
        """Makes node `to` the leader of `topic`'s `partition` the way an operator would: a
        reassignment (Kafka's `kafka-reassign-partitions` tool) that puts `to` first in the same
        replicas, so it is the preferred leader, then a preferred leader election. The replicas
        stay in sync throughout; returns once `to` leads."""
        from confluent_kafka import ElectionType, TopicPartition

        md = self.admin().list_topics(topic, timeout=10)
        replicas = [int(r) for r in md.topics[topic].partitions[partition].replicas]
        if to not in replicas:
            raise ValueError(f"node {to} holds no replica of {topic}[{partition}] ({replicas})")
        order = [to] + [r for r in replicas if r != to]
        plan = self.workdir / f"reassign-{uuid.uuid4().hex[:8]}.json"
        move = {"topic": topic, "partition": partition, "replicas": order}
        plan.write_text(json.dumps({"version": 1, "partitions": [move]}))
        node = next(iter(self.nodes.values()))  # any node's classpath and log settings do
        tool = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"
        args = ["--bootstrap-server", self.bootstrap_servers, "--reassignment-json-file", str(plan)]
        run = subprocess.run(
            node._java(tool, *args, "--execute"), capture_output=True, text=True, timeout=timeout
        )
        if run.returncode != 0:
            raise RuntimeError(f"reassignment of {topic}[{partition}] failed:\n{run.stdout}\n{run.stderr}")
        deadline = time.monotonic() + timeout
        while True:
            md = self.admin().list_topics(topic, timeout=10)
            part = md.topics[topic].partitions[partition]
            if [int(r) for r in part.replicas] == order:
                break
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{topic}[{partition}] replicas are {part.replicas}, not {order}")
            time.sleep(0.2)
        tp = TopicPartition(topic, partition)
        admin = self.admin()
        while self.leader_of(topic, partition) != to:
            result = admin.elect_leaders(ElectionType.PREFERRED, [tp]).result(timeout=timeout)
            error = next(iter(result.values()), None)
            # ELECTION_NOT_NEEDED: the controller had moved it already.
            if error is not None and "ELECTION_NOT_NEEDED" not in str(error):
                raise RuntimeError(f"preferred leader election of {topic}[{partition}] failed: {error}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"node {to} does not lead {topic}[{partition}] after {timeout}s")
            time.sleep(0.2)

    def log_tails(self, lines: int = 30) -> str:
        out = []
        for i, node in self.nodes.items():
            text = node.log_path.read_text(errors="replace") if node.log_path.exists() else ""
            tail = "\n".join(text.splitlines()[-lines:])
            out.append(f"--- node {i}: last {lines} lines of {node.log_path} ---\n{tail}")
        return "\n".join(out)

    def stop(self) -> None:
        """Kills every node (a test cluster's data is thrown away, so no controlled shutdown,
        which a node can block on while the others are going) and deletes the data, keeping the
        logs."""
        for node in self.nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait()
            node.proc = None
            shutil.rmtree(node.workdir / "data", ignore_errors=True)
        self._admin = None

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    # `python kafka/launcher.py` runs one broker, `python kafka/launcher.py 3` a 3-node cluster.
    server = KafkaCluster(int(sys.argv[1])) if len(sys.argv) > 1 else KafkaBroker()
    with server:
        print(server.bootstrap_servers, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            sys.exit(0)
