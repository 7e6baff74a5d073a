#!/usr/bin/env python
"""Ray Data benchmark: ``kafka_ml.ray`` against Ray's own Kafka reader and writer, same run.

One run starts a real Apache Kafka broker (``kafka/launcher.py``; or uses
``$KAFKA_BOOTSTRAP_SERVERS``) and a local Ray instance (2 CPUs, a 1 GiB object store, no
dashboard, on loopback), loads ``--records`` JSON feature records ``{"id", "x": [16 floats], "y"}``
into a 4-partition topic, and measures, alternating the two sides ``--repeat`` times:

1. ``read``: a Dataset of typed columns (``id`` int64, ``x`` float32 x 16, ``y`` int64),
   materialized in the object store. ``kafka_ml.ray.read_kafka(format="json", schema=...)``
   against ``ray.data.read_kafka`` (confluent-kafka, raw bytes) + ``map_batches`` parsing each
   value with ``json.loads`` into the same typed columns. Target: >= 20x rows/s. For reference,
   one ``KafkaDataset`` in the driver reads the same columns without Ray.
2. ``write``: that typed Dataset (``x`` as fixed-size lists, which both writers take) written as
   JSON to a fresh 4-partition topic: ``kafka_ml.ray.write_kafka(format="json")`` against Ray's
   ``Dataset.write_kafka(value_serializer="json")`` (confluent-kafka, ``json.dumps`` per row).
   Both producers idempotent with ``acks=all``. Target: >= 5x rows/s.

Every run checks its result: the read Datasets hold every id exactly once (count and sum), the
written topics hold exactly ``--records`` messages.

    python bench/ray_bench.py --records 100000 --repeat 1   # smoke run
    python bench/ray_bench.py                               # 1M records, 2 runs of each side

Prints a table and writes ``bench/results/ray-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import numpy as np

# Ray on loopback only (it otherwise swaps 127.0.0.1 for the machine's routable address); read
# when ray is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from common import RESULTS_DIR, create_topic, log, machine_info, start_broker, total_messages

SCHEMA = {"id": "int64", "x": ("float32", 16), "y": "int64"}
PARTITIONS = 4
READ_TARGET = 20.0
WRITE_TARGET = 5.0
# The same producer guarantees on both sides (kafka-ml's Producer defaults to these).
PRODUCER_PROPS = {"enable.idempotence": "true", "acks": "all"}


def load(bs: str, topic: str, records: int) -> None:
    import kafka_ml as km

    create_topic(bs, topic, PARTITIONS)
    rng = np.random.default_rng(0)
    chunk = 200_000
    with km.Producer({"bootstrap.servers": bs}) as producer:
        for first in range(0, records, chunk):
            n = min(chunk, records - first)
            data = {
                "id": np.arange(first, first + n, dtype=np.int64),
                "x": rng.normal(size=(n, 16)).astype(np.float32),
                "y": rng.integers(0, 10, size=n),
            }
            producer.send(topic, data, format="json", schema=SCHEMA).wait(300)


def parse_json(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The baseline's decode: each Kafka value through json.loads into typed columns."""
    rows = [json.loads(v) for v in batch["value"]]
    return {
        "id": np.fromiter((r["id"] for r in rows), dtype=np.int64, count=len(rows)),
        "x": np.array([r["x"] for r in rows], dtype=np.float32).reshape(len(rows), 16),
        "y": np.fromiter((r["y"] for r in rows), dtype=np.int64, count=len(rows)),
    }


def check_ids(ds: Any, records: int, side: str) -> None:
    """Every id exactly once: the count and the sum of the ids (on the driver, from the blocks)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import ray

    ids = pa.chunked_array([t.column("id") for t in ray.get(ds.to_arrow_refs())])
    count, total = len(ids), pc.sum(ids).as_py()
    if count != records or total != records * (records - 1) // 2:
        raise SystemExit(f"{side}: {count} rows, id sum {total}: not every record exactly once")


def warm_up(bs: str, topic: str) -> None:
    """Starts the Ray workers and imports both readers' modules in them, outside the timings."""
    import ray
    from kafka_ml.ray import read_kafka

    few = {(topic, p): 10 for p in range(PARTITIONS)}
    read_kafka(topic, {"bootstrap.servers": bs}, format="json", schema=SCHEMA, end=few).materialize()
    ray.data.read_kafka(topic, bootstrap_servers=bs, end_offset=10).map_batches(
        parse_json, batch_format="numpy"
    ).materialize()


def read_dataset(bs: str, topic: str) -> float:
    """The reference without Ray: one KafkaDataset in this process, the same typed columns."""
    import kafka_ml as km

    t0 = time.perf_counter()
    with km.KafkaDataset(topic, {"bootstrap.servers": bs}, format="json", schema=SCHEMA, end="latest") as ds:
        rows = sum(batch.num_rows for batch in ds)
    elapsed = time.perf_counter() - t0
    if rows != len(ds):
        raise SystemExit(f"KafkaDataset read {rows} of {len(ds)} records")
    return elapsed


def read_kafka_ml(bs: str, topic: str) -> tuple[Any, float]:
    from kafka_ml.ray import read_kafka

    t0 = time.perf_counter()
    ds = read_kafka(topic, {"bootstrap.servers": bs}, format="json", schema=SCHEMA).materialize()
    return ds, time.perf_counter() - t0


def read_ray(bs: str, topic: str) -> tuple[Any, float]:
    import ray

    t0 = time.perf_counter()
    ds = (
        ray.data.read_kafka(topic, bootstrap_servers=bs, start_offset="earliest", end_offset="latest")
        .map_batches(parse_json, batch_format="numpy")
        .materialize()
    )
    return ds, time.perf_counter() - t0


