#!/usr/bin/env python
"""Consumer throughput benchmark of kafka-ml against baselines measured in the same run.

One run starts a real Apache Kafka broker (``kafka/launcher.py``; or uses
``$KAFKA_BOOTSTRAP_SERVERS``), loads two topics and reports:

1. ``json``: 200-byte JSON feature records ``{"id", "x": [16 floats], "y"}`` read into NumPy
   by ``KafkaDataset(format="json")`` vs confluent-kafka-python (``consume(10000)`` +
   ``json.loads`` per message + ``np.array`` per chunk). Target: >= 10x rows/s.
2. ``tensor``: raw float32x64 rows read by ``KafkaDataset(format="tensor")`` vs librdkafka's
   own C client ``rdkafka_performance -C`` (built by ``bench/build_rdkafka_performance.sh``).
   Target: >= 0.8x msgs/s.
3. ``rss``: peak RSS of a child process reading the tensor topic for 1 pass and for
   ``--rss-passes`` passes with a bounded ``queue_bytes`` (should be flat).
4. ``avro``: the JSON workload's records registry-framed (Confluent wire format; the schema in
   a real Schema Registry, ``bench/registry_formats.py``) as Avro and as Protobuf,
   ``--registry-records`` of each, read by ``KafkaDataset(format=..., schema_registry=url)`` vs
   confluent-kafka (``consume`` + ``AvroDeserializer`` / ``ProtobufDeserializer`` +
   ``np.array``), and the same records as JSON by ``KafkaDataset(format="json")``, interleaved.
   Targets: >= 30x confluent-kafka for both, and Avro rows/s >= JSON rows/s.
   ``--registry-only`` runs just this one.
5. ``tls`` (only with ``--tls`` or ``--tls-only``): the run uses a secured broker
   (``kafka/secure_launcher.py``, whose PLAINTEXT listener serves workloads 1-3) and reads the same
   topics, interleaved: JSON by ``KafkaDataset(format="json")`` over its SASL_SSL listener
   (SCRAM-SHA-512 over TLS), by ``KafkaDataset`` over its PLAINTEXT listener and by the
   confluent-kafka loop of workload 1 over the same SASL_SSL listener; tensors by
   ``KafkaDataset(format="tensor")`` over SASL_SSL and PLAINTEXT. Targets: kafka-ml SASL_SSL /
   PLAINTEXT >= 0.7x, kafka-ml / confluent-kafka over SASL_SSL >= 10x (JSON). Not part of
   ``make bench``: it adds a broker with TLS and five more confluent-kafka passes.

Both consumers of each comparison get the same librdkafka consumer properties (``PARITY_PROPS``,
plus whatever ``-X key=value`` adds, applied to every side; over SASL_SSL, plus the listener's
``security.protocol``, ``sasl.*`` and ``ssl.ca.location`` properties, as they are). CPU is
measured with ``getrusage``: ``RUSAGE_SELF`` deltas for the in-process consumers (kafka-ml's
background thread is in-process), ``RUSAGE_CHILDREN`` deltas for ``rdkafka_performance``.

    python bench/consume_bench.py --quick          # 100k records, smoke run
    python bench/consume_bench.py                  # 1M records
    python bench/consume_bench.py --tls-only       # 1M records, only the TLS workload

Prints a table and writes ``bench/results/consume-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

# The helpers every benchmark shares (bench/common.py).
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
JSON_SCHEMA = {"id": "int64", "x": ("float32", DIM_JSON), "y": "int64"}
MiB = 1 << 20
# Fetch/queue properties given explicitly to EVERY consumer (kafka-ml, confluent-kafka,
# rdkafka_performance); `-X key=value` overrides them for all sides alike. They are librdkafka's
# defaults except fetch.queue.backoff.ms, which kafka-ml lowers to 10 ms by default: with
# librdkafka's 1 s a consumer that drains the prefetch queue faster than the broker refills it
# waits a whole second before the next fetch (every side stalled ~0.7 s a few times per run).
# Giving the baselines the same value keeps the comparison about decoding, not about back-off.
PARITY_PROPS = {
    "queued.min.messages": "100000",
    "queued.max.messages.kbytes": "65536",
    "fetch.queue.backoff.ms": "10",
    "fetch.max.bytes": "52428800",
    "fetch.message.max.bytes": "1048576",
    "fetch.wait.max.ms": "500",
    "fetch.min.bytes": "1",
}


# -- data ------------------------------------------------------------------------------------


def json_records(n: int, seed: int = 0) -> tuple[list[bytes], float]:
    """n JSON records of ~200 bytes; x vectors are drawn from a pool (decode cost is the same)."""
    rng = np.random.default_rng(seed)
    pool_n = min(n, 20_000)
    xs = rng.uniform(-1.0, 1.0, size=(pool_n, DIM_JSON))
    pool = ["[" + ", ".join(f"{v:.7f}" for v in row) + "]" for row in xs]
    ys = rng.integers(0, 10, size=n)
    out = [f'{{"id": {i}, "x": {pool[i % pool_n]}, "y": {int(ys[i])}}}'.encode() for i in range(n)]
    mean = sum(len(r) for r in out[: min(n, 10_000)]) / min(n, 10_000)
    return out, mean


def load_json_topic(bs: str, topic: str, records: int) -> float:
    from confluent_kafka import Producer

    recs, mean = json_records(records)
    p = Producer(
        {
            "bootstrap.servers": bs,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "compression.type": "none",
            "acks": "1",
        }
    )
    for r in recs:
        while True:
            try:
                p.produce(topic, r)
                break
            except BufferError:
                p.poll(0.05)
    left = p.flush(120)
    if left:
        raise RuntimeError(f"json load: {left} messages not delivered")
    del p
    return mean


def load_tensor_topic(bs: str, topic: str, records: int) -> None:
    import kafka_ml

    rng = np.random.default_rng(1)
    chunk = rng.standard_normal((min(records, 100_000), DIM_TENSOR), dtype=np.float32)
    p = kafka_ml.Producer({"bootstrap.servers": bs, "linger.ms": 20, "batch.size": 1_000_000})
    sent = 0
    while sent < records:
        k = min(len(chunk), records - sent)
        p.send(topic, chunk[:k], partition=0)
        sent += k
    p.flush(120)
    del p


# -- workload 1: JSON ------------------------------------------------------------------------


def kafka_ml_json(
    conn: dict[str, str], topic: str, records: int, batch: int, extra: dict[str, str]
) -> dict[str, Any]:
    """`conn`: bootstrap.servers plus any security properties (given as they are)."""
    import kafka_ml

    gc.collect()
    c0, t0 = cpu_self(), time.perf_counter()
    ds = kafka_ml.KafkaDataset(
        topic,
        {**conn, **extra},
        format="json",
        schema=JSON_SCHEMA,
        start="earliest",
        end="latest",
        batch_size=batch,
    )
    t_open = time.perf_counter()
    rows = 0
    checksum = 0
    t_first = None
    for b in ds:
        cols = b.to_numpy()
        x, ids, y = cols["x"], cols["id"], cols["y"]
        if t_first is None:
            t_first, first_rows = time.perf_counter(), x.shape[0]
        rows += x.shape[0]
        checksum += int(ids.sum()) + int(y.sum())
    t_last = time.perf_counter()
    ds.close()
    t1, c1 = time.perf_counter(), cpu_self()
    assert x.shape[1] == DIM_JSON and x.dtype == np.float32, (x.shape, x.dtype)
    return {
        "rows": rows,
        "wall_s": t1 - t0,
        "cpu_s": c1 - c0,
        "checksum": checksum,
        **phases(t0, t_open, t_first, t_last, rows, first_rows),
    }


def phases(
    t0: float, t_open: float, t_first: float, t_last: float, rows: int, first_rows: int
) -> dict[str, Any]:
    """Where a run's wall time went: ``open_s`` creating the consumer (kafka-ml: the dataset, with
    its metadata and watermark look-ups; confluent-kafka: Consumer + list_topics + assign),
    ``first_batch_s`` from the start to the first batch (connections, TLS handshakes, SASL, the
    first fetch), and the rate from the first batch to the last."""
    stream = (rows - first_rows) / (t_last - t_first) if t_last > t_first else None
    return {"open_s": t_open - t0, "first_batch_s": t_first - t0, "stream_rows_per_s": stream}


def confluent_json(
    conn: dict[str, str], topic: str, records: int, batch: int, extra: dict[str, str]
) -> dict[str, Any]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    gc.collect()
    c0, t0 = cpu_self(), time.perf_counter()
    c = Consumer(
        {
            **conn,
            "group.id": f"bench-confluent-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            **extra,
        }
    )
    md = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
    t_open = time.perf_counter()
    rows = 0
    checksum = 0
    t_first = None
    loads = json.loads
    while rows < records:
        msgs = c.consume(batch, timeout=1.0)
        if not msgs:
            continue
        ids, xs, ys = [], [], []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(str(err))
            d = loads(m.value())
            ids.append(d["id"])
            xs.append(d["x"])
            ys.append(d["y"])
        if not xs:
            continue
        x = np.array(xs, dtype=np.float32)
        idarr = np.array(ids, dtype=np.int64)
        yarr = np.array(ys, dtype=np.int64)
        if t_first is None:
            t_first, first_rows = time.perf_counter(), x.shape[0]
        rows += x.shape[0]
        checksum += int(idarr.sum()) + int(yarr.sum())
    t_last = time.perf_counter()
    c.close()
    t1, c1 = time.perf_counter(), cpu_self()
    assert x.shape[1] == DIM_JSON
    return {
        "rows": rows,
        "wall_s": t1 - t0,
        "cpu_s": c1 - c0,
        "checksum": checksum,
        **phases(t0, t_open, t_first, t_last, rows, first_rows),
    }


# -- workload 2: tensor ----------------------------------------------------------------------


def kafka_ml_tensor(
    conn: dict[str, str], topic: str, records: int, batch: int, extra: dict[str, str]
) -> dict[str, Any]:
    import kafka_ml

    gc.collect()
    c0, t0 = cpu_self(), time.perf_counter()
    ds = kafka_ml.KafkaDataset(
        topic,
        {**conn, **extra},
        format="tensor",
        dtype="float32",
        shape=DIM_TENSOR,
        start="earliest",
        end="latest",
        batch_size=batch,
    )
    t_open = time.perf_counter()
    rows = 0
    t_first = None
    for b in ds:
        v = b.to_numpy()["value"]
        if t_first is None:
            t_first = time.perf_counter()
            first_rows = v.shape[0]
        rows += v.shape[0]
    t_last = time.perf_counter()
    ds.close()
    t1, c1 = time.perf_counter(), cpu_self()
    assert v.shape[1] == DIM_TENSOR and v.dtype == np.float32, (v.shape, v.dtype)
    # stream_rows_per_s, the steady-state rate from the first batch to the last, is comparable to
    # rdkafka_performance's self-reported rate (which starts its clock at its first message)
    return {
        "rows": rows,
        "wall_s": t1 - t0,
        "cpu_s": c1 - c0,
        **phases(t0, t_open, t_first, t_last, rows, first_rows),
    }


_PERF_RE = re.compile(r"(\d+) messages \((\d+) bytes\) consumed in (\d+)ms: (\d+) msgs/s")


def rdkafka_perf_tensor(
    binary: str, bs: str, topic: str, records: int, extra: dict[str, str]
) -> dict[str, Any]:
    cmd = [binary, "-C", "-t", topic, "-p", "0", "-b", bs, "-c", str(records), "-o", "beginning", "-q"]
    for k, v in extra.items():
        cmd += ["-X", f"{k}={v}"]
    c0, t0 = cpu_children(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    t1, c1 = time.perf_counter(), cpu_children()
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"rdkafka_performance failed ({proc.returncode}):\n{out[-3000:]}")
    found = _PERF_RE.findall(out)
    reported = None
    rows = records
    if found:
        n, _b, ms, rate = found[-1]
        rows = int(n)
        reported = {"msgs": int(n), "ms": int(ms), "msgs_per_s": int(rate)}
    return {"rows": rows, "wall_s": t1 - t0, "cpu_s": c1 - c0, "reported": reported, "cmd": cmd}


# -- workload 3: RSS (child process) ---------------------------------------------------------


def rss_child(args: dict[str, Any]) -> None:
    """Runs in a child process: read the tensor topic `passes` times, report peak RSS."""
    import kafka_ml

    def maxrss() -> int:
        # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork+exec, so a child
        # of a big parent would report the parent's peak. VmHWM belongs to this process image.
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc/self/status")

    def cur_rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    out: dict[str, Any] = {"rss_before_bytes": cur_rss(), "maxrss_before_bytes": maxrss()}
    ds = kafka_ml.KafkaDataset(
        args["topic"],
        {"bootstrap.servers": args["bs"], **args["extra"]},
        format="tensor",
        dtype="float32",
        shape=DIM_TENSOR,
        start="earliest",
        end="latest",
        batch_size=args["batch"],
        queue_bytes=args["queue_bytes"],
    )
    passes = []
    total = 0
    t0 = time.perf_counter()
    for i in range(args["passes"]):
        rows = 0
        max_queued = 0
        for b in ds:
            rows += b.to_numpy()["value"].shape[0]
            q = ds.stats.get("queued_bytes", 0)
            max_queued = max(max_queued, q)
            if args.get("slow_s"):
                time.sleep(args["slow_s"])
        total += rows
        passes.append(
            {
                "pass": i + 1,
                "rows": rows,
                "maxrss_bytes": maxrss(),
                "rss_bytes": cur_rss(),
                "max_queued_bytes": max_queued,
            }
        )
    ds.close()
    out.update(
        passes=passes,
        total_rows=total,
        wall_s=time.perf_counter() - t0,
        maxrss_bytes=maxrss(),
        rss_end_bytes=cur_rss(),
    )
    print("RSS_RESULT " + json.dumps(out), flush=True)


def run_rss(
    bs: str, topic: str, passes: int, batch: int, queue_bytes: int, extra: dict[str, str]
) -> dict[str, Any]:
    payload = json.dumps(
        {
            "bs": bs,
            "topic": topic,
            "passes": passes,
            "batch": batch,
            "queue_bytes": queue_bytes,
            "extra": extra,
        }
    )
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--_rss-child", payload],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RSS_RESULT "):
            return json.loads(line[len("RSS_RESULT ") :])
    raise RuntimeError(f"rss child failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


# -- workload 4: TLS (SASL_SSL) on the secured broker ------------------------------------------

TLS_TARGET_VS_PLAINTEXT = 0.7
TLS_TARGET_VS_CONFLUENT = 10.0


def tls_workload(
    conns: dict[str, dict[str, str]],
    jtopic: str,
    ttopic: str,
    records: int,
    repeat: int,
    batch: int,
    extra: dict[str, str],
) -> dict[str, Any]:
    """On one SecureKafkaBroker, interleaved: JSON by kafka-ml over SASL_SSL, kafka-ml over
    PLAINTEXT and confluent-kafka over SASL_SSL; tensors by kafka-ml over SASL_SSL and PLAINTEXT.
    Every consumer gets `extra` (the parity properties) on top of its connection's properties."""
    tls, plain = conns["tls"], conns["plaintext"]
    log("TLS warm-up ...")
    for conn in (tls, plain):
        kafka_ml_json(conn, jtopic, records, batch, extra)
        kafka_ml_tensor(conn, ttopic, records, batch, extra)
    workloads: dict[str, tuple[str, dict[str, tuple[Any, dict[str, str]]]]] = {
        "json": (
            jtopic,
            {
                "kafka_ml_tls": (kafka_ml_json, tls),
                "kafka_ml_plaintext": (kafka_ml_json, plain),
                "confluent_kafka_tls": (confluent_json, tls),
            },
        ),
        "tensor": (
            ttopic,
            {"kafka_ml_tls": (kafka_ml_tensor, tls), "kafka_ml_plaintext": (kafka_ml_tensor, plain)},
        ),
    }
    out: dict[str, Any] = {}
    for name, (topic, sides) in workloads.items():
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        for i in range(repeat):
            for side, (fn, conn) in sides.items():
                r = fn(conn, topic, records, batch, extra)
                log(f"tls {name:<6} {side:<20} run {i + 1}: {r['wall_s']:.2f}s cpu {r['cpu_s']:.2f}s")
                runs[side].append(r)
        for side, rs in runs.items():
            for r in rs:
                if r["rows"] != records:
                    raise RuntimeError(f"tls {name} {side}: read {r['rows']} rows, expected {records}")
        sums = {r["checksum"] for rs in runs.values() for r in rs if "checksum" in r}
        if len(sums) > 1:
            log(f"WARNING: tls {name} checksums differ between consumers: {sorted(sums)}")
        w: dict[str, Any] = {side: summarize(rs, records) for side, rs in runs.items()}
        km, kp = w["kafka_ml_tls"], w["kafka_ml_plaintext"]
        w["ratio_tls_plaintext"] = km["rows_per_s"] / kp["rows_per_s"]
        w["cpu_ratio_tls_plaintext"] = km["cpu_s_median"] / max(kp["cpu_s_median"], 1e-9)
        w["target_tls_plaintext"] = TLS_TARGET_VS_PLAINTEXT
        for side, rs in runs.items():
            for key in ("open_s", "first_batch_s", "stream_rows_per_s"):
                vals = [r[key] for r in rs if r.get(key) is not None]
                w[side][f"{key}_median"] = statistics.median(vals) if vals else None
        stream = {side: w[side]["stream_rows_per_s_median"] for side in runs}
        if stream["kafka_ml_tls"] and stream["kafka_ml_plaintext"]:
            # first batch to last: without connecting (TLS handshake, SASL) and the first fetch
            w["ratio_tls_plaintext_steady_state"] = stream["kafka_ml_tls"] / stream["kafka_ml_plaintext"]
        if "confluent_kafka_tls" in w:
            cf = w["confluent_kafka_tls"]
            w["ratio_vs_confluent"] = km["rows_per_s"] / cf["rows_per_s"]
            w["cpu_ratio_vs_confluent"] = cf["cpu_s_median"] / max(km["cpu_s_median"], 1e-9)
            w["target_vs_confluent"] = TLS_TARGET_VS_CONFLUENT
        out[name] = w
    return out


