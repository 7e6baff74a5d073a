#!/usr/bin/env python
"""Files to topics and back: kafka-ml's export and ingest against confluent-kafka scripts, measured
in the same run.

One run starts a real Apache Kafka broker (``kafka/launcher.py``; or uses
``$KAFKA_BOOTSTRAP_SERVERS``) and reports:

1. ``export``: ``--records`` JSON feature records ``{"id", "x": [16 floats], "y"}`` (the ~200-byte
   records of ``consume_bench.py``) in a one-partition topic, written to a Parquet file by
   ``KafkaDataset(format="json", schema=..., end="latest").to_parquet(path)`` vs a
   confluent-kafka script: ``consume(10000)`` + ``json.loads`` per message, the columns collected
   into pyarrow arrays (``x`` a ``fixed_size_list<float>[16]``), written with
   ``pyarrow.parquet.ParquetWriter`` in row groups of the same 65 536 rows with the export's
   writer settings (snappy, no dictionary for these number columns). Target: >= 10x rows/s.
2. ``ingest``: a Parquet file of ``--records`` rows ``{id: int64, x: float32[16], y: int64}`` sent
   to a fresh one-partition topic by ``kafka_ml.files.ingest(path, topic, config,
   format="json", schema=...)`` (what ``kafka-ml ingest`` runs) vs a confluent-kafka script:
   ``ParquetFile.iter_batches`` + ``to_pylist`` per column + ``json.dumps`` + ``produce`` per row
   (``poll(0)`` every 1 000), ``flush()``. Target: >= 10x rows/s.

The export workload also runs librdkafka's own C consumer on the same topic, doing no decoding
and writing no file (``rdkafka_performance -C``): its first-to-last-message rate over the
confluent-kafka script's bounds what a client that only reads bytes reaches here. (No such bound
is given for ingest: ``rdkafka_performance -P`` produces one message per call and kafka-ml's batch
produce outpaces it, so it bounds nothing.) ``--skip-rdkafka`` leaves it out.

Both sides of a comparison get the same librdkafka properties (``consume_bench.PARITY_PROPS`` for
consumers, ``produce_bench.PARITY_PROPS`` for producers: acks=all, idempotence, linger.ms=5).
Wall time runs from creating the client to the closed file (export) or the last delivery report
(ingest); CPU is ``RUSAGE_SELF`` (every side is in-process). Both outputs are checked: the
exported files hold the same rows, and the ingested topics the rows of the file.

    python bench/files_bench.py                    # 1M records, one run of each side
    python bench/files_bench.py --records 100000   # smaller

Prints a table and writes ``bench/results/files-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    RESULTS_DIR,
    build_rdkafka_performance,
    cpu_self,
    create_topic,
    log,
    machine_info,
    start_broker,
    total_messages,
)
from consume_bench import PARITY_PROPS as CONSUMER_PROPS
from consume_bench import load_json_topic
from consume_bench import rdkafka_perf_tensor as rdkafka_consume
from produce_bench import PARITY_PROPS as PRODUCER_PROPS

DIM = 16
SCHEMA: dict[str, Any] = {"id": "int64", "x": ("float32", DIM), "y": "int64"}
ROW_GROUP = 65_536
# The Parquet writer settings of kafka-ml's export for these columns (no string column: no
# dictionary), given to the baseline too.
WRITER_OPTIONS: dict[str, Any] = {"compression": "snappy", "use_dictionary": False}
Result = dict[str, Any]


def timed(fn: Callable[[], Result]) -> Result:
    gc.collect()
    c0, t0 = cpu_self(), time.perf_counter()
    extra = fn()
    t1, c1 = time.perf_counter(), cpu_self()
    return {"wall_s": t1 - t0, "cpu_s": c1 - c0, **extra}


# -- export ----------------------------------------------------------------------------------------


def kafka_ml_export(conf: dict[str, str], topic: str, path: Path) -> Result:
    import kafka_ml

    def run() -> Result:
        with kafka_ml.KafkaDataset(topic, conf, format="json", schema=SCHEMA, end="latest") as ds:
            result = ds.to_parquet(path, batch_size=ROW_GROUP, progress=False)
        return {"rows": result.rows}

    return timed(run)


def confluent_export(conf: dict[str, str], topic: str, path: Path, records: int) -> Result:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    schema = pa.schema([("id", pa.int64()), ("x", pa.list_(pa.float32(), DIM)), ("y", pa.int64())])

    def run() -> Result:
        c = Consumer(
            {
                **conf,
                "group.id": f"bench-files-{time.monotonic_ns()}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
            }
        )
        md = c.list_topics(topic, timeout=10)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
        writer = pq.ParquetWriter(path, schema, **WRITER_OPTIONS)
        loads = json.loads
        ids: list[int] = []
        xs: list[list[float]] = []
        ys: list[int] = []
        rows = 0

        def write() -> None:
            x = pa.array(xs, pa.list_(pa.float32(), DIM))
            writer.write_table(
                pa.table([pa.array(ids, pa.int64()), x, pa.array(ys, pa.int64())], schema=schema)
            )
            ids.clear(), xs.clear(), ys.clear()

        while rows < records:
            for m in c.consume(10_000, timeout=1.0):
                if m.error() is not None:
                    raise RuntimeError(str(m.error()))
                d = loads(m.value())
                ids.append(d["id"])
                xs.append(d["x"])
                ys.append(d["y"])
                rows += 1
                if len(ids) == ROW_GROUP:
                    write()
        if ids:
            write()
        writer.close()
        c.close()
        return {"rows": rows}

    return timed(run)


def check_exports(paths: list[Path], records: int) -> None:
    """Every export holds the same `records` rows."""
    import pyarrow.parquet as pq

    first = None
    for path in paths:
        table = pq.read_table(path).sort_by("id")
        if table.num_rows != records:
            raise RuntimeError(f"{path}: {table.num_rows} rows, expected {records}")
        digest = (
            int(np.asarray(table.column("id")).sum()),
            int(np.asarray(table.column("y")).sum()),
            float(np.asarray(table.column("x").combine_chunks().flatten()).astype(np.float64).sum()),
        )
        if first is None:
            first = digest
        elif digest != first:
            raise RuntimeError(f"{path}: rows differ from {paths[0]} ({digest} vs {first})")


# -- ingest ----------------------------------------------------------------------------------------


def write_source(path: Path, records: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    schema = pa.schema([("id", pa.int64()), ("x", pa.list_(pa.float32(), DIM)), ("y", pa.int64())])
    with pq.ParquetWriter(path, schema, compression="snappy") as w:
        for start in range(0, records, ROW_GROUP):
            n = min(ROW_GROUP, records - start)
            x = rng.uniform(-1.0, 1.0, size=n * DIM).astype(np.float32)
            w.write_table(
                pa.table(
                    [
                        pa.array(np.arange(start, start + n, dtype=np.int64)),
                        pa.FixedSizeListArray.from_arrays(pa.array(x), DIM),
                        pa.array(rng.integers(0, 10, size=n, dtype=np.int64)),
                    ],
                    schema=schema,
                )
            )


def kafka_ml_ingest(conf: dict[str, str], topic: str, path: Path) -> Result:
    from kafka_ml.files import ingest

    def run() -> Result:
        result = ingest(path, topic, conf, format="json", schema=SCHEMA, progress=False)
        if result.delivered != result.rows or result.failed:
            raise RuntimeError(f"kafka-ml ingest: delivered {result.delivered}, failed {result.failed}")
        return {"rows": result.rows}

    return timed(run)


def confluent_ingest(conf: dict[str, str], topic: str, path: Path) -> Result:
    import pyarrow.parquet as pq
    from confluent_kafka import Producer

    def run() -> Result:
        p = Producer(conf)
        produce, poll, dumps = p.produce, p.poll, json.dumps
        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=ROW_GROUP):
            columns = zip(*(batch.column(name).to_pylist() for name in ("id", "x", "y")), strict=True)
            for i, x, y in columns:
                value = dumps({"id": i, "x": x, "y": y})
                while True:
                    try:
                        produce(topic, value)
                        break
                    except BufferError:
                        poll(0.01)
                n += 1
                if n % 1000 == 0:
                    poll(0)
        left = p.flush(300)
        if left:
            raise RuntimeError(f"confluent ingest: {left} messages not delivered")
        return {"rows": n}

    return timed(run)


def check_ingest(bs: str, topic: str, path: Path, records: int) -> None:
    """The topic holds the file's rows: the count, and the first 1 000 values decoded."""
    import pyarrow.parquet as pq
    from confluent_kafka import Consumer, TopicPartition

    n = total_messages(bs, topic)
    if n != records:
        raise RuntimeError(f"{topic}: {n} messages, expected {records}")
    source = pq.read_table(path).slice(0, 1000).to_pylist()
    c = Consumer({"bootstrap.servers": bs, "group.id": f"bench-check-{time.monotonic_ns()}"})
    c.assign([TopicPartition(topic, 0, 0)])
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(got) < len(source) and time.monotonic() < deadline:
        got += [m.value() for m in c.consume(1000, timeout=1.0) if m.error() is None]
    c.close()
    for row, raw in zip(source, got, strict=False):
        d = json.loads(raw)
        ok = d["id"] == row["id"] and d["y"] == row["y"]
        if not ok or not np.array_equal(np.asarray(d["x"], np.float32), np.asarray(row["x"], np.float32)):
            raise RuntimeError(f"{topic}: {raw[:120]!r} is not row {row['id']} of the file")
    if len(got) < len(source):
        raise RuntimeError(f"{topic}: read back only {len(got)} messages")


