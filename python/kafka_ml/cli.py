"""The `kafka-ml` command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from . import EmbeddedCluster, KafkaDataset, Producer, __version__, librdkafka_version


def demo(bootstrap_servers: str | None, rows: int, partitions: int) -> int:
    """Produces a generated feature dataset and reads it back as NumPy, with throughput."""
    cluster = None
    if bootstrap_servers is None:
        cluster = EmbeddedCluster()
        bootstrap_servers = cluster.bootstrap_servers
        print(f"embedded cluster (librdkafka mock) at {bootstrap_servers}")
    topic = f"kafka-ml-demo-{int(time.time())}"
    if cluster is not None:
        cluster.create_topic(topic, partitions=partitions)
    config = {"bootstrap.servers": bootstrap_servers}

    rng = np.random.default_rng(0)
    features = rng.standard_normal((rows, 64), dtype=np.float32)
    t0 = time.perf_counter()
    with Producer({**config, "linger.ms": 5}) as producer:
        if cluster is not None:
            # Spread evenly: the mock cluster keeps only a few MB per partition.
            for p in range(partitions):
                producer.send(topic, features[p::partitions], partition=p)
        else:
            # A real cluster creates the topic on first use (with its default partition count).
            producer.send(topic, features)
    produce_s = time.perf_counter() - t0
    print(f"produced {rows:,} rows of float32x64 in {produce_s:.2f}s ({rows / produce_s:,.0f} rows/s)")

    t0 = time.perf_counter()
    received = 0
    checksum = 0.0
    with KafkaDataset(
        topic, config, format="tensor", dtype="float32", shape=64, end="latest", batch_size=8192
    ) as dataset:
        for batch in dataset:
            values = batch["value"]  # a zero-copy NumPy view of the Arrow batch
            received += values.shape[0]
            checksum += float(values.sum(dtype=np.float64))
    consume_s = time.perf_counter() - t0
    print(f"read back {received:,} rows as NumPy in {consume_s:.2f}s ({received / consume_s:,.0f} rows/s)")
    expected = float(features.sum(dtype=np.float64))  # order-independent: rows may interleave
    ok = received == rows and np.isclose(checksum, expected, rtol=1e-6)
    print(f"checksum {'matches' if ok else 'DIFFERS'}: {checksum:.3f} (expected {expected:.3f})")
    if cluster is not None:
        cluster.close()
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kafka-ml", description=__doc__)
    parser.add_argument(
        "--version", action="version", version=f"kafka-ml {__version__} (librdkafka {librdkafka_version})"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="produce a generated dataset and read it back as NumPy")
    d.add_argument("--bootstrap-servers", help="a real Kafka cluster (default: an embedded one)")
    d.add_argument("--rows", type=int, default=50_000)
    d.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.bootstrap_servers, args.rows, args.partitions)
    return 2


if __name__ == "__main__":
    sys.exit(main())