def tls_targets_met(t: dict[str, Any]) -> bool:
    return all(
        w["ratio_tls_plaintext"] >= w["target_tls_plaintext"]
        and w.get("ratio_vs_confluent", 1e9) >= w.get("target_vs_confluent", 0)
        for w in t.values()
    )


# -- main ------------------------------------------------------------------------------------


def summarize(runs: list[dict[str, Any]], records: int) -> dict[str, Any]:
    walls = [r["wall_s"] for r in runs]
    cpus = [r["cpu_s"] for r in runs]
    med_wall = statistics.median(walls)
    med_cpu = statistics.median(cpus)
    return {
        "runs": runs,
        "rows": runs[0]["rows"],
        "wall_s_median": med_wall,
        "wall_s_min": min(walls),
        "rows_per_s": records / med_wall,
        "rows_per_s_best": records / min(walls),
        "cpu_s_median": med_cpu,
        "cpu_s_per_million": med_cpu / records * 1e6,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000, help="records per topic")
    ap.add_argument("--quick", action="store_true", help="smoke run: 100k records, 1 repeat, 3 RSS passes")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per consumer (median reported)")
    ap.add_argument("--batch-size", type=int, default=10_000, help="rows per batch / consume() call")
    ap.add_argument("--json-partitions", type=int, default=1)
    ap.add_argument("--rss-passes", type=int, default=10, help="passes over the tensor topic for RSS")
    ap.add_argument("--queue-bytes", type=int, default=16 * MiB, help="KafkaDataset queue_bytes for RSS")
    ap.add_argument(
        "-X",
        dest="props",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="librdkafka consumer property given to every consumer (both sides)",
    )
    ap.add_argument("--skip-rdkafka", action="store_true", help="skip the rdkafka_performance baseline")
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument(
        "--tls",
        action="store_true",
        help="run on a secured broker (kafka/secure_launcher.py) and add the TLS workload: kafka-ml over "
        "SASL_SSL (SCRAM-SHA-512) vs kafka-ml over PLAINTEXT vs confluent-kafka over SASL_SSL",
    )
    ap.add_argument("--tls-only", action="store_true", help="--tls, without the other workloads")
    ap.add_argument("--registry-records", type=int, default=300_000, help="records of the avro workload")
    ap.add_argument("--skip-registry", action="store_true", help="skip the avro (registry) workload")
    ap.add_argument("--registry-only", action="store_true", help="only the avro (registry) workload")
    ap.add_argument("--output", type=Path, default=None, help="JSON result path")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target ratio is missed")
    ap.add_argument("--_rss-child", dest="rss_child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.rss_child:
        rss_child(json.loads(a.rss_child))
        return 0

    if a.quick:
        a.records = 100_000
        a.repeat = 1
        a.rss_passes = min(a.rss_passes, 3)
    a.tls = a.tls or a.tls_only
    extra = {**PARITY_PROPS, **dict(p.split("=", 1) for p in a.props)}
    records = a.records

    perf_bin = None if a.skip_rdkafka or a.tls_only else build_rdkafka_performance()
    if perf_bin:
        log(f"rdkafka_performance: {perf_bin}")

    t_start = time.perf_counter()
    bs, broker = start_broker(secure=a.tls)
    log(f"broker at {bs}")
    result: dict[str, Any] = {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(perf_bin),
        "params": {
            "records": records,
            "repeat": a.repeat,
            "batch_size": a.batch_size,
            "json_partitions": a.json_partitions,
            "tensor_partitions": 1,
            "rss_passes": a.rss_passes,
            "queue_bytes": a.queue_bytes,
            "consumer_props": extra,
            "external_broker": broker is None,
            "broker_kind": type(broker).__name__ if broker is not None else "external",
        },
    }
    try:
        conns = tls_client_configs(broker) if a.tls else None
        if conns is not None:
            result["params"]["tls_client_props"] = redacted(conns["tls"])
            result["params"]["plaintext_client_props"] = conns["plaintext"]
        plain = {"bootstrap.servers": bs}
        suffix = f"{os.getpid()}-{int(time.time())}"
        jtopic, ttopic = f"bench-json-{suffix}", f"bench-tensor-{suffix}"
        create_topic(bs, jtopic, a.json_partitions)
        create_topic(bs, ttopic, 1)

        if a.registry_only:
            result["avro"] = avro_workload(a, bs, plain, extra, perf_bin)
            return finish(a, result, t_start)
        t = time.perf_counter()
        mean = load_json_topic(bs, jtopic, records)
        log(f"loaded {records} JSON records (mean {mean:.0f} B) in {time.perf_counter() - t:.1f}s")
        t = time.perf_counter()
        load_tensor_topic(bs, ttopic, records)
        log(f"loaded {records} float32x{DIM_TENSOR} tensors in {time.perf_counter() - t:.1f}s")
        for topic in (jtopic, ttopic):
            n = total_messages(bs, topic)
            if n != records:
                raise RuntimeError(f"{topic}: {n} messages, expected {records}")
        result["params"]["json_record_bytes_mean"] = mean
        result["params"]["tensor_record_bytes"] = DIM_TENSOR * 4

        if not a.tls_only:
            plain_workloads(a, result, perf_bin, bs, plain, jtopic, ttopic, extra)
            if not a.skip_registry:
                result["avro"] = avro_workload(a, bs, plain, extra, perf_bin)
        if conns is not None:
            result["tls"] = tls_workload(conns, jtopic, ttopic, records, a.repeat, a.batch_size, extra)
    finally:
        if broker is not None:
            broker.stop()
    return finish(a, result, t_start)


def finish(a: argparse.Namespace, result: dict[str, Any], t_start: float) -> int:
    """Prints and writes the results; with ``--check``, whether every target was met."""
    result["total_wall_s"] = time.perf_counter() - t_start
    text = render(result)
    print(text)
    out = a.output or RESULTS_DIR / f"consume-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nresults written to {out}")

    if a.check:
        ok = True
        if "json" in result:
            ok = result["json"]["ratio"] >= 10.0 and result["tensor"].get("ratio", 1.0) >= 0.8
        if "tls" in result:
            ok = ok and tls_targets_met(result["tls"])
        if "avro" in result:
            v = result["avro"]
            ok = ok and min(v["avro"]["ratio"], v["protobuf"]["ratio"]) >= 30.0
            ok = ok and v["avro"]["ratio_vs_json"] >= 1.0
        return 0 if ok else 1
    return 0


