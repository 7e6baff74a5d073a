#!/usr/bin/env python
"""Producer throughput benchmark of kafka-ml against baselines measured in the same run.

One run starts a real Apache Kafka broker (``kafka/launcher.py``; or uses
``$KAFKA_BOOTSTRAP_SERVERS``) and reports:

1. ``json``: NumPy feature rows ``{"id": int64, "x": float32 x 16, "y": int32}`` written as one
   JSON message per row by ``Producer.send(format="json", schema=...)`` + ``flush()`` vs a
   confluent-kafka-python loop of ``json.dumps`` + ``produce()`` (``poll(0)`` every 1000,
   ``flush()`` at the end). Target: >= 10x rows/s.
2. ``tensor``: float32 x 64 rows (256 B) written by ``Producer.send(topic, array)`` + ``flush()``
   vs librdkafka's own C client ``rdkafka_performance -P -s 256`` (built by
   ``bench/build_rdkafka_performance.sh``). Target: >= 0.9x msgs/s.
3. ``async``: ``kafka_ml.aio.Producer`` on the JSON workload, if the module exists.
   Target: >= 0.8x of the sync producer.
4. ``avro``: the JSON workload's rows (``--registry-records`` of them) registry-framed, as Avro
   and as Protobuf: by ``Producer.send(format=..., schema_registry=url)`` + ``flush()`` vs
   confluent-kafka's ``AvroSerializer`` / ``ProtobufSerializer`` per row + ``produce()``, the
   schema in a real Schema Registry (``bench/registry_formats.py``). Target: >= 10x rows/s for
   both. ``--registry-only`` runs just this.
5. ``tls`` (only with ``--tls`` or ``--tls-only``): the run uses a secured broker
   (``kafka/secure_launcher.py``, whose PLAINTEXT listener serves workloads 1-3) and writes the
   JSON rows, interleaved, with kafka-ml over its SASL_SSL listener (SCRAM-SHA-512 over TLS), with
   kafka-ml over its PLAINTEXT listener and with the confluent-kafka loop of workload 1 over the
   same SASL_SSL listener. Targets: kafka-ml SASL_SSL / PLAINTEXT >= 0.7x, kafka-ml /
   confluent-kafka over SASL_SSL >= 10x. Not part of ``make bench``: it adds a broker with TLS and
   three more confluent-kafka passes.

Every measurement writes to a fresh one-partition topic (partition 0 on every side). All
producers get the same librdkafka properties (``PARITY_PROPS``, plus whatever ``-X key=value``
adds, applied to every side; over SASL_SSL, plus the listener's ``security.protocol``, ``sasl.*``
and ``ssl.ca.location`` properties, as they are): acks=all with idempotence, as kafka-ml's default, and
rdkafka_performance's own overrides (linger.ms=1000, message.send.max.retries=3,
retry.backoff.ms=500) reset to the same values as the others. Wall time includes creating the
producer (and, for rdkafka_performance, starting the process) up to the last delivery report.
CPU: ``RUSAGE_SELF`` deltas for the in-process producers (kafka-ml's and librdkafka's threads
are in-process), ``RUSAGE_CHILDREN`` deltas for ``rdkafka_performance``.

    python bench/produce_bench.py --quick          # 100k records, 1 run, smoke test
    python bench/produce_bench.py                  # 1M records, median of 3
    python bench/produce_bench.py --tls-only       # 1M records, only the TLS workload

Prints a table and writes ``bench/results/produce-latest.json`` (``produce-tls-latest.json`` for
``--tls-only``; and a timestamped copy).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    RESULTS_DIR,
    build_rdkafka_performance,
    cpu_children,
    cpu_self,
    create_topic,
    log,
    machine_info,
    redacted,
    start_broker,
    tls_client_configs,
    total_messages,
)

DIM_JSON = 16
DIM_TENSOR = 64
JSON_SCHEMA: dict[str, Any] = {"id": "int64", "x": ("float32", DIM_JSON), "y": "int32"}
POLL_EVERY = 1000
# Producer properties given explicitly to EVERY producer (kafka-ml, confluent-kafka,
# rdkafka_performance); `-X key=value` overrides them for all sides alike.
PARITY_PROPS = {
    "acks": "all",
    "enable.idempotence": "true",
    "linger.ms": "5",
    "batch.size": "1000000",
    "batch.num.messages": "10000",
    "compression.type": "none",
    "queue.buffering.max.messages": "100000",
    "queue.buffering.max.kbytes": "1048576",
    # rdkafka_performance sets 3 and 500 ms; these are librdkafka's defaults
    "message.send.max.retries": "2147483647",
    "retry.backoff.ms": "100",
}

Result = dict[str, Any]
# A connection's librdkafka properties: bootstrap.servers plus any security.protocol, sasl.*, ssl.*
Conf = dict[str, str]


# -- data ------------------------------------------------------------------------------------


def json_data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "id": np.arange(n, dtype=np.int64),
        "x": rng.uniform(-1.0, 1.0, size=(n, DIM_JSON)).astype(np.float32),
        "y": rng.integers(0, 10, size=n, dtype=np.int32),
    }


def tensor_data(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM_TENSOR), dtype=np.float32)


def sample_messages(bs: str, topic: str, count: int) -> list[bytes]:
    """The first `count` message values of partition 0 of `topic`."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bs, "group.id": "bench-verify", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        out: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(out) < count and time.monotonic() < deadline:
            for m in c.consume(min(1000, count - len(out)), timeout=1.0):
                if m.error() is None:
                    out.append(m.value())
        return out
    finally:
        c.close()


