"""PyTorch DataLoader integration on a real broker: sharding, epochs, shuffling, resuming, commits,
Prometheus metrics counted in DataLoader workers."""

from __future__ import annotations

import gc
import os
import pickle
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import kafka_ml as km
import numpy as np
import pytest
import torch
from kafka_ml import _native
from kafka_ml.metrics import start_metrics_server
from kafka_ml.torch import KafkaIterableDataset, merge_state_dicts
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

SCHEMA = {"id": "int64", "x": ("float32", 4)}


def fill(config: dict[str, str], topic: str, n: int, partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """Writes rows ``id = 0..n-1`` (and ``x = id * [1, 2, 3, 4]``) round-robin over partitions."""
    ids = np.arange(n, dtype=np.int64)
    x = (ids[:, None] * np.array([1, 2, 3, 4])).astype(np.float32)
    with km.Producer(config) as producer:
        for p in range(partitions):
            rows = slice(p, None, partitions)
            producer.send(topic, {"id": ids[rows], "x": x[rows]}, format="json", schema=SCHEMA, partition=p)
    return ids, x


def ids_of(batches: list[dict[str, object]]) -> list[int]:
    out: list[int] = []
    for b in batches:
        t = b["id"]
        assert isinstance(t, torch.Tensor)
        out.extend(t.tolist())
    return out


def make(config: dict[str, str], topic: str, **kw: object) -> KafkaIterableDataset:
    options: dict[str, object] = dict(format="json", schema=SCHEMA, end="latest", batch_size=32)
    options.update(kw)
    return KafkaIterableDataset(topic, config, **options)  # type: ignore[arg-type]


# -- sharding ---------------------------------------------------------------------------------


def test_two_ranks_three_workers_deliver_each_message_once_per_epoch(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=8)
    ids, x = fill(config, topic, 2000, 8)
    for epoch in range(2):
        seen: list[int] = []
        total = 0.0
        for rank in range(2):
            ds = make(config, topic, rank=rank, world_size=2, num_workers=3)
            ds.set_epoch(epoch)
            loader = DataLoader(ds, batch_size=None, num_workers=3)
            batches = list(loader)
            assert len(batches) == len(loader)  # len() is exact for a bounded read
            for b in batches:
                assert b["x"].dtype == torch.float32 and b["x"].shape[1:] == (4,)
                total += float(b["x"].sum(dtype=torch.float64))
            seen.extend(ids_of(batches))
        assert sorted(seen) == ids.tolist()  # every message exactly once, across 2 x 3 shards
        assert total == pytest.approx(float(x.sum(dtype=np.float64)))


def test_one_partition_is_split_into_offset_ranges_over_four_workers(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=1)
    fill(config, topic, 1000, 1)
    ds = make(config, topic, metadata=["offset"], batch_size=50, num_workers=4)
    batches = list(DataLoader(ds, batch_size=None, num_workers=4))
    # Worker k reads offsets [250k, 250k+250): every worker works, on its own contiguous range.
    per_range = Counter(int(b["offset"][0]) // 250 for b in batches)
    assert per_range == {0: 5, 1: 5, 2: 5, 3: 5}
    for b in batches:
        offsets = b["offset"].numpy()
        assert np.all(np.diff(offsets) == 1) and offsets[0] // 250 == offsets[-1] // 250
    assert sorted(int(o) for b in batches for o in b["offset"]) == list(range(1000))


def test_batches_are_zero_copy_views_without_shuffling(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=1)
    fill(config, topic, 256, 1)
    reader = km.KafkaDataset(
        topic, config, format="json", schema=SCHEMA, end="latest", batch_size=64, max_wait=2.0
    )
    ds = reader.torch()  # the same read, as a torch dataset
    assert len(ds) == 4
    for b in ds:
        assert b["x"].shape == (64, 4)
        assert not b["x"].numpy().flags.owndata  # a view of the Arrow buffer, not a copy


# -- shuffling and epochs -----------------------------------------------------------------------


def test_shuffle_is_seeded_per_epoch_and_reproducible(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    ids, _ = fill(config, topic, 600, 2)

    def order(epoch: int, seed: int = 7) -> list[int]:
        ds = make(config, topic, shuffle_buffer=200, seed=seed, batch_size=25)
        ds.set_epoch(epoch)
        return ids_of(list(ds))

    first = order(0)
    assert sorted(first) == ids.tolist()
    assert first == order(0)  # same seed and epoch: same order
    assert first != order(1)  # another epoch: another order
    assert first != sorted(first)  # actually shuffled


def test_shuffled_batches_have_exact_size(config: dict[str, str], new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=1)
    fill(config, topic, 250, 1)
    sizes = [len(b["id"]) for b in make(config, topic, shuffle_buffer=100, batch_size=40)]
    assert sizes == [40] * 6 + [10]
    dropped = [len(b["id"]) for b in make(config, topic, shuffle_buffer=100, batch_size=40, drop_last=True)]
    assert dropped == [40] * 6


# -- resuming ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shuffle_buffer", [0, 150])
def test_stateful_dataloader_resumes_mid_epoch_without_loss_or_repeat(
    config: dict[str, str], new_topic: Callable[..., str], shuffle_buffer: int
) -> None:
    topic = new_topic(partitions=3)
    ids, _ = fill(config, topic, 900, 3)
    loader = StatefulDataLoader(
        make(config, topic, shuffle_buffer=shuffle_buffer), batch_size=None, num_workers=2
    )
    before: list[int] = []
    for i, b in enumerate(loader):
        before.extend(ids_of([b]))
        if i == 9:
            state = loader.state_dict()
            break
    del loader

    resumed = StatefulDataLoader(
        make(config, topic, shuffle_buffer=shuffle_buffer), batch_size=None, num_workers=2
    )
    resumed.load_state_dict(state)
    after = ids_of(list(resumed))
    assert len(before) == 320
    assert sorted(before + after) == ids.tolist()


def test_resume_with_a_different_number_of_workers_and_ranks(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    ids, _ = fill(config, topic, 1200, 2)
    # Run 1: 2 ranks x 2 workers, each rank stops after 6 batches and checkpoints.
    before: list[int] = []
    rank_states = []
    for rank in range(2):
        loader = StatefulDataLoader(
            make(config, topic, rank=rank, world_size=2, shuffle_buffer=64), batch_size=None, num_workers=2
        )
        for i, b in enumerate(loader):
            before.extend(ids_of([b]))
            if i == 5:
                rank_states.append(loader.state_dict())
                break
    # A single rank's checkpoint does not say what the other rank has left.
    with pytest.raises(km.ConfigError, match="missing"):
        merge_state_dicts(rank_states[0])
    merged = merge_state_dicts(*rank_states)

    # Run 2: 1 rank x 3 workers picks up exactly what is left.
    ds = make(config, topic, shuffle_buffer=64)
    ds.load_state_dict(merged)
    after = ids_of(list(DataLoader(ds, batch_size=None, num_workers=3)))
    assert len(before) == 2 * 6 * 32
    assert sorted(before + after) == ids.tolist()

    # The next epoch starts afresh.
    ds.set_epoch(1)
    assert sorted(ids_of(list(DataLoader(ds, batch_size=None, num_workers=3)))) == ids.tolist()


def test_a_shard_state_is_refused_by_another_layout(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=1)
    fill(config, topic, 100, 1)
    state = make(config, topic, rank=1, world_size=2).state_dict()
    ds = make(config, topic)
    ds.load_state_dict(state)
    with pytest.raises(km.ConfigError, match="shard 1 of 2"):
        next(iter(ds))


def test_commit_writes_the_checkpoint_to_the_group(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    fill(config, topic, 400, 2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    cfg = {**config, "group.id": group}
    ds = make(cfg, topic, start="earliest", batch_size=50)
    it = iter(ds)
    handed_out: Counter[int] = Counter()
    for _ in range(3):
        batch = next(it)
        handed_out.update((batch["id"] % 2).tolist())  # id % 2 is the partition (round-robin)
    state = ds.state_dict()
    tps = [(topic, 0), (topic, 1)]
    assert _native.committed_offsets(cfg, tps) == {(topic, 0): None, (topic, 1): None}
    # Without shuffling each partition was handed out as a prefix: its length is the offset.
    expected = {(topic, 0): handed_out[0], (topic, 1): handed_out[1]}
    assert sum(expected.values()) == 150
    assert ds.commit(state) == expected
    assert _native.committed_offsets(cfg, tps) == expected
    # A new dataset of the group starts at the committed offsets.
    again = make(cfg, topic, start="committed")
    assert again.num_samples() == 400 - 150


def test_streaming_read_yields_batches_as_they_arrive(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    ds = KafkaIterableDataset(topic, config, format="json", schema=SCHEMA, batch_size=1000, max_wait=0.05)
    with pytest.raises(TypeError):
        len(ds)
    fill(config, topic, 300, 2)
    seen: list[int] = []
    it = iter(ds)
    while len(seen) < 300:
        batch = next(it)
        assert len(batch["id"]) < 1000  # handed out at the latency bound, not when full
        seen.extend(batch["id"].tolist())
    assert sorted(seen) == list(range(300))
    state = ds.state_dict()
    assert state["remaining"][topic] == {"0": [[150, None]], "1": [[150, None]]}


def test_bad_arguments_are_refused(config: dict[str, str], new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=1)
    with pytest.raises(km.ConfigError, match="bounded"):
        KafkaIterableDataset(topic, config, format="raw", shuffle_buffer=10)
    with pytest.raises(km.ConfigError, match="rank 2"):
        KafkaIterableDataset(topic, config, format="raw", end="latest", rank=2, world_size=2)
    with pytest.raises(km.UnknownTopicError):
        KafkaIterableDataset(f"missing-{uuid.uuid4().hex[:6]}", config, format="raw", end="latest", timeout=5)


# -- Prometheus metrics -------------------------------------------------------------------------

COUNTERS = ("messages", "batches", "decoded_bytes", "skipped", "dead_lettered")


def dataset_samples(text: str, name: str) -> tuple[dict[str, float], dict[int, float]]:
    """The ``dataset=name`` samples of an exposition: ``({counter or gauge: value}, {partition: lag})``
    (counters by their name without ``kafka_ml_dataset_`` and ``_total``)."""
    values: dict[str, float] = {}
    lag: dict[int, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("dataset") != name:
                continue
            if s.name == "kafka_ml_consumer_lag":
                assert int(s.labels["partition"]) not in lag
                lag[int(s.labels["partition"])] = s.value
            else:
                key = s.name.removeprefix("kafka_ml_dataset_").removesuffix("_total")
                assert key not in values
                values[key] = s.value
    return values, lag


def scrape(url: str, name: str) -> tuple[dict[str, float], dict[int, float]]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return dataset_samples(response.read().decode(), name)


def rows_of(batches: list[dict[str, Any]]) -> int:
    return sum(len(b["id"]) for b in batches)


def test_metrics_of_spawned_workers_are_scraped_during_and_after_epochs(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=3)
    n = 1500
    fill(config, topic, n, 3)
    registry = CollectorRegistry()
    server = start_metrics_server(0, "127.0.0.1", registry)
    try:
        ds = make(config, topic, metrics=registry, metrics_name="train", num_workers=2)
        loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn")
        it = iter(loader)
        taken = [next(it) for _ in range(6)]
        during, _ = scrape(server.url, "train")
        # Counted by the workers as they hand batches over: the 6 taken, and at most the
        # DataLoader's prefetch (2 per worker) besides.
        assert 6 <= during["batches"] <= 6 + 2 * 2
        assert rows_of(taken) <= during["messages"] <= rows_of(taken) + 4 * 32
        first = taken + list(it)
        end, lag = scrape(server.url, "train")
        assert rows_of(first) == n
        assert end["messages"] == n
        assert end["batches"] == len(first) == len(loader)
        assert end["skipped"] == end["dead_lettered"] == end["queued_bytes"] == 0
        assert end["decoded_bytes"] >= n * (8 + 16 + 4 + 8)  # id, x, and the partition and offset read
        assert lag == {0: 0, 1: 0, 2: 0}  # a bounded read, all read
        assert all(during[k] <= end[k] for k in COUNTERS)

        ds.set_epoch(1)
        second = list(loader)  # new worker processes: the counters go on from the first epoch's
        after, lag = scrape(server.url, "train")
        assert rows_of(second) == n
        assert after["messages"] == 2 * n
        assert after["batches"] == len(first) + len(second)
        assert after["decoded_bytes"] > end["decoded_bytes"]
        assert lag == {0: 0, 1: 0, 2: 0}
    finally:
        server.close()


def test_metrics_of_forked_workers_and_in_process_reads_add_up_with_skipped_messages(
    config: dict[str, str], new_topic: Callable[..., str], produce: Callable[..., None]
) -> None:
    topic = new_topic(partitions=2)
    produce(topic, [b"not json"] * 3, partition=0)  # undecodable, before the rows
    produce(topic, [b"{broken"], partition=1)
    fill(config, topic, 400, 2)
    registry = CollectorRegistry()
    ds = make(config, topic, metrics=registry, on_error="skip")  # labelled with the topic
    with pytest.raises(km.ConfigError, match="already reported"):
        make(config, topic, metrics=registry)
    assert make(config, topic, metrics=CollectorRegistry(), rank=1, world_size=2)._metrics.labels == {
        "dataset": f"{topic}#rank1"
    }

    first = list(DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="fork"))
    values, lag = dataset_samples(generate_latest(registry).decode(), topic)
    assert rows_of(first) == 400
    assert values["messages"] == 400 and values["batches"] == len(first)
    assert values["skipped"] == 4 and values["dead_lettered"] == 0 and values["queued_bytes"] == 0
    assert lag == {0: 0, 1: 0}

    second = list(DataLoader(ds, batch_size=None, num_workers=0))  # in-process: slot 0
    values, lag = dataset_samples(generate_latest(registry).decode(), topic)
    assert values["messages"] == 800 and values["batches"] == len(first) + len(second)
    assert values["skipped"] == 8
    assert lag == {0: 0, 1: 0}


def test_a_dataset_with_metrics_pickles_the_counters_path_and_removes_the_file_when_collected(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=1)
    registry = CollectorRegistry()
    ds = make(config, topic, metrics=registry, metrics_name="pickled")
    assert ds._counters is not None
    path = ds._counters.path
    worker_copy = pickle.loads(pickle.dumps(ds))  # what a spawned DataLoader worker gets
    assert worker_copy._counters.path == path and not worker_copy._counters.owned
    assert worker_copy._metrics is None
    del worker_copy
    gc.collect()
    assert os.path.exists(path)  # a worker's copy leaves the file to its owner
    assert dataset_samples(generate_latest(registry).decode(), "pickled")[0]["messages"] == 0
    del ds
    gc.collect()
    assert not os.path.exists(path)
    assert dataset_samples(generate_latest(registry).decode(), "pickled") == ({}, {})


class _Reader:
    """What a slot's meter reads of a reader: ``stats()`` and ``lag()``."""

    def __init__(self, skipped: int, queued: int, lag: dict[tuple[str, int], int]) -> None:
        self.skipped, self.queued, self._lag = skipped, queued, lag

    def stats(self) -> tuple[int, int, int, int]:
        return self.skipped, 1, self.queued, 0  # dead_lettered: 1 per reader

    def lag(self) -> dict[tuple[str, int], int]:
        return self._lag


class _Batch:
    nbytes = 100


def test_shared_counters_pickle_as_their_path_add_up_over_slots_and_go_away_with_their_owner() -> None:
    from kafka_ml.metrics import MIN_SLOTS, SharedCounters, _remove_block

    class Owner:
        pass

    owner = Owner()
    counters = SharedCounters.create(owner, MIN_SLOTS, [("t", 0), ("t", 1)])
    path = counters.path
    assert counters.owned and os.path.getsize(path) == MIN_SLOTS * (6 + 2) * 8
    if os.path.isdir("/dev/shm"):
        assert path.startswith("/dev/shm/")
    pickled = pickle.dumps(counters)
    assert path.encode() in pickled and b"finalize" not in pickled
    worker = pickle.loads(pickled)
    assert worker.path == path and not worker.owned
    assert counters.totals() == ([0] * 6, {})  # lag -1: not known

    # A worker's pass on slot 3: rows handed out, a batch read, a look at its reader.
    meter = worker.slot(3)
    meter.handed_out(10)
    meter.handed_out(5)
    reader = _Reader(skipped=2, queued=64, lag={("t", 0): 7, ("other", 0): 1})
    meter.read(_Batch(), reader)  # type: ignore[arg-type]
    assert counters.totals() == ([15, 2, 100, 2, 1, 64], {("t", 0): 7})
    reader.skipped = 3
    meter.end_reader(reader)  # type: ignore[arg-type]
    assert counters.totals() == ([15, 2, 100, 3, 1, 0], {("t", 0): 7})
    # Slot 0 is further along in partition 0: the smallest lag is reported.
    further = _Reader(skipped=0, queued=0, lag={("t", 0): 3, ("t", 1): 4})
    pickle.loads(pickled).slot(0).read(_Batch(), further)  # type: ignore[arg-type]
    assert counters.totals() == ([15, 2, 200, 3, 2, 0], {("t", 0): 3, ("t", 1): 4})
    # The next epoch's worker on slot 3 (a new process, a new reader) adds to the slot.
    again = pickle.loads(pickled).slot(3)
    again.handed_out(1)
    again.end_reader(_Reader(skipped=1, queued=0, lag={}))  # type: ignore[arg-type]
    assert counters.totals() == ([16, 3, 200, 4, 3, 0], {("t", 0): 3, ("t", 1): 4})

    with pytest.raises(km.ConfigError, match=f"worker {MIN_SLOTS} is beyond the {MIN_SLOTS} worker slots"):
        worker.slot(MIN_SLOTS)
    _remove_block(path, os.getpid() + 1)  # a forked worker's copy of the finalizer: not the owner
    del worker, meter, again
    gc.collect()
    assert os.path.exists(path)
    del owner
    gc.collect()
    assert not os.path.exists(path) and not counters.owned


def _worker_columns(rows: int) -> dict[str, np.ndarray]:
    return {
        "x": np.arange(rows * 3, dtype=np.float32).reshape(rows, 3),
        "id": np.arange(rows, dtype=np.int64),
        "flag": np.arange(rows) % 2 == 0,
        "b": np.arange(rows, dtype=np.uint8),
        "name": np.array([f"n{i}" for i in range(rows)], dtype=object),
    }


def _assert_same_columns(out: dict[str, Any], cols: dict[str, np.ndarray]) -> None:
    assert list(out) == list(cols)
    for k in ("x", "id", "flag", "b"):
        assert out[k].dtype == torch.from_numpy(cols[k]).dtype and out[k].shape == cols[k].shape
        np.testing.assert_array_equal(out[k].numpy(), cols[k])
    np.testing.assert_array_equal(out["name"], cols["name"])


def _assert_one_block(batch: dict[str, Any]) -> None:
    """The numeric columns lie in one block, in order, each at a multiple of 64 bytes in it."""
    base = batch["x"].data_ptr()
    assert base % 8 == 0 and all(batch[k].numpy().flags.aligned for k in ("x", "id", "flag", "b"))
    # x: 10 x 3 float32 = 120 bytes -> id at 128; id: 80 -> flag at 256; flag: 10 -> b at 320.
    assert [batch[k].data_ptr() - base for k in ("x", "id", "flag", "b")] == [0, 128, 256, 320]


def test_a_small_worker_batch_crosses_the_pipe_as_one_block():
    """A small worker batch packs its numeric columns into one bytearray, pickles as that block
    (no shared memory, no file descriptor) and arrives as writable tensors viewing it."""
    import copy
    import pickle
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # noqa: F401  (registers torch's shared-memory reducers)
    from kafka_ml.torch import _worker_batch
    from torch.utils.data._utils.collate import default_convert

    cols = _worker_columns(10)
    batch = _worker_batch(cols, list(cols))
    _assert_same_columns(batch, cols)
    _assert_one_block(batch)

    # What a DataLoader worker does with it: default_convert, then torch's pickler.
    sent = ForkingPickler.dumps(default_convert(batch))
    assert cols["x"].tobytes() in bytes(sent)  # the data itself travels in the pipe
    received = pickle.loads(sent)
    assert type(received) is dict
    _assert_same_columns(received, cols)
    assert not any(received[k].is_shared() for k in ("x", "id", "flag", "b"))
    _assert_one_block(received)
    received["x"] += 1  # the user owns the received block
    np.testing.assert_array_equal(received["x"].numpy(), cols["x"] + 1)

    # A collate_fn that replaces a packed column: the batch pickles as the plain dict it is.
    changed = copy.copy(batch)
    changed["x"] = changed["x"] * 2
    received = pickle.loads(ForkingPickler.dumps(changed))
    np.testing.assert_array_equal(received["x"].numpy(), cols["x"] * 2)
    np.testing.assert_array_equal(received["id"].numpy(), cols["id"])


def test_a_large_worker_batch_is_one_shared_storage():
    """Above the pipe limit a worker batch is one torch storage (one shared-memory transfer)."""
    from kafka_ml.torch import _PIPE_MAX_BYTES, _worker_batch

    rows = _PIPE_MAX_BYTES // 12 + 1  # float32 x 3 per row alone exceeds the limit
    cols = _worker_columns(rows)
    out = _worker_batch(cols, list(cols))
    assert type(out) is dict
    assert len({out[k].untyped_storage().data_ptr() for k in ("x", "id", "flag", "b")}) == 1
    _assert_same_columns(out, cols)