def write_kafka_ml(bs: str, ds: Any, topic: str) -> float:
    from kafka_ml.ray import write_kafka

    t0 = time.perf_counter()
    written = write_kafka(ds, topic, {"bootstrap.servers": bs, **PRODUCER_PROPS}, format="json")
    elapsed = time.perf_counter() - t0
    if written != ds.count():
        raise SystemExit(f"kafka_ml.ray.write_kafka reported {written} rows written")
    return elapsed


def write_ray(bs: str, ds: Any, topic: str) -> float:
    t0 = time.perf_counter()
    ds.write_kafka(topic, bs, value_serializer="json", producer_config=dict(PRODUCER_PROPS))
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each side, alternating")
    parser.add_argument("--object-store-mib", type=int, default=1024)
    args = parser.parse_args()

    import kafka_ml
    import ray

    machine = {**machine_info(None), "ray": ray.__version__}
    bs, broker = start_broker()
    try:
        ray.init(
            num_cpus=2,
            object_store_memory=args.object_store_mib << 20,
            include_dashboard=False,
            log_to_driver=False,
        )
        ray.data.DataContext.get_current().enable_progress_bars = False
        topic = f"ray-bench-{uuid.uuid4().hex[:8]}"
        log(f"loading {args.records} JSON records into {topic} ({PARTITIONS} partitions) ...")
        load(bs, topic, args.records)
        n = total_messages(bs, topic)
        if n != args.records:
            raise SystemExit(f"the topic holds {n} messages, not {args.records}")

        warm_up(bs, topic)
        reads: dict[str, list[float]] = {"kafka_ml": [], "ray": [], "kafka_dataset": []}
        writes: dict[str, list[float]] = {"kafka_ml": [], "ray": []}
        typed = None
        for i in range(args.repeat):
            ds, s = read_kafka_ml(bs, topic)
            check_ids(ds, args.records, "kafka_ml.ray.read_kafka")
            reads["kafka_ml"].append(s)
            log(f"read {i + 1}: kafka_ml.ray.read_kafka {args.records / s:,.0f} rows/s ({s:.2f} s)")
            del ds
            ds, s = read_ray(bs, topic)
            check_ids(ds, args.records, "ray.data.read_kafka + map_batches")
            reads["ray"].append(s)
            log(f"read {i + 1}: ray.data.read_kafka + json.loads {args.records / s:,.0f} rows/s ({s:.2f} s)")
            del ds
            s = read_dataset(bs, topic)
            reads["kafka_dataset"].append(s)
            log(f"read {i + 1}: KafkaDataset alone, no Ray {args.records / s:,.0f} rows/s ({s:.2f} s)")
        # The write input: typed columns (x as fixed-size lists, which Ray's row-wise JSON
        # serializer also takes), materialized once, outside the timings.
        from kafka_ml.ray import read_kafka

        typed = read_kafka(topic, {"bootstrap.servers": bs}, format="json", schema=SCHEMA, tensors=False)
        typed = typed.materialize()
        for i in range(args.repeat):
            for side, write in (("kafka_ml", write_kafka_ml), ("ray", write_ray)):
                out = f"{topic}-out-{side}-{i}"
                create_topic(bs, out, PARTITIONS)
                s = write(bs, typed, out)
                got = total_messages(bs, out)
                if got != args.records:
                    raise SystemExit(f"{side} write: {got} messages in {out}, not {args.records}")
                writes[side].append(s)
                log(f"write {i + 1}: {side} {args.records / s:,.0f} rows/s ({s:.2f} s)")
    finally:
        ray.shutdown()
        if broker is not None:
            broker.stop()

    def rate(times: list[float]) -> float:
        return args.records / statistics.median(times)

    read_ratio = rate(reads["kafka_ml"]) / rate(reads["ray"])
    write_ratio = rate(writes["kafka_ml"]) / rate(writes["ray"])
    rows = [
        ("read", rate(reads["kafka_ml"]), rate(reads["ray"]), read_ratio, READ_TARGET),
        ("write", rate(writes["kafka_ml"]), rate(writes["ray"]), write_ratio, WRITE_TARGET),
    ]
    header = f"{'workload':<8} {'kafka_ml.ray rows/s':>20} {'Ray baseline rows/s':>20} {'ratio':>8}"
    print(f"\n{header} {'target':>7}")
    for name, ours, theirs, ratio, target in rows:
        print(f"{name:<8} {ours:>20,.0f} {theirs:>20,.0f} {ratio:>7.1f}x {target:>6.0f}x")
    print(f"(reference: one KafkaDataset, no Ray, {rate(reads['kafka_dataset']):,.0f} rows/s)")

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    result = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "records": args.records,
        "partitions": PARTITIONS,
        "machine": {**machine, "loadavg_at_end": list(os.getloadavg())},
        "kafka_ml_version": kafka_ml.__version__,
        "read_seconds": reads,
        "write_seconds": writes,
        "read_rows_per_s": {k: rate(v) for k, v in reads.items()},
        "write_rows_per_s": {k: rate(v) for k, v in writes.items()},
        "read_ratio": read_ratio,
        "write_ratio": write_ratio,
        "read_target_met": read_ratio >= READ_TARGET,
        "write_target_met": write_ratio >= WRITE_TARGET,
    }
    out = RESULTS_DIR / f"ray-{stamp}.json"
    out.write_text(json.dumps(result, indent=2))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
