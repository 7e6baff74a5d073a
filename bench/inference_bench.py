#!/usr/bin/env python
"""Real-time inference loop: sustained throughput and end-to-end latency on a real broker.

For each delivery mode (``at_least_once``, ``exactly_once``):

1. ``max``: the loop drains a backlog of ``--records`` JSON inputs ``{"id", "x": [16 floats]}``
   through a small model (a 16x4 linear layer in NumPy): messages/s from first to last result.
2. ``rate R``: inputs are produced at a fixed R messages/s (1k and 10k) for ``--seconds`` while
   the loop serves them: end-to-end latency p50 / p99 (input timestamp -> result acknowledged,
   or its transaction committed), from the loop's own metrics.

The broker is ``kafka/launcher.py``'s (or ``$KAFKA_BOOTSTRAP_SERVERS``).

    python bench/inference_bench.py --quick
    python bench/inference_bench.py
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kafka_ml as km
from consume_bench import RESULTS_DIR, create_topic, log, machine_info, start_broker
from kafka_ml.inference import InferenceLoop

SCHEMA = {"id": "int64", "x": ("float32", 16)}
WEIGHTS = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)


def predict(batch: Any) -> dict[str, Any]:
    return {"id": batch["id"], "score": batch["x"] @ WEIGHTS}


def inputs(start: int, n: int) -> dict[str, np.ndarray]:
    ids = np.arange(start, start + n, dtype=np.int64)
    x = np.random.default_rng(start).standard_normal((n, 16)).astype(np.float32)
    return {"id": ids, "x": x}


def make_loop(bs: str, inp: str, out: str, delivery: str) -> InferenceLoop:
    return InferenceLoop(
        predict,
        inp,
        out,
        {"bootstrap.servers": bs, "group.id": f"bench-{uuid.uuid4().hex[:8]}", "session.timeout.ms": 6000},
        delivery=delivery,  # type: ignore[arg-type]
        instance=uuid.uuid4().hex[:8],
        format="json",
        schema=SCHEMA,
        output_schema={"id": "int64", "score": ("float32", 4)},
        batch_size=2000,
        max_wait=0.005,
        metrics_interval=3600,
    )


def max_throughput(bs: str, records: int, delivery: str) -> dict[str, Any]:
    inp, out = f"bench-in-{uuid.uuid4().hex[:6]}", f"bench-out-{uuid.uuid4().hex[:6]}"
    create_topic(bs, inp, 1)
    create_topic(bs, out, 1)
    with km.Producer({"bootstrap.servers": bs, "linger.ms": 5}) as producer:
        producer.send(inp, inputs(0, records), format="json", schema=SCHEMA)
    loop = make_loop(bs, inp, out, delivery)
    t0 = time.perf_counter()
    metrics = loop.run(max_messages=records, handle_signals=False)
    wall = time.perf_counter() - t0
    return {"messages": metrics["messages"], "wall_s": wall, "msgs_per_s": metrics["messages"] / wall}


def at_rate(bs: str, rate: int, seconds: float, delivery: str) -> dict[str, Any]:
    inp, out = f"bench-in-{uuid.uuid4().hex[:6]}", f"bench-out-{uuid.uuid4().hex[:6]}"
    create_topic(bs, inp, 1)
    create_topic(bs, out, 1)
    loop = make_loop(bs, inp, out, delivery)
    total = int(rate * (seconds + 3.0))  # 3 s of warm-up, then `seconds` measured
    done = threading.Event()

    def feed() -> None:
        tick = 0.01  # a small batch every 10 ms, on schedule
        per_tick = max(1, int(rate * tick))
        with km.Producer({"bootstrap.servers": bs, "linger.ms": 0}) as producer:
            sent, start = 0, time.perf_counter()
            while sent < total and not done.is_set():
                n = min(per_tick, total - sent)
                producer.send(inp, inputs(sent, n), format="json", schema=SCHEMA)
                sent += n
                delay = start + sent / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)

    results: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: results.update(loop.run(handle_signals=False)))
    feeder = threading.Thread(target=feed)
    runner.start()
    feeder.start()
    # The first seconds are a warm-up (joining the group, the first rebalance): not measured.
    time.sleep(3.0)
    loop.reset_metrics()
    feeder.join()
    time.sleep(1.0)  # the last inputs are served
    snapshot = loop.metrics
    loop.stop()
    runner.join(timeout=60)
    done.set()
    lat = snapshot["latency_ms"]
    return {"rate": rate, "messages": snapshot["messages"], "p50_ms": lat["p50"], "p99_ms": lat["p99"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true", help="50k records, 4 s per rate")
    args = ap.parse_args()
    if args.quick:
        args.records, args.seconds = 50_000, 4.0
    bs, broker = start_broker()
    result: dict[str, Any] = {"records": args.records, "seconds_per_rate": args.seconds}
    try:
        for delivery in ("at_least_once", "exactly_once"):
            m = max_throughput(bs, args.records, delivery)
            log(f"{delivery}: max {m['msgs_per_s']:,.0f} msg/s")
            rates = []
            for rate in (1_000, 10_000):
                r = at_rate(bs, rate, args.seconds, delivery)
                log(f"{delivery}: {rate}/s: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms")
                rates.append(r)
            result[delivery] = {"max": m, "rates": rates}
        result["machine"] = machine_info(None)
        result["when"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    finally:
        if broker is not None:
            broker.stop()
    print("\ndelivery        max msg/s   1k/s p50 / p99 ms   10k/s p50 / p99 ms")
    for delivery in ("at_least_once", "exactly_once"):
        d = result[delivery]
        cells = [f"{r['p50_ms']:6.1f} / {r['p99_ms']:6.1f}" for r in d["rates"]]
        print(f"{delivery:14s} {d['max']['msgs_per_s']:>10,.0f}   {cells[0]:>17s}   {cells[1]:>17s}")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"inference-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