FORMATS = ("avro", "protobuf")


def avro_workload(
    a: argparse.Namespace, bs: str, plain: dict[str, str], extra: dict[str, str], perf_bin: str | None
) -> dict[str, Any]:
    """Workload 4: registry-framed Avro and Protobuf vs confluent-kafka's deserializers, and vs
    kafka-ml JSON of the same records. The same run also reads each topic without decoding, with
    kafka-ml's ``raw`` format and with ``rdkafka_performance -C`` (the C client): the rate any
    client reaches here before it decodes anything, i.e. the ceiling of the ratio on this machine."""
    import registry_formats as rf

    n = a.registry_records if not a.quick else min(a.registry_records, 100_000)
    url, server = rf.start_registry()
    try:
        suffix = f"{os.getpid()}-{int(time.time())}"
        topics = {fmt: f"bench-{fmt}-{suffix}" for fmt in ("avro", "protobuf", "json")}
        for topic in topics.values():
            create_topic(bs, topic, 1)
        t = time.perf_counter()
        rf.load_topic("avro", bs, url, topics["avro"], n)
        rf.load_topic("protobuf", bs, url, topics["protobuf"], n)
        json_bytes = load_json_topic(bs, topics["json"], n)
        log(f"loaded {n} Avro, Protobuf and JSON records in {time.perf_counter() - t:.1f}s")
        for topic in topics.values():
            if total_messages(bs, topic) != n:
                raise RuntimeError(f"{topic}: expected {n} messages")
        for fmt in ("avro", "protobuf"):
            rf.kafka_ml_read(fmt, plain, url, topics[fmt], n, a.batch_size, extra)  # warm-up
        runs: dict[str, list[dict[str, Any]]] = {
            k: [] for k in ("json", *(side + fmt for side in ("", "cf_", "raw_", "c_") for fmt in FORMATS))
        }
        for i in range(a.repeat):
            for fmt in ("avro", "protobuf"):
                runs[fmt].append(rf.kafka_ml_read(fmt, plain, url, topics[fmt], n, a.batch_size, extra))
                rf.log_run(f"{fmt} kafka-ml", i, runs[fmt][-1])
            runs["json"].append(kafka_ml_json(plain, topics["json"], n, a.batch_size, extra))
            rf.log_run("json kafka-ml", i, runs["json"][-1])
            for fmt in ("avro", "protobuf"):
                runs[f"cf_{fmt}"].append(
                    rf.confluent_read(fmt, plain, url, topics[fmt], n, a.batch_size, extra)
                )
                rf.log_run(f"{fmt} confluent", i, runs[f"cf_{fmt}"][-1])
            for fmt in ("avro", "protobuf"):
                runs[f"raw_{fmt}"].append(rf.kafka_ml_raw(plain, topics[fmt], n, a.batch_size, extra))
                rf.log_run(f"{fmt} kafka-ml raw", i, runs[f"raw_{fmt}"][-1])
                if perf_bin:
                    runs[f"c_{fmt}"].append(rdkafka_perf_tensor(perf_bin, bs, topics[fmt], n, extra))
                    rf.log_run(f"{fmt} rdkafka_performance", i, runs[f"c_{fmt}"][-1])
        for side, rs in runs.items():
            for r in rs:
                if r["rows"] != n and not side.startswith("c_"):
                    raise RuntimeError(f"{side}: read {r['rows']} rows, expected {n}")
        for fmt in ("avro", "protobuf"):
            if runs[fmt][0]["checksum"] != runs[f"cf_{fmt}"][0]["checksum"]:
                raise RuntimeError(f"{fmt} checksums differ")
        w: dict[str, Any] = {
            "records": n,
            "json_record_bytes_mean": json_bytes,
            "registry": "external" if server is None else "Apicurio Registry 3.0.9 (local)",
            "kafka_ml_json": summarize(runs["json"], n),
            "target": 30.0,
        }
        for fmt in ("avro", "protobuf"):
            km, cf = summarize(runs[fmt], n), summarize(runs[f"cf_{fmt}"], n)
            w[fmt] = {
                "kafka_ml": km,
                "confluent_kafka": cf,
                "ratio": km["rows_per_s"] / cf["rows_per_s"],
                "cpu_ratio": cf["cpu_s_median"] / max(km["cpu_s_median"], 1e-9),
                "ratio_vs_json": km["rows_per_s"] / w["kafka_ml_json"]["rows_per_s"],
            }
            raw = summarize(runs[f"raw_{fmt}"], n)
            w[fmt]["kafka_ml_raw"] = raw
            w[fmt]["raw_ceiling_ratio"] = raw["rows_per_s"] / cf["rows_per_s"]
            if runs[f"c_{fmt}"]:
                c = summarize(runs[f"c_{fmt}"], n)
                w[fmt]["rdkafka_performance"] = c
                w[fmt]["c_ceiling_ratio"] = c["rows_per_s"] / cf["rows_per_s"]
                reported = [r["reported"]["msgs_per_s"] for r in runs[f"c_{fmt}"] if r["reported"]]
                if reported:
                    rep = statistics.median(reported)
                    c["self_reported_msgs_per_s_median"] = rep
                    w[fmt]["c_self_reported_ceiling_ratio"] = rep / cf["rows_per_s"]
        return w
    finally:
        if server is not None:
            server.stop()