# -- report ----------------------------------------------------------------------------------------


def summary(runs: list[Result], records: int) -> Result:
    walls = [r["wall_s"] for r in runs]
    cpus = [r["cpu_s"] for r in runs]
    wall = statistics.median(walls)
    return {
        "rows_per_s": records / wall,
        "wall_s": wall,
        "cpu_s_per_M": statistics.median(cpus) / records * 1e6,
        "runs": runs,
    }


def read_bound(runs: list[Result], records: int, baseline: Result) -> Result:
    """The C tool's runs: wall rate, and its own first-to-last-message rate (no process start or
    metadata wait) over the baseline's rows/s: what reading bytes alone reaches here."""
    out = summary(runs, records)
    rates = [r["reported"]["msgs_per_s"] for r in runs if r.get("reported")]
    out["self_reported_msgs_per_s"] = statistics.median(rates) if rates else None
    best = out["self_reported_msgs_per_s"] or out["rows_per_s"]
    out["bound_ratio"] = best / baseline["rows_per_s"]
    return out


def render(r: Result) -> str:
    lines = [
        f"files bench: {r['params']['records']} records, {r['machine']['cpu_model']} "
        f"({r['machine']['nproc']} cores), load average at start {r['machine']['loadavg_at_start']}",
        f"{'workload':<8} {'side':<44} {'rows/s':>12} {'CPU-s/M':>9} {'ratio':>7}",
    ]
    for name, sides in (
        ("export", ("kafka-ml to_parquet", "confluent-kafka consume+json.loads+ParquetWriter")),
        ("ingest", ("kafka-ml ingest (Producer.send)", "confluent-kafka json.dumps+produce")),
    ):
        w = r[name]
        for key, label in zip(("kafka_ml", "confluent_kafka"), sides, strict=True):
            s = w[key]
            ratio = f"{w['ratio']:.1f}x" if key == "kafka_ml" else ""
            lines.append(
                f"{name:<8} {label:<44} {s['rows_per_s']:>12,.0f} {s['cpu_s_per_M']:>9.2f} {ratio:>7}"
            )
        if "rdkafka_performance" in w:
            c = w["rdkafka_performance"]
            tool = (
                "rdkafka_performance -C (no decode, no file)"
                if name == "export"
                else ("rdkafka_performance -P (no file, no encode)")
            )
            rate = c["self_reported_msgs_per_s"] or c["rows_per_s"]
            lines.append(
                f"{name:<8} {tool:<44} {rate:>12,.0f} {c['cpu_s_per_M']:>9.2f} {c['bound_ratio']:>6.1f}x"
                "  <- bytes only: the C consumer's own rate / the script's"
            )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000, help="records of each workload")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each side, interleaved (median reported)")
    ap.add_argument("--output", type=Path, default=None, help="JSON result path")
    ap.add_argument("--check", action="store_true", help="exit 1 if a ratio is under 10x")
    ap.add_argument("--skip-rdkafka", action="store_true", help="skip the rdkafka_performance -C read")
    a = ap.parse_args()
    perf_bin = None if a.skip_rdkafka else build_rdkafka_performance()
    t_start = time.perf_counter()
    bs, broker = start_broker()
    log(f"broker at {bs}")
    result: Result = {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(perf_bin),
        "params": {
            "records": a.records,
            "repeat": a.repeat,
            "consumer_props": CONSUMER_PROPS,
            "producer_props": PRODUCER_PROPS,
            "row_group_rows": ROW_GROUP,
            "parquet_writer": WRITER_OPTIONS,
        },
    }
    try:
        with tempfile.TemporaryDirectory(prefix="kafka-ml-files-bench-") as tmp:
            work = Path(tmp)
            plain = {"bootstrap.servers": bs}
            suffix = f"{os.getpid()}-{int(time.time())}"
            topic = f"bench-files-json-{suffix}"
            create_topic(bs, topic, 1)
            t = time.perf_counter()
            mean = load_json_topic(bs, topic, a.records)
            log(f"loaded {a.records} JSON records (mean {mean:.0f} B) in {time.perf_counter() - t:.1f}s")
            result["params"]["json_record_bytes_mean"] = mean

            conf = {**plain, **CONSUMER_PROPS}
            runs: dict[str, list[Result]] = {"kafka_ml": [], "confluent_kafka": []}
            paths: list[Path] = []
            for i in range(a.repeat):
                for side in ("kafka_ml", "confluent_kafka"):
                    path = work / f"export-{side}-{i}.parquet"
                    r = (
                        kafka_ml_export(conf, topic, path)
                        if side == "kafka_ml"
                        else confluent_export(conf, topic, path, a.records)
                    )
                    log(f"export {side}: {r['rows'] / r['wall_s']:,.0f} rows/s ({r['wall_s']:.2f}s)")
                    runs[side].append(r)
                    paths.append(path)
            check_exports(paths, a.records)
            for p in paths:
                p.unlink()
            export = {side: summary(rs, a.records) for side, rs in runs.items()}
            export["ratio"] = export["kafka_ml"]["rows_per_s"] / export["confluent_kafka"]["rows_per_s"]
            if perf_bin:
                c = [rdkafka_consume(perf_bin, bs, topic, a.records, CONSUMER_PROPS) for _ in range(a.repeat)]
                export["rdkafka_performance"] = read_bound(c, a.records, export["confluent_kafka"])
            result["export"] = export

            source = work / "source.parquet"
            write_source(source, a.records)
            conf = {**plain, **PRODUCER_PROPS}
            runs = {"kafka_ml": [], "confluent_kafka": []}
            for i in range(a.repeat):
                for side in ("kafka_ml", "confluent_kafka"):
                    target = f"bench-files-ingest-{side}-{i}-{suffix}"
                    create_topic(bs, target, 1)
                    r = (
                        kafka_ml_ingest(conf, target, source)
                        if side == "kafka_ml"
                        else confluent_ingest(conf, target, source)
                    )
                    log(f"ingest {side}: {r['rows'] / r['wall_s']:,.0f} rows/s ({r['wall_s']:.2f}s)")
                    check_ingest(bs, target, source, a.records)
                    runs[side].append(r)
            ingest = {side: summary(rs, a.records) for side, rs in runs.items()}
            ingest["ratio"] = ingest["kafka_ml"]["rows_per_s"] / ingest["confluent_kafka"]["rows_per_s"]
            result["ingest"] = ingest
    finally:
        if broker is not None:
            broker.stop()
    result["total_wall_s"] = time.perf_counter() - t_start
    print(render(result))
    out = a.output or RESULTS_DIR / f"files-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nresults written to {out}")
    if a.check and min(result["export"]["ratio"], result["ingest"]["ratio"]) < 10.0:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
