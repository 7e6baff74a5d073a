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

Both consumers of each comparison get the same librdkafka consumer properties (librdkafka's
defaults, plus whatever ``-X key=value`` adds, applied to every side). CPU is measured with
``getrusage``: ``RUSAGE_SELF`` deltas for the in-process consumers (kafka-ml's background
thread is in-process), ``RUSAGE_CHILDREN`` deltas for ``rdkafka_performance``.

    python bench/consume_bench.py --quick          # 100k records, smoke run
    python bench/consume_bench.py                  # 1M records

Prints a table and writes ``bench/results/consume-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
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


# -- helpers ---------------------------------------------------------------------------------


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def start_broker() -> tuple[str, Any]:
    """``$KAFKA_BOOTSTRAP_SERVERS`` and no broker, or a broker started for this run (the caller
    stops it) and its address."""
    bs = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bs:
        return bs, None
    sys.path.insert(0, str(REPO / "kafka"))
    from launcher import KafkaBroker

    log("starting Kafka broker ...")
    broker = KafkaBroker().start()
    return broker.bootstrap_servers, broker


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


# -- broker and data -------------------------------------------------------------------------


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


def kafka_ml_json(bs: str, topic: str, records: int, batch: int, extra: dict[str, str]) -> dict[str, Any]:
    import kafka_ml

    gc.collect()
    c0, t0 = cpu_self(), time.perf_counter()
    ds = kafka_ml.KafkaDataset(
        topic,
        {"bootstrap.servers": bs, **extra},
        format="json",
        schema=JSON_SCHEMA,
        start="earliest",
        end="latest",
        batch_size=batch,
    )
    rows = 0
    checksum = 0
    for b in ds:
        cols = b.to_numpy()
        x, ids, y = cols["x"], cols["id"], cols["y"]
        rows += x.shape[0]
        checksum += int(ids.sum()) + int(y.sum())
    ds.close()
    t1, c1 = time.perf_counter(), cpu_self()
    assert x.shape[1] == DIM_JSON and x.dtype == np.float32, (x.shape, x.dtype)
    return {"rows": rows, "wall_s": t1 - t0, "cpu_s": c1 - c0, "checksum": checksum}


def confluent_json(bs: str, topic: str, records: int, batch: int, extra: dict[str, str]) -> dict[str, Any]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    gc.collect()
    c0, t0 = cpu_self(), time.perf_counter()
    c = Consumer(
        {
            "bootstrap.servers": bs,
            "group.id": f"bench-confluent-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            **extra,
        }
    )
    md = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
    rows = 0
    checksum = 0
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
        rows += x.shape[0]
        checksum += int(idarr.sum()) + int(yarr.sum())
    c.close()
    t1, c1 = time.perf_counter(), cpu_self()
    assert x.shape[1] == DIM_JSON
    return {"rows": rows, "wall_s": t1 - t0, "cpu_s": c1 - c0, "checksum": checksum}


# -- workload 2: tensor ----------------------------------------------------------------------


def kafka_ml_tensor(bs: str, topic: str, records: int, batch: int, extra: dict[str, str]) -> dict[str, Any]:
    import kafka_ml

    gc.collect()
    c0, t0 = cpu_self(), time.perf_counter()
    ds = kafka_ml.KafkaDataset(
        topic,
        {"bootstrap.servers": bs, **extra},
        format="tensor",
        dtype="float32",
        shape=DIM_TENSOR,
        start="earliest",
        end="latest",
        batch_size=batch,
    )
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
    # steady-state rate from the first batch to the last, comparable to rdkafka_performance's
    # self-reported rate (which starts its clock at its first message)
    stream = (rows - first_rows) / (t_last - t_first) if t_last > t_first else None
    return {"rows": rows, "wall_s": t1 - t0, "cpu_s": c1 - c0, "stream_rows_per_s": stream}


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
    extra = {**PARITY_PROPS, **dict(p.split("=", 1) for p in a.props)}
    records = a.records

    perf_bin = None if a.skip_rdkafka else build_rdkafka_performance()
    if perf_bin:
        log(f"rdkafka_performance: {perf_bin}")

    t_start = time.perf_counter()
    bs, broker = start_broker()
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
        },
    }
    try:
        suffix = f"{os.getpid()}-{int(time.time())}"
        jtopic, ttopic = f"bench-json-{suffix}", f"bench-tensor-{suffix}"
        create_topic(bs, jtopic, a.json_partitions)
        create_topic(bs, ttopic, 1)

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

        # warm-up (broker page cache, JIT, imports), not timed
        log("warm-up ...")
        kafka_ml_json(bs, jtopic, records, a.batch_size, extra)
        kafka_ml_tensor(bs, ttopic, records, a.batch_size, extra)

        # workload 1: interleave the two sides so drift hits both alike
        km, cf = [], []
        for i in range(a.repeat):
            r = kafka_ml_json(bs, jtopic, records, a.batch_size, extra)
            log(f"json kafka-ml    run {i + 1}: {r['wall_s']:.2f}s cpu {r['cpu_s']:.2f}s")
            km.append(r)
            r = confluent_json(bs, jtopic, records, a.batch_size, extra)
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
            r = kafka_ml_tensor(bs, ttopic, records, a.batch_size, extra)
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
            w2["rdkafka_performance"]["self_reported_msgs_per_s_median"] = (
                statistics.median(rep) if rep else None
            )
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
    finally:
        if broker is not None:
            broker.stop()
    result["total_wall_s"] = time.perf_counter() - t_start

    text = render(result)
    print(text)
    out = a.output or RESULTS_DIR / f"consume-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nresults written to {out}")

    if a.check:
        ok = result["json"]["ratio"] >= 10.0 and result["tensor"].get("ratio", 1.0) >= 0.8
        return 0 if ok else 1
    return 0


