"""The real-time inference loop on a real broker: delivery guarantees under crashes, signals,
predict failures, lineage, metrics and model hot-swap."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kafka_ml as km
import numpy as np
import pytest
from helpers import finished, in_background
from kafka_ml import _native
from kafka_ml.inference import InferenceError, InferenceLoop

SCRIPT = Path(__file__).resolve().parent / "scripts" / "serve_loop.py"
INPUT_SCHEMA = {"id": "int64", "x": ("float32", 4)}
OUTPUT_SCHEMA = {"id": "int64", "y": "float64"}
PARTITIONS = 3


def score(batch: Any) -> dict[str, Any]:
    """The loop's model in these tests: ``y = sum(x) = 4 * id``."""
    return {"id": batch["id"], "y": batch["x"].sum(axis=1, dtype="float64")}


def fill_inputs(config: dict[str, str], topic: str, n: int) -> None:
    """Inputs ``id = 0..n-1`` keyed by id; id lands in partition ``id % 3`` at offset ``id // 3``."""
    ids = np.arange(n, dtype=np.int64)
    x = np.repeat(ids[:, None], 4, axis=1).astype(np.float32)
    with km.Producer(config) as producer:
        for p in range(PARTITIONS):
            rows = slice(p, None, PARTITIONS)
            producer.send(
                topic,
                {"id": ids[rows], "x": x[rows]},
                format="json",
                schema=INPUT_SCHEMA,
                key="id",
                partition=p,
            )


def read_results(config: dict[str, str], topic: str, *, metadata: tuple[str, ...] = ()) -> list[Any]:
    """Every result visible to a ``read_committed`` reader, as batches."""
    ds = km.KafkaDataset(
        topic,
        {**config, "isolation.level": "read_committed"},
        format="json",
        schema=OUTPUT_SCHEMA,
        end="latest",
        metadata=list(metadata),
    )
    with ds:
        return list(ds)


def result_ids(config: dict[str, str], topic: str) -> list[int]:
    return [int(i) for b in read_results(config, topic) for i in b["id"]]


def committed_total(config: dict[str, str], group: str, topic: str) -> int:
    offsets = _native.committed_offsets(
        {**config, "group.id": group}, [(topic, p) for p in range(PARTITIONS)], timeout=10
    )
    return sum(o or 0 for o in offsets.values())


