"""Online learning on a real broker: an OnlineTrainer publishes versions with their lineage while
an InferenceLoop hot-swaps to each, and a restarted trainer resumes from the newest version."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable
from typing import Any

import kafka_ml as km
import numpy as np
import pytest
from helpers import finished, in_background
from kafka_ml import OnlineTrainer, _native
from kafka_ml.inference import InferenceLoop

TRAIN_SCHEMA = {"x": "float64"}
REQUEST_SCHEMA = {"id": "int64"}
RESULT_SCHEMA = {"id": "int64", "y": "float64"}
Model = dict[str, np.ndarray]


def count_rows(batch: Any, model: Model) -> Model:
    """The model in these tests: how many rows and what sum of ``x`` it was trained on, so a
    version's model says exactly which messages went into it."""
    return {"n": model["n"] + batch.num_rows, "sum": model["sum"] + batch["x"].sum()}


def fresh_model() -> Model:
    return {"n": np.zeros(1), "sum": np.zeros(1)}


def send_training(config: dict[str, str], topic: str, x: np.ndarray, partition: int = 0) -> None:
    with km.Producer(config) as producer:
        producer.send(topic, {"x": x}, format="json", schema=TRAIN_SCHEMA, partition=partition).wait(30)


def offsets_of(version: km.ModelVersion, topic: str) -> dict[int, int]:
    assert version.lineage is not None
    return {int(p): o for p, o in version.lineage["offsets"][topic].items()}


def committed(config: dict[str, str], group: str, topic: str, partitions: int) -> dict[int, int | None]:
    got = _native.committed_offsets({**config, "group.id": group}, [(topic, p) for p in range(partitions)])
    return {p: got[(topic, p)] for p in range(partitions)}


