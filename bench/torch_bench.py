#!/usr/bin/env python
"""DataLoader throughput: samples/s reaching a PyTorch training loop, measured in one run.

Loads 200-byte JSON feature records ``{"id", "x": [16 floats], "y"}`` into a 2-partition topic on
a real broker (``kafka/launcher.py``, or ``$KAFKA_BOOTSTRAP_SERVERS``) and reads the whole topic
as batches of tensors ``{"x": float32[n, 16], "y": int64[n]}`` with:

1. ``raw``: ``KafkaDataset(format="json").to_numpy()`` per batch — the rate the core delivers;
2. ``kafka-ml w0`` / ``kafka-ml w2``: ``DataLoader(KafkaIterableDataset(...), batch_size=None,
   num_workers=0 / 2)``;
3. ``confluent w0`` / ``confluent w2``: the ``IterableDataset`` users write today on
   confluent-kafka-python — ``consume(batch)``, ``json.loads`` per message, ``torch.tensor`` per
   batch, partitions split over the DataLoader workers;
4. ``in-memory w2``: the same batches built in memory by two DataLoader workers, no Kafka: the
   cost of the worker processes alone, the ceiling of any ``num_workers=2`` reader — once with
   kafka-ml's transport (a batch of up to 1 MiB crosses as one block of bytes through the
   DataLoader's pipe) and once with torch's own (one shared-memory segment and a
   file-descriptor handshake per storage), which is what a batch of tensors otherwise costs.

Every consumer gets the same librdkafka properties. Reports the median of ``--repeat`` passes (rows/s,
and the reader's CPU-s per million rows, DataLoader workers included, the broker not),
the DataLoader overhead against ``raw`` (target <= 20 %) and the ratio to confluent (>= 5x).

    python bench/torch_bench.py --quick     # 200k records
    python bench/torch_bench.py             # 1M records
    python bench/torch_bench.py --transfer-sweep   # pipe vs shared memory by batch size, no broker
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from kafka_ml.torch import _PIPE_MAX_BYTES, _worker_batch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, create_topic, log, machine_info, start_broker, total_messages

# The consumer benchmark's JSON workload, read here through the DataLoader.
from consume_bench import JSON_SCHEMA, PARITY_PROPS, load_json_topic

BATCH = 1024
PARTITIONS = 2


class ConfluentJsonDataset(IterableDataset[dict[str, torch.Tensor]]):
    """The baseline: a confluent-kafka IterableDataset written the way it usually is."""

    def __init__(self, bootstrap: str, topic: str, records: int, extra: dict[str, str]) -> None:
        self.bootstrap, self.topic, self.records, self.extra = bootstrap, topic, records, extra

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        mine = [p for p in range(PARTITIONS) if p % workers == worker]
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"bench-torch-confluent-{time.monotonic_ns()}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                **self.extra,
            }
        )
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in mine])
        done: set[int] = set()
        try:
            while len(done) < len(mine):
                messages = consumer.consume(BATCH, timeout=1.0)
                xs, ys = [], []
                for m in messages:
                    if m.error() is not None:
                        done.add(m.partition())  # partition EOF: this worker's share is read
                        continue
                    d = json.loads(m.value())
                    xs.append(d["x"])
                    ys.append(d["y"])
                if xs:
                    yield {
                        "x": torch.tensor(xs, dtype=torch.float32),
                        "y": torch.tensor(ys, dtype=torch.int64),
                    }
        finally:
            consumer.close()


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (DataLoader workers, once joined)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


def consume(batches: Any) -> tuple[int, float]:
    """The training loop's side: touch every batch's tensors."""
    rows, checksum = 0, 0.0
    for b in batches:
        x, y = b["x"], b["y"]
        rows += len(y)
        checksum += float(x[:, 0].sum()) + float(y.sum())
    return rows, checksum


def run_raw(bs: str, topic: str, extra: dict[str, str]) -> tuple[int, float]:
    import kafka_ml

    ds = kafka_ml.KafkaDataset(
        topic,
        {"bootstrap.servers": bs, **extra},
        format="json",
        schema=JSON_SCHEMA,
        end="latest",
        batch_size=BATCH,
    )
    with ds:
        return consume(b.to_numpy() for b in ds)


def run_kafka_ml(bs: str, topic: str, extra: dict[str, str], workers: int) -> tuple[int, float]:
    from kafka_ml.torch import KafkaIterableDataset

    ds = KafkaIterableDataset(
        topic,
        {"bootstrap.servers": bs, **extra},
        format="json",
        schema=JSON_SCHEMA,
        end="latest",
        batch_size=BATCH,
    )
    return consume(DataLoader(ds, batch_size=None, num_workers=workers))


class TransferFloorDataset(IterableDataset):  # type: ignore[type-arg]
    """The same batches from memory, no Kafka: what a DataLoader's worker processes cost alone.

    Each batch is built the way ``KafkaIterableDataset`` builds one in a worker (its columns
    packed into one block), so ``w2`` with this dataset is the ceiling of any ``w2`` reader.
    ``pipe_max_bytes`` is the largest batch sent through the DataLoader's pipe (0: every batch
    goes through torch's shared memory).
    """

    def __init__(self, records: int, pipe_max_bytes: int = _PIPE_MAX_BYTES, rows: int = BATCH) -> None:
        self.records, self.pipe_max_bytes, self.rows = records, pipe_max_bytes, rows

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        rng = np.random.default_rng(worker)
        cols = {
            "id": np.arange(self.rows, dtype=np.int64),
            "x": rng.random((self.rows, 16), dtype=np.float32),
            "y": np.zeros(self.rows, dtype=np.int64),
        }
        starts = range(0, self.records, self.rows)
        for start in starts[worker::workers]:
            n = min(self.rows, self.records - start)
            yield _worker_batch({k: v[:n] for k, v in cols.items()}, ["id", "x", "y"], self.pipe_max_bytes)


def run_transfer_floor(
    records: int, workers: int, pipe_max_bytes: int = _PIPE_MAX_BYTES, rows: int = BATCH
) -> tuple[int, float]:
    ds = TransferFloorDataset(records, pipe_max_bytes, rows)
    return consume(DataLoader(ds, batch_size=None, num_workers=workers))


def transfer_sweep(repeat: int) -> int:
    """Batches/s of two in-memory DataLoader workers, pipe against torch's shared memory, by
    batch size: where kafka-ml's 1 MiB pipe limit (``_PIPE_MAX_BYTES``) comes from. No broker."""
    print(f"two in-memory DataLoader workers, 80-byte rows, median of {repeat}:")
    print(f"  {'rows/batch':>10} {'batch KiB':>9} {'pipe rows/s':>12} {'shm rows/s':>12}  pipe/shm")
    for rows in (1024, 8192, 16384, 65536):
        records = max(1_000_000, 40 * rows)
        walls: dict[str, list[float]] = {"pipe": [], "shm": []}
        for _ in range(repeat):
            for name, limit in (("pipe", sys.maxsize), ("shm", 0)):
                t0 = time.perf_counter()
                run_transfer_floor(records, 2, limit, rows)
                walls[name].append(time.perf_counter() - t0)
        pipe, shm = (records / statistics.median(walls[k]) for k in ("pipe", "shm"))
        kib = rows * 80 / 1024
        print(f"  {rows:>10,} {kib:>9,.0f} {pipe:>12,.0f} {shm:>12,.0f}  {pipe / shm:.2f}x")
    return 0