def verify_json(bs: str, topic: str, data: dict[str, np.ndarray], count: int = 1000) -> float:
    """Checks the first messages decode to the source rows; returns their mean size in bytes."""
    msgs = sample_messages(bs, topic, count)
    if len(msgs) < min(count, len(data["id"])):
        raise RuntimeError(f"{topic}: read back only {len(msgs)} messages")
    for i, raw in enumerate(msgs):
        d = json.loads(raw)
        ok = (
            d["id"] == int(data["id"][i])
            and d["y"] == int(data["y"][i])
            and np.array_equal(np.asarray(d["x"], dtype=np.float32), data["x"][i])
        )
        if not ok:
            raise RuntimeError(f"{topic}: message {i} does not match its row: {raw[:200]!r}")
    return sum(len(m) for m in msgs) / len(msgs)


def verify_tensor(bs: str, topic: str, rows: np.ndarray, count: int = 1000) -> None:
    msgs = sample_messages(bs, topic, count)
    for i, raw in enumerate(msgs):
        if raw != rows[i].astype("<f4").tobytes():
            raise RuntimeError(f"{topic}: message {i} does not match row {i}")


def check_count(bs: str, topic: str, records: int) -> None:
    n = total_messages(bs, topic)
    if n != records:
        raise RuntimeError(f"{topic}: {n} messages in the topic, expected {records}")


# -- producers -------------------------------------------------------------------------------


def timed(fn: Callable[[], Any], cpu: Callable[[], float] = cpu_self) -> Result:
    gc.collect()
    c0, t0 = cpu(), time.perf_counter()
    extra = fn() or {}
    t1, c1 = time.perf_counter(), cpu()
    return {"wall_s": t1 - t0, "cpu_s": c1 - c0, **extra}


def kafka_ml_json(conn: Conf, topic: str, data: dict[str, np.ndarray], props: dict[str, str]) -> Result:
    import kafka_ml

    def run() -> Result:
        p = kafka_ml.Producer({**conn, **props})
        t0 = time.perf_counter()
        n = sent_rows(p.send(topic, data, format="json", schema=JSON_SCHEMA, partition=0))
        t1 = time.perf_counter()
        p.flush(120)
        t2 = time.perf_counter()
        if p.delivered != n or p.failed:
            raise RuntimeError(f"kafka-ml json: delivered {p.delivered}, failed {p.failed} of {n}")
        return {"rows": n, "send_s": t1 - t0, "flush_s": t2 - t1, "send_flush_s": t2 - t0}

    return timed(run)


def confluent_json(conn: Conf, topic: str, data: dict[str, np.ndarray], props: dict[str, str]) -> Result:
    from confluent_kafka import Producer

    def run() -> Result:
        p = Producer({**conn, **props})
        t0 = time.perf_counter()
        produce, poll, dumps = p.produce, p.poll, json.dumps
        n = 0
        rows = zip(data["id"].tolist(), data["x"].tolist(), data["y"].tolist(), strict=True)
        for i, x, y in rows:
            value = dumps({"id": i, "x": x, "y": y})
            while True:
                try:
                    produce(topic, value, partition=0)
                    break
                except BufferError:
                    if poll(0.01) == 0 and time.perf_counter() - t0 > 600:
                        raise RuntimeError("confluent json: producer queue stuck full") from None
            n += 1
            if n % POLL_EVERY == 0:
                poll(0)
        t1 = time.perf_counter()
        left = p.flush(120)
        t2 = time.perf_counter()
        if left:
            raise RuntimeError(f"confluent json: {left} messages not delivered")
        return {"rows": n, "send_s": t1 - t0, "flush_s": t2 - t1, "send_flush_s": t2 - t0}

    return timed(run)


def sent_rows(ret: Any) -> int:
    """Rows queued by one ``send``: an int, or a ``SendReport`` (``.rows``) in newer versions."""
    return int(ret) if isinstance(ret, (int, np.integer)) else int(ret.rows)


