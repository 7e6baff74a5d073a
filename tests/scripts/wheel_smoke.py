"""Smoke test of the built wheel, run by ``make wheel-test`` under each supported CPython.

It runs in a fresh virtual environment that has only the wheel and its declared dependencies
(numpy, no pyarrow), from a directory outside the repository, so nothing of the source tree can be imported by
accident: the wheel has to be self-contained (static librdkafka, OpenSSL and libcurl).

Checks: the module is the installed abi3 one; a tensor send and read and a JSON send and read on
the embedded cluster give back exactly what was sent; the client is built with TLS and SASL."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import kafka_ml as km
import numpy as np


def main() -> int:
    repo = Path(sys.argv[1]).resolve()
    module = Path(km._native.__file__).resolve()
    if repo in module.parents:
        raise SystemExit(f"kafka_ml was imported from the source tree ({module}), not the wheel")
    if not module.name.endswith(".abi3.so"):
        raise SystemExit(f"expected the stable-ABI module (*.abi3.so), got {module.name}")
    features = set(km.librdkafka_features)
    missing = {"ssl", "sasl_scram", "sasl_oauthbearer"} - features
    if missing:
        raise SystemExit(f"librdkafka in the wheel lacks {sorted(missing)}: {sorted(features)}")
    print(f"python {sys.version.split()[0]}, {module.name}, librdkafka {km.librdkafka_version}")

    with km.EmbeddedCluster() as cluster:
        bs = cluster.bootstrap_servers
        cluster.create_topic("smoke-tensor", 1)
        cluster.create_topic("smoke-json", 1)
        config = {"bootstrap.servers": bs}
        rows = np.arange(1000 * 8, dtype=np.float32).reshape(1000, 8)
        with km.Producer(config) as producer:
            producer.send("smoke-tensor", rows)
            for i in range(1000):
                producer.produce("smoke-json", json.dumps({"id": i, "y": i / 4}).encode())
        tensors = km.KafkaDataset(
            ["smoke-tensor"], config, format="tensor", dtype="float32", shape=8, end="latest"
        )
        got = np.concatenate([b.to_numpy()["value"] for b in tensors])
        if not np.array_equal(got, rows):
            raise SystemExit("tensor rows read back differ from the rows sent")
        records = km.KafkaDataset(
            ["smoke-json"], config, format="json", schema={"id": "int64", "y": "float64"}, end="latest"
        )
        ids = np.concatenate([b.to_numpy()["id"] for b in records])
        if not np.array_equal(ids, np.arange(1000)):
            raise SystemExit("JSON ids read back differ from the ids sent")
    print("wheel smoke test passed: 1000 tensor rows and 1000 JSON rows round-tripped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