def run_confluent(
    bs: str, topic: str, records: int, extra: dict[str, str], workers: int
) -> tuple[int, float]:
    ds = ConfluentJsonDataset(bs, topic, records, extra)
    return consume(DataLoader(ds, batch_size=None, num_workers=workers))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="200k records, 2 repeats")
    ap.add_argument(
        "--transfer-sweep", action="store_true", help="only the pipe/shared-memory sweep, no broker"
    )
    args = ap.parse_args()
    if args.quick:
        args.records, args.repeat = 200_000, 2
    torch.set_num_threads(1)
    if args.transfer_sweep:
        return transfer_sweep(args.repeat)

    bs, broker = start_broker()
    try:
        topic = f"bench-torch-{int(time.time())}"
        create_topic(bs, topic, PARTITIONS)
        log(f"loading {args.records:,} JSON records into {topic}")
        load_json_topic(bs, topic, args.records)
        records = total_messages(bs, topic)
        extra = dict(PARITY_PROPS)
        variants: dict[str, Any] = {
            "raw KafkaDataset": lambda: run_raw(bs, topic, extra),
            "kafka-ml DataLoader w0": lambda: run_kafka_ml(bs, topic, extra, 0),
            "kafka-ml DataLoader w2": lambda: run_kafka_ml(bs, topic, extra, 2),
            "confluent DataLoader w0": lambda: run_confluent(bs, topic, records, extra, 0),
            "confluent DataLoader w2": lambda: run_confluent(bs, topic, records, extra, 2),
            "in-memory DataLoader w2": lambda: run_transfer_floor(records, 2),
            "in-memory w2, torch shm": lambda: run_transfer_floor(records, 2, pipe_max_bytes=0),
        }
        walls: dict[str, list[float]] = {k: [] for k in variants}
        cpus: dict[str, list[float]] = {k: [] for k in variants}
        checksums: dict[str, float] = {}
        for rep in range(args.repeat):
            for name, fn in variants.items():  # interleaved, so drift hits every variant alike
                c0, t0 = cpu_seconds(), time.perf_counter()
                rows, checksum = fn()
                walls[name].append(time.perf_counter() - t0)
                cpus[name].append(cpu_seconds() - c0)
                if rows != records:
                    raise RuntimeError(f"{name}: read {rows} rows, expected {records}")
                if not name.startswith("in-memory"):
                    checksums.setdefault(name, checksum)
                log(f"rep {rep}: {name}: {rows / walls[name][-1]:,.0f} rows/s")
        if len({round(c, 1) for c in checksums.values()}) != 1:
            raise RuntimeError(f"the variants read different data: {checksums}")
        rates = {k: records / statistics.median(v) for k, v in walls.items()}
        raw = rates["raw KafkaDataset"]
        result = {
            "records": records,
            "batch": BATCH,
            "partitions": PARTITIONS,
            "repeat": args.repeat,
            "rows_per_s": rates,
            # Reader CPU (the training process and its DataLoader workers; not the broker).
            "cpu_s_per_million": {k: statistics.median(v) * 1e6 / records for k, v in cpus.items()},
            "overhead_vs_raw": {k: 1 - rates[k] / raw for k in rates if k.startswith("kafka-ml")},
            # The most a 2-worker DataLoader delivers here with no Kafka at all.
            "w2_vs_in_memory_w2": rates["kafka-ml DataLoader w2"] / rates["in-memory DataLoader w2"],
            # kafka-ml's pipe transport against torch's shared memory, for the same batches.
            "pipe_vs_torch_shm": rates["in-memory DataLoader w2"] / rates["in-memory w2, torch shm"],
            "vs_confluent": {
                "w0": rates["kafka-ml DataLoader w0"] / rates["confluent DataLoader w0"],
                "w2": rates["kafka-ml DataLoader w2"] / rates["confluent DataLoader w2"],
            },
            "machine": machine_info(None),
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    finally:
        if broker is not None:
            broker.stop()

    print(f"\n{records:,} JSON records, batches of {BATCH}, median of {args.repeat}:")
    for name, rate in rates.items():
        note = ""
        if name.startswith("kafka-ml"):
            workers = name[-2:]
            note = (
                f"  overhead vs raw {result['overhead_vs_raw'][name]:+.0%}, "
                f"{result['vs_confluent'][workers]:.1f}x confluent {workers}"
            )
        if name == "in-memory DataLoader w2":
            note = f"  (no Kafka: kafka-ml w2 reaches {result['w2_vs_in_memory_w2']:.0%} of it)"
        if name == "in-memory w2, torch shm":
            note = f"  (kafka-ml's pipe transport: {result['pipe_vs_torch_shm']:.2f}x this)"
        cpu = result["cpu_s_per_million"][name]
        print(f"  {name:26s} {rate:>12,.0f} rows/s {cpu:6.2f} CPU-s/M{note}")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"torch-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