def plain_workloads(
    a: argparse.Namespace,
    result: dict[str, Any],
    perf_bin: str | None,
    bs: str,
    plain: dict[str, str],
    jtopic: str,
    ttopic: str,
    extra: dict[str, str],
) -> None:
    """Workloads 1-3 (JSON, tensor, RSS) over PLAINTEXT; they fill `result`."""
    records = a.records
    # warm-up (broker page cache, JIT, imports), not timed
    log("warm-up ...")
    kafka_ml_json(plain, jtopic, records, a.batch_size, extra)
    kafka_ml_tensor(plain, ttopic, records, a.batch_size, extra)

    # workload 1: interleave the two sides so drift hits both alike
    km, cf = [], []
    for i in range(a.repeat):
        r = kafka_ml_json(plain, jtopic, records, a.batch_size, extra)
        log(f"json kafka-ml    run {i + 1}: {r['wall_s']:.2f}s cpu {r['cpu_s']:.2f}s")
        km.append(r)
        r = confluent_json(plain, jtopic, records, a.batch_size, extra)
        log(f"json confluent   run {i + 1}: {r['wall_s']:.2f}s cpu {r['cpu_s']:.2f}s")
        cf.append(r)
    for r in km + cf:
        if r["rows"] != records:
            raise RuntimeError(f"json: read {r['rows']} rows, expected {records}")
    if km[0]["checksum"] != cf[0]["checksum"] and a.json_partitions == 1:
        log(f"WARNING: json checksums differ: {km[0]['checksum']} vs {cf[0]['checksum']}")
    w1 = {"kafka_ml": summarize(km, records), "confluent_kafka": summarize(cf, records)}
    w1["ratio"] = w1["kafka_ml"]["rows_per_s"] / w1["confluent_kafka"]["rows_per_s"]
    w1["cpu_ratio"] = w1["confluent_kafka"]["cpu_s_median"] / max(w1["kafka_ml"]["cpu_s_median"], 1e-9)
    w1["target"] = 10.0
    result["json"] = w1

    # workload 2
    km, rp = [], []
    if perf_bin:
        rdkafka_perf_tensor(perf_bin, bs, ttopic, records, extra)  # warm-up
    for i in range(a.repeat):
        r = kafka_ml_tensor(plain, ttopic, records, a.batch_size, extra)
        log(f"tensor kafka-ml  run {i + 1}: {r['wall_s']:.2f}s cpu {r['cpu_s']:.2f}s")
        km.append(r)
        if perf_bin:
            r = rdkafka_perf_tensor(perf_bin, bs, ttopic, records, extra)
            log(
                f"tensor rdkperf   run {i + 1}: {r['wall_s']:.2f}s cpu {r['cpu_s']:.2f}s "
                f"(reported {r['reported']})"
            )
            rp.append(r)
    for r in km + rp:
        if r["rows"] != records:
            raise RuntimeError(f"tensor: read {r['rows']} rows, expected {records}")
    w2: dict[str, Any] = {"kafka_ml": summarize(km, records), "target": 0.8}
    if rp:
        w2["rdkafka_performance"] = summarize(rp, records)
        w2["rdkafka_performance"]["cmd"] = " ".join(rp[0]["cmd"])
        rep = [r["reported"]["msgs_per_s"] for r in rp if r["reported"]]
        w2["rdkafka_performance"]["self_reported_msgs_per_s_median"] = statistics.median(rep) if rep else None
        w2["ratio"] = w2["kafka_ml"]["rows_per_s"] / w2["rdkafka_performance"]["rows_per_s"]
        streams = [r["stream_rows_per_s"] for r in km if r.get("stream_rows_per_s")]
        w2["kafka_ml"]["stream_rows_per_s_median"] = statistics.median(streams) if streams else None
        if rep and streams:
            w2["ratio_steady_state"] = statistics.median(streams) / statistics.median(rep)
    result["tensor"] = w2

    # workload 3
    if not a.skip_rss:
        log(f"RSS: 1 pass, then {a.rss_passes} passes, queue_bytes={a.queue_bytes}")
        # librdkafka's default prefetch depth (100000 msgs) unless -X sets it: the raised
        # throughput setting would make librdkafka itself hold up to 1M messages.
        user = dict(p.split("=", 1) for p in a.props)
        rss_props = {**extra, "queued.min.messages": user.get("queued.min.messages", "100000")}
        one = run_rss(bs, ttopic, 1, a.batch_size, a.queue_bytes, rss_props)
        many = run_rss(bs, ttopic, a.rss_passes, a.batch_size, a.queue_bytes, rss_props)
        result["rss"] = {
            "queue_bytes": a.queue_bytes,
            "consumer_props": rss_props,
            "one_pass": one,
            "many_passes": many,
            "passes": a.rss_passes,
        }