def wait_for_kafka_ml(attempts: int = 10, pause_s: float = 30.0) -> None:
    """Waits until ``import kafka_ml`` works in a fresh interpreter (the package may be mid-rebuild:
    a failed import cannot be retried in-process once the native module is loaded)."""
    check = "import kafka_ml, kafka_ml.producer"
    for i in range(attempts):
        proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
        if proc.returncode == 0:
            return
        last = proc.stderr.strip().splitlines()[-1:] or ["?"]
        log(f"import kafka_ml failed ({last[0]}); retry {i + 1}/{attempts} in {pause_s:.0f}s")
        time.sleep(pause_s)
    raise RuntimeError("import kafka_ml keeps failing")


def aio_available() -> bool:
    try:
        import kafka_ml.aio  # noqa: F401
    except ImportError:
        return False
    return True


def kafka_ml_aio_json(conn: Conf, topic: str, data: dict[str, np.ndarray], props: dict[str, str]) -> Result:
    import kafka_ml.aio

    async def maybe_await(v: Any) -> Any:
        return await v if inspect.isawaitable(v) else v

    async def main() -> Result:
        p = kafka_ml.aio.Producer({**conn, **props})
        t0 = time.perf_counter()
        n = sent_rows(await p.send(topic, data, format="json", schema=JSON_SCHEMA, partition=0))
        t1 = time.perf_counter()
        await maybe_await(p.flush(120))
        t2 = time.perf_counter()
        close = getattr(p, "close", None)
        if close is not None:
            await maybe_await(close())
        return {"rows": n, "send_s": t1 - t0, "flush_s": t2 - t1, "send_flush_s": t2 - t0}

    return timed(lambda: asyncio.run(main()))


def kafka_ml_tensor(conn: Conf, topic: str, rows: np.ndarray, props: dict[str, str]) -> Result:
    import kafka_ml

    def run() -> Result:
        p = kafka_ml.Producer({**conn, **props})
        t0 = time.perf_counter()
        n = sent_rows(p.send(topic, rows, partition=0))
        t1 = time.perf_counter()
        p.flush(120)
        t2 = time.perf_counter()
        if p.delivered != n or p.failed:
            raise RuntimeError(f"kafka-ml tensor: delivered {p.delivered}, failed {p.failed} of {n}")
        return {"rows": n, "send_s": t1 - t0, "flush_s": t2 - t1, "send_flush_s": t2 - t0}

    return timed(run)


_PERF_RE = re.compile(
    r"(\d+) messages produced \((\d+) bytes\), (\d+) delivered \(offset (-?\d+), (\d+) failed\) "
    r"in (\d+)ms: (\d+) msgs/s"
)


def rdkafka_perf_tensor(binary: str, bs: str, topic: str, records: int, props: dict[str, str]) -> Result:
    cmd = [binary, "-P", "-t", topic, "-p", "0", "-b", bs, "-s", str(DIM_TENSOR * 4)]
    cmd += ["-c", str(records), "-q"]
    for k, v in props.items():
        cmd += ["-X", f"{k}={v}"]

    def run() -> Result:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        out = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise RuntimeError(f"rdkafka_performance failed ({proc.returncode}):\n{out[-3000:]}")
        found = _PERF_RE.findall(out)
        if not found:
            raise RuntimeError(f"rdkafka_performance: no summary line in:\n{out[-3000:]}")
        _n, _b, delivered, _off, failed, ms, rate = found[-1]
        if int(failed) or int(delivered) != records:
            raise RuntimeError(f"rdkafka_performance: {delivered} delivered, {failed} failed:\n{out[-2000:]}")
        return {
            "rows": int(delivered),
            "reported": {"msgs": int(delivered), "ms": int(ms), "msgs_per_s": int(rate)},
            "cmd": cmd,
        }

    return timed(run, cpu_children)


# -- orchestration ---------------------------------------------------------------------------


