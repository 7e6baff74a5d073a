#!/usr/bin/env python
"""Real-time inference: end-to-end latency and sustained throughput on a real broker, against
the loop users write by hand with confluent-kafka, measured in the same run.

Inputs are JSON ``{"id", "x": [16 floats]}``; the model is a 16x4 linear layer in NumPy; each
result ``{"id", "score": [4 floats]}`` goes to an output topic with the input's key. Loops:

- ``confluent``: the hand-written baseline: ``consume(500, 0.005)`` -> ``json.loads`` ->
  predict -> ``produce`` per result -> ``flush`` -> ``commit`` (at-least-once);
- ``kafka-ml at_least_once`` and ``kafka-ml exactly_once``: ``InferenceLoop`` with the
  library's defaults (nothing tuned here).

For each loop:

1. ``max``: a backlog of ``--records`` inputs is drained: messages/s from start to the last
   result acknowledged;
2. ``rate R`` (1k and 10k msg/s): inputs are produced at R messages/s for ``--seconds`` after
   3 s of warm-up; end-to-end latency p50 / p99 = input timestamp -> result acknowledged (for
   exactly-once: its transaction committed). In each window an independent client
   (``common.AckProbe``: another process, one message every 10 ms to a topic of its own) times the
   same broker's acknowledgements: pauses it sees are the broker's or the machine's, and set the
   p99 of every loop at 10 k msg/s.

The broker is ``kafka/launcher.py``'s (or ``$KAFKA_BOOTSTRAP_SERVERS``). The machine's speed
drifts: compare the loops of one run, not runs of different days.

    python bench/inference_bench.py --quick
    python bench/inference_bench.py
    python bench/inference_bench.py --interleave 5 --loops confluent,at_least_once
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
from common import RESULTS_DIR, AckProbe, create_topic, log, machine_info, start_broker
from kafka_ml.inference import InferenceLoop, _Latencies

SCHEMA = {"id": "int64", "x": ("float32", 16)}
WEIGHTS = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
LOOPS = ("confluent", "at_least_once", "exactly_once")
WARMUP_S = 3.0


def predict(batch: Any) -> dict[str, Any]:
    return {"id": batch["id"], "score": batch["x"] @ WEIGHTS}


def inputs(start: int, n: int) -> dict[str, np.ndarray]:
    ids = np.arange(start, start + n, dtype=np.int64)
    x = np.random.default_rng(start).standard_normal((n, 16)).astype(np.float32)
    return {"id": ids, "x": x}


class Runner:
    """One loop serving `inp` -> `out` on a thread until `stop()`, with its own latency window."""

    def __init__(self, kind: str, bs: str, inp: str, out: str) -> None:
        self.kind, self.bs, self.inp, self.out = kind, bs, inp, out
        self.loop: InferenceLoop | None = None
        self._stop = threading.Event()
        self._latencies = _Latencies()
        self.messages = 0
        self.assigned = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Runner:
        self.thread.start()
        if not self.assigned.wait(60):
            raise RuntimeError(f"{self.kind}: no partition assigned within 60 s")
        return self

    def _run(self) -> None:
        group = f"bench-{uuid.uuid4().hex[:8]}"
        if self.kind == "confluent":
            self._confluent(group)
            return
        self.loop = InferenceLoop(
            predict,
            self.inp,
            self.out,
            {"bootstrap.servers": self.bs, "group.id": group, "auto.offset.reset": "earliest"},
            delivery=self.kind,  # type: ignore[arg-type]
            instance=uuid.uuid4().hex[:8],
            format="json",
            schema=SCHEMA,
            output_schema={"id": "int64", "score": ("float32", 4)},
            metrics_interval=3600,
        )
        threading.Thread(target=self._signal_assigned, daemon=True).start()
        self.loop.run(handle_signals=False)

    def _signal_assigned(self) -> None:
        assert self.loop is not None
        self.loop.wait_until_assigned(60)
        self.assigned.set()

    def _confluent(self, group: str) -> None:
        from confluent_kafka import Consumer, Producer

        consumer = Consumer(
            {
                "bootstrap.servers": self.bs,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        producer = Producer({"bootstrap.servers": self.bs})
        consumer.subscribe([self.inp], on_assign=lambda c, parts: self.assigned.set())
        try:
            while not self._stop.is_set():
                msgs = consumer.consume(500, 0.005)
                if not msgs:
                    continue
                msgs = [m for m in msgs if m.error() is None]
                rows = [json.loads(m.value()) for m in msgs]
                x = np.array([r["x"] for r in rows], dtype=np.float32)
                scores = x @ WEIGHTS
                for m, r, s in zip(msgs, rows, scores, strict=True):
                    producer.produce(self.out, json.dumps({"id": r["id"], "score": s.tolist()}), key=m.key())
                producer.flush()
                now = time.time() * 1000.0
                self._latencies.add(np.array([now - m.timestamp()[1] for m in msgs], dtype=np.float64))
                self.messages += len(msgs)
                consumer.commit()
        finally:
            consumer.close()

    def reset(self) -> None:
        if self.loop is not None:
            self.loop.reset_metrics()
        else:
            self._latencies = _Latencies()
            self.messages = 0

    def snapshot(self) -> tuple[int, dict[str, float]]:
        if self.loop is not None:
            m = self.loop.metrics
            return int(m["messages"]), m["latency_ms"]
        return self.messages, self._latencies.percentiles()

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.stop()
        self._stop.set()
        self.thread.join(timeout=60)


def topics(bs: str) -> tuple[str, str]:
    inp, out = f"bench-in-{uuid.uuid4().hex[:6]}", f"bench-out-{uuid.uuid4().hex[:6]}"
    create_topic(bs, inp, 1)
    create_topic(bs, out, 1)
    return inp, out


def max_throughput(bs: str, kind: str, records: int, timeout: float) -> dict[str, Any]:
    inp, out = topics(bs)
    with km.Producer({"bootstrap.servers": bs}) as producer:
        producer.send(inp, inputs(0, records), format="json", schema=SCHEMA)
    runner = Runner(kind, bs, inp, out)
    t0 = time.perf_counter()
    runner.start()
    deadline = t0 + timeout
    while runner.snapshot()[0] < records and time.perf_counter() < deadline:
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    served = runner.snapshot()[0]
    runner.stop()
    if served < records:
        log(f"{kind}: only {served} of {records} served within {timeout} s")
    return {"messages": served, "wall_s": wall, "msgs_per_s": served / wall}


def at_rate(bs: str, kind: str, rate: int, seconds: float) -> dict[str, Any]:
    inp, out = topics(bs)
    runner = Runner(kind, bs, inp, out).start()
    total = int(rate * (seconds + WARMUP_S))
    fed = threading.Event()

    def feed() -> None:
        tick = 0.01  # a small batch every 10 ms, on schedule
        per_tick = max(1, int(rate * tick))
        with km.Producer({"bootstrap.servers": bs, "linger.ms": 0}) as producer:
            sent, start = 0, time.perf_counter()
            while sent < total:
                n = min(per_tick, total - sent)
                producer.send(inp, inputs(sent, n), format="json", schema=SCHEMA)
                sent += n
                delay = start + sent / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
        fed.set()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    time.sleep(WARMUP_S)  # joining the group, the first fetches: not measured
    with AckProbe(bs) as probe:
        runner.reset()
        feeder.join(timeout=seconds + 60)
        time.sleep(1.0)  # the last inputs are served
        messages, lat = runner.snapshot()
    runner.stop()
    return {
        "rate": rate,
        "messages": messages,
        "p50_ms": lat["p50"],
        "p99_ms": lat["p99"],
        "max_ms": lat["max"],
        "broker_probe": probe.result,
    }


def interleaved(loops: list[str], rounds: int, rate: int, seconds: float) -> int:
    """Latency windows of every loop in turn, `rounds` times: the machine's drift then falls on
    all loops alike, and each round compares them at one moment."""
    bs, broker = start_broker()
    windows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in loops}
    try:
        for i in range(rounds):
            for kind in loops:
                r = at_rate(bs, kind, rate, seconds)
                windows[kind].append(r)
                pr = r["broker_probe"]
                log(
                    f"round {i + 1}: {kind}: p50 {r['p50_ms']:.1f} p99 {r['p99_ms']:.1f} ms; "
                    f"probe p99 {pr.get('p99_ms')} max {pr.get('max_ms')} ms"
                )
    finally:
        if broker is not None:
            broker.stop()
    print(f"\np99 at {rate} msg/s per round (ms), and the median over {rounds} rounds")
    for kind in loops:
        p99s = [w["p99_ms"] for w in windows[kind]]
        print(f"{kind:14s} {' '.join(f'{p:6.1f}' for p in p99s)}   median {float(np.median(p99s)):.1f}")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"inference-interleaved-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"rate": rate, "seconds": seconds, "windows": windows}, indent=2))
    log(f"wrote {out}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true", help="50k records, 4 s per rate")
    ap.add_argument("--loops", default=",".join(LOOPS), help=f"comma-separated subset of {LOOPS}")
    ap.add_argument(
        "--interleave",
        type=int,
        default=0,
        metavar="N",
        help="instead: N rounds of --rate windows, one per loop in turn, on one broker",
    )
    ap.add_argument("--rate", type=int, default=10_000, help="the --interleave windows' rate")
    args = ap.parse_args()
    if args.quick:
        args.records, args.seconds = 50_000, 4.0
    loops = [k for k in args.loops.split(",") if k]
    if args.interleave:
        return interleaved(loops, args.interleave, args.rate, args.seconds)
    bs, broker = start_broker()
    result: dict[str, Any] = {"records": args.records, "seconds_per_rate": args.seconds}
    try:
        for kind in loops:
            m = max_throughput(bs, kind, args.records, timeout=120.0)
            log(f"{kind}: max {m['msgs_per_s']:,.0f} msg/s")
            rates = []
            for rate in (1_000, 10_000):
                r = at_rate(bs, kind, rate, args.seconds)
                served = r["messages"]
                pr = r["broker_probe"]
                log(
                    f"{kind}: {rate}/s: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms "
                    f"({served} served); the probe's acks p50 {pr.get('p50_ms')} p99 {pr.get('p99_ms')} ms"
                )
                rates.append(r)
            result[kind] = {"max": m, "rates": rates}
        result["machine"] = machine_info(None)
        result["when"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    finally:
        if broker is not None:
            broker.stop()
    print("\nloop             max msg/s   1k/s p50 / p99 ms   10k/s p50 / p99 ms   probe p99 ms (1k, 10k)")
    for kind in loops:
        d = result[kind]
        cells = [f"{r['p50_ms']:6.1f} / {r['p99_ms']:6.1f}" for r in d["rates"]]
        probes = ", ".join(str(r["broker_probe"].get("p99_ms")) for r in d["rates"])
        print(
            f"{kind:14s} {d['max']['msgs_per_s']:>10,.0f}   {cells[0]:>17s}   {cells[1]:>17s}   {probes:>12s}"
        )
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"inference-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