def render(r: dict[str, Any]) -> str:
    m, p = r["machine"], r["params"]
    load = m.get("loadavg_at_start")
    lines = [
        "kafka-ml consumer benchmark",
        f"  machine : {m['nproc']} CPUs ({m['cpu_model']}), {(m['mem_total_bytes'] or 0) / 2**30:.1f} GiB, "
        f"{m['platform']}" + (f", load average at start {load[0]:.2f}" if load else ""),
        f"  software: python {m['python']}, numpy {m['numpy']}, kafka-ml {m['kafka_ml']} "
        f"(librdkafka {m['kafka_ml_librdkafka']}), confluent-kafka {m['confluent_kafka']} "
        f"(librdkafka {m['confluent_kafka_librdkafka']}), broker {m['broker']} ({p.get('broker_kind')})",
        f"  params  : {p['records']:,} records/topic, median of {p['repeat']} run(s), "
        f"batch {p['batch_size']}, "
        f"json {p.get('json_record_bytes_mean', 0):.0f} B/record on {p['json_partitions']} partition(s), "
        f"tensor float32x{DIM_TENSOR} ({p.get('tensor_record_bytes')} B) on 1 partition, "
        f"consumer props: {p['consumer_props']}",
        "  note    : broker, producer-free consumers and baselines share this machine's CPUs",
        "",
        f"{'workload':<8} {'consumer':<40} {'rows/s':>12} {'wall s':>8} {'CPU s':>7} {'CPU s/1M msg':>13}",
        "-" * 92,
    ]

    def row(w: str, name: str, s: dict[str, Any]) -> str:
        return (
            f"{w:<8} {name:<40} {s['rows_per_s']:>12,.0f} {s['wall_s_median']:>8.3f} "
            f"{s['cpu_s_median']:>7.2f} {s['cpu_s_per_million']:>13.2f}"
        )

    ok = lambda v, tgt: "OK" if v >= tgt else "MISSED"  # noqa: E731
    ratios: list[str] = []
    if "json" in r:
        j = r["json"]
        lines.append(row("json", "kafka-ml KafkaDataset(json)", j["kafka_ml"]))
        lines.append(row("json", "confluent-kafka + json.loads", j["confluent_kafka"]))
        ratios.append(
            f"json   speed-up kafka-ml / confluent-kafka : {j['ratio']:6.2f}x  "
            f"(target >= {j['target']:.0f}x: {ok(j['ratio'], j['target'])}); "
            f"CPU per message {j['cpu_ratio']:.2f}x less"
        )
    if "tensor" in r:
        t = r["tensor"]
        lines.append(row("tensor", "kafka-ml KafkaDataset(tensor)", t["kafka_ml"]))
        if "rdkafka_performance" in t:
            lines.append(row("tensor", "rdkafka_performance -C (C, wall)", t["rdkafka_performance"]))
        if "ratio" in t:
            rep = t["rdkafka_performance"].get("self_reported_msgs_per_s_median")
            stream = t["kafka_ml"].get("stream_rows_per_s_median")
            more = (
                f"\n  steady state (first to last message): kafka-ml {stream:,.0f} rows/s vs "
                f"rdkafka_performance self-reported {rep:,.0f} msgs/s = {t['ratio_steady_state']:.2f}x"
                if rep and stream
                else ""
            )
            ratios.append(
                f"tensor ratio  kafka-ml / rdkafka_performance: {t['ratio']:6.2f}x  "
                f"(target >= {t['target']}x: {ok(t['ratio'], t['target'])}){more}"
            )
        else:
            ratios.append("tensor ratio  kafka-ml / rdkafka_performance: n/a (baseline skipped or not built)")
    if "avro" in r:
        v = r["avro"]
        for fmt, label in (("avro", "Avro"), ("protobuf", "Protobuf")):
            lines.append(row(fmt[:8], f"kafka-ml KafkaDataset({fmt}, registry)", v[fmt]["kafka_ml"]))
            lines.append(row(fmt[:8], f"confluent-kafka + {label}Deserializer", v[fmt]["confluent_kafka"]))
        lines.append(row("json", "kafka-ml KafkaDataset(json), same rows", v["kafka_ml_json"]))
        for fmt in ("avro", "protobuf"):
            lines.append(row(fmt[:8], "kafka-ml KafkaDataset(raw), no decoding", v[fmt]["kafka_ml_raw"]))
            if "rdkafka_performance" in v[fmt]:
                c = v[fmt]["rdkafka_performance"]
                lines.append(row(fmt[:8], "rdkafka_performance -C, no decoding", c))
        for fmt in ("avro", "protobuf"):
            x = v[fmt]
            ratios.append(
                f"{fmt:<8} kafka-ml / confluent-kafka: {x['ratio']:6.2f}x  "
                f"(target >= {v['target']:.0f}x: {ok(x['ratio'], v['target'])}); CPU per message "
                f"{x['cpu_ratio']:.1f}x less; kafka-ml {fmt} / kafka-ml json rows/s {x['ratio_vs_json']:.2f}x"
            )
        for fmt in ("avro", "protobuf"):
            x = v[fmt]
            ceiling = f"{fmt:<8} ceiling (no decoding) / confluent-kafka: raw {x['raw_ceiling_ratio']:.2f}x"
            if "c_ceiling_ratio" in x:
                ceiling += f", rdkafka_performance {x['c_ceiling_ratio']:.2f}x wall"
            if "c_self_reported_ceiling_ratio" in x:
                ceiling += f" ({x['c_self_reported_ceiling_ratio']:.2f}x by its own first-to-last rate)"
            ratios.append(ceiling)
        ratios.append(f"  {v['records']:,} records of each; registry: {v['registry']}")
    if "tls" in r:
        tls = r["tls"]
        names = {
            ("json", "kafka_ml_tls"): "kafka-ml KafkaDataset(json) SASL_SSL",
            ("json", "kafka_ml_plaintext"): "kafka-ml KafkaDataset(json) PLAINTEXT",
            ("json", "confluent_kafka_tls"): "confluent-kafka + json.loads SASL_SSL",
            ("tensor", "kafka_ml_tls"): "kafka-ml KafkaDataset(tensor) SASL_SSL",
            ("tensor", "kafka_ml_plaintext"): "kafka-ml KafkaDataset(tensor) PLAINTEXT",
        }
        if "json" in r or "tensor" in r:
            lines.append("")
        for (w, side), name in names.items():
            if side in tls.get(w, {}):
                lines.append(row(f"tls {w}"[:8], name, tls[w][side]))
        if ratios:
            ratios.append("")
        ratios.append(
            "TLS: SASL_SSL = SCRAM-SHA-512 over TLS (user alice, broker verified against the session CA); "
            "PLAINTEXT = the same broker's plaintext listener"
        )
        for w in ("json", "tensor"):
            if w not in tls:
                continue
            x = tls[w]
            ratios.append(
                f"tls {w:<6} kafka-ml SASL_SSL / kafka-ml PLAINTEXT     : {x['ratio_tls_plaintext']:6.2f}x  "
                f"(target >= {x['target_tls_plaintext']}x: "
                f"{ok(x['ratio_tls_plaintext'], x['target_tls_plaintext'])}); "
                f"CPU per message {x['cpu_ratio_tls_plaintext']:.2f}x of PLAINTEXT's"
            )
            if "ratio_tls_plaintext_steady_state" in x:
                ratios.append(
                    f"  steady state (first to last batch): SASL_SSL "
                    f"{x['kafka_ml_tls']['stream_rows_per_s_median']:,.0f} rows/s vs PLAINTEXT "
                    f"{x['kafka_ml_plaintext']['stream_rows_per_s_median']:,.0f} rows/s = "
                    f"{x['ratio_tls_plaintext_steady_state']:.2f}x"
                )
            ratios.append(
                "  open / first batch (median s): "
                + "; ".join(
                    f"{label} {x[side]['open_s_median']:.3f} / {x[side]['first_batch_s_median']:.3f}"
                    for side, label in (
                        ("kafka_ml_tls", "kafka-ml SASL_SSL"),
                        ("kafka_ml_plaintext", "kafka-ml PLAINTEXT"),
                        ("confluent_kafka_tls", "confluent-kafka SASL_SSL"),
                    )
                    if side in x
                )
            )
            if "ratio_vs_confluent" in x:
                ratios.append(
                    f"tls {w:<6} kafka-ml SASL_SSL / confluent-kafka SASL_SSL: "
                    f"{x['ratio_vs_confluent']:6.2f}x  "
                    f"(target >= {x['target_vs_confluent']:.0f}x: "
                    f"{ok(x['ratio_vs_confluent'], x['target_vs_confluent'])}); "
                    f"CPU per message {x['cpu_ratio_vs_confluent']:.2f}x less"
                )
    lines.append("")
    lines += ratios
    if "rss" in r:
        s = r["rss"]
        one, many = s["one_pass"], s["many_passes"]
        mib = lambda b: b / MiB  # noqa: E731
        lines += [
            "",
            f"peak RSS, tensor topic, queue_bytes = {mib(s['queue_bytes']):.0f} MiB "
            f"(child process; RSS after imports {mib(one['rss_before_bytes']):.0f} MiB)",
            f"  1 pass   ({one['total_rows']:>11,} msgs): peak {mib(one['maxrss_bytes']):7.1f} MiB, "
            f"growth over start {mib(one['maxrss_bytes'] - one['rss_before_bytes']):7.1f} MiB, "
            f"max queued {mib(max(x['max_queued_bytes'] for x in one['passes'])):.1f} MiB",
            f"  {s['passes']:<2} passes ({many['total_rows']:>11,} msgs): "
            f"peak {mib(many['maxrss_bytes']):7.1f} MiB, "
            f"growth over start {mib(many['maxrss_bytes'] - many['rss_before_bytes']):7.1f} MiB, "
            f"max queued {mib(max(x['max_queued_bytes'] for x in many['passes'])):.1f} MiB",
            "  per pass peak (MiB): " + ", ".join(f"{mib(x['maxrss_bytes']):.0f}" for x in many["passes"]),
            f"  (queued.min.messages={s['consumer_props']['queued.min.messages']} here; RSS also holds "
            "librdkafka's own prefetch queue, queued.max.messages.kbytes = 64 MiB of payload)",
        ]
    lines.append(f"\ntotal wall time {r['total_wall_s']:.0f}s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