def watch_broker(proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """Ends the run if the broker dies: producers would otherwise retry until their timeouts."""

    def watch() -> None:
        while proc.poll() is None:
            time.sleep(1.0)
        if getattr(proc, "_bench_stopping", False):
            return
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        log(f"ERROR: the Kafka broker exited (status {proc.returncode}); log tail:\n{tail}")
        os._exit(3)

    threading.Thread(target=watch, name="broker-watchdog", daemon=True).start()


class Topics:
    """Fresh one-partition topics with unique names."""

    def __init__(self, bs: str) -> None:
        self.bs = bs
        self.n = 0
        self.suffix = f"{os.getpid()}-{int(time.time())}"

    def new(self, what: str) -> str:
        self.n += 1
        name = f"bench-produce-{what}-{self.suffix}-{self.n}"
        create_topic(self.bs, name, 1)
        return name


def summarize(runs: list[Result], records: int) -> Result:
    walls = [r["wall_s"] for r in runs]
    cpus = [r["cpu_s"] for r in runs]
    med_wall, med_cpu = statistics.median(walls), statistics.median(cpus)
    out: Result = {
        "runs": runs,
        "wall_s_median": med_wall,
        "wall_s_min": min(walls),
        "rows_per_s": records / med_wall,
        "rows_per_s_best": records / min(walls),
        "cpu_s_median": med_cpu,
        "cpu_s_per_million": med_cpu / records * 1e6,
    }
    sf = [r["send_flush_s"] for r in runs if "send_flush_s" in r]
    if sf:
        out["send_flush_rows_per_s"] = records / statistics.median(sf)
        out["send_s_median"] = statistics.median(r["send_s"] for r in runs)
        out["flush_s_median"] = statistics.median(r["flush_s"] for r in runs)
    rep = [r["reported"]["msgs_per_s"] for r in runs if r.get("reported")]
    if rep:
        out["self_reported_msgs_per_s_median"] = statistics.median(rep)
    return out


def measure(
    name: str,
    sides: dict[str, Callable[[str], Result]],
    topics: Topics,
    records: int,
    repeat: int,
    verify: Callable[[str, str], None] | None = None,
) -> dict[str, list[Result]]:
    """Runs every side `repeat` times, interleaved, each run into a fresh topic."""
    runs: dict[str, list[Result]] = {s: [] for s in sides}
    for i in range(repeat):
        for side, fn in sides.items():
            topic = topics.new(name)
            r = fn(topic)
            check_count(topics.bs, topic, records)
            if i == 0 and verify is not None:
                verify(side, topic)
            log(
                f"{name:<6} {side:<20} run {i + 1}: {r['wall_s']:.2f}s cpu {r['cpu_s']:.2f}s"
                + (f" (reported {r['reported']['msgs_per_s']:,} msgs/s)" if r.get("reported") else "")
            )
            runs[side].append(r)
    return runs


TLS_TARGET_VS_PLAINTEXT = 0.7
TLS_TARGET_VS_CONFLUENT = 10.0


def tls_workload(
    conns: dict[str, dict[str, str]],
    topics: Topics,
    jdata: dict[str, np.ndarray],
    records: int,
    repeat: int,
    props: dict[str, str],
) -> Result:
    """JSON rows on one SecureKafkaBroker, interleaved: kafka-ml over SASL_SSL, kafka-ml over
    PLAINTEXT, confluent-kafka over SASL_SSL. Every producer gets `props` (the parity properties)
    on top of its connection's properties."""
    tls, plain = conns["tls"], conns["plaintext"]
    log("TLS warm-up ...")
    warm = {k: v[: min(records, 50_000)] for k, v in jdata.items()}
    kafka_ml_json(tls, topics.new("warmup"), warm, props)
    kafka_ml_json(plain, topics.new("warmup"), warm, props)
    confluent_json(tls, topics.new("warmup"), warm, props)

    sizes: dict[str, float] = {}

    def vjson(side: str, topic: str) -> None:
        sizes[side] = verify_json(topics.bs, topic, jdata)

    sides: dict[str, Callable[[str], Result]] = {
        "kafka-ml tls": lambda t: kafka_ml_json(tls, t, jdata, props),
        "kafka-ml plaintext": lambda t: kafka_ml_json(plain, t, jdata, props),
        "confluent-kafka tls": lambda t: confluent_json(tls, t, jdata, props),
    }
    runs = measure("tls", sides, topics, records, repeat, vjson)
    km = summarize(runs["kafka-ml tls"], records)
    kp = summarize(runs["kafka-ml plaintext"], records)
    cf = summarize(runs["confluent-kafka tls"], records)
    return {
        "json": {
            "kafka_ml_tls": km,
            "kafka_ml_plaintext": kp,
            "confluent_kafka_tls": cf,
            "message_bytes_mean": sizes,
            "ratio_tls_plaintext": km["rows_per_s"] / kp["rows_per_s"],
            "cpu_ratio_tls_plaintext": km["cpu_s_median"] / max(kp["cpu_s_median"], 1e-9),
            "target_tls_plaintext": TLS_TARGET_VS_PLAINTEXT,
            "ratio_vs_confluent": km["rows_per_s"] / cf["rows_per_s"],
            "cpu_ratio_vs_confluent": cf["cpu_s_median"] / max(km["cpu_s_median"], 1e-9),
            "target_vs_confluent": TLS_TARGET_VS_CONFLUENT,
        }
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000, help="rows per measurement")
    ap.add_argument("--quick", action="store_true", help="smoke run: 100k records, 1 repeat")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per producer (median reported)")
    ap.add_argument(
        "-X",
        dest="props",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="librdkafka producer property given to every producer (all sides)",
    )
    ap.add_argument("--skip-rdkafka", action="store_true", help="skip the rdkafka_performance baseline")
    ap.add_argument(
        "--tls",
        action="store_true",
        help="run on a secured broker (kafka/secure_launcher.py) and add the TLS workload: kafka-ml over "
        "SASL_SSL (SCRAM-SHA-512) vs kafka-ml over PLAINTEXT vs confluent-kafka over SASL_SSL",
    )
    ap.add_argument("--tls-only", action="store_true", help="--tls, without the other workloads")
    ap.add_argument("--registry-records", type=int, default=1_000_000, help="rows of each registry workload")
    ap.add_argument("--skip-registry", action="store_true", help="skip the avro (registry) workload")
    ap.add_argument("--registry-only", action="store_true", help="only the avro (registry) workload")
    ap.add_argument("--output", type=Path, default=None, help="JSON result path")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target ratio is missed")
    a = ap.parse_args()
    if a.quick:
        a.records, a.repeat = 100_000, 1
    a.tls = a.tls or a.tls_only
    props = {**PARITY_PROPS, **dict(p.split("=", 1) for p in a.props)}
    records = a.records

    wait_for_kafka_ml()
    perf_bin = None if a.skip_rdkafka or a.tls_only else build_rdkafka_performance()
    if perf_bin:
        log(f"rdkafka_performance: {perf_bin}")
    has_aio = not a.tls_only and aio_available()
    if not has_aio and not a.tls_only:
        log("async producer: not available (no kafka_ml.aio)")

    log(f"generating {records:,} rows ...")
    jdata = json_data(records)
    tdata = tensor_data(records) if not a.tls_only else np.empty((0, DIM_TENSOR), dtype=np.float32)

    machine = machine_info(perf_bin)  # imports kafka_ml: fail before starting a broker
    import confluent_kafka

    machine["confluent_kafka"] = confluent_kafka.__version__
    result: Result = {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine,
        "params": {
            "records": records,
            "repeat": a.repeat,
            "partitions": 1,
            "producer_props": props,
            "poll_every": POLL_EVERY,
            "tensor_record_bytes": DIM_TENSOR * 4,
        },
    }
    t_start = time.perf_counter()
    bs, broker = start_broker(secure=a.tls)
    if broker is not None and broker.proc is not None:
        watch_broker(broker.proc, broker.log_path)
    log(f"broker at {bs}")
    result["params"]["external_broker"] = broker is None
    result["params"]["broker_kind"] = type(broker).__name__ if broker is not None else "external"
    try:
        topics = Topics(bs)
        conns = tls_client_configs(broker) if a.tls else None
        if conns is not None:
            result["params"]["tls_client_props"] = redacted(conns["tls"])
            result["params"]["plaintext_client_props"] = conns["plaintext"]
        if not a.tls_only and not a.registry_only:
            plain_workloads(result, topics, jdata, tdata, records, a.repeat, props, perf_bin, has_aio)
        if not a.tls_only and not a.skip_registry:
            n = min(a.registry_records, records)
            result["avro"] = avro_workload(topics, {k: v[:n] for k, v in jdata.items()}, a.repeat, props)
        if conns is not None:
            result["tls"] = tls_workload(conns, topics, jdata, records, a.repeat, props)
    finally:
        if broker is not None:
            if broker.proc is not None:
                broker.proc._bench_stopping = True  # type: ignore[attr-defined]
            broker.stop()
    result["total_wall_s"] = time.perf_counter() - t_start

    print(render(result))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(result, indent=2, default=str)
    latest = "produce-tls-latest.json" if a.tls_only else "produce-latest.json"
    out = a.output or RESULTS_DIR / latest
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(payload)
    (RESULTS_DIR / f"produce-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(payload)
    print(f"\nresults written to {out}")

    if a.check:
        ok = True
        if "json" in result:
            ok = result["json"]["ratio"] >= 10.0 and result["tensor"].get("ratio", 1.0) >= 0.9
            ok = ok and result["async"].get("ratio", 1.0) >= 0.8
        if "avro" in result:
            v = result["avro"]
            ok = ok and min(v["ratio"], v["ratio_protobuf"]) >= v["target"]
        if "tls" in result:
            x = result["tls"]["json"]
            ok = ok and x["ratio_tls_plaintext"] >= x["target_tls_plaintext"]
            ok = ok and x["ratio_vs_confluent"] >= x["target_vs_confluent"]
        return 0 if ok else 1
    return 0


def avro_workload(topics: Topics, data: dict[str, np.ndarray], repeat: int, props: dict[str, str]) -> Result:
    """Workload 4: registry-framed Avro sends, kafka-ml vs confluent-kafka's AvroSerializer."""
    import registry_formats as rf

    n = len(data["id"])
    url, server = rf.start_registry()
    plain = {"bootstrap.servers": topics.bs}
    try:
        sides: dict[str, Callable[[str], Result]] = {
            "kafka-ml": lambda t: timed(lambda: rf.kafka_ml_avro_send(plain, url, t, data, props)),
            "confluent-kafka": lambda t: timed(
                lambda: rf.confluent_avro_send(plain, url, t, data, props, POLL_EVERY)
            ),
            "kafka-ml protobuf": lambda t: timed(
                lambda: rf.kafka_ml_protobuf_send(plain, url, t, data, props)
            ),
            "confluent protobuf": lambda t: timed(
                lambda: rf.confluent_protobuf_send(plain, url, t, data, props, POLL_EVERY)
            ),
        }
        warm = {k: v[: min(n, 20_000)] for k, v in data.items()}
        rf.kafka_ml_avro_send(plain, url, topics.new("warmup"), warm, props)
        rf.confluent_avro_send(plain, url, topics.new("warmup"), warm, props, POLL_EVERY)
        rf.kafka_ml_protobuf_send(plain, url, topics.new("warmup"), warm, props)
        rf.confluent_protobuf_send(plain, url, topics.new("warmup"), warm, props, POLL_EVERY)
        runs = measure("avro", sides, topics, n, repeat)
        w: Result = {
            "records": n,
            "registry": "external" if server is None else "Apicurio Registry 3.0.9 (local)",
            "kafka_ml": summarize(runs["kafka-ml"], n),
            "confluent_kafka": summarize(runs["confluent-kafka"], n),
            "kafka_ml_protobuf": summarize(runs["kafka-ml protobuf"], n),
            "confluent_protobuf": summarize(runs["confluent protobuf"], n),
            "target": 10.0,
        }
        for km, cf, suffix in (
            ("kafka_ml", "confluent_kafka", ""),
            ("kafka_ml_protobuf", "confluent_protobuf", "_protobuf"),
        ):
            w[f"ratio{suffix}"] = w[km]["rows_per_s"] / w[cf]["rows_per_s"]
            w[f"cpu_ratio{suffix}"] = w[cf]["cpu_s_median"] / max(w[km]["cpu_s_median"], 1e-9)
        return w
    finally:
        if server is not None:
            server.stop()


def plain_workloads(
    result: Result,
    topics: Topics,
    jdata: dict[str, np.ndarray],
    tdata: np.ndarray,
    records: int,
    repeat: int,
    props: dict[str, str],
    perf_bin: str | None,
    has_aio: bool,
) -> None:
    """Workloads 1-3 (JSON, async JSON, tensor) over PLAINTEXT; they fill `result`."""
    bs = topics.bs
    plain = {"bootstrap.servers": bs}
    # warm-up (broker, page cache, imports, allocator), not timed
    log("warm-up ...")
    warm = min(records, 50_000)
    wj = {k: v[:warm] for k, v in jdata.items()}
    kafka_ml_json(plain, topics.new("warmup"), wj, props)
    confluent_json(plain, topics.new("warmup"), wj, props)
    kafka_ml_tensor(plain, topics.new("warmup"), tdata[:warm], props)
    if perf_bin:
        rdkafka_perf_tensor(perf_bin, bs, topics.new("warmup"), warm, props)

    # workload 1: JSON
    sizes: dict[str, float] = {}

    def vjson(side: str, topic: str) -> None:
        sizes[side] = verify_json(bs, topic, jdata)

    sides: dict[str, Callable[[str], Result]] = {
        "kafka-ml": lambda t: kafka_ml_json(plain, t, jdata, props),
        "confluent-kafka": lambda t: confluent_json(plain, t, jdata, props),
    }
    if has_aio:
        sides["kafka-ml aio"] = lambda t: kafka_ml_aio_json(plain, t, jdata, props)
    runs = measure("json", sides, topics, records, repeat, vjson)
    w1: Result = {
        "kafka_ml": summarize(runs["kafka-ml"], records),
        "confluent_kafka": summarize(runs["confluent-kafka"], records),
        "target": 10.0,
        "message_bytes_mean": sizes,
    }
    w1["ratio"] = w1["kafka_ml"]["rows_per_s"] / w1["confluent_kafka"]["rows_per_s"]
    w1["cpu_ratio"] = w1["confluent_kafka"]["cpu_s_median"] / max(w1["kafka_ml"]["cpu_s_median"], 1e-9)
    result["json"] = w1
    if has_aio:
        w3: Result = {"kafka_ml_aio": summarize(runs["kafka-ml aio"], records), "target": 0.8}
        w3["ratio"] = w3["kafka_ml_aio"]["rows_per_s"] / w1["kafka_ml"]["rows_per_s"]
        result["async"] = w3
    else:
        result["async"] = {"available": False}

    # workload 2: tensor
    sides = {"kafka-ml": lambda t: kafka_ml_tensor(plain, t, tdata, props)}
    if perf_bin:
        binary = perf_bin
        sides["rdkafka_performance"] = lambda t: rdkafka_perf_tensor(binary, bs, t, records, props)

    def vtensor(side: str, topic: str) -> None:
        if side == "kafka-ml":
            verify_tensor(bs, topic, tdata)

    runs = measure("tensor", sides, topics, records, repeat, vtensor)
    w2: Result = {"kafka_ml": summarize(runs["kafka-ml"], records), "target": 0.9}
    if perf_bin:
        rp = summarize(runs["rdkafka_performance"], records)
        rp["cmd"] = " ".join(runs["rdkafka_performance"][0]["cmd"])
        w2["rdkafka_performance"] = rp
        w2["ratio"] = w2["kafka_ml"]["rows_per_s"] / rp["rows_per_s"]
        w2["ratio_steady_state"] = (
            w2["kafka_ml"]["send_flush_rows_per_s"] / rp["self_reported_msgs_per_s_median"]
        )
        w2["cpu_ratio"] = w2["kafka_ml"]["cpu_s_median"] / max(rp["cpu_s_median"], 1e-9)
    result["tensor"] = w2


def render(r: Result) -> str:
    m, p = r["machine"], r["params"]
    props = " ".join(f"{k}={v}" for k, v in p["producer_props"].items())
    load = m.get("loadavg_at_start")
    lines = [
        "kafka-ml producer benchmark",
        f"  machine : {m['nproc']} CPUs ({m['cpu_model']}), {(m['mem_total_bytes'] or 0) / 2**30:.1f} GiB, "
        f"{m['platform']}" + (f", load average at start {load[0]:.2f}" if load else ""),
        f"  software: python {m['python']}, numpy {m['numpy']}, kafka-ml {m['kafka_ml']} "
        f"(librdkafka {m['kafka_ml_librdkafka']}), confluent-kafka {m['confluent_kafka']} "
        f"(librdkafka {m['confluent_kafka_librdkafka']}), broker {m['broker']} ({p.get('broker_kind')})",
        f"  params  : {p['records']:,} rows per run, median of {p['repeat']} run(s), each run into a fresh "
        f"1-partition topic; json {{id int64, x float32x{DIM_JSON}, y int32}}, "
        f"tensor float32x{DIM_TENSOR} ({p['tensor_record_bytes']} B)",
        f"  props   : (every producer) {props}",
        "  note    : the broker shares this machine's CPUs with the producers; wall time includes "
        "creating the producer (process start for rdkafka_performance) up to the last delivery",
        "",
        f"{'workload':<8} {'producer':<44} {'rows/s':>12} {'wall s':>8} {'CPU s':>7} {'CPU s/1M msg':>13}",
        "-" * 96,
    ]

    def row(w: str, name: str, s: Result) -> str:
        return (
            f"{w:<8} {name:<44} {s['rows_per_s']:>12,.0f} {s['wall_s_median']:>8.3f} "
            f"{s['cpu_s_median']:>7.2f} {s['cpu_s_per_million']:>13.2f}"
        )

    ok = lambda v, tgt: "OK" if v >= tgt else "MISSED"  # noqa: E731
    ratios: list[str] = []
    if "json" in r:
        j, t, aio = r["json"], r["tensor"], r["async"]
        lines.append(row("json", "kafka-ml Producer.send(json)", j["kafka_ml"]))
        lines.append(row("json", "confluent-kafka json.dumps+produce", j["confluent_kafka"]))
        if "kafka_ml_aio" in aio:
            lines.append(row("json", "kafka-ml aio Producer.send(json)", aio["kafka_ml_aio"]))
        lines.append(row("tensor", "kafka-ml Producer.send(array)", t["kafka_ml"]))
        if "rdkafka_performance" in t:
            lines.append(row("tensor", "rdkafka_performance -P (C)", t["rdkafka_performance"]))
        sizes = j["message_bytes_mean"]
        ratios.append(
            f"json   speed-up kafka-ml / confluent-kafka  : {j['ratio']:6.2f}x  "
            f"(target >= {j['target']:.0f}x: {ok(j['ratio'], j['target'])}); "
            f"CPU per message {j['cpu_ratio']:.2f}x less"
        )
        ratios.append(
            "  mean message bytes: "
            + ", ".join(f"{k} {v:.0f}" for k, v in sizes.items())
            + " (json.dumps writes float32 values as 17-digit doubles)"
        )
        if "ratio" in aio:
            ratios.append(
                f"async  ratio    kafka-ml aio / sync         : {aio['ratio']:6.2f}x  "
                f"(target >= {aio['target']}x: {ok(aio['ratio'], aio['target'])})"
            )
        else:
            ratios.append("async producer: not available")
        if "ratio" in t:
            rp = t["rdkafka_performance"]
            ratios.append(
                f"tensor ratio    kafka-ml / rdkafka_performance: {t['ratio']:6.2f}x  "
                f"(target >= {t['target']}x: {ok(t['ratio'], t['target'])}); "
                f"CPU per message {t['cpu_ratio']:.2f}x of the C client's"
            )
            steady = t["kafka_ml"]["send_flush_rows_per_s"]
            ratios.append(
                f"  steady state (first send to last delivery): kafka-ml {steady:,.0f}"
                f" rows/s vs rdkafka_performance self-reported {rp['self_reported_msgs_per_s_median']:,.0f} "
                f"msgs/s = {t['ratio_steady_state']:.2f}x"
            )
            ratios.append(f"  baseline: {rp['cmd']}")
        else:
            ratios.append(
                "tensor ratio    kafka-ml / rdkafka_performance: n/a (baseline skipped or not built)"
            )
        for name, s in (("json", j["kafka_ml"]), ("tensor", t["kafka_ml"])):
            ratios.append(
                f"  kafka-ml {name:<6} send() {s['send_s_median']:.3f}s + flush() {s['flush_s_median']:.3f}s "
                f"(median)"
            )
    if "avro" in r:
        v = r["avro"]
        lines.append(row("avro", "kafka-ml Producer.send(avro, registry)", v["kafka_ml"]))
        lines.append(row("avro", "confluent-kafka AvroSerializer+produce", v["confluent_kafka"]))
        lines.append(row("protobuf", "kafka-ml Producer.send(protobuf, registry)", v["kafka_ml_protobuf"]))
        lines.append(row("protobuf", "confluent-kafka ProtobufSerializer+produce", v["confluent_protobuf"]))
        for label, suffix in (("avro    ", ""), ("protobuf", "_protobuf")):
            ratio = v[f"ratio{suffix}"]
            ratios.append(
                f"{label} speed-up kafka-ml / confluent-kafka: {ratio:6.2f}x  "
                f"(target >= {v['target']:.0f}x: {ok(ratio, v['target'])}); "
                f"CPU per message {v[f'cpu_ratio{suffix}']:.2f}x less"
            )
        ratios.append(f"  {v['records']:,} rows, registry: {v['registry']}")
    if "tls" in r:
        x = r["tls"]["json"]
        if "json" in r:
            lines.append("")
        lines.append(row("tls json", "kafka-ml Producer.send(json) SASL_SSL", x["kafka_ml_tls"]))
        lines.append(row("tls json", "kafka-ml Producer.send(json) PLAINTEXT", x["kafka_ml_plaintext"]))
        lines.append(row("tls json", "confluent-kafka json.dumps+produce SASL_SSL", x["confluent_kafka_tls"]))
        if ratios:
            ratios.append("")
        ratios += [
            "TLS: SASL_SSL = SCRAM-SHA-512 over TLS (user alice, broker verified against the session CA); "
            "PLAINTEXT = the same broker's plaintext listener",
            f"tls json kafka-ml SASL_SSL / kafka-ml PLAINTEXT     : {x['ratio_tls_plaintext']:6.2f}x  "
            f"(target >= {x['target_tls_plaintext']}x: "
            f"{ok(x['ratio_tls_plaintext'], x['target_tls_plaintext'])}); "
            f"CPU per message {x['cpu_ratio_tls_plaintext']:.2f}x of PLAINTEXT's",
            f"tls json kafka-ml SASL_SSL / confluent-kafka SASL_SSL: {x['ratio_vs_confluent']:6.2f}x  "
            f"(target >= {x['target_vs_confluent']:.0f}x: "
            f"{ok(x['ratio_vs_confluent'], x['target_vs_confluent'])}); "
            f"CPU per message {x['cpu_ratio_vs_confluent']:.2f}x less",
            f"  kafka-ml SASL_SSL send() {x['kafka_ml_tls']['send_s_median']:.3f}s + flush() "
            f"{x['kafka_ml_tls']['flush_s_median']:.3f}s (median)",
        ]
    lines.append("")
    lines += ratios
    lines.append(f"\ntotal wall time {r['total_wall_s']:.0f}s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
