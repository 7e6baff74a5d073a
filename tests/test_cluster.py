"""Every component on a 3-node cluster (replication factor 3, min.insync.replicas=2) with one node
SIGKILLed in the middle of the work and restarted: nothing lost, nothing twice.

Each test kills a node that leads a partition the work uses, while the work is under way (each
asserts that it was not finished at the kill), lets the work go on through the failover and the
restart, and checks the result against what was written. `cluster` (tests/conftest.py) gives each
test a healthy cluster and prints the nodes' logs when one fails.

Another component's test takes the same shape: start the work with `in_background`, once it is
under way `Outage(cluster, topic, partition)` (kills that partition's leader, restarts it once
fenced), assert the work was not done yet, then `finished(...)`, `outage.join()` and the checks.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kafka_ml as km
import numpy as np
import pytest
from confluent_kafka.admin import NewTopic
from helpers import finished, in_background
from kafka_ml import _native
from launcher import KafkaCluster


def config_of(cluster: KafkaCluster) -> dict[str, str]:
    return {"bootstrap.servers": cluster.bootstrap_servers}


def create_topic(cluster: KafkaCluster, partitions: int, prefix: str = "t") -> str:
    """A new topic on every node (replication factor 3), each partition with a leader."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    futures = cluster.admin().create_topics([NewTopic(name, num_partitions=partitions, replication_factor=3)])
    futures[name].result(timeout=30)
    for p in range(partitions):
        cluster.leader_of(name, p)
    return name


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.02)


OUTAGES: list[Outage] = []


@pytest.fixture(autouse=True)
def outages_end_with_their_test() -> Iterator[None]:
    """A test that fails before joining its outage leaves the restart thread running: it is
    waited for here, so that the next test's `cluster` never restarts the same node a second time."""
    yield
    while OUTAGES:
        OUTAGES.pop()._thread.join(120)


