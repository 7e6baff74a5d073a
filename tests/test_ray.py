"""kafka_ml.ray against a real local Ray cluster (two raylet processes on loopback) and the real broker.

The cluster is `ray_cluster` (tests/conftest.py), `ray.cluster_utils.Cluster`: a head node and a
second node, each its own raylet, object store and worker processes, as `ray start` would run them.
Each node has one CPU, so read tasks really spread over two nodes' worker processes.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")


import kafka_ml as km  # noqa: E402
from kafka_ml import _native  # noqa: E402
from kafka_ml.ray import KafkaMLDatasource, read_kafka, write_kafka  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCHEMA = {"id": "int64", "x": ("float32", 4), "y": "int64", "s": "string"}


def _table(ds: Any) -> Any:
    """The whole Dataset as one pyarrow Table (Ray's blocks, not rows through Python)."""
    return pa.concat_tables(ray.get(ds.to_arrow_refs()))


def _records(ids: Iterable[int]) -> list[bytes]:
    return [json.dumps({"id": i, "x": [i, i + 0.5, -i, 1.0], "y": i % 7, "s": f"r{i}"}).encode() for i in ids]


def _fill(produce: Callable[..., None], topic: str, sizes: list[int]) -> list[int]:
    """Writes ``sizes[p]`` records to partition p; ids are unique over the topic."""
    ids, next_id = [], 0
    for p, n in enumerate(sizes):
        chunk = list(range(next_id, next_id + n))
        produce(topic, _records(chunk), partition=p)
        ids.extend(chunk)
        next_id += n
    return ids


def test_typed_columns_exactly_once_with_split_partitions(
    ray_cluster: str, config: dict[str, str], new_topic: Callable[..., str], produce: Callable[..., None]
) -> None:
    topic = new_topic(partitions=3)
    ids = _fill(produce, topic, [6000, 2000, 700])
    ds = read_kafka(
        topic, config, format="json", schema=SCHEMA, metadata=["partition", "offset"], override_num_blocks=6
    )
    # Six tasks over three partitions: the big one is read by several tasks.
    materialized = ds.materialize()
    assert materialized.num_blocks() >= 6
    table = _table(materialized)
    got = table.column("id").to_numpy()
    assert len(got) == len(ids)
    assert set(got.tolist()) == set(ids)
    positions = set(
        zip(table.column("partition").to_pylist(), table.column("offset").to_pylist(), strict=True)
    )
    assert len(positions) == len(ids)
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("s").type == pa.string()
    batch = materialized.sort("id").take_batch(len(ids), batch_format="numpy")
    assert batch["x"].dtype == np.float32 and batch["x"].shape == (len(ids), 4)
    np.testing.assert_array_equal(batch["x"][:, 2], -batch["id"].astype(np.float32))
    np.testing.assert_array_equal(batch["y"], batch["id"] % 7)


def test_partition_split_into_task_ranges(
    config: dict[str, str], new_topic: Callable[..., str], produce: Callable[..., None]
) -> None:
    from kafka_ml.ray import _resolve

    topic = new_topic(partitions=2)
    _fill(produce, topic, [1000, 100])
    plan = _resolve(topic, config, None, None, "latest", {"format": "raw"})
    source = KafkaMLDatasource(plan, num_tasks=5)
    ranges = source.task_ranges(200)
    p0 = sorted((r.start, r.end) for r in ranges if r.partition == 0)
    assert len(p0) >= 4
    # Contiguous and disjoint: [0, 1000) of partition 0 exactly, [0, 100) of partition 1.
    assert p0[0][0] == 0 and p0[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(p0))
    assert [(r.start, r.end) for r in ranges if r.partition == 1] == [(0, 100)]
    # Without an override, tasks hold at least min_offsets_per_task offsets.
    few = KafkaMLDatasource(plan, min_offsets_per_task=500).task_ranges(200)
    assert len(few) == 3
    # By default a task holds 16 MiB of rows at least: this small topic is one task per partition.
    assert [(r.partition, r.start, r.end) for r in KafkaMLDatasource(plan).task_ranges(200)] == [
        (0, 0, 1000),
        (1, 0, 100),
    ]


def test_tensor_format_as_ndarrays_and_lists(
    ray_cluster: str, config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    data = np.arange(600 * 6, dtype=np.float32).reshape(600, 2, 3)
    with km.Producer(config) as producer:
        producer.send(topic, data).wait(30)
    ds = read_kafka(topic, config, format="tensor", dtype="float32", shape=(2, 3), override_num_blocks=3)
    batch = ds.take_batch(1000, batch_format="numpy")
    values = batch["value"]
    assert values.shape == (600, 2, 3) and values.dtype == np.float32
    got = sorted(values.reshape(600, -1).tolist())
    assert got == sorted(data.reshape(600, -1).tolist())
    as_lists = read_kafka(topic, config, format="tensor", dtype="float32", shape=(2, 3), tensors=False)
    assert pa.types.is_fixed_size_list(as_lists.schema().base_schema.field("value").type)


def test_start_and_end_bounds(
    ray_cluster: str, config: dict[str, str], new_topic: Callable[..., str], produce: Callable[..., None]
) -> None:
    topic = new_topic(partitions=2)
    _fill(produce, topic, [200, 200])  # partition 0: ids 0..199, partition 1: 200..399
    ds = read_kafka(
        topic, config, format="json", schema=SCHEMA,
        start={(topic, 0): 10, (topic, 1): 150}, end={(topic, 0): 50},
        override_num_blocks=4,
    )  # fmt: skip
    got = sorted(_table(ds).column("id").to_pylist())
    assert got == list(range(10, 50)) + list(range(350, 400))
    # An empty snapshot is an empty Dataset with the columns.
    empty = read_kafka(topic, config, format="json", schema=SCHEMA, start="latest")
    assert empty.count() == 0
    assert empty.schema().names == list(SCHEMA)
    with pytest.raises(km.ConfigError, match=rf"end offset 500 of topic '{topic}' partition 0 .* 200"):
        read_kafka(topic, config, format="json", schema=SCHEMA, end={(topic, 0): 500})


def _delete_records(bootstrap: str, topic: str, partition: int, before: int) -> None:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.delete_records([TopicPartition(topic, partition, before)])
    for f in futures.values():
        f.result(timeout=30)


def test_records_deleted_after_the_snapshot_fail_the_read_loudly(
    ray_cluster: str, config: dict[str, str], new_topic: Callable[..., str], produce: Callable[..., None]
) -> None:
    topic = new_topic(partitions=1)
    _fill(produce, topic, [1000])
    ds = read_kafka(topic, config, format="json", schema=SCHEMA, override_num_blocks=2)
    _delete_records(config["bootstrap.servers"], topic, 0, 600)
    with pytest.raises(
        Exception, match=rf"IncompleteReadError.*topic '{topic}' partition 0 offsets \[0, 500\)"
    ) as e:
        ds.materialize()
    assert "outside its range" in str(e.value)


def test_transactional_topic_split_on_markers_and_aborted_records(
    ray_cluster: str, config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    """read_committed over committed and aborted transactions, cut into tasks whose ranges hold
    only aborted records or markers: every task ends by position, every committed id once."""
    topic = new_topic(partitions=1)
    with km.Producer({**config, "transactional.id": f"tx-{topic}"}) as producer:
        producer.init_transactions()
        for first, commit in [(0, True), (1000, False), (100, True)]:
            producer.begin_transaction()
            producer.send(topic, {"id": np.arange(first, first + 100)}, format="json").wait(30)
            if commit:
                producer.commit_transaction()
            else:
                producer.abort_transaction()
    committed = {**config, "isolation.level": "read_committed"}
    # The coordinator writes the commit markers after commit_transaction returns; until the last
    # one is written, a read_committed snapshot ends before the last transaction (at the LSO).
    # 3 x (100 records + 1 marker) offsets.
    deadline = time.monotonic() + 30
    while _native.watermarks(committed, [(topic, 0)])[(topic, 0)][1] < 303:
        assert time.monotonic() < deadline, "the last commit marker was not written within 30 s"
        time.sleep(0.05)
    ds = read_kafka(
        topic, committed, format="json", schema={"id": "int64"}, override_num_blocks=8, read_timeout=10
    )
    got = _table(ds).column("id").to_pylist()
    assert len(got) == 200 and set(got) == set(range(200))


def _broker_pid(bootstrap: str) -> int:
    """The pid of the broker this test session started (listening on the bootstrap port)."""
    import psutil

    port = int(bootstrap.rsplit(":", 1)[1])
    ours = {p.pid for p in psutil.Process().children(recursive=True)}
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid in ours:
            return int(c.pid)
    pytest.skip("the broker is not one this session started (KAFKA_BOOTSTRAP_SERVERS)")


def _stop_broker_after_first_block(
    read_fn: Callable[[], Iterable[Any]], broker_pid: int, marker: str
) -> Iterator[Any]:
    """Yields the task's first block, then freezes the broker (SIGSTOP) for the rest."""
    for i, block in enumerate(read_fn()):
        yield block
        if i == 0:
            Path(marker).write_text("stopped")
            os.kill(broker_pid, signal.SIGSTOP)


class _StallingSource(KafkaMLDatasource):
    broker_pid = 0
    marker = ""

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[Any]:
        from ray.data.datasource import ReadTask

        (task,) = super().get_read_tasks(parallelism, per_task_row_limit, data_context)
        read = functools.partial(_stop_broker_after_first_block, task.read_fn, self.broker_pid, self.marker)
        return [ReadTask(read, task.metadata, schema=task.schema)]


def test_broker_out_of_reach_mid_task_fails_after_read_timeout(
    ray_cluster: str, config: dict[str, str], new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """The broker freezes after a task's first block: the task fails after read_timeout naming
    its range and the offset it reached, instead of returning the rows it has."""
    from kafka_ml.ray import _resolve

    topic = new_topic(partitions=1)
    # One message per record batch, fetched about one kilobyte at a time: most of the range is
    # still on the broker when it freezes.
    with km.Producer({**config, "linger.ms": 0, "batch.num.messages": 1}) as producer:
        producer.send(
            topic, {"id": np.arange(3000), "pad": np.array(["p" * 200] * 3000)}, format="json"
        ).wait(60)
    small_fetches = {
        **config,
        "fetch.max.bytes": 1000,
        "max.partition.fetch.bytes": 1000,
        "message.max.bytes": 1000,
    }
    plan = _resolve(
        topic,
        small_fetches,
        None,
        None,
        "latest",
        {"format": "json", "schema": {"id": "int64"}, "queue_bytes": 1 << 16},
    )
    source = _StallingSource(plan, num_tasks=1, rows_per_block=50, read_timeout=3)
    source.broker_pid, source.marker = _broker_pid(config["bootstrap.servers"]), str(tmp_path / "stopped")
    ds = ray.data.read_datasource(source, override_num_blocks=1)
    try:
        with pytest.raises(
            Exception,
            match=rf"IncompleteReadError.*topic '{topic}' partition 0 offsets \[0, 3000\): "
            r"no record arrived for 3 s after offset \d+",
        ) as e:
            ds.materialize()
    finally:
        os.kill(source.broker_pid, signal.SIGCONT)
    assert Path(source.marker).exists()
    reached = int(str(e.value).split("after offset ")[1].split()[0])
    assert 50 <= reached < 3000


def _kill_worker_once(read_fn: Callable[[], Iterable[Any]], marker: str) -> Iterator[Any]:
    """Yields the task's first block, then (on the first attempt only) SIGKILLs its own worker."""
    for i, block in enumerate(read_fn()):
        yield block
        if i == 0 and not os.path.exists(marker):
            Path(marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


class _KillingSource(KafkaMLDatasource):
    marker = ""

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[Any]:
        from ray.data.datasource import ReadTask

        tasks = super().get_read_tasks(parallelism, per_task_row_limit, data_context)
        first = tasks[0]
        tasks[0] = ReadTask(
            functools.partial(_kill_worker_once, first.read_fn, self.marker),
            first.metadata,
            schema=first.schema,
        )
        return tasks


def test_read_task_whose_worker_is_killed_is_retried_exactly_once(
    ray_cluster: str,
    config: dict[str, str],
    new_topic: Callable[..., str],
    produce: Callable[..., None],
    tmp_path: Path,
) -> None:
    from kafka_ml.ray import _resolve

    topic = new_topic(partitions=2)
    ids = _fill(produce, topic, [3000, 1000])
    plan = _resolve(topic, config, None, None, "latest", {"format": "json", "schema": SCHEMA})
    source = _KillingSource(plan, num_tasks=4, rows_per_block=400)
    source.marker = str(tmp_path / "killed")
    ds = ray.data.read_datasource(source, override_num_blocks=4)
    got = _table(ds).column("id").to_numpy()
    # The kill happened mid-task (after a block was handed out), in a worker, not the driver.
    assert int(Path(source.marker).read_text()) != os.getpid()
    assert len(got) == len(ids)
    assert set(got.tolist()) == set(ids)


def test_write_kafka_round_trip(
    ray_cluster: str, config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=3)
    n = 5000

    def features(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = batch["id"]
        return {"id": ids, "x": np.stack([ids, -ids], axis=1).astype(np.float32), "label": ids % 3}

    ds = ray.data.range(n, override_num_blocks=4).map_batches(features)
    written = write_kafka(
        ds,
        topic,
        config,
        format="json",
        key="id",
        schema={"id": "int64", "x": ("float32", 2), "label": "int64"},
    )
    assert written == n
    read = km.KafkaDataset(
        topic,
        config,
        format="json",
        schema={"id": "int64", "x": ("float32", 2)},
        end="latest",
        metadata=["key"],
    )
    assert len(read) == n
    rows = {int(i): (x, k) for b in read for i, x, k in zip(b["id"], b["x"], b["key"], strict=True)}
    assert len(rows) == n and set(rows) == set(range(n))
    assert rows[7][0].tolist() == [7.0, -7.0]
    # Tensors: a Dataset read back as tensor columns is written in the tensor format again.
    copy = new_topic(partitions=1)
    tensors = read_kafka(topic, config, format="json", schema={"x": ("float32", 2)}).select_columns(["x"])
    assert write_kafka(tensors, copy, config, format="tensor") == n
    back = km.KafkaDataset(copy, config, format="tensor", dtype="float32", shape=2, end="latest")
    values = np.concatenate([b["value"] for b in back])
    assert sorted(values[:, 0].tolist()) == [float(i) for i in range(n)]


def test_write_delivery_failure_fails_the_write(
    ray_cluster: str, config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    """The broker refuses messages over the topic's max.message.bytes: a real delivery failure."""
    topic = f"small-{new_topic(partitions=1)}"
    _native.create_topic(config, topic, 1, 1, {"max.message.bytes": "1024"})
    ds = ray.data.from_items([{"id": i, "s": "x" * 4000} for i in range(20)])
    with pytest.raises(Exception, match=rf"DeliveryError.*topic '{topic}'.*(too large|TOO_LARGE)") as e:
        write_kafka(ds, topic, config, format="json")
    assert "written" not in str(e.value)


def test_kafka_ml_imports_without_ray() -> None:
    code = textwrap.dedent(
        """
        import sys

        class NoRay:
            def find_spec(self, name, path=None, target=None):
                if name == "ray" or name.startswith("ray."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, NoRay())
        import kafka_ml
        assert "ray" not in sys.modules
        try:
            import kafka_ml.ray
        except ImportError as e:
            assert "pip install 'kafka-ml[ray]'" in str(e), e
            print("ok")
        else:
            raise AssertionError("kafka_ml.ray imported without ray")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_ray_train_example_trains_on_every_record_each_epoch(
    ray_cluster: str, config: dict[str, str], tmp_path: Path
) -> None:
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import ray_train
    finally:
        sys.path.remove(str(REPO / "examples"))
    topic = f"train-{tmp_path.name[-12:]}"
    ray_train.write_features(config, topic, 4000)
    dataset = read_kafka(topic, config, format="json", schema=ray_train.SCHEMA, override_num_blocks=4)
    result = ray_train.train(dataset, workers=2, epochs=3, storage_path=str(tmp_path / "runs"))
    history = result.metrics["history"]
    assert [h["rows"] for h in history] == [4000, 4000, 4000]
    losses = [h["loss"] for h in history]
    assert losses[-1] < 0.6 * losses[0], losses
