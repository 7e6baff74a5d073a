"""Results on their way: the groups of batches sent and not yet acknowledged (at-least-once), and
what a failed batch's inputs become on the dead-letter topic."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..dataset import Batch
from ..producer import SendReport

# The input metadata the loop reads with every batch (lineage, latency, offsets to commit).
_METADATA = ["topic", "partition", "offset", "timestamp", "key"]


@dataclass
class _InFlight:
    """A group of batches whose results were sent: committed once every report is in."""

    reports: list[SendReport]
    offsets: dict[tuple[str, int], int]
    timestamps: list[np.ndarray]
    batches: list[Batch]
    dead: int


def _describe(meta: Mapping[str, Any]) -> str:
    parts = sorted({(str(t), int(p)) for t, p in zip(meta["topic"], meta["partition"], strict=True)})
    first, last = int(meta["offset"].min()), int(meta["offset"].max())
    names = ", ".join(f"'{t}' [{p}]" for t, p in parts)
    return f"{names} offsets {first}..{last}"


def _inputs_as_sent(
    batch: Batch, input_format: str, options: Mapping[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """A batch's inputs re-encoded in their own format (for the dead-letter topic)."""
    if input_format == "tensor":
        return batch["value"], {"format": "tensor"}
    if input_format == "raw":
        return {"value": batch["value"]}, {"format": "raw"}
    import pyarrow as pa

    table = pa.table(batch)
    payload = table.select([c for c in table.column_names if c not in _METADATA])
    if input_format == "avro":
        return payload, {"format": "avro", "avro_schema": options.get("avro_schema")}
    return payload, {"format": "json"}
