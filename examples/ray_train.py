"""Train a small PyTorch model with Ray Train on a Kafka topic read by ``kafka_ml.ray.read_kafka``.

The topic holds JSON feature records ``{"id": int, "x": [16 floats], "y": int}``. ``read_kafka``
turns a bounded snapshot of it into a Ray Dataset of typed columns (``x`` a float32 tensor
column); ``TorchTrainer`` gives each worker its shard (``ray.train.get_dataset_shard``), and the
workers train a linear classifier with DDP on CPU. Each epoch, rank 0 reports the loss and the
rows all workers saw together (every record of the snapshot exactly once per epoch).

    python examples/ray_train.py --bootstrap-servers localhost:9092 --topic features --make-data 20000

``--make-data N`` first writes N records to the topic (created with 4 partitions if missing).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any

import kafka_ml as km
import numpy as np
from kafka_ml import _native
from kafka_ml.ray import read_kafka

SCHEMA = {"id": "int64", "x": ("float32", 16), "y": "int64"}
CLASSES = 3


def make_features(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Linearly separable features: the label is the argmax of a fixed projection of ``x``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    projection = np.random.default_rng(1234).normal(size=(16, CLASSES)).astype(np.float32)
    return {"id": np.arange(n, dtype=np.int64), "x": x, "y": np.argmax(x @ projection, axis=1)}


def write_features(config: dict[str, str], topic: str, n: int) -> None:
    _native.create_topic(config, topic, 4, 1)
    with km.Producer(config) as producer:
        producer.send(topic, make_features(n), format="json", schema=SCHEMA).wait(120)


def train_loop(loop_config: dict[str, Any]) -> None:
    """Runs in each Ray Train worker: its shard of the Dataset, DDP over the workers."""
    import ray.train
    import torch
    import torch.distributed as dist
    from ray.train.torch import prepare_model

    torch.manual_seed(0)
    model = prepare_model(torch.nn.Linear(16, CLASSES))
    optimizer = torch.optim.SGD(model.parameters(), lr=loop_config["lr"])
    shard = ray.train.get_dataset_shard("train")
    history: list[dict[str, float]] = []
    for epoch in range(loop_config["epochs"]):
        total_loss, rows = torch.zeros(1), torch.zeros(1, dtype=torch.int64)
        for batch in shard.iter_torch_batches(batch_size=loop_config["batch_size"]):
            loss = torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.detach() * len(batch["y"])
            rows += len(batch["y"])
        # Every worker's rows together: the whole snapshot, once, each epoch.
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total_loss)
            dist.all_reduce(rows)
        history.append({"epoch": epoch, "rows": int(rows), "loss": float(total_loss / rows.clamp(min=1))})
        # Rank 0 checkpoints the weights; Ray Train keeps the metrics reported with a checkpoint.
        with tempfile.TemporaryDirectory() as directory:
            checkpoint = None
            if ray.train.get_context().get_world_rank() == 0:
                torch.save(model.state_dict(), os.path.join(directory, "model.pt"))
                checkpoint = ray.train.Checkpoint.from_directory(directory)
            ray.train.report({**history[-1], "history": list(history)}, checkpoint=checkpoint)


def train(dataset: Any, *, workers: int = 2, epochs: int = 3, storage_path: str | None = None) -> Any:
    """Fits the model on ``dataset`` with ``workers`` CPU workers; returns Ray Train's Result."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"epochs": epochs, "batch_size": 256, "lr": 0.5},
        # Half a CPU each leaves room on small clusters for the read tasks that feed them.
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 0.5}),
        datasets={"train": dataset},
        run_config=RunConfig(storage_path=storage_path or tempfile.mkdtemp(prefix="kafka-ml-train-")),
    )
    return trainer.fit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", default="features")
    parser.add_argument("--make-data", type=int, default=0, metavar="N")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ray-address", default=None, help="an existing cluster (default: a local one)")
    args = parser.parse_args()

    import ray

    config = {"bootstrap.servers": args.bootstrap_servers}
    if args.make_data:
        write_features(config, args.topic, args.make_data)
    ray.init(address=args.ray_address)
    dataset = read_kafka(args.topic, config, format="json", schema=SCHEMA)
    result = train(dataset, workers=args.workers, epochs=args.epochs)
    print(result.metrics)


if __name__ == "__main__":
    main()
