"""A training loop that checkpoints model, optimizer and data position together, and resumes.

Run by tests/test_torch_training.py: killed with SIGKILL after a checkpoint, then restarted
(possibly with another number of DataLoader workers). Writes the ids it trained on to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from kafka_ml.torch import KafkaIterableDataset, merge_state_dicts
from torchdata.stateful_dataloader import StatefulDataLoader

SCHEMA = {"id": "int64", "x": ("float32", 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--every", type=int, default=5, help="checkpoint every N batches")
    ap.add_argument("--pause", type=float, default=0.0, help="seconds per training step")
    args = ap.parse_args()

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    dataset = KafkaIterableDataset(
        args.topic,
        {"bootstrap.servers": args.bootstrap},
        format="json",
        schema=SCHEMA,
        end="latest",
        batch_size=20,
        shuffle_buffer=60,
        seed=1,
    )
    loader = StatefulDataLoader(dataset, batch_size=None, num_workers=args.workers)
    trained: list[int] = []
    if args.checkpoint.exists():
        ckpt = torch.load(args.checkpoint, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        trained = ckpt["trained"]
        if ckpt["workers"] == args.workers:
            loader.load_state_dict(ckpt["loader"])
        else:  # another layout: resume from the merged state of every worker
            dataset.load_state_dict(merge_state_dicts(ckpt["loader"]))

    for step, batch in enumerate(loader, start=1):
        x = batch["x"]
        loss = ((model(x).squeeze(1) - x.sum(1)) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        trained.extend(batch["id"].tolist())
        if step % args.every == 0:
            tmp = args.checkpoint.with_suffix(".tmp")
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "loader": loader.state_dict(),
                    "trained": trained,
                    "workers": args.workers,
                },
                tmp,
            )
            os.replace(tmp, args.checkpoint)  # a checkpoint is whole or absent
        time.sleep(args.pause)
    args.out.write_text(json.dumps(trained))


if __name__ == "__main__":
    main()
