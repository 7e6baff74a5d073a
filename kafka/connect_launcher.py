"""Start a real Kafka Connect worker and a real PostgreSQL server on loopback, for the tests.

- `ConnectWorker`: Apache Kafka's Connect runtime in distributed mode
  (`org.apache.kafka.connect.cli.ConnectDistributed`) on a given broker, its REST API on a free
  loopback port. Its jars and plugins come from Maven Central through `kafka/connect/pom.xml`
  (worker, FileStream connectors), `kafka/connect/debezium/pom.xml` (the Debezium PostgreSQL
  source connector) and `kafka/connect/debezium-jdbc/pom.xml` (Debezium's JDBC sink connector,
  with the PostgreSQL JDBC driver); see `ensure_connect_jars`.
- `PostgresServer`: Debian's PostgreSQL (`make postgres` installs it when missing), a fresh
  cluster in a temporary directory, `wal_level=logical` so that Debezium can stream its changes.
  PostgreSQL refuses to run as root: as root, initdb and the server run as the `postgres` user
  (the process itself switches user, so that signals reach the server, not a wrapper).

Both keep their logs in their temporary directories, so a failed run can be diagnosed.

    python kafka/connect_launcher.py BOOTSTRAP   # start both, print their addresses, run until Ctrl-C
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from launcher import free_port, start_service, stop_service

KAFKA_DIR = Path(__file__).resolve().parent
CONNECT_DIR = KAFKA_DIR / "connect"
WORKER_LIB = CONNECT_DIR / "target" / "worker"
PLUGIN_DIR = CONNECT_DIR / "target" / "plugins"


def ensure_connect_jars() -> tuple[Path, Path]:
    """Resolves the worker's jars and the plugins with Maven (cached in ~/.m2) unless present."""
    if (
        not any(WORKER_LIB.glob("connect-runtime-*.jar"))
        or not any(WORKER_LIB.glob("connect-basic-auth-extension-*.jar"))
        or not any((PLUGIN_DIR / "file-stream").glob("connect-file-*.jar"))
    ):
        subprocess.run(["mvn", "-q", "-B", "-f", str(CONNECT_DIR / "pom.xml"), "package"], check=True)
    if not any((PLUGIN_DIR / "debezium-postgres").glob("debezium-connector-postgres-*.jar")):
        subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(CONNECT_DIR / "debezium" / "pom.xml"),
                "dependency:copy-dependencies",
            ],
            check=True,
        )
    jdbc = PLUGIN_DIR / "debezium-connector-jdbc"
    if not any(jdbc.glob("debezium-connector-jdbc-*.jar")) or not any(jdbc.glob("postgresql-*.jar")):
        subprocess.run(
            ["mvn", "-q", "-B", "-f", str(CONNECT_DIR / "debezium-jdbc" / "pom.xml"), "dependency:unpack"],
            check=True,
        )
    return WORKER_LIB, PLUGIN_DIR


def _log4j_config(path: Path) -> None:
    path.write_text(
        "rootLogger.level = INFO\n"
        "rootLogger.appenderRef.stdout.ref = STDOUT\n"
        "appender.stdout.type = Console\n"
        "appender.stdout.name = STDOUT\n"
        "appender.stdout.layout.type = PatternLayout\n"
        "appender.stdout.layout.pattern = [%d] %p %m (%c)%n\n"
        # The worker's own INFO lines say what a connector did; its clients' are noise.
        "logger.clients.name = org.apache.kafka.clients\n"
        "logger.clients.level = WARN\n"
        "logger.reflections.name = org.reflections\n"
        "logger.reflections.level = ERROR\n"
    )


