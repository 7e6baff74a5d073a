"""Splitting a read into shards, and the resumable state of a shard.

Pure Python and independent of torch: ``kafka_ml.torch`` uses it to spread a Kafka read over
DataLoader workers x DDP ranks, and to resume it exactly, also with a different layout.

Work is a set of offset intervals per partition, ``{(topic, partition): [(lo, hi), ...]}``, each
half-open (``hi`` excluded; ``hi=None``: open-ended, a streaming read). A shard's state is the
part of its work that it has *not* handed out yet, so the states of all shards together say
exactly which messages of the epoch are left, whatever the layout that saved them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .exceptions import ConfigError

__all__ = [
    "STATE_KEY",
    "Interval",
    "ShardState",
    "Work",
    "collect_shard_states",
    "merge_shard_states",
    "normalize",
    "split_work",
    "work_size",
]

TopicPartition = tuple[str, int]
Interval = tuple[int, int | None]
Work = dict[TopicPartition, list[Interval]]

#: Marks a shard state inside whatever structure holds it (a StatefulDataLoader state, a list).
STATE_KEY = "kafka_ml_shard"
_STATE_VERSION = 1


def normalize(intervals: Iterable[Sequence[int | None]]) -> list[Interval]:
    """Sorted, merged (overlapping or adjacent), non-empty intervals."""
    items = sorted(
        ((int(lo), None if hi is None else int(hi)) for lo, hi in intervals),  # type: ignore[arg-type]
        key=lambda iv: iv[0],
    )
    out: list[Interval] = []
    for lo, hi in items:
        if hi is not None and hi <= lo:
            continue
        if out:
            plo, phi = out[-1]
            if phi is None or lo <= phi:
                out[-1] = (plo, None if phi is None or hi is None else max(phi, hi))
                continue
        out.append((lo, hi))
    return out


def work_size(work: Mapping[TopicPartition, Sequence[Interval]]) -> int | None:
    """Offsets covered by ``work``; ``None`` when any interval is open-ended."""
    total = 0
    for intervals in work.values():
        for lo, hi in intervals:
            if hi is None:
                return None
            total += hi - lo
    return total


def split_work(work: Mapping[TopicPartition, Sequence[Interval]], num_shards: int) -> list[Work]:
    """Deterministically splits ``work`` into ``num_shards`` disjoint parts that cover it.

    Bounded work is cut into equal numbers of offsets (so partitions are split into offset ranges
    when there are fewer partitions than shards, and no shard idles); open-ended (streaming) work
    cannot be cut, so whole partitions go round-robin to the shards.
    """
    if num_shards < 1:
        raise ConfigError(f"num_shards must be >= 1, got {num_shards}")
    parts: list[Work] = [{} for _ in range(num_shards)]
    ordered = sorted((tp, normalize(ivs)) for tp, ivs in work.items())
    ordered = [(tp, ivs) for tp, ivs in ordered if ivs]
    total = work_size(dict(ordered))
    if total is None:
        for i, (tp, ivs) in enumerate(ordered):
            parts[i % num_shards][tp] = ivs
        return parts
    # Shard k takes offsets [k*total/n, (k+1)*total/n) of the concatenated intervals.
    bounds = [k * total // num_shards for k in range(num_shards + 1)]
    shard, position = 0, 0
    for tp, ivs in ordered:
        for lo, hi in ivs:
            assert hi is not None
            while lo < hi:
                while position >= bounds[shard + 1]:
                    shard += 1
                take = min(hi - lo, bounds[shard + 1] - position)
                parts[shard].setdefault(tp, []).append((lo, lo + take))
                lo += take
                position += take
    return [{tp: normalize(ivs) for tp, ivs in p.items()} for p in parts]


def intervals_from_offsets(offsets: np.ndarray) -> list[Interval]:
    """Runs of consecutive offsets as intervals (offsets need not be sorted)."""
    if offsets.size == 0:
        return []
    o = np.unique(offsets.astype(np.int64, copy=False))
    breaks = np.flatnonzero(np.diff(o) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [o.size]))
    return [(int(o[s]), int(o[e - 1]) + 1) for s, e in zip(starts, ends, strict=True)]


def contains(intervals: Sequence[Interval], offsets: np.ndarray) -> np.ndarray:
    """Boolean mask: which ``offsets`` lie in the (normalized) ``intervals``."""
    if not intervals:
        return np.zeros(len(offsets), dtype=bool)
    starts = np.fromiter((lo for lo, _ in intervals), dtype=np.int64, count=len(intervals))
    ends = np.fromiter(
        (np.iinfo(np.int64).max if hi is None else hi for _, hi in intervals),
        dtype=np.int64,
        count=len(intervals),
    )
    j = np.searchsorted(starts, offsets, side="right") - 1
    ok = j >= 0
    return ok & (offsets < ends[np.where(ok, j, 0)])


class ShardState:
    """What one shard (or, merged, a whole read) has left of an epoch."""

    def __init__(self, epoch: int, remaining: Work, shard: int | None = None, num_shards: int | None = None):
        self.epoch = epoch
        self.remaining = {tp: normalize(ivs) for tp, ivs in remaining.items()}
        self.shard = shard
        self.num_shards = num_shards

    @property
    def is_whole(self) -> bool:
        """A merged state covering every shard (or a one-shard layout)."""
        return self.shard is None or self.num_shards == 1

    def to_dict(self) -> dict[str, Any]:
        remaining: dict[str, dict[str, list[list[int | None]]]] = {}
        for (topic, partition), ivs in sorted(self.remaining.items()):
            remaining.setdefault(topic, {})[str(partition)] = [[lo, hi] for lo, hi in ivs]
        return {
            STATE_KEY: _STATE_VERSION,
            "epoch": self.epoch,
            "shard": self.shard,
            "num_shards": self.num_shards,
            "remaining": remaining,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShardState:
        if d.get(STATE_KEY) != _STATE_VERSION:
            raise ConfigError(f"not a kafka-ml shard state (version {d.get(STATE_KEY)!r})")
        remaining: Work = {}
        for topic, parts in d["remaining"].items():
            for partition, ivs in parts.items():
                remaining[(str(topic), int(partition))] = [(int(lo), hi) for lo, hi in ivs]
        shard, num = d.get("shard"), d.get("num_shards")
        return cls(
            int(d["epoch"]),
            remaining,
            None if shard is None else int(shard),
            None if num is None else int(num),
        )


def collect_shard_states(obj: object) -> list[ShardState]:
    """Every shard state found anywhere inside ``obj`` (a StatefulDataLoader state, a list of
    them from several ranks, a single shard state ...)."""
    found: list[ShardState] = []

    def walk(o: object) -> None:
        if isinstance(o, Mapping):
            if STATE_KEY in o:
                found.append(ShardState.from_dict(o))
                return
            for v in o.values():
                walk(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)

    walk(obj)
    return found


def merge_shard_states(states: Sequence[ShardState]) -> ShardState:
    """One whole state from the states of every shard of one layout (checked: none missing)."""
    if not states:
        raise ConfigError("no kafka-ml shard state found to merge")
    epochs = {s.epoch for s in states}
    if len(epochs) != 1:
        raise ConfigError(f"shard states of different epochs {sorted(epochs)} cannot be merged")
    whole = [s for s in states if s.shard is None]
    if whole:
        if len(states) != 1:
            raise ConfigError("a merged state cannot be merged again with shard states")
        return states[0]
    layouts = {s.num_shards for s in states}
    if len(layouts) != 1:
        raise ConfigError(f"shard states of different layouts ({sorted(map(str, layouts))} shards)")
    (num,) = layouts
    assert num is not None
    shards = [int(s.shard) for s in states if s.shard is not None]
    if len(set(shards)) != len(shards):
        raise ConfigError(f"shard states {sorted(shards)} name a shard twice: pass one snapshot per shard")
    seen = sorted(shards)
    if seen != list(range(num)):
        missing = sorted(set(range(num)) - set(seen))
        raise ConfigError(
            f"the shard states cover shards {seen} of {num}: shards {missing} are missing, so their "
            "unread messages are unknown (pass the states of every DataLoader worker of every rank)"
        )
    remaining: dict[TopicPartition, list[Interval]] = {}
    for s in states:
        for tp, ivs in s.remaining.items():
            remaining.setdefault(tp, []).extend(ivs)
    return ShardState(states[0].epoch, remaining)
