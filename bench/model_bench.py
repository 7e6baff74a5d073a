#!/usr/bin/env python
"""Model propagation benchmark: ``ModelPublisher.publish`` → every ``ModelSubscriber`` serving.

One run starts a real Apache Kafka broker (``kafka/launcher.py``; or uses
``$KAFKA_BOOTSTRAP_SERVERS``) and, for each artifact size:

1. starts N subscriber processes on a fresh model topic (``loader="path"``: the verified file is
   what they serve; each prints the wall-clock time at which ``on_update`` fired, and its CPU time);
2. publishes a random artifact of that size from a file with ``ModelPublisher`` and reports the
   latency from ``publish`` returning to the last of the N subscribers serving the new version
   (negative when they all served it before ``publish`` returned: a subscriber swaps on the
   manifest, the publisher still waits for its index record), and from ``publish`` being called;
3. publishes the same artifact again to a topic nobody reads, for the publish throughput (MB/s,
   from the call to its return: every chunk, the manifest and the index acknowledged with
   ``acks=all``), and writes the same number of bytes in messages of the same size with
   librdkafka's own ``rdkafka_performance -P`` (built by ``bench/build_rdkafka_performance.sh``)
   with the same producer properties, for the ratio.

    python bench/model_bench.py                          # 1, 100, 1000 MB; 3 subscribers
    python bench/model_bench.py --sizes 1,100 --subscribers 2

Prints a table and writes ``bench/results/model-latest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common import (
    RESULTS_DIR,
    build_rdkafka_performance,
    create_topic,
    log,
    machine_info,
    start_broker,
)

# The same producer properties for kafka-ml and rdkafka_performance.
PARITY_PROPS = {
    "acks": "all",
    "enable.idempotence": "true",
    "linger.ms": "5",
    "compression.type": "none",
    "queue.buffering.max.kbytes": "65536",
    "message.send.max.retries": "2147483647",
    "retry.backoff.ms": "100",
}
CHUNK = 1_000_000 - (16 << 10)  # ModelPublisher's default chunk under message.max.bytes

SUBSCRIBER = """
import json, sys, time
import kafka_ml as km
topic, bs, directory = sys.argv[1:4]
def served(v):
    print(json.dumps({"version": v.version, "t": time.time(), "cpu": time.process_time()}), flush=True)
sub = km.ModelSubscriber(topic, {"bootstrap.servers": bs}, loader="path", on_update=served,
                         directory=directory)
while not sub.ready:
    time.sleep(0.01)
