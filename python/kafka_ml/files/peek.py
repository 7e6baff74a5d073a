"""Peek: the last records of each partition, as a table."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigError

if TYPE_CHECKING:
    pass

from ._common import (
    _pyarrow,
)
from .export import _bounded_read

# -- peek ----------------------------------------------------------------------------------------


def peek(
    topic: str,
    config: Mapping[str, object],
    n: int = 20,
    *,
    partitions: Sequence[int] | None = None,
    format: str = "raw",
    **decoding: Any,
) -> Any:
    """The last ``n`` offsets of each partition of ``topic`` (of ``partitions``), decoded
    (``format`` and ``decoding`` as :class:`KafkaDataset` takes them), as a pyarrow Table with
    ``partition``, ``offset`` and ``key`` first, ordered by partition and offset."""
    from ..dataset import KafkaDataset

    pa = _pyarrow()
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    selected = [(topic, int(p)) for p in partitions] if partitions is not None else None
    with KafkaDataset(
        None if selected else topic, config, partitions=selected, format="raw", start="earliest", end="latest"
    ) as probe:
        plan = probe.plan or []
    parts = [(t, p, max(int(s), int(e) - n), int(e)) for t, p, s, e in plan if e is not None]
    meta = ["partition", "offset"] + ([] if format == "raw" else ["key"])
    read = _bounded_read(
        {"config": dict(config), "format": format, "metadata": meta, **decoding},
        parts,
        batch_size=max(n, 1024),
    )
    with read:
        batches = [pa.record_batch(b) for b in read]
    table = pa.Table.from_batches(batches, schema=pa.schema(read))
    first = ["partition", "offset", "key"]
    order = [c for c in first if c in table.column_names] + [c for c in table.column_names if c not in first]
    return table.select(order).sort_by([("partition", "ascending"), ("offset", "ascending")])


def format_table(table: Any, width: int = 40) -> str:
    """A pyarrow Table as aligned text columns, each cell cut at ``width`` characters."""
    names = list(table.column_names)
    cells = [[_cell(v, width) for v in table.column(name).to_pylist()] for name in names]
    widths = [max([len(name)] + [len(c) for c in column]) for name, column in zip(names, cells, strict=True)]
    lines = ["  ".join(name.ljust(w) for name, w in zip(names, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in range(table.num_rows):
        lines.append("  ".join(c[row].ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _cell(value: object, width: int) -> str:
    if value is None:
        text = "null"
    elif isinstance(value, bytes):
        try:
            text = value.decode("utf-8")
            if not text.isprintable():
                text = repr(value)
        except UnicodeDecodeError:
            text = repr(value)
    elif isinstance(value, float):
        text = f"{value:.7g}"
    elif isinstance(value, (list, dict, tuple)):
        text = json.dumps(_short_floats(value), default=str, ensure_ascii=False)
    else:
        text = str(value)
    text = text.replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= width else text[: width - 1] + "…"


def _short_floats(value: object) -> object:
    """Floats cut to 7 significant digits (float32 values print as float64 otherwise)."""
    if isinstance(value, float):
        return float(f"{value:.7g}")
    if isinstance(value, (list, tuple)):
        return [_short_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: _short_floats(v) for k, v in value.items()}
    return value
