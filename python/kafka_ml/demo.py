"""`kafka-ml demo`: the whole pipeline on one cluster, end to end.

It runs on a bare install (NumPy and pyarrow): torch and tqdm are used when installed.

1. ingest: the 8x8 handwritten digits (shipped with the package in ``data/digits.npz``, nothing
   downloaded; see ``data/README.md``) are written to a topic with the ``Producer``;
2. train: a model learns from the topic streamed back (a PyTorch MLP through
   ``KafkaIterableDataset`` when torch is installed, otherwise softmax regression in NumPy over
   ``KafkaDataset`` batches);
3. publish: the weights go to a model topic with the ``ModelPublisher``;
4. serve: an ``InferenceLoop`` with a ``ModelSubscriber`` scores a held-out stream, fed at a fixed
   rate, exactly once, and the predictions are checked against the labels.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import resources
from typing import Any

import numpy as np

from . import EmbeddedCluster, KafkaDataset, Producer, _native
from .dataset import ColumnType
from .inference import InferenceLoop

SCHEMA: dict[str, ColumnType] = {"id": "int64", "x": ("float32", 64), "y": "int64"}


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 handwritten digits shipped with the package: ``(pixels, labels)``, pixels
    ``uint8[1797, 64]`` (8x8 images, 0..16), labels ``uint8[1797]`` (0..9). They are
    scikit-learn's ``load_digits()`` data, a copy of the UCI test set (``data/README.md``)."""
    with resources.files(__package__).joinpath("data/digits.npz").open("rb") as f, np.load(f) as npz:
        return npz["data"], npz["target"]


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a train and a test set holding each label in the same proportion, shuffled."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test[members[: round(len(members) * test_fraction)]] = True
    return rng.permutation(np.flatnonzero(~test)), rng.permutation(np.flatnonzero(test))


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module that cannot even be looked up is not there
        return False


def _bar(total: int | None, desc: str, unit: str = "msg") -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are optional
        return None
    return tqdm(total=total, desc=desc, unit=unit, leave=True)


@contextmanager
def _cluster(bootstrap_servers: str | None) -> Iterator[tuple[str, EmbeddedCluster | None]]:
    if bootstrap_servers is not None:
        yield bootstrap_servers, None
        return
    cluster = EmbeddedCluster()
    try:
        yield cluster.bootstrap_servers, cluster
    finally:
        cluster.close()


def _train_torch(config: dict[str, str], topic: str, epochs: int) -> tuple[dict[str, np.ndarray], str]:
    import torch

    from .torch import KafkaIterableDataset

    torch.manual_seed(0)
    dataset = KafkaIterableDataset(
        topic, config, format="json", schema=SCHEMA, end="latest", batch_size=32, shuffle_buffer=4096, seed=0
    )
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    bar = _bar(epochs * len(dataset), "train (torch MLP)", "batch")
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        for batch in dataset:
            loss = torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"])
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}", refresh=False)
    if bar is not None:
        bar.close()
    weights = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return {
        "w1": weights["0.weight"].T.copy(),
        "b1": weights["0.bias"],
        "w2": weights["2.weight"].T.copy(),
        "b2": weights["2.bias"],
    }, "torch MLP 64-64-10"