print(json.dumps({"ready": True, "cpu": time.process_time()}), flush=True)
sys.stdin.read()  # until the parent closes our stdin
sub.close()
"""


def write_artifact(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with path.open("wb") as f:
        left = size
        while left > 0:
            # A different first byte per MB: no two chunks alike, no page-cache trick.
            f.write(bytes([left & 0xFF]) + block[1 : min(left, len(block))])
            left -= min(left, len(block))


class Subscriber:
    def __init__(self, topic: str, bs: str, directory: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SUBSCRIBER, topic, bs, str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.served: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.ready = threading.Event()
        self.updated = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            if event.get("ready"):
                self.cpu["ready"] = event["cpu"]
                self.ready.set()
            else:
                with self.updated:
                    self.cpu[event["version"]] = event["cpu"]
                    self.served[event["version"]] = event["t"]
                    self.updated.notify_all()

    def wait_served(self, version: str, timeout: float) -> float:
        with self.updated:
            if not self.updated.wait_for(lambda: version in self.served, timeout):
                raise TimeoutError(f"a subscriber did not serve {version} in {timeout} s")
            return self.served[version]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


_PERF_RE = re.compile(r"(\d+) messages produced \((\d+) bytes\), (\d+) delivered .* in (\d+)ms")


def rdkafka_perf(binary: str, bs: str, topic: str, size: int) -> dict[str, Any]:
    count = max(1, size // CHUNK)
    cmd = [binary, "-P", "-t", topic, "-p", "0", "-b", bs, "-s", str(CHUNK), "-c", str(count), "-q"]
    for k, v in PARITY_PROPS.items():
        cmd += ["-X", f"{k}={v}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    found = _PERF_RE.findall(out)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"rdkafka_performance failed ({proc.returncode}):\n{out[-3000:]}")
    _n, nbytes, delivered, ms = (int(x) for x in found[-1])
    if delivered != count:
        raise RuntimeError(f"rdkafka_performance delivered {delivered} of {count}")
    return {"bytes": nbytes, "wall_s": wall, "mb_per_s": nbytes / 1e6 / wall, "reported_ms": ms, "cmd": cmd}


def measure(bs: str, size_mb: int, n_subs: int, perf_bin: str | None, work: Path) -> dict[str, Any]:
    import kafka_ml as km

    size = size_mb * 1_000_000
    suffix = f"{os.getpid()}-{int(time.time())}-{size_mb}"
    topic = f"bench-models-{suffix}"
    artifact = work / f"artifact-{size_mb}.bin"
    write_artifact(artifact, size)
    pub = km.ModelPublisher(topic, {"bootstrap.servers": bs, **PARITY_PROPS}, chunk_size=CHUNK)
    # Warm-up version (topic, connections, page cache of the subscribers' replay).
    pub.publish(b"warm-up", "v0")
    subs = [Subscriber(topic, bs, work / f"sub-{size_mb}-{i}") for i in range(n_subs)]
    try:
        for s in subs:
            if not s.ready.wait(120):
                raise TimeoutError("a subscriber did not finish its replay")
            s.wait_served("v0", 60)
        t_call = time.time()
        pub.publish(artifact, "v1")
        t_return = time.time()
        served = [s.wait_served("v1", 1800) for s in subs]
        subscriber_cpu = [s.cpu["v1"] - s.cpu["v0"] for s in subs]
    finally:
        for s in subs:
            s.close()
        pub.close()
    # Publish throughput alone (no subscriber competing for the CPU), as rdkafka_performance runs.
    with km.ModelPublisher(
        f"{topic}-alone", {"bootstrap.servers": bs, **PARITY_PROPS}, chunk_size=CHUNK
    ) as alone:
        alone.publish(b"warm-up", "v0")
        t0 = time.time()
        alone.publish(artifact, "v1")
        publish_s = time.time() - t0
    artifact.unlink()
    result: dict[str, Any] = {
        "size_mb": size_mb,
        "subscribers": n_subs,
        "publish_s": publish_s,
        "publish_mb_per_s": size / 1e6 / publish_s,
        "publish_with_subscribers_s": t_return - t_call,
        "subscriber_cpu_s": subscriber_cpu,
        "all_serving_after_return_s": max(served) - t_return,
        "all_serving_after_call_s": max(served) - t_call,
        "first_serving_after_call_s": min(served) - t_call,
    }
    if perf_bin:
        perf_topic = f"bench-models-perf-{suffix}"
        create_topic(bs, perf_topic, 1)
        result["rdkafka_performance"] = rdkafka_perf(perf_bin, bs, perf_topic, size)
        result["ratio"] = result["publish_mb_per_s"] / result["rdkafka_performance"]["mb_per_s"]
    return result


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| artifact | publish (alone) | rdkafka_performance -P | ratio | subscribers "
        "| publish (while they read) | all serving, after publish returns "
        "| all serving, after publish is called | CPU-s per subscriber |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        perf = r.get("rdkafka_performance")
        publish = f"{r['publish_mb_per_s']:.0f} MB/s ({r['publish_s']:.2f} s)"
        baseline = f"{perf['mb_per_s']:.0f} MB/s | {r['ratio']:.2f}x" if perf else "- | -"
        lines.append(
            f"| {r['size_mb']} MB | {publish} | {baseline} | {r['subscribers']} "
            f"| {r['publish_with_subscribers_s']:.2f} s "
            f"| {r['all_serving_after_return_s']:+.2f} s | {r['all_serving_after_call_s']:.2f} s "
            f"| {max(r['subscriber_cpu_s']):.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,100,1000", help="artifact sizes in MB, comma-separated")
    ap.add_argument("--subscribers", type=int, default=3, help="subscriber processes")
    ap.add_argument("--skip-rdkafka", action="store_true", help="skip the rdkafka_performance baseline")
    ap.add_argument("--output", type=Path, default=RESULTS_DIR / "model-latest.json")
    a = ap.parse_args()
    perf_bin = None if a.skip_rdkafka else build_rdkafka_performance()
    machine = machine_info(perf_bin)
    bs, broker = start_broker()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="kafka-ml-model-bench-") as tmp:
            for size_mb in (int(s) for s in a.sizes.split(",")):
                log(f"{size_mb} MB artifact, {a.subscribers} subscribers ...")
                rows.append(measure(bs, size_mb, a.subscribers, perf_bin, Path(tmp)))
                log(json.dumps({k: v for k, v in rows[-1].items() if k != "rdkafka_performance"}))
    finally:
        if broker is not None:
            broker.stop()
    result = {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine,
        "producer_props": PARITY_PROPS,
        "chunk_bytes": CHUNK,
        "results": rows,
    }
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps(result, indent=2))
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