class ConnectWorker:
    """One distributed-mode Connect worker; `url` is its REST API once `start()` returns."""

    def __init__(self, bootstrap_servers: str, workdir: str | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kafka-ml-connect-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "connect.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        _, plugins = ensure_connect_jars()
        # Unique group and internal topics: several workers may share one test broker.
        group = f"kafka-ml-connect-{uuid.uuid4().hex[:8]}"
        props = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": group,
            "config.storage.topic": f"{group}-configs",
            "offset.storage.topic": f"{group}-offsets",
            "status.storage.topic": f"{group}-status",
            "config.storage.replication.factor": "1",
            "offset.storage.replication.factor": "1",
            "status.storage.replication.factor": "1",
            "offset.storage.partitions": "1",
            "status.storage.partitions": "1",
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "offset.flush.interval.ms": "1000",
            "listeners": f"http://127.0.0.1:{self.port}",
            "rest.advertised.host.name": "127.0.0.1",
            "rest.advertised.port": str(self.port),
            "plugin.path": str(plugins),
            # Short group timings: one worker, and tests wait on rebalances.
            "scheduled.rebalance.max.delay.ms": "0",
            "task.shutdown.graceful.timeout.ms": "2000",
        }
        path = self.workdir / "worker.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        _log4j_config(self.workdir / "log4j2.properties")
        return path

    def start(self, timeout: float = 120.0) -> ConnectWorker:
        config = self._write_config()
        java = shutil.which("java") or "java"
        self.proc = start_service(
            [
                java,
                "-Xms256m",
                "-Xmx1g",
                "-XX:+UseG1GC",
                "-XX:TieredStopAtLevel=1",  # a faster start; the tests move little data
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
                *self._jvm_args(),
                "-cp",
                f"{WORKER_LIB}/*",
                "org.apache.kafka.connect.cli.ConnectDistributed",
                str(config),
            ],
            self.log_path,
            self._ready,
            "connect worker",
            timeout,
            poll=0.5,
        )
        return self

    def _jvm_args(self) -> list[str]:
        """Extra JVM arguments (a hook: e.g. the JAAS file of the REST API's basic auth)."""
        return []

    def _ready(self) -> bool:
        # The REST server answers before the worker has joined its group; /connectors answers
        # 200 only once the herder is running.
        try:
            with urllib.request.urlopen(f"{self.url}/connectors", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        stop_service(self.proc)
        self.proc = None

    def __enter__(self) -> ConnectWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def postgres_bin_dir() -> Path:
    """Where Debian's PostgreSQL keeps `initdb` and `postgres` (not on PATH by default)."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise FileNotFoundError("PostgreSQL is not installed: run `make postgres` (apt-get install postgresql)")


class PostgresServer:
    """A fresh PostgreSQL cluster on 127.0.0.1 with logical decoding on; `dsn` once started.

    The superuser `postgres` logs in without a password (trust, loopback only), and may open
    replication connections, as Debezium does."""

    def __init__(self, workdir: str | None = None) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kafka-ml-postgres-"))
        self.data_dir = self.workdir / "data"
        self.port = free_port()
        self.user = "postgres"
        self.database = "postgres"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "postgres.log"
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root; its Debian package made the `postgres` user.
            shutil.chown(self.workdir, user="postgres", group="postgres")
            self._as = {"user": "postgres", "group": "postgres", "extra_groups": []}

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def start(self, timeout: float = 60.0) -> PostgresServer:
        bin_dir = postgres_bin_dir()
        init = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            capture_output=True,
            text=True,
            cwd=self.workdir,
            **self._as,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.workdir),
            "wal_level": "logical",
            "max_wal_senders": "10",
            "max_replication_slots": "10",
            # A throwaway test cluster: durability buys nothing here.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        args = [arg for k, v in settings.items() for arg in ("-c", f"{k}={v}")]

        def ready() -> bool:
            probe = [str(bin_dir / "pg_isready"), "-h", self.host, "-p", str(self.port), "-U", self.user]
            return subprocess.run(probe, capture_output=True).returncode == 0

        self.proc = start_service(
            [str(bin_dir / "postgres"), "-D", str(self.data_dir), *args],
            self.log_path,
            ready,
            "postgres",
            timeout,
            poll=0.2,
            cwd=self.workdir,
            **self._as,
        )
        return self

    def stop(self) -> None:
        # SIGINT: PostgreSQL's "fast" shutdown (disconnect clients, then stop).
        stop_service(self.proc, signal.SIGINT)
        self.proc = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python kafka/connect_launcher.py BOOTSTRAP_SERVERS")
    with PostgresServer() as pg, ConnectWorker(sys.argv[1]) as worker:
        print(json.dumps({"postgres": pg.dsn, "connect": worker.url}), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            sys.exit(0)
