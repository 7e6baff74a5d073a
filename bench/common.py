"""Helpers shared by the benchmarks: broker start (plain or secured), topics, CPU clocks, machine
info, the rdkafka_performance build and the secured broker's client configurations.

The benchmarks import this module from their own directory (``python bench/<name>.py`` puts
``bench/`` first on ``sys.path``). ``consume_bench`` re-exports the names the other benchmarks
still import from it.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
# The secured broker's listener and credentials the TLS runs use (`SecureKafkaBroker.client_config`).
TLS_CASE = "scram512"
TLS_USER = "alice"
# Properties a client config may carry that must not be written to results or printed.
_SECRET_PROPS = ("sasl.password", "ssl.key.password", "ssl.keystore.password", "sasl.oauthbearer.config")


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def start_broker(secure: bool = False) -> tuple[str, Any]:
    """``$KAFKA_BOOTSTRAP_SERVERS`` and no broker, or a broker started for this run (the caller
    stops it) and its (PLAINTEXT) address.

    ``secure=True`` always starts a ``kafka/secure_launcher.py`` ``SecureKafkaBroker`` (TLS, SASL
    and ACL listeners besides PLAINTEXT; see `tls_client_configs`): an external broker has no
    known SASL_SSL listener or credentials, so ``$KAFKA_BOOTSTRAP_SERVERS`` is not used then."""
    bs = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bs and not secure:
        return bs, None
    if bs:
        log("KAFKA_BOOTSTRAP_SERVERS is ignored: the TLS runs need a broker started with known TLS/SASL")
    sys.path.insert(0, str(REPO / "kafka"))
    if secure:
        from secure_launcher import SecureKafkaBroker

        log("starting secured Kafka broker (PLAINTEXT + SASL_SSL listeners) ...")
        broker: Any = SecureKafkaBroker().start()
    else:
        from launcher import KafkaBroker

        log("starting Kafka broker ...")
        broker = KafkaBroker().start()
    return broker.bootstrap_servers, broker


def tls_client_configs(broker: Any) -> dict[str, dict[str, str]]:
    """The two connections of a TLS comparison, on the same `SecureKafkaBroker`: ``"tls"`` (its
    SASL_SSL listener, SCRAM-SHA-512 as `TLS_USER`, the broker verified against the session CA)
    and ``"plaintext"`` (its PLAINTEXT listener). Plain librdkafka properties, given as they are
    to kafka-ml and confluent-kafka alike."""
    return {
        "tls": {k: str(v) for k, v in broker.client_config(TLS_CASE, user=TLS_USER).items()},
        "plaintext": {k: str(v) for k, v in broker.client_config("plaintext").items()},
    }


def redacted(conf: dict[str, str]) -> dict[str, str]:
    """`conf` without its secrets' values, for results and printouts."""
    return {k: ("***" if k in _SECRET_PROPS else v) for k, v in conf.items()}


def machine_info(rdkafka_perf: str | None) -> dict[str, Any]:
    import confluent_kafka
    import kafka_ml

    cpu_model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_total = int(line.split()[1]) * 1024
    except OSError:
        pass
    broker_jars = sorted(p.name for p in (REPO / "kafka" / "target" / "lib").glob("kafka_2.13-*.jar"))
    return {
        "nproc": os.cpu_count(),
        "sched_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "mem_total_bytes": mem_total,
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "kafka_ml": getattr(kafka_ml, "__version__", "?"),
        "kafka_ml_librdkafka": kafka_ml.librdkafka_version,
        "confluent_kafka": confluent_kafka.__version__,
        "confluent_kafka_librdkafka": confluent_kafka.libversion()[0],
        "rdkafka_performance": rdkafka_perf,
        "broker": broker_jars[0].removesuffix(".jar") if broker_jars else None,
    }


def create_topic(bs: str, name: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bs})
    fut = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    fut[name].result(timeout=30)
    # wait for the leader to be known
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(name, timeout=5)
        t = md.topics.get(name)
        if (
            t is not None
            and t.error is None
            and len(t.partitions) == partitions
            and all(p.leader >= 0 for p in t.partitions.values())
        ):
            return
        time.sleep(0.2)
    raise TimeoutError(f"topic {name} not ready")


def total_messages(bs: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bs, "group.id": "bench-watermarks"})
    try:
        md = c.list_topics(topic, timeout=10)
        total = 0
        for p in md.topics[topic].partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += hi - lo
        return total
    finally:
        c.close()


def build_rdkafka_performance() -> str | None:
    env_bin = os.environ.get("RDKAFKA_PERFORMANCE")
    if env_bin:
        return env_bin
    script = BENCH_DIR / "build_rdkafka_performance.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        log(f"building rdkafka_performance failed:\n{proc.stderr[-3000:]}")
        return None
    return proc.stdout.strip().splitlines()[-1]


# An independent client in a process of its own: one message every 10 ms to its own topic on the
# same broker, each acknowledgement's latency recorded. What it sees is the broker's (and the
# machine's) own pauses, with none of the measured loop's code on its path: a loop's p99 at
# 10 k msg/s cannot be lower than the pauses every client of that broker waits through.
_ACK_PROBE = """
import json, signal, sys, time
from confluent_kafka import Producer
bootstrap, topic = sys.argv[1], sys.argv[2]
producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "socket.nagle.disable": True})
acks = []
stop = False
def done(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, done)
def acked(err, msg, sent):
    if err is None:
        acks.append((time.perf_counter() - sent) * 1000.0)
producer.produce(topic, b"warm-up")  # metadata and the producer id before "ready"
producer.flush(30)
print("ready", flush=True)
tick = time.perf_counter()
while not stop:
    sent = time.perf_counter()
    producer.produce(topic, b"probe", on_delivery=lambda e, m, s=sent: acked(e, m, s))
    tick += 0.01
    while not stop and time.perf_counter() < tick:
        producer.poll(max(0.0, tick - time.perf_counter()))
producer.flush(30)
acks.sort()
pct = lambda q: round(acks[min(len(acks) - 1, int(q * len(acks)))], 1) if acks else None
summary = {"acks": len(acks), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)}
print(json.dumps(summary), flush=True)
"""


class AckProbe:
    """While open, an independent producer process sends one message every 10 ms to a topic of
    its own on `bootstrap` and times each acknowledgement; `result` (acks, p50_ms, p99_ms,
    max_ms) after the `with` block."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.result: dict[str, Any] = {}

    def __enter__(self) -> AckProbe:
        topic = f"bench-probe-{os.urandom(4).hex()}"
        create_topic(self.bootstrap, topic, 1)
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _ACK_PROBE, self.bootstrap, topic], stdout=subprocess.PIPE, text=True
        )
        assert self._proc.stdout is not None
        self._proc.stdout.readline()  # "ready": the probe runs before the measurement starts
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        out, _ = self._proc.communicate(timeout=60)
        lines = out.strip().splitlines()
        self.result = json.loads(lines[-1]) if lines else {}
