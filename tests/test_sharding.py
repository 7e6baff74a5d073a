"""Properties of `kafka_ml.sharding` (how a read is cut over DataLoader workers x DDP ranks, and
resumed), checked with hypothesis over random work. Pure Python: part of the broker-free tier."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka_ml.exceptions import ConfigError
from kafka_ml.sharding import (
    ShardState,
    collect_shard_states,
    contains,
    intervals_from_offsets,
    merge_shard_states,
    normalize,
    split_work,
    work_size,
)

Work = dict[tuple[str, int], list[tuple[int, int | None]]]

intervals = st.lists(
    st.tuples(st.integers(0, 300), st.integers(0, 60)).map(lambda t: (t[0], t[0] + t[1])), max_size=6
)
partitions = st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3))
bounded_work = st.dictionaries(partitions, intervals, max_size=5)


def offsets(work: Any) -> set[tuple[tuple[str, int], int]]:
    return {(tp, o) for tp, ivs in work.items() for lo, hi in ivs for o in range(lo, hi)}


@settings(max_examples=300, deadline=None)
@given(intervals)
def test_normalize_keeps_the_offsets_in_sorted_disjoint_non_adjacent_intervals(ivs: list[Any]) -> None:
    n = normalize(ivs)
    assert {o for lo, hi in n for o in range(lo, hi)} == {o for lo, hi in ivs for o in range(lo, hi)}
    assert all(lo < hi for lo, hi in n)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(n))  # a gap between any two
    assert normalize(n) == n


@settings(max_examples=300, deadline=None)
@given(bounded_work, st.integers(1, 9))
def test_bounded_shards_are_disjoint_cover_the_work_and_differ_by_at_most_one_offset(
    work: Work, num_shards: int
) -> None:
    shards = split_work(work, num_shards)
    assert len(shards) == num_shards
    seen: set[Any] = set()
    for shard in shards:
        mine = offsets(shard)
        assert not seen & mine  # no offset in two shards
        seen |= mine
    assert seen == offsets(work)
    sizes = [work_size(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1  # type: ignore[operator]
    assert split_work(work, num_shards) == shards  # deterministic: every worker computes the same


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(partitions, st.integers(0, 100), min_size=1, max_size=6), st.integers(1, 5))
def test_open_ended_partitions_go_whole_to_one_shard_each(starts: dict[Any, int], num_shards: int) -> None:
    work: Work = {tp: [(lo, None)] for tp, lo in starts.items()}
    shards = split_work(work, num_shards)
    owners = {tp: [i for i, s in enumerate(shards) if tp in s] for tp in work}
    assert all(len(o) == 1 for o in owners.values())
    for tp, (i,) in owners.items():
        assert shards[i][tp] == work[tp]
    counts = [len(s) for s in shards]
    assert max(counts) - min(counts) <= 1  # round-robin


@settings(max_examples=200, deadline=None)
@given(bounded_work, st.integers(1, 6), st.integers(1, 6), st.data())
def test_resume_with_another_layout_reads_exactly_what_was_left(
    work: Work, saved_shards: int, resumed_shards: int, data: st.DataObject
) -> None:
    """Each shard of one layout hands out a prefix of its work; their saved states, merged and split
    over another layout, cover exactly the offsets not yet handed out."""
    states, handed_out = [], set()
    for i, shard in enumerate(split_work(work, saved_shards)):
        ordered = sorted(offsets(shard))
        n = data.draw(st.integers(0, len(ordered)))
        handed_out |= set(ordered[:n])
        left: Work = {}
        for tp, o in ordered[n:]:
            left.setdefault(tp, []).append((o, o + 1))
        state = ShardState(epoch=3, remaining=left, shard=i, num_shards=saved_shards)
        # Saved and loaded as dicts, nested as a StatefulDataLoader's state nests them.
        states.append({"worker": [ShardState.from_dict(state.to_dict()).to_dict()]})
    merged = merge_shard_states(collect_shard_states(states))
    assert merged.epoch == 3 and merged.is_whole
    resumed = split_work(merged.remaining, resumed_shards)
    assert set().union(*(offsets(s) for s in resumed)) == offsets(work) - handed_out


def test_merging_refuses_missing_duplicated_or_mixed_shards() -> None:
    work: Work = {("a", 0): [(0, 10)]}
    states = [ShardState(1, s, i, 3) for i, s in enumerate(split_work(work, 3))]
    with pytest.raises(ConfigError, match=r"shards \[2\] are missing"):
        merge_shard_states(states[:2])
    with pytest.raises(ConfigError, match="name a shard twice"):
        merge_shard_states([states[0], states[0], states[1]])
    with pytest.raises(ConfigError, match="different epochs"):
        merge_shard_states([states[0], ShardState(2, {}, 1, 3), states[2]])
    with pytest.raises(ConfigError, match="different layouts"):
        merge_shard_states([states[0], ShardState(1, {}, 1, 2)])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 400), max_size=60), st.lists(st.integers(0, 400), max_size=60))
def test_intervals_from_offsets_contain_exactly_those_offsets(given_: list[int], probe: list[int]) -> None:
    ivs = intervals_from_offsets(np.array(given_, dtype=np.int64))
    assert ivs == normalize(ivs)
    mask = contains(ivs, np.array(probe, dtype=np.int64))
    assert mask.tolist() == [p in set(given_) for p in probe]
