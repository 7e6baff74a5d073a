"""DDP training (gloo, CPU) on one topic, each rank reading its own shard. Run with torchrun.

Each rank writes the ids it trained on, its batch count and its final parameters to --out.
Shards may differ by a batch, so the loop runs under ``Join`` (uneven inputs across ranks).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist
from kafka_ml.torch import KafkaIterableDataset
from torch.distributed.algorithms.join import Join
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    dataset = KafkaIterableDataset(
        args.topic,
        {"bootstrap.servers": args.bootstrap},
        format="json",
        schema={"id": "int64", "x": ("float32", 4)},
        end="latest",
        batch_size=16,
        shuffle_buffer=64,
    )  # rank and world size come from torch.distributed
    loader = DataLoader(dataset, batch_size=None, num_workers=1)
    ids: list[list[int]] = []
    losses: list[float] = []
    for epoch in range(args.epochs):
        dataset.set_epoch(epoch)
        seen: list[int] = []
        with Join([model]):
            for batch in loader:
                x = batch["x"] / 100.0
                loss = ((model(x).squeeze(1) - x.sum(1)) ** 2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                seen.extend(batch["id"].tolist())
                losses.append(float(loss))
        ids.append(seen)
    params = [p.detach().flatten().tolist() for p in model.module.parameters()]
    (args.out / f"rank{rank}.json").write_text(json.dumps({"ids": ids, "losses": losses, "params": params}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
