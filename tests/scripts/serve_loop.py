"""An inference loop in its own process, for crash and signal tests (tests/test_inference.py).

Reads ``{"id", "x": [4 floats]}`` inputs and writes ``{"id", "y": sum(x)}`` results.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from kafka_ml.inference import InferenceLoop


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--delivery", default="at_least_once")
    ap.add_argument("--pause", type=float, default=0.0, help="seconds per batch in predict")
    ap.add_argument("--idle", type=float, default=None, help="stop after this long without input")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)

    def predict(batch: Any) -> dict[str, Any]:
        time.sleep(args.pause)
        return {"id": batch["id"], "y": batch["x"].sum(axis=1, dtype="float64")}

    loop = InferenceLoop(
        predict,
        args.input,
        args.output,
        # A killed member leaves the group after its session times out: keep that short.
        {"bootstrap.servers": args.bootstrap, "group.id": args.group, "session.timeout.ms": 6000},
        delivery=args.delivery,
        format="json",
        schema={"id": "int64", "x": ("float32", 4)},
        output_schema={"id": "int64", "y": "float64"},
        batch_size=50,
        metrics_interval=1.0,
    )
    metrics = loop.run(idle_timeout=args.idle)
    print(json.dumps({k: v for k, v in metrics.items() if k != "lag"}), flush=True)


if __name__ == "__main__":
    main()
