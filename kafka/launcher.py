"""Start a real Apache Kafka 4.x broker (KRaft, one combined broker/controller node) on loopback.

Used by the test suite and the benchmarks. The jars come from Maven Central through
`kafka/pom.xml` (see `ensure_jars`); the broker runs with the machine's Java 17, its storage is
formatted in a temporary directory, and it listens on free loopback ports. The broker's log is
kept in that directory so a failed run can be diagnosed.

    python kafka/launcher.py            # start, print the bootstrap address, run until Ctrl-C
"""

from __future__ import annotations

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


def start_service(
    cmd: list[str],
    log_path: Path,
    ready: Callable[[], bool],
    what: str,
    timeout: float,
    poll: float = 0.3,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """Starts a server process logging to `log_path` and waits until `ready()`; its log's tail
    is in the error if it exits first, and it is stopped if it is not ready in time."""
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **popen)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{log_path.read_text()[-4000:]}")
        if ready():
            return proc
        time.sleep(poll)
    stop_service(proc)
    raise TimeoutError(f"{what} not ready after {timeout}s; log at {log_path}")


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

    def __init__(self, num_partitions: int = 1, workdir: str | None = None) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kafka-ml-broker-"))
        self.port = free_port()
        self.controller_port = free_port()
        self.num_partitions = num_partitions
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "broker.log"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self, main: str, *args: str, **kw: object) -> list[str]:
        java = shutil.which("java") or "java"
        classpath = f"{ensure_jars()}/*"
        return [
            java,
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
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
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
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

    def start(self, timeout: float = 90.0) -> KafkaBroker:
        config = self._write_config()
        cluster_id = uuid.uuid4().hex[:22]
        fmt = subprocess.run(
            self._java(
                "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), *self._format_args()
            ),
            capture_output=True,
            text=True,
        )
        if fmt.returncode != 0:
            raise RuntimeError(f"kafka storage format failed:\n{fmt.stdout}\n{fmt.stderr}")
        self.proc = start_service(
            self._java("kafka.Kafka", str(config)), self.log_path, self._ready, "kafka broker", timeout
        )
        return self

    def _ready(self) -> bool:
        # The port accepting connections is not enough: wait until the broker answers metadata.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
        except OSError:
            return False
        try:
            from confluent_kafka.admin import AdminClient
        except ImportError:  # pragma: no cover - the port check is the fallback
            return True
        md = AdminClient({"bootstrap.servers": self.bootstrap_servers}).list_topics(timeout=2)
        return bool(md.brokers)

    def stop(self) -> None:
        stop_service(self.proc)
        self.proc = None

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    with KafkaBroker() as broker:
        print(broker.bootstrap_servers, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            sys.exit(0)