@pytest.mark.timeout(90)
def test_served_version_advances_as_the_trainer_publishes(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    train, requests, results = new_topic(), new_topic(), new_topic()
    model_topic = f"models-{uuid.uuid4().hex[:8]}"
    group = f"online-{uuid.uuid4().hex[:8]}"
    trainer = OnlineTrainer(
        train,
        {**config, "group.id": group},
        count_rows,
        model_topic,
        initial_model=fresh_model(),
        publish_every_batches=2,
        format="json",
        schema=TRAIN_SCHEMA,
        batch_size=10,
        max_wait=0.02,
    )
    subscriber = km.ModelSubscriber(model_topic, config, loader="numpy")

    def predict(batch: Any, model: Model) -> dict[str, Any]:
        # Each answer is the serving model's row count, which its lineage must account for.
        return {"id": batch["id"], "y": np.full(batch.num_rows, float(model["n"][0]))}

    loop = InferenceLoop(
        predict,
        requests,
        results,
        {**config, "group.id": f"serve-{uuid.uuid4().hex[:8]}"},
        model=subscriber,
        format="json",
        schema=REQUEST_SCHEMA,
        output_schema=RESULT_SCHEMA,
        batch_size=5,
        max_wait=0.01,
    )
    training, training_out = in_background(lambda: trainer.run(handle_signals=False))
    serving, served = in_background(lambda: loop.run(handle_signals=False))
    sent = 0
    rng = np.random.default_rng(0)
    with km.Producer(config) as producer:

        def send_requests(n: int) -> None:
            nonlocal sent
            ids = np.arange(sent, sent + n, dtype=np.int64)
            producer.send(requests, {"id": ids}, format="json", schema=REQUEST_SCHEMA).wait(30)
            sent += n

        # Training data and requests interleaved, until the loop has swapped models three times
        # (bounded: 150 rounds or 40 s).
        deadline = time.monotonic() + 40
        for _ in range(150):
            if loop.metrics["model_updates"] >= 3 or time.monotonic() > deadline:
                break
            producer.send(train, {"x": rng.random(10)}, format="json", schema=TRAIN_SCHEMA)
            send_requests(5)
            time.sleep(0.05)
        trainer.stop()
        trained = finished(training, training_out, 30)
        last = trainer.published[-1]  # with publish_on_stop, everything trained is in it
        subscriber.wait_for(last.version, timeout=30)
        send_requests(5)  # answered by the last version
        deadline = time.monotonic() + 30
        while loop.metrics["messages"] < sent and time.monotonic() < deadline:
            time.sleep(0.05)
    loop.stop()
    metrics = finished(serving, served, 30)
    subscriber.close()
    trainer.close()
    assert metrics["predict_errors"] == 0 and metrics["model_updates"] >= 3

    # Lineage: offsets strictly increase, each version continues its parent, and the model of each
    # version was trained on exactly the messages its lineage names.
    published = trainer.published
    assert [v.version for v in published] == [str(i) for i in range(1, len(published) + 1)]
    trained_up_to = [offsets_of(v, train)[0] for v in published]
    assert all(a < b for a, b in itertools.pairwise(trained_up_to)), trained_up_to
    for parent, child in itertools.pairwise(published):
        assert child.lineage is not None and parent.lineage is not None
        assert child.lineage["previous_offsets"] == parent.lineage["offsets"]
        assert child.lineage["previous_version"] == parent.version
    assert trained["messages"] == trained_up_to[-1]  # every training message, once
    assert committed(config, group, train, 1) == {0: trained_up_to[-1]}
    lineage = {v.version: offsets_of(v, train)[0] for v in published}

    # Every request got exactly one result, from a version that only moved forward.
    with km.KafkaDataset(
        results, config, format="json", schema=RESULT_SCHEMA, end="latest", metadata=["headers"]
    ) as ds:
        rows = [
            (int(i), y, dict(h)["kafka_ml.model.version"].decode())
            for b in ds
            for i, y, h in zip(b["id"], b["y"], b["headers"], strict=True)
        ]
    assert sorted(i for i, _, _ in rows) == list(range(sent))
    versions = [int(v) for _, _, v in rows]
    assert versions == sorted(versions) and len(set(versions)) >= 4, sorted(set(versions))
    assert versions[-1] == int(last.version)
    assert all(y == lineage[v] for _, y, v in rows)  # each answer by the model its header names


@pytest.mark.timeout(60)
def test_a_restarted_trainer_resumes_from_the_newest_version(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    train = new_topic(partitions=2)
    model_topic = f"models-{uuid.uuid4().hex[:8]}"
    group = f"online-{uuid.uuid4().hex[:8]}"
    x = np.arange(120, dtype=np.float64)
    send_training(config, train, x[:60], partition=0)
    send_training(config, train, x[60:], partition=1)
    options: dict[str, Any] = {"format": "json", "schema": TRAIN_SCHEMA, "batch_size": 10, "max_wait": 0.02}

    calls = 0

    def crashes_at_batch_8(batch: Any, model: Model) -> Model:
        nonlocal calls
        calls += 1
        if calls == 8:
            raise RuntimeError("the trainer crashed")
        return count_rows(batch, model)

    first = OnlineTrainer(
        train,
        {**config, "group.id": group},
        crashes_at_batch_8,
        model_topic,
        initial_model=fresh_model(),
        publish_every_batches=3,
        **options,
    )
    with first, pytest.raises(RuntimeError, match="crashed"):
        first.run(handle_signals=False)
    assert [v.version for v in first.published] == ["1", "2"]  # batch 7 was trained, never published
    v2 = first.published[-1]
    assert v2.lineage is not None and v2.lineage["batches"] == 6
    assert sum(offsets_of(v2, train).values()) == v2.lineage["messages"] > 0
    assert committed(config, group, train, 2) == {p: offsets_of(v2, train).get(p) for p in range(2)}
    # As if the process had died between publishing and committing: the lineage still rules.
    _native.commit_offsets({**config, "group.id": group}, {(train, 0): 0, (train, 1): 0})

    second = OnlineTrainer(
        train, {**config, "group.id": group}, count_rows, model_topic, publish_every_batches=3, **options
    )
    with second:
        stats = second.run(idle_timeout=2, handle_signals=False)
    assert second.resumed_from is not None and second.resumed_from.version == "2"
    assert second.published[0].version == "3"
    assert second.published[0].lineage is not None
    assert second.published[0].lineage["previous_offsets"] == v2.lineage["offsets"]
    assert second.model is not None
    # Trained on every message exactly once along the published line: none twice, none missed.
    assert second.model["n"][0] == 120 and second.model["sum"][0] == x.sum()
    assert stats["messages"] == 120 and stats["offsets"] == {(train, 0): 60, (train, 1): 60}
    assert offsets_of(second.published[-1], train) == {0: 60, 1: 60}
    assert committed(config, group, train, 2) == {0: 60, 1: 60}


@pytest.mark.timeout(60)
def test_publishes_every_t_seconds_and_only_new_training(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    train = new_topic()
    model_topic = f"models-{uuid.uuid4().hex[:8]}"
    cfg = {**config, "group.id": f"online-{uuid.uuid4().hex[:8]}"}
    options: dict[str, Any] = {"format": "json", "schema": TRAIN_SCHEMA, "publish_every_seconds": 0.3}
    with OnlineTrainer(train, cfg, count_rows, model_topic, **options) as empty:
        with pytest.raises(km.ConfigError, match="no version to resume from"):
            empty.run(handle_signals=False)

    trainer = OnlineTrainer(
        train, cfg, count_rows, model_topic, initial_model=fresh_model(), publish_on_stop=False, **options
    )
    thread, out = in_background(lambda: trainer.run(idle_timeout=2.5, handle_signals=False))
    for i in range(3):  # three bursts, a second apart: one version each, none in between
        send_training(config, train, np.full(4, float(i)))
        time.sleep(1.0)
    finished(thread, out, 30)
    trainer.close()
    assert [v.version for v in trainer.published] == ["1", "2", "3"]
    assert [offsets_of(v, train)[0] for v in trainer.published] == [4, 8, 12]


def test_bad_arguments_are_refused() -> None:
    config = {"bootstrap.servers": "127.0.0.1:1", "group.id": "g"}
    model = fresh_model()
    every: dict[str, Any] = {"initial_model": model, "publish_every_batches": 5}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"config": {"bootstrap.servers": "127.0.0.1:1"}}, r"group\.id"),
        ({"publish_every_batches": None}, "publish_every_batches=N and/or publish_every_seconds=T"),
        ({"publish_every_batches": 0}, "publish_every_batches must be an integer >= 1, got 0"),
        ({"publish_every_batches": 2.5}, "publish_every_batches must be an integer >= 1, got 2.5"),
        ({"publish_every_seconds": -1.0}, "publish_every_seconds must be > 0, got -1.0"),
        ({"train_step": "fit"}, "train_step must be callable"),
        ({"topics": []}, "topics must be a topic name"),
        ({"model_topic": 3}, "model_topic must be a topic name or a ModelPublisher, got a int"),
        ({"resume": False, "initial_model": None}, "resume=False needs an initial_model"),
        ({"start": "earliest"}, "start= is not an OnlineTrainer option"),
        ({"end": "latest"}, "end= is not an OnlineTrainer option"),
        ({"commit": True}, "commit= is not an OnlineTrainer option"),
        ({"to_artifact": "state_dict"}, "to_artifact must be callable"),
    ]
    for override, message in cases:
        arguments: dict[str, Any] = {
            "topics": "t",
            "config": config,
            "train_step": count_rows,
            "model_topic": "models",
            **every,
            **override,
        }
        with pytest.raises(km.ConfigError, match=message):
            OnlineTrainer(**arguments)