class Outage:
    """The leader of `topic`'s `partition` down and back. The node leading it is SIGKILLed on
    construction; then a background thread waits until the controller has fenced it (after
    `broker.session.timeout.ms`), notes the partition's new leader, and restarts the node on its
    data and ports, while the test's work goes on. `join()` re-raises what went wrong there and
    checks that the partition did change leader (the clients really failed over)."""

    def __init__(self, cluster: KafkaCluster, topic: str, partition: int) -> None:
        self.cluster, self.topic, self.partition = cluster, topic, partition
        self.node = cluster.leader_of(topic, partition)
        self.error: BaseException | None = None
        self.fenced_after: float | None = None
        self.new_leader: int | None = None
        self.restarted_after: float | None = None
        cluster.kill(self.node)
        self.killed_at = time.monotonic()
        self._thread = threading.Thread(target=self._down_and_back, name=f"outage-{self.node}", daemon=True)
        self._thread.start()
        OUTAGES.append(self)

    def _down_and_back(self) -> None:
        try:
            self.cluster.wait_fenced(self.node, timeout=30)
            self.fenced_after = time.monotonic() - self.killed_at
            # Before the restart: once back in the ISR, the node could become leader again.
            self.new_leader = self.cluster.leader_of(self.topic, self.partition)
            self.cluster.restart(self.node)
            self.restarted_after = time.monotonic() - self.killed_at
        except BaseException as e:
            self.error = e

    def join(self, timeout: float = 120.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"node {self.node} not back within {timeout}s"
        if self.error is not None:
            raise self.error
        print(
            f"node {self.node} (leader of {self.topic}[{self.partition}]): fenced "
            f"{self.fenced_after:.1f} s after its SIGKILL, node {self.new_leader} leading then, "
            f"node {self.node} answering again {self.restarted_after:.1f} s after the kill"
        )
        assert self.new_leader != self.node, f"{self.topic}[{self.partition}] kept its fenced leader"


# -- 1. Producer ----------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_a_million_row_send_keeps_every_row_once_and_in_order(cluster: KafkaCluster) -> None:
    config = config_of(cluster)
    topic = create_topic(cluster, 3)
    n = 1_000_000
    rows = np.arange(n, dtype=np.int64).reshape(n, 1)
    producer = km.Producer(config)  # default settings: idempotent, acks=all

    thread, out = in_background(lambda: producer.send(topic, rows))
    wait_until(lambda: producer.delivered >= n // 5 or not thread.is_alive(), "a fifth delivered")
    outage = Outage(cluster, topic, 0)
    at_kill = producer.delivered
    print(f"node {outage.node} killed with {at_kill} of {n} rows delivered")
    # A tenth or more was still to be delivered when the node died (and, sent keyless, some of it
    # went to its partitions: the partitioner spreads batches over all three).
    assert at_kill <= n - n // 10, f"{at_kill} of {n} rows were delivered before the kill"

    report = finished(thread, out, 120)
    report.wait(120)
    outage.join()
    assert (report.delivered, report.failed) == (n, 0)

    ds = km.KafkaDataset(
        topic, config, format="tensor", dtype="int64", shape=1, end="latest", metadata=["partition"]
    )
    with ds:
        batches = [(b["value"][:, 0].copy(), b["partition"].copy()) for b in ds]
    ids = np.concatenate([i for i, _ in batches])
    partitions = np.concatenate([p for _, p in batches])
    assert len(ids) == n, f"{len(ids)} records for {n} rows"
    for p in range(3):
        mine = ids[partitions == p]
        assert len(mine) > 0, f"partition {p} got no rows"
        # Rows were queued in id order: in each partition ids only go up (no reordering by the
        # retries of the failover, no duplicate, which would repeat an id).
        assert np.all(np.diff(mine) > 0), f"partition {p}: ids out of order or repeated"
    np.testing.assert_array_equal(np.sort(ids), np.arange(n))  # every row, once


# -- 2. PyTorch DataLoader ------------------------------------------------------------------------

TORCH_SCHEMA: dict[str, Any] = {"id": "int64", "x": ("float32", 4)}


@pytest.mark.timeout(180)
def test_dataloader_epoch_with_two_workers_reads_every_record_once(cluster: KafkaCluster) -> None:
    from kafka_ml.torch import KafkaIterableDataset
    from torch.utils.data import DataLoader

    config = config_of(cluster)
    topic = create_topic(cluster, 3)
    n = 300_000
    ids = np.arange(n, dtype=np.int64)
    x = (ids[:, None] * np.array([1, 2, 3, 4])).astype(np.float32)
    with km.Producer(config) as producer:
        for p in range(3):
            rows = slice(p, None, 3)
            producer.send(
                topic, {"id": ids[rows], "x": x[rows]}, format="json", schema=TORCH_SCHEMA, partition=p
            )

    # Small read-ahead, so that most of the epoch is fetched after the kill: each worker's decoded
    # queue holds 256 KiB (~11 k rows of 24 bytes) and librdkafka prefetches about 256 KiB per
    # partition (~4 k rows of ~60 bytes of JSON). The test checks below that it was so.
    reader_config = {**config, "queued.max.messages.kbytes": "256", "fetch.message.max.bytes": "65536"}
    ds = KafkaIterableDataset(
        topic,
        reader_config,
        format="json",
        schema=TORCH_SCHEMA,
        end="latest",
        batch_size=1000,
        num_workers=2,
        queue_bytes=256 << 10,
    )
    seen: list[np.ndarray] = []
    received = 0
    outage: Outage | None = None
    at_kill = 0
    for batch in DataLoader(ds, batch_size=None, num_workers=2):
        seen.append(batch["id"].numpy().copy())
        received += len(seen[-1])
        if outage is None and received >= n // 5:
            at_kill = received
            outage = Outage(cluster, topic, 0)
    assert outage is not None, f"the epoch had {received} rows; the kill never happened"
    after_kill = time.monotonic() - outage.killed_at
    outage.join()
    print(
        f"node {outage.node} killed with {at_kill} of {n} rows received; "
        f"the epoch ended {after_kill:.1f} s later"
    )
    # Unhindered, the last 80 % of the epoch takes well under a second here (0.15 s). The killed
    # node's partition gets a new leader only once the node is fenced, 4 s after its last
    # heartbeat: an epoch ending 2 s or more after the kill had records of it still to fetch, so
    # the workers' consumers did go through the failover (the premise of this test).
    assert after_kill >= 2.0, f"the epoch ended {after_kill:.1f} s after the kill: nothing waited for it"
    got = np.concatenate(seen)
    assert len(got) == n, f"{len(got)} rows in the epoch for {n} records"
    np.testing.assert_array_equal(np.sort(got), ids)  # every record exactly once


# -- 3. Exactly-once inference --------------------------------------------------------------------

INPUT_SCHEMA: dict[str, Any] = {"id": "int64", "x": ("float32", 4)}
OUTPUT_SCHEMA: dict[str, Any] = {"id": "int64", "y": "float64"}


@pytest.mark.timeout(180)
def test_exactly_once_inference_gives_one_result_per_input(cluster: KafkaCluster) -> None:
    from kafka_ml.inference import InferenceLoop

    config = config_of(cluster)
    inp, out = create_topic(cluster, 3, "in"), create_topic(cluster, 1, "out")
    n = 6000
    ids = np.arange(n, dtype=np.int64)
    x = np.repeat(ids[:, None], 4, axis=1).astype(np.float32)
    with km.Producer(config) as producer:
        producer.send(inp, {"id": ids, "x": x}, format="json", schema=INPUT_SCHEMA, key="id")

    def predict(batch: Any) -> dict[str, Any]:
        time.sleep(0.02)  # a model's time: the loop runs for seconds, so the kill lands mid-stream
        return {"id": batch["id"], "y": batch["x"].sum(axis=1, dtype="float64")}

    group = f"serve-{uuid.uuid4().hex[:8]}"
    loop = InferenceLoop(
        predict,
        inp,
        out,
        {**config, "group.id": group},
        delivery="exactly_once",
        format="json",
        schema=INPUT_SCHEMA,
        output_schema=OUTPUT_SCHEMA,
        batch_size=100,
        max_batch_rows=100,  # one transaction per 100 inputs: many transactions around the kill
    )
    thread, result = in_background(lambda: loop.run(max_messages=n, handle_signals=False))
    wait_until(lambda: loop.metrics["messages"] >= n // 5 or not thread.is_alive(), "a fifth served")
    outage = Outage(cluster, out, 0)
    at_kill = loop.metrics["messages"]
    print(f"node {outage.node} killed with {at_kill} of {n} inputs served")
    assert at_kill <= n // 2, f"{at_kill} of {n} inputs were served before the kill"

    try:
        metrics = finished(thread, result, 150)
    except AssertionError:
        # Slow (how far it got) or stuck (the stacks dumped above show where)?
        progress = loop.metrics
        print(f"after 150 s: {progress['messages']} of {n} served, {progress['transaction_aborts']} aborts")
        raise
    outage.join()
    assert metrics["messages"] == n and metrics["predict_errors"] == 0

    results = km.KafkaDataset(
        out,
        {**config, "isolation.level": "read_committed"},
        format="json",
        schema=OUTPUT_SCHEMA,
        end="latest",
    )
    with results:
        got = [(int(i), float(y)) for b in results for i, y in zip(b["id"], b["y"], strict=True)]
    counts = Counter(i for i, _ in got)
    missing = sorted(set(range(n)) - set(counts))
    repeated = sorted(i for i, c in counts.items() if c > 1)
    assert not missing and not repeated and len(counts) == n, (
        f"{len(missing)} inputs without a result (first {missing[:10]}), "
        f"{len(repeated)} with more than one (first {repeated[:10]})"
    )
    assert all(y == 4 * i for i, y in got)
    committed = _native.committed_offsets(
        {**config, "group.id": group}, [(inp, p) for p in range(3)], timeout=10
    )
    assert sum(o or 0 for o in committed.values()) == n


@pytest.mark.timeout(120)
def test_transaction_offsets_reach_a_new_group_coordinator_after_the_old_ones_death(
    cluster: KafkaCluster,
) -> None:
    """The exactly-once loop's `send_offsets_to_transaction` once blocked forever (past its
    timeout) when the broker coordinating the consumer group died: librdkafka kept the dead,
    decommissioned broker cached as the coordinator and waited for a state change of it that never
    came (librdkafka issues #5511, #5456; kafka-ml builds librdkafka with the fix, vendor/README.md).
    Here, deterministically: the group's coordinator is killed after a first transaction cached
    it, and the next transaction's offsets must reach the new coordinator well within the
    timeout."""
    config = config_of(cluster)
    inp, out = create_topic(cluster, 1, "in"), create_topic(cluster, 1, "out")
    schema = {"id": "int64"}
    with km.Producer(config) as producer:
        producer.send(inp, {"id": np.arange(1000, dtype=np.int64)}, format="json", schema=schema)
    group = f"txn-{uuid.uuid4().hex[:8]}"
    dataset = km.KafkaDataset(
        inp,
        {**config, "group.id": group, "isolation.level": "read_committed"},
        format="json",
        schema=schema,
        batch_size=100,
        commit=False,
    )
    producer = km.Producer({**config, "transactional.id": group})
    producer.init_transactions()
    batches = iter(dataset)
    sent: list[int] = []

    def transaction() -> float:
        """One batch through a transaction; returns how long its offsets took."""
        batch = next(batches)
        sent.extend(int(i) for i in batch["id"])
        producer.begin_transaction()
        producer.send(out, {"id": batch["id"]}, format="json", schema=schema)
        # Deliveries first, so the producer has seen (and dropped) a dead node before the offsets.
        producer.flush()
        started = time.monotonic()
        producer.send_offsets_to_transaction(dataset, timeout=20)
        took = time.monotonic() - started
        producer.commit_transaction()
        return took

    transaction()  # caches the group's coordinator
    coordinator = int(cluster.admin().describe_consumer_groups([group])[group].result(30).coordinator.id)
    # The output's leader on the same node: its death makes the producer refresh its metadata,
    # find the node gone and decommission it, the condition of the old hang.
    if cluster.leader_of(out, 0) != coordinator:
        cluster.move_leader(out, 0, coordinator)
    transaction()
    cluster.kill(coordinator)
    try:
        cluster.wait_fenced(coordinator, timeout=30)
        thread, result = in_background(transaction)
        took = finished(thread, result, 40)
        print(f"node {coordinator} (the group's coordinator) killed; the next offsets took {took:.1f} s")
        assert took < 20, f"send_offsets_to_transaction took {took:.1f} s"
        transaction()
    finally:
        producer.close()
        dataset.close()
        cluster.restart(coordinator)

    results = km.KafkaDataset(
        out, {**config, "isolation.level": "read_committed"}, format="json", schema=schema, end="latest"
    )
    with results:
        got = [int(i) for b in results for i in b["id"]]
    assert len(sent) >= 4 and got == sent == list(range(len(sent)))
    committed = _native.committed_offsets({**config, "group.id": group}, [(inp, 0)], timeout=10)
    assert committed == {(inp, 0): len(sent)}


# -- 4. Model updates -----------------------------------------------------------------------------


def spooled_chunks(sub: km.ModelSubscriber) -> int:
    """Chunks the subscriber holds for publications without a manifest yet."""
    with sub._lock:
        return sum(len(s.extents) for s in sub._spools.values())


@pytest.mark.timeout(180)
def test_model_subscriber_serves_the_new_version_never_a_partial_one(
    cluster: KafkaCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_of(cluster)
    model_topic = f"models-{uuid.uuid4().hex[:10]}"
    publisher = km.ModelPublisher(model_topic, config, chunk_size=16 << 10)  # replicated 3 by default
    publisher.publish(b"version one", "v1")
    updates: list[km.ModelVersion] = []
    sub = km.ModelSubscriber(model_topic, config, on_update=updates.append)
    try:
        sub.wait_for("v1", timeout=30)
        artifact = os.urandom(4 << 20)  # 256 chunks

        # Each chunk handed to the producer 10 ms apart: the publication takes seconds, so the
        # kill lands in the middle of its chunks.
        produce = publisher._producer.produce

        def slow_produce(*args: Any, **kwargs: Any) -> Any:
            time.sleep(0.01)
            return produce(*args, **kwargs)

        monkeypatch.setattr(publisher._producer, "produce", slow_produce)
        thread, out = in_background(lambda: publisher.publish(artifact, "v2"))
        wait_until(lambda: spooled_chunks(sub) >= 40 or not thread.is_alive(), "40 chunks received")
        outage = Outage(cluster, model_topic, 0)
        print(f"node {outage.node} killed with {spooled_chunks(sub)} of 256 chunks received")
        assert thread.is_alive(), "the publication was finished before the kill"
        assert sub.latest is not None and sub.latest.version == "v1"

        published = finished(thread, out, 120)
        outage.join()
        got = sub.wait_for("v2", timeout=60)
        assert got.sha256 == published.sha256 and got.size == len(artifact)
        assert sub.latest is not None and sub.latest.model == artifact  # whole, byte for byte
        # Served: v1, then v2, each complete; nothing in between, nothing rejected.
        assert [(u.version, u.model) for u in updates] == [("v1", b"version one"), ("v2", artifact)]
        assert sub.stats["rejected"] == 0
    finally:
        sub.close()
        publisher.close()


# -- 5. A streaming read through leader changes ---------------------------------------------------


@pytest.mark.timeout(180)
def test_streaming_read_through_leader_changes_loses_nothing_and_stalls_briefly(
    cluster: KafkaCluster,
) -> None:
    config = config_of(cluster)
    topic = create_topic(cluster, 1)
    stop_writing = threading.Event()

    reports: list[km.SendReport] = []  # the writer's, for a failure message

    def write() -> int:
        """25 rows every 20 ms (1250 rows/s) until told to stop; returns how many."""
        sent = 0
        with km.Producer(config) as producer:
            while not stop_writing.is_set():
                ids = np.arange(sent, sent + 25, dtype=np.int64)
                reports.append(producer.send(topic, {"id": ids}, format="json", schema={"id": "int64"}))
                sent += 25
                time.sleep(0.02)
            producer.flush(60)
        return sent

    arrivals: list[float] = []
    seen: list[np.ndarray] = []
    total: dict[str, int] = {}

    def read() -> None:
        ds = km.KafkaDataset(
            topic, config, format="json", schema={"id": "int64"}, start="earliest", max_wait=0.1
        )
        deadline = time.monotonic() + 150
        with ds:
            while time.monotonic() < deadline:
                batch = ds.poll(0.5)
                if batch is not None and batch.num_rows:
                    arrivals.append(time.monotonic())
                    seen.append(batch["id"].copy())
                if "sent" in total and sum(len(s) for s in seen) >= total["sent"]:
                    return

    writer, written = in_background(write)
    reader, read_out = in_background(read)
    try:
        wait_until(lambda: len(arrivals) >= 10, "the read started")
    except AssertionError as e:
        delivered = sum(r.delivered for r in reports)
        written = 25 * len(reports)
        why = f"{len(arrivals)} batches read; {delivered} of {written} rows delivered"
        raise AssertionError(f"{e}: {why}") from e

    # A planned leader change: the reassignment tool and a preferred election.
    first = cluster.leader_of(topic, 0)
    second = next(node for node in cluster.nodes if node != first)
    moved_at = time.monotonic()
    cluster.move_leader(topic, 0, second)
    # The kill waits until the read is back on the new leader, so that no gap between batches
    # spans both changes: each change's stall is measured on its own.
    led_at = time.monotonic()
    wait_until(lambda: arrivals[-1] > led_at + 1.0, "the read went on after the planned move", 30)
    # Then an unplanned one: the new leader SIGKILLed (the partition moves to the third node).
    killed_at = time.monotonic()
    outage = Outage(cluster, topic, 0)
    assert outage.node == second
    outage.join()
    time.sleep(1)
    stop_writing.set()
    total["sent"] = finished(writer, written, 60)
    finished(reader, read_out, 120)

    got = np.concatenate(seen)
    assert len(got) == total["sent"] and np.array_equal(got, np.arange(total["sent"])), (
        f"{len(got)} records read of {total['sent']} written (in order, each once: "
        f"{np.array_equal(np.sort(got), np.arange(total['sent']))})"
    )
    times = np.array(arrivals)
    assert times[0] < moved_at and times[-1] > killed_at  # the read spans both changes
    gaps = np.diff(times)
    worst = float(gaps.max())
    planned = float(gaps[(times[1:] > moved_at) & (times[1:] < killed_at)].max())
    print(
        f"largest gap between batches: {worst:.2f} s; around the planned move: {planned:.2f} s "
        f"({len(arrivals)} batches)"
    )
    # The planned move hands leadership over with the replicas in sync: no timeout in the way,
    # only the clients' metadata refresh after NOT_LEADER answers.
    assert planned < 5.0, f"the read stalled {planned:.1f} s at the planned leader change"
    # A SIGKILLed leader is fenced after broker.session.timeout.ms (4 s on this cluster; 1-2 s
    # more when it was the active controller, whose successor is elected first), then its
    # partition gets a new leader and librdkafka finds it on its next metadata refresh (within
    # ~1 s of backoff): 5-8 s without data, the writer's retries included (5.6-7.6 s measured).
    # A stall past 10 s, or more than 4 s past the fencing when the cluster was slower than that
    # to fence (as seen from a polling admin client), means a client waited for something else (a
    # session or request timeout, 10-45 s) instead of following the new leader.
    assert outage.fenced_after is not None
    limit = max(10.0, outage.fenced_after + 4.0)
    assert worst < limit, (
        f"the read stalled {worst:.1f} s; the cluster fenced the killed node "
        f"{outage.fenced_after:.1f} s after the kill"
    )


# -- 6. Ray Data ----------------------------------------------------------------------------------


def _read_with_progress(marker_dir: str, *args: Any) -> Iterator[Any]:
    """A read task of `kafka_ml.ray.read_kafka`, unchanged, that notes in its own file under
    `marker_dir` when it starts, the rows it has yielded after each block, and how it ended: the
    driver sees from these how far the tasks are, and afterwards how every attempt went."""
    from kafka_ml import ray as kafka_ml_ray  # in the Ray worker: the real `_read_range`

    rng = args[1]
    path = Path(marker_dir) / f"{rng.partition}-{rng.start}-{rng.end}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    def note(line: str) -> None:
        with path.open("a") as f:
            f.write(f"{line}\n")

    note(f"start {time.time()}")
    rows = 0
    try:
        for block in kafka_ml_ray._read_range(*args):
            rows += block.num_rows
            note(f"rows {rows} {time.time()}")
            yield block
    except BaseException as e:
        note(f"error {time.time()} {e!r}".replace("\n", " "))
        raise
    note(f"end {rows} {time.time()}")


@dataclass
class _Attempt:
    """One attempt of a read task, as its marker file tells it."""

    partition: int
    start: int
    end: int
    started: float
    rows: int  # yielded so far
    ended: str | None  # "end" or "error", None while running (or if its worker died)
    blocks: list[tuple[int, float]]  # (rows yielded so far, time) after each block
    error: str = ""


def _attempts(marker_dir: Path) -> list[_Attempt]:
    out = []
    for path in marker_dir.iterdir():
        partition, start, end = (int(v) for v in path.name.split("-")[:3])
        lines = path.read_text().splitlines()
        if not lines or not lines[-1]:
            continue
        attempt = _Attempt(partition, start, end, float(lines[0].split()[1]), 0, None, [])
        for line in lines[1:]:
            kind, rest = line.split(" ", 1)
            if kind == "rows":
                rows, at = rest.split()
                attempt.rows = int(rows)
                attempt.blocks.append((int(rows), float(at)))
            elif kind == "end":
                attempt.ended = "end"
            elif kind == "error":
                attempt.ended, attempt.error = "error", rest
        out.append(attempt)
    return out


RAY_SCHEMA: dict[str, Any] = {"id": "int64", "x": ("float32", 4)}


@pytest.mark.timeout(180)
def test_ray_read_kafka_reads_every_record_once(
    cluster: KafkaCluster, ray_cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kafka_ml.ray as kafka_ml_ray
    import pyarrow as pa
    import ray

    config = config_of(cluster)
    topic = create_topic(cluster, 3)
    n = 300_000
    ids = np.arange(n, dtype=np.int64)
    x = (ids[:, None] * np.array([1, 2, 3, 4])).astype(np.float32)
    # Record batches of at most 64 KiB (~1200 records), so that the reads below, which fetch one
    # batch per request, take many round trips.
    t0 = time.monotonic()
    with km.Producer({**config, "batch.size": "65536"}) as producer:
        for p in range(3):
            rows = slice(p, None, 3)
            data = {"id": ids[rows], "x": x[rows]}
            producer.send(topic, data, format="json", schema=RAY_SCHEMA, partition=p)
    print(f"written in {time.monotonic() - t0:.1f} s")

    # Each task fetches 64 KiB per request and holds little read ahead (librdkafka's prefetch
    # queue 256 KiB, the decoded queue 64 KiB): a task is read from the broker as it goes, so
    # tasks under way at the kill still have their records on the broker.
    reader_config = {
        **config,
        "fetch.max.bytes": "65536",
        "max.partition.fetch.bytes": "65536",
        "message.max.bytes": "65536",
        "queued.max.messages.kbytes": "256",
    }
    markers = tmp_path / "tasks"
    markers.mkdir()
    monkeypatch.setattr(kafka_ml_ray, "_read_range", functools.partial(_read_with_progress, str(markers)))
    # 12 tasks (4 per partition, 25 k records each) in blocks of 2000 rows; the snapshot is taken
    # here, with every node up. Two read tasks run at a time (two Ray nodes of one CPU each).
    ds = kafka_ml_ray.read_kafka(
        topic,
        reader_config,
        format="json",
        schema=RAY_SCHEMA,
        override_num_blocks=12,
        rows_per_block=2000,
        queue_bytes=64 << 10,
    )

    def read() -> np.ndarray:
        table = pa.concat_tables(ray.get(ds.to_arrow_refs()))
        return np.asarray(table.column("id").to_numpy())

    thread, out = in_background(read)

    # The tasks' ranges: 4 of 25 k offsets per partition, as read_kafka cuts the snapshot.
    task_ranges = {
        (r.partition, r.start, r.end)
        for r in kafka_ml_ray._split([kafka_ml_ray.KafkaReadRange(topic, p, 0, n // 3) for p in range(3)], 12)
    }
    assert len(task_ranges) == 12

    def under_way() -> _Attempt | None:
        """Once a tenth of the records is read: a task that has yielded two blocks and has not
        ended, of a partition with tasks still to start (they will read from the new leader)."""
        attempts = _attempts(markers)
        if sum(a.rows for a in attempts) < n // 10:
            return None
        started = {(a.partition, a.start, a.end) for a in attempts}
        to_start = {r[0] for r in task_ranges - started}
        return next(
            (a for a in attempts if a.ended is None and a.rows >= 4000 and a.partition in to_start), None
        )

    wait_until(lambda: under_way() is not None or not thread.is_alive(), "a read task under way")
    reading = under_way()
    assert reading is not None, "the read ended before any task was seen under way"
    partition = reading.partition
    outage = Outage(cluster, topic, partition)
    killed_at = time.time()
    at_kill = _attempts(markers)
    done = sum(a.rows for a in at_kill if a.partition == partition)
    print(
        f"node {outage.node} (leader of partition {partition}) killed with {done} of {n // 3} of "
        f"its records and {sum(a.rows for a in at_kill)} of {n} in all yielded by the read tasks"
    )
    assert done < n // 3, f"partition {partition} was read entirely before the kill"

    got = finished(thread, out, 120)
    outage.join()

    attempts = _attempts(markers)
    ranges = {(a.partition, a.start, a.end) for a in attempts}
    assert ranges == task_ranges, f"the tasks read {sorted(ranges)}"
    # A read task that raises fails the whole read (Ray Data retries a task only when its worker
    # dies), so the read finishing means no task raised. That every task's first attempt also
    # completed, with all its range, says how exactly-once came about here: the tasks' consumers
    # followed the new leader within read_timeout and nothing was read twice or retried. (A task
    # opened while the partition had no leader asks for its watermarks again until one answers;
    # before read_kafka did so, this test failed there: the whole read, on the first such task.)
    failed = [a for a in attempts if a.ended != "end"]
    assert not failed, f"attempts that did not complete: {failed}"
    assert len(attempts) == len(ranges), "a read task ran more than once"
    short = [a for a in attempts if a.rows != a.end - a.start]
    assert not short, f"tasks that yielded other than their range's records: {short}"
    # The read went through the failover: partition `partition`'s tasks yielded records after
    # the kill, some of them from tasks that started after it (their whole range came from a
    # node other than the killed one, which was down, then a follower).
    after = [a for a in attempts if a.partition == partition and a.started > killed_at]
    assert after, f"every task of partition {partition} had started before the kill"
    last = max(t for a in attempts if a.partition == partition for _, t in a.blocks)
    print(
        f"{len(after)} of partition {partition}'s tasks started after the kill; its last block "
        f"came {last - killed_at:.1f} s after it"
    )

    assert len(got) == n, f"{len(got)} rows in the Dataset for {n} records"
    counts = Counter(got.tolist())
    repeated = sorted(i for i, c in counts.items() if c > 1)
    assert not repeated, f"{len(repeated)} ids read more than once (first {repeated[:10]})"
    np.testing.assert_array_equal(np.sort(got), ids)  # every record exactly once