def render(r: dict[str, Any]) -> str:
    m, p = r["machine"], r["params"]
    lines = [
        "kafka-ml consumer benchmark",
        f"  machine : {m['nproc']} CPUs ({m['cpu_model']}), {(m['mem_total_bytes'] or 0) / 2**30:.1f} GiB, "
        f"{m['platform']}",
        f"  software: python {m['python']}, numpy {m['numpy']}, kafka-ml {m['kafka_ml']} "
        f"(librdkafka {m['kafka_ml_librdkafka']}), confluent-kafka {m['confluent_kafka']} "
        f"(librdkafka {m['confluent_kafka_librdkafka']}), broker {m['broker']}",
        f"  params  : {p['records']:,} records/topic, median of {p['repeat']} run(s), "
        f"batch {p['batch_size']}, "
        f"json {p.get('json_record_bytes_mean', 0):.0f} B/record on {p['json_partitions']} partition(s), "
        f"tensor float32x{DIM_TENSOR} ({p.get('tensor_record_bytes')} B) on 1 partition, "
        f"consumer props: {p['consumer_props']}",
        "  note    : broker, producer-free consumers and baselines share this machine's CPUs",
        "",
        f"{'workload':<8} {'consumer':<34} {'rows/s':>12} {'wall s':>8} {'CPU s':>7} {'CPU s/1M msg':>13}",
        "-" * 86,
    ]

    def row(w: str, name: str, s: dict[str, Any]) -> str:
        return (
            f"{w:<8} {name:<34} {s['rows_per_s']:>12,.0f} {s['wall_s_median']:>8.3f} "
            f"{s['cpu_s_median']:>7.2f} {s['cpu_s_per_million']:>13.2f}"
        )

    j = r["json"]
    lines.append(row("json", "kafka-ml KafkaDataset(json)", j["kafka_ml"]))
    lines.append(row("json", "confluent-kafka + json.loads", j["confluent_kafka"]))
    t = r["tensor"]
    lines.append(row("tensor", "kafka-ml KafkaDataset(tensor)", t["kafka_ml"]))
    if "rdkafka_performance" in t:
        lines.append(row("tensor", "rdkafka_performance -C (C, wall)", t["rdkafka_performance"]))
    lines.append("")
    ok = lambda v, tgt: "OK" if v >= tgt else "MISSED"  # noqa: E731
    lines.append(
        f"json   speed-up kafka-ml / confluent-kafka : {j['ratio']:6.2f}x  "
        f"(target >= {j['target']:.0f}x: {ok(j['ratio'], j['target'])}); "
        f"CPU per message {j['cpu_ratio']:.2f}x less"
    )
    if "ratio" in t:
        rep = t["rdkafka_performance"].get("self_reported_msgs_per_s_median")
        stream = t["kafka_ml"].get("stream_rows_per_s_median")
        extra = (
            f"\n  steady state (first to last message): kafka-ml {stream:,.0f} rows/s vs "
            f"rdkafka_performance self-reported {rep:,.0f} msgs/s = {t['ratio_steady_state']:.2f}x"
            if rep and stream
            else ""
        )
        lines.append(
            f"tensor ratio  kafka-ml / rdkafka_performance: {t['ratio']:6.2f}x  "
            f"(target >= {t['target']}x: {ok(t['ratio'], t['target'])}){extra}"
        )
    else:
        lines.append("tensor ratio  kafka-ml / rdkafka_performance: n/a (baseline skipped or not built)")
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