def start_loop(config: dict[str, str], inp: str, out: str, group: str, *args: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(SCRIPT), "--bootstrap", config["bootstrap.servers"]]
    cmd += ["--input", inp, "--output", out, "--group", group, *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_after_progress(proc: subprocess.Popen[bytes], config: dict[str, str], group: str, inp: str) -> None:
    """SIGKILLs ``proc`` once its group has committed some input (mid-stream)."""
    deadline = time.monotonic() + 60
    while committed_total(config, group, inp) < 300:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        assert time.monotonic() < deadline, "the loop made no progress"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.timeout(180)
def test_exactly_once_survives_a_crash(config: dict[str, str], new_topic: Callable[..., str]) -> None:
    inp, out = new_topic(partitions=PARTITIONS), new_topic(partitions=1)
    fill_inputs(config, inp, 1500)
    group = f"serve-{uuid.uuid4().hex[:8]}"
    proc = start_loop(config, inp, out, group, "--delivery", "exactly_once", "--pause", "0.05")
    # Killed mid-transaction or between transactions: the group's offsets stay pending until the
    # restarted loop's init_transactions aborts what was left open.
    kill_after_progress(proc, config, group, inp)

    proc = start_loop(config, inp, out, group, "--delivery", "exactly_once", "--idle", "3")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    ids = result_ids(config, out)
    assert Counter(ids) == Counter(range(1500))  # each result exactly once, none missing
    assert committed_total(config, group, inp) == 1500


@pytest.mark.timeout(180)
def test_at_least_once_survives_a_crash_repeating_only_the_uncommitted_tail(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    inp, out = new_topic(partitions=PARTITIONS), new_topic(partitions=1)
    fill_inputs(config, inp, 1500)
    group = f"serve-{uuid.uuid4().hex[:8]}"
    proc = start_loop(config, inp, out, group, "--pause", "0.05")
    kill_after_progress(proc, config, group, inp)
    committed = _native.committed_offsets(
        {**config, "group.id": group}, [(inp, p) for p in range(PARTITIONS)]
    )

    proc = start_loop(config, inp, out, group, "--idle", "3")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    counts = Counter(result_ids(config, out))
    assert set(counts) == set(range(1500))  # none missing
    repeated = [i for i, c in counts.items() if c > 1]
    for i in repeated:  # only inputs past the committed offsets at the crash were repeated
        assert i // PARTITIONS >= (committed[(inp, i % PARTITIONS)] or 0)
    assert max(counts.values()) <= 2


@pytest.mark.timeout(120)
def test_sigterm_finishes_the_batch_in_flight_and_commits(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    inp, out = new_topic(partitions=PARTITIONS), new_topic(partitions=1)
    fill_inputs(config, inp, 1500)
    group = f"serve-{uuid.uuid4().hex[:8]}"
    proc = start_loop(config, inp, out, group, "--pause", "0.05")
    deadline = time.monotonic() + 60
    while committed_total(config, group, inp) < 200:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    metrics = json.loads(stdout.decode().strip().splitlines()[-1])
    ids = result_ids(config, out)
    # Stopped early, and exactly what was produced was committed: nothing to repeat, nothing lost.
    assert len(ids) == len(set(ids)) == metrics["messages"] == committed_total(config, group, inp) < 1500
    assert metrics["latency_ms"]["p50"] > 0


def test_results_carry_key_and_lineage_headers(config: dict[str, str], new_topic: Callable[..., str]) -> None:
    inp, out = new_topic(partitions=PARTITIONS), new_topic(partitions=1)
    fill_inputs(config, inp, 90)
    group = f"serve-{uuid.uuid4().hex[:8]}"

    loop = InferenceLoop(
        score,
        inp,
        out,
        {**config, "group.id": group},
        format="json",
        schema=INPUT_SCHEMA,
        output_schema=OUTPUT_SCHEMA,
        metrics_interval=0.1,
    )
    metrics = loop.run(max_messages=90, idle_timeout=10, handle_signals=False)
    assert metrics["messages"] == 90 and metrics["predict_errors"] == 0
    assert metrics["latency_ms"]["p99"] >= metrics["latency_ms"]["p50"] > 0
    assert metrics["lag"] == {(inp, p): 0 for p in range(PARTITIONS)}
    seen = 0
    for b in read_results(config, out, metadata=("key", "headers")):
        for i, y, key, headers in zip(b["id"], b["y"], b["key"], b["headers"], strict=True):
            h = dict(headers)
            assert key == str(i).encode()  # the input's key
            assert y == 4 * i
            assert h["kafka_ml.source.topic"] == inp.encode()
            assert int(h["kafka_ml.source.partition"]) == i % PARTITIONS
            assert int(h["kafka_ml.source.offset"]) == i // PARTITIONS
            seen += 1
    assert seen == 90


def test_predict_failures_go_to_the_dead_letter_topic(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    inp, out, dlq = new_topic(partitions=PARTITIONS), new_topic(partitions=1), new_topic(partitions=1)
    fill_inputs(config, inp, 300)
    group = f"serve-{uuid.uuid4().hex[:8]}"

    def predict(batch: Any) -> dict[str, Any]:
        if 13 in batch["id"]:
            raise ValueError("cannot score id 13")
        return score(batch)

    loop = InferenceLoop(
        predict,
        inp,
        out,
        {**config, "group.id": group},
        format="json",
        schema=INPUT_SCHEMA,
        output_schema=OUTPUT_SCHEMA,
        batch_size=20,
        on_predict_error="dead_letter",
        dead_letter_topic=dlq,
        delivery="exactly_once",
    )
    metrics = loop.run(max_messages=300, idle_timeout=5, handle_signals=False)
    assert metrics["predict_errors"] >= 1
    ok = result_ids(config, out)
    dl = km.KafkaDataset(dlq, config, format="json", schema=INPUT_SCHEMA, metadata=["headers"], end="latest")
    dead = [(int(i), dict(h)) for b in dl for i, h in zip(b["id"], b["headers"], strict=True)]
    assert 13 in {i for i, _ in dead}
    assert all(b"cannot score id 13" in h["kafka_ml.error"] for _, h in dead)
    assert sorted(ok + [i for i, _ in dead]) == list(range(300))  # every input accounted for once
    assert metrics["dead_lettered"] == len(dead)
    assert committed_total(config, group, inp) == 300


def test_predict_failure_stops_without_committing_the_batch(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    inp, out = new_topic(partitions=PARTITIONS), new_topic(partitions=1)
    fill_inputs(config, inp, 300)
    group = f"serve-{uuid.uuid4().hex[:8]}"

    def predict(batch: Any) -> dict[str, Any]:
        if 200 in batch["id"]:
            raise ValueError("model exploded")
        return score(batch)

    loop = InferenceLoop(
        predict, inp, out, {**config, "group.id": group}, format="json", schema=INPUT_SCHEMA, batch_size=20
    )
    with pytest.raises(InferenceError, match="model exploded") as info:
        loop.run(idle_timeout=5, handle_signals=False)
    assert f"'{inp}'" in str(info.value)
    committed = _native.committed_offsets({**config, "group.id": group}, [(inp, 200 % PARTITIONS)])
    assert (committed[(inp, 200 % PARTITIONS)] or 0) <= 200 // PARTITIONS  # the failed input is not committed
    assert 200 not in result_ids(config, out)


def test_bad_arguments_are_refused(config: dict[str, str]) -> None:
    with pytest.raises(km.ConfigError, match=r"group\.id"):
        InferenceLoop(lambda b: b, "in", "out", config)
    with pytest.raises(km.ConfigError, match="dead_letter_topic"):
        InferenceLoop(lambda b: b, "in", "out", {**config, "group.id": "g"}, on_predict_error="dead_letter")
    with pytest.raises(km.ConfigError, match="delivery"):
        InferenceLoop(lambda b: b, "in", "out", {**config, "group.id": "g"}, delivery="twice")  # type: ignore[arg-type]


@pytest.mark.timeout(120)
def test_a_model_published_while_serving_is_used_from_the_next_batch(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    inp, out = new_topic(partitions=1), new_topic(partitions=1)
    model_topic = f"models-{uuid.uuid4().hex[:8]}"
    publisher = km.ModelPublisher(model_topic, config)
    publisher.publish({"w": np.array([1.0])}, "1")
    subscriber = km.ModelSubscriber(model_topic, config, loader="numpy")
    subscriber.wait_for("1", timeout=30)

    def predict(batch: Any, model: dict[str, np.ndarray]) -> dict[str, Any]:
        return {"id": batch["id"], "y": score(batch)["y"] * float(model["w"][0])}

    loop = InferenceLoop(
        predict,
        inp,
        out,
        {**config, "group.id": f"serve-{uuid.uuid4().hex[:8]}"},
        model=subscriber,
        format="json",
        schema=INPUT_SCHEMA,
        output_schema=OUTPUT_SCHEMA,
        batch_size=25,
    )
    total = 1000
    thread, result = in_background(lambda: loop.run(max_messages=total, handle_signals=False))
    loop.wait_until_assigned()
    ids = np.arange(total, dtype=np.int64)
    x = np.repeat(ids[:, None], 4, axis=1).astype(np.float32)
    with km.Producer(config) as producer:
        for lo in range(0, total, 25):  # a live stream: 40 small sends, 20 ms apart
            if lo == total // 2:
                # The loop has served with v1 before v2 exists (on a loaded machine it could
                # otherwise see its first message only after v2 arrived: then no update happens).
                deadline = time.monotonic() + 30
                while loop.metrics["model_version"] != "1" and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert loop.metrics["model_version"] == "1", "the loop scored nothing with model v1"
                publisher.publish({"w": np.array([2.0])}, "2")  # a new version mid-stream
                # Received before the rest is sent (on a loaded machine the last 500 messages
                # could otherwise all be scored before it arrives): the batches after it must use it.
                subscriber.wait_for("2", timeout=30)
            producer.send(
                inp, {"id": ids[lo : lo + 25], "x": x[lo : lo + 25]}, format="json", schema=INPUT_SCHEMA
            )
            time.sleep(0.02)
    metrics = finished(thread, result, 60)
    subscriber.close()
    publisher.close()
    assert metrics["messages"] == total and metrics["predict_errors"] == 0  # no failed request
    assert metrics["model_updates"] == 1 and metrics["model_version"] == "2"
    versions = []
    for b in read_results(config, out, metadata=("headers",)):
        for i, y, headers in zip(b["id"], b["y"], b["headers"], strict=True):
            version = dict(headers)["kafka_ml.model.version"].decode()
            assert y == 4 * i * (1 if version == "1" else 2)  # each result by the model it names
            versions.append(version)
    assert len(versions) == total  # none dropped
    first_v2 = versions.index("2")
    assert set(versions[:first_v2]) == {"1"} and set(versions[first_v2:]) == {"2"}  # never back


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_async_predict_keeps_batches_in_flight_and_results_in_input_order(
    config: dict[str, str], new_topic: Callable[..., str], delivery: str
) -> None:
    inp, out = new_topic(partitions=PARTITIONS), new_topic(partitions=1)
    fill_inputs(config, inp, 600)
    group = f"serve-{uuid.uuid4().hex[:8]}"
    rng = random.Random(0)
    active = peak = 0

    async def predict(batch: Any) -> dict[str, Any]:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        # A remote model server's varying latency: later batches often finish first.
        await asyncio.sleep(rng.uniform(0.0, 0.03))
        active -= 1
        return score(batch)

    loop = InferenceLoop(
        predict,
        inp,
        out,
        {**config, "group.id": group},
        delivery=delivery,  # type: ignore[arg-type]
        format="json",
        schema=INPUT_SCHEMA,
        output_schema=OUTPUT_SCHEMA,
        batch_size=10,
        max_in_flight=8,
    )
    metrics = loop.run(max_messages=600, idle_timeout=5, handle_signals=False)
    assert metrics["messages"] == 600 and metrics["predict_errors"] == 0
    assert peak > 1, "async predictions never overlapped"
    order: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    for b in read_results(config, out, metadata=("headers",)):
        for i, y, headers in zip(b["id"], b["y"], b["headers"], strict=True):
            h = dict(headers)
            assert y == 4 * i
            order[int(h["kafka_ml.source.partition"])].append(int(h["kafka_ml.source.offset"]))
    for p, offsets in order.items():  # each partition's results in its inputs' order, once each
        assert offsets == list(range(200)), (p, offsets[:20])
    assert committed_total(config, group, inp) == 600
