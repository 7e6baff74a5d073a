"""Training from Kafka for real: kill-and-resume, DDP with torchrun, a model on real data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import kafka_ml as km
import numpy as np
import pytest
import torch
from kafka_ml.torch import KafkaIterableDataset
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from test_torch import fill  # the same id rows as the sharding tests
from torch.utils.data import DataLoader, TensorDataset

SCRIPTS = Path(__file__).resolve().parent / "scripts"


def run_training(args: list[str], **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(SCRIPTS / "train_resumable.py"), *args], **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def training_topic(
    config: dict[str, str], new_topic: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, list[int]]:
    """A topic of 1200 rows, and the ids an uninterrupted training run trains on."""
    topic = new_topic(partitions=3)
    fill(config, topic, 1200, 3)
    tmp = tmp_path_factory.mktemp("uninterrupted")
    common = ["--bootstrap", config["bootstrap.servers"], "--topic", topic]
    proc = run_training([*common, "--checkpoint", str(tmp / "ckpt"), "--out", str(tmp / "out.json")])
    assert proc.wait(timeout=120) == 0
    uninterrupted: list[int] = json.loads((tmp / "out.json").read_text())
    assert sorted(uninterrupted) == list(range(1200))
    return topic, uninterrupted


@pytest.mark.timeout(240)
@pytest.mark.parametrize("resume_workers", [2, 3])
def test_training_killed_after_a_checkpoint_resumes_to_the_same_samples(
    config: dict[str, str], training_topic: tuple[str, list[int]], tmp_path: Path, resume_workers: int
) -> None:
    topic, uninterrupted = training_topic
    common = ["--bootstrap", config["bootstrap.servers"], "--topic", topic]

    # A run killed with SIGKILL once it has checkpointed a few times.
    ckpt, out = tmp_path / "run.ckpt", tmp_path / "run.json"
    proc = run_training([*common, "--checkpoint", str(ckpt), "--out", str(out), "--pause", "0.05"])
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if ckpt.exists() and len(torch.load(ckpt, weights_only=False)["trained"]) >= 300:
            break
        assert proc.poll() is None, "the training run ended before it could be killed"
        time.sleep(0.05)
    assert proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not out.exists()
    at_checkpoint = len(torch.load(ckpt, weights_only=False)["trained"])
    assert 300 <= at_checkpoint < 1200

    # The restarted run (same or another number of workers) completes the epoch exactly.
    proc = run_training(
        [*common, "--checkpoint", str(ckpt), "--out", str(out), "--workers", str(resume_workers)]
    )
    assert proc.wait(timeout=120) == 0
    resumed = json.loads(out.read_text())
    counts = Counter(resumed)
    assert max(counts.values()) == 1  # nothing repeated
    assert set(resumed) == set(uninterrupted)  # nothing lost


@pytest.mark.timeout(240)
def test_ddp_ranks_read_disjoint_shards_and_train_one_model(
    config: dict[str, str], new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=3)
    fill(config, topic, 1000, 3)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(SCRIPTS / "train_ddp.py"),
        "--bootstrap",
        config["bootstrap.servers"],
        "--topic",
        topic,
        "--out",
        str(tmp_path),
        "--epochs",
        "3",
    ]
    done = subprocess.run(cmd, capture_output=True, timeout=200, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for epoch in range(3):
        a, b = (set(r["ids"][epoch]) for r in ranks)
        assert not a & b  # disjoint shards
        assert sorted(ranks[0]["ids"][epoch] + ranks[1]["ids"][epoch]) == list(range(1000))
        assert abs(len(a) - len(b)) <= 1
    assert ranks[0]["params"] == ranks[1]["params"]  # one model, kept in sync by DDP
    losses = ranks[0]["losses"]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def train(model: torch.nn.Module, batches: Callable[[int], object], epochs: int) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(epochs):
        for x, y in batches(epoch):  # type: ignore[attr-defined]
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        predicted = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((predicted == y).mean() * 100)


@pytest.mark.timeout(240)
def test_mlp_on_digits_streamed_from_kafka_matches_in_memory_training(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    digits = load_digits()  # shipped with scikit-learn: nothing is downloaded
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    # One partition: the rows reach the shuffle buffer in one order every run, so the comparison
    # is reproducible (keyless rows spread over partitions at random, and fetches interleave).
    topic = new_topic(partitions=1)
    with km.Producer(config) as producer:
        producer.send(
            topic, {"x": x_train, "y": y_train}, format="json", schema={"x": ("float32", 64), "y": "int64"}
        )

    epochs, batch_size = 15, 32
    stream = KafkaIterableDataset(
        topic,
        config,
        format="json",
        schema={"x": ("float32", 64), "y": "int64"},
        end="latest",
        batch_size=batch_size,
        shuffle_buffer=len(x_train),
        seed=0,
    )
    assert stream.num_samples() == len(x_train)

    def from_kafka(epoch: int) -> object:
        stream.set_epoch(epoch)
        return ((b["x"], b["y"]) for b in stream)

    in_memory = DataLoader(
        TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train)),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    results = []
    for batches in (from_kafka, lambda _epoch: in_memory):
        torch.manual_seed(0)
        model = mlp()
        train(model, batches, epochs)
        results.append(accuracy(model, x_test, y_test))
    kafka_acc, memory_acc = results
    assert memory_acc > 93.0
    assert abs(kafka_acc - memory_acc) <= 1.0, (kafka_acc, memory_acc)