def _train_numpy(config: dict[str, str], topic: str, epochs: int) -> tuple[dict[str, np.ndarray], str]:
    """Softmax regression by mini-batch gradient descent, for machines without torch."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.01, (64, 10)).astype(np.float32)
    b = np.zeros(10, np.float32)
    dataset = KafkaDataset(topic, config, format="json", schema=SCHEMA, end="latest", batch_size=32)
    bar = _bar(epochs * len(dataset), "train (NumPy softmax)", "row")
    for _epoch in range(epochs):
        for batch in dataset:
            x, y = batch["x"], batch["y"]
            logits = x @ w + b
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(y)), y] -= 1.0
            w -= 0.5 * (x.T @ p) / len(y)
            b -= 0.5 * p.mean(axis=0)
            if bar is not None:
                bar.update(len(y))
    if bar is not None:
        bar.close()
    dataset.close()
    return {"w": w, "b": b}, "NumPy softmax regression"


def _forward(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    if "w1" in weights:
        hidden = np.maximum(x @ weights["w1"] + weights["b1"], 0.0)
        return np.asarray(hidden @ weights["w2"] + weights["b2"])
    return np.asarray(x @ weights["w"] + weights["b"])


def run_demo(
    bootstrap_servers: str | None = None,
    *,
    epochs: int = 10,
    rate: int = 2000,
    repeat: int = 4,
    client_config: Mapping[str, Any] | None = None,
) -> int:
    """Runs the pipeline; returns 0 when serving was exactly-once and accurate.

    ``client_config`` (e.g. a secured cluster's ``security.protocol``, ``sasl.*``, ``ssl.*``) is
    given to every client; ``bootstrap_servers`` (or the config's) names a real cluster, else the
    demo starts an embedded one."""
    client_config = dict(client_config or {})
    if bootstrap_servers is None:
        bootstrap_servers = client_config.pop("bootstrap.servers", None)
    from .models import ModelPublisher, ModelSubscriber

    t_start = time.perf_counter()
    with _cluster(bootstrap_servers) as (bootstrap, cluster):
        config = {**client_config, "bootstrap.servers": bootstrap}
        where = "embedded cluster (librdkafka mock)" if cluster is not None else "Kafka"
        print(f"kafka-ml demo on {where} at {bootstrap}")
        run = f"{int(time.time())}"
        train_topic, live_topic = f"demo-digits-train-{run}", f"demo-digits-live-{run}"
        out_topic, model_topic = f"demo-digits-predictions-{run}", f"demo-models-{run}"
        # Topics up front: the serving loop subscribes to the live topic before anything is
        # written to it, and a secured cluster may not create topics on first use.
        for topic, partitions in ((train_topic, 2), (live_topic, 2), (out_topic, 1)):
            if cluster is not None:  # the mock cluster has no admin API
                cluster.create_topic(topic, partitions=partitions)
            else:  # the cluster's default replication
                _native.create_topic(config, topic, partitions, -1)
        if cluster is not None:  # a real cluster gets it from the ModelPublisher, compacted
            cluster.create_topic(model_topic, partitions=1)

        # 1. ingest
        pixels, digits = load_digits()
        x = (pixels / 16.0).astype(np.float32)
        y = digits.astype(np.int64)
        ids = np.arange(len(y), dtype=np.int64)
        train, test = stratified_split(y, test_fraction=0.25, seed=0)
        x_tr, x_te, y_tr, y_te, id_tr, id_te = x[train], x[test], y[train], y[test], ids[train], ids[test]
        t0 = time.perf_counter()
        with Producer(config) as producer:
            producer.send(
                train_topic, {"id": id_tr, "x": x_tr, "y": y_tr}, format="json", schema=SCHEMA, key="id"
            )
        print(f"1. ingest: {len(y_tr)} digits written to '{train_topic}' in {time.perf_counter() - t0:.2f} s")

        # 2. train from the topic
        t0 = time.perf_counter()
        if _has("torch"):
            weights, kind = _train_torch(config, train_topic, epochs)
        else:
            weights, kind = _train_numpy(config, train_topic, epochs)
        train_acc = float((_forward(weights, x_tr).argmax(1) == y_tr).mean())
        print(f"2. train: {kind}, {epochs} epochs from Kafka in {time.perf_counter() - t0:.1f} s, "
              f"training accuracy {train_acc:.1%}")  # fmt: skip

        # 3. publish
        t0 = time.perf_counter()
        with ModelPublisher(model_topic, config) as publisher:
            version = publisher.publish(
                weights, "1", metadata={"model": kind, "train_accuracy": train_acc, "epochs": epochs}
            )
        print(f"3. publish: version {version.version} ({version.size:,} bytes, sha256 "
              f"{version.sha256[:12]}…) to '{model_topic}' in {time.perf_counter() - t0:.2f} s")  # fmt: skip

        # 4. serve a held-out stream, exactly once
        subscriber = ModelSubscriber(model_topic, config, loader="numpy")
        served = subscriber.wait_for("1", timeout=30)
        total = len(y_te) * repeat

        def predict(batch: Any, model: dict[str, np.ndarray]) -> dict[str, Any]:
            return {"id": batch["id"], "digit": _forward(model, batch["x"]).argmax(1)}

        loop = InferenceLoop(
            predict,
            live_topic,
            out_topic,
            # The embedded cluster (librdkafka's mock) answers an empty fetch only after the
            # fetch's whole max wait, even if data arrives meanwhile (a real broker answers at
            # once): a short max wait keeps that from adding up to 500 ms per request.
            {**config, "group.id": f"demo-serving-{run}", "fetch.wait.max.ms": 5},
            delivery="exactly_once",
            model=subscriber,
            format="json",
            schema=SCHEMA,
            output_schema={"id": "int64", "digit": "int64"},
            progress=_has("tqdm"),  # the loop's defaults: latency first
        )
        feeder = threading.Thread(target=_feed, args=(config, live_topic, id_te, x_te, y_te, repeat, rate))
        serving: dict[str, Any] = {}
        server = threading.Thread(
            target=lambda: serving.update(loop.run(max_messages=total, handle_signals=False))
        )
        server.start()
        loop.wait_until_assigned()  # the stream starts once the loop has joined its group
        loop.reset_metrics()  # throughput and latency of serving the stream, not of joining
        feeder.start()
        feeder.join()
        server.join()
        if not serving:
            raise RuntimeError("the inference loop failed: see the error above")
        metrics = serving
        subscriber.close()

        predictions = _read_predictions(config, out_topic)
        labels = dict(zip(id_te.tolist(), y_te.tolist(), strict=True))
        correct = sum(int(labels[i] == d) for i, d in predictions)
        # Each held-out row was sent `repeat` times: exactly `repeat` predictions of each id.
        counts = Counter(i for i, _ in predictions)
        once = len(counts) == len(y_te) and set(counts.values()) == {repeat}
        lat = metrics["latency_ms"]
        verdict = "yes" if once else "NO"
        print(f"4. serve: model version {served.version}, {metrics['messages']} requests at {rate}/s "
              f"offered, {metrics['throughput']:,.0f}/s served, exactly once: {verdict}")  # fmt: skip
        print(f"   accuracy {correct / len(predictions):.1%} on held-out digits; end-to-end latency "
              f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms")  # fmt: skip
    print(f"done in {time.perf_counter() - t_start:.1f} s")
    return 0 if once and correct / len(predictions) > 0.85 else 1


def _feed(
    config: dict[str, str],
    topic: str,
    ids: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    repeat: int,
    rate: int,
) -> None:
    """The held-out rows as a live stream: small batches on a fixed schedule of ``rate``/s."""
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    with Producer({**config, "linger.ms": 1}) as producer:
        start, sent = time.perf_counter(), 0
        for _ in range(repeat):
            for lo in range(0, len(ids), per_tick):
                rows = slice(lo, lo + per_tick)
                producer.send(
                    topic, {"id": ids[rows], "x": x[rows], "y": y[rows]}, format="json", schema=SCHEMA
                )
                sent += len(ids[rows])
                delay = start + sent / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)


def _read_predictions(config: dict[str, str], topic: str) -> list[tuple[int, int]]:
    dataset = KafkaDataset(
        topic,
        {**config, "isolation.level": "read_committed"},
        format="json",
        schema={"id": "int64", "digit": "int64"},
        end="latest",
    )
    with dataset:
        return [(int(i), int(d)) for b in dataset for i, d in zip(b["id"], b["digit"], strict=True)]
