"""A mid-epoch checkpoint resumes on another number of ranks: the rest of the epoch is dealt over the new ranks.

The positions of every saved rank travel in the checkpoint (``per_rank``); :func:`own_state` hands all of
them to each new rank's sampler, which leaves out what the old ranks had handed out. Over the old and the
new ranks together, every sample of the epoch is yielded once, apart from the padding that evens out the
new ranks' shares (fewer than one per rank), and the epoch's order is kept.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from stoker.data.loader import own_state
from stoker.samplers import LengthGroupedBatchSampler
from stoker.samplers.distributed import ResumableDistributedSampler
from stoker.samplers.shard_plan import ShardPlan

LENGTH = 23


def _samplers(world: int, **kwargs: Any) -> list[ResumableDistributedSampler]:
    return [ResumableDistributedSampler(LENGTH, num_replicas=world, rank=rank, seed=5, **kwargs)
            for rank in range(world)]


def _stop(samplers: list[Any], steps: int) -> tuple[list[Any], dict[str, Any]]:
    """Each rank hands out ``steps`` items; returns them and the gathered checkpoint state."""
    taken = []
    for sampler in samplers:
        iterator = iter(sampler)
        taken += [next(iterator) for _ in range(steps)]
    return taken, {"per_rank": [sampler.state_dict() for sampler in samplers]}


def _resume(state: dict[str, Any], world: int, **kwargs: Any) -> list[ResumableDistributedSampler]:
    samplers = _samplers(world, **kwargs)
    for rank, sampler in enumerate(samplers):
        sampler.load_state_dict(own_state(state, rank, world))
    return samplers


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2), (2, 3), (4, 2)])
def test_the_rest_of_the_epoch_is_dealt_over_the_new_ranks(before: int, after: int) -> None:
    taken, state = _stop(_samplers(before), 3)
    resumed = _resume(state, after)
    rest = [item for sampler in resumed for item in sampler]
    counts = Counter(taken + rest)
    assert set(counts) == set(range(LENGTH)), "a sample of the epoch was skipped"
    repeats = sum(counts.values()) - LENGTH
    old_padding = ShardPlan(LENGTH, before).padding
    assert repeats <= old_padding + after - 1, "more repeats than the padding of either world"
    for sampler in resumed:  # the epoch still ends after len(sampler) items, as Lightning counts it
        assert sampler.yielded == len(sampler)
        assert sampler.elastic_rest == len(sampler) - sampler._offset
    # The rest keeps the epoch's order: merged back, the new ranks' items follow the permutation.
    order = resumed[0].order()
    position = {item: index for index, item in enumerate(order)}
    for sampler in _resume(state, after):
        items = list(sampler)
        unpadded = items[: len(items) - 1] if len(items) > 1 else items
        assert [position[i] for i in unpadded] == sorted(position[i] for i in unpadded)


def test_a_resumed_epoch_checkpoints_and_resumes_again_on_any_world() -> None:
    taken, state = _stop(_samplers(2), 3)  # 2 ranks, then 3, then 1: one epoch over three runs
    middle = _resume(state, 3)
    more, state = _stop(middle, 2)
    assert all("stages" in rank_state for rank_state in state["per_rank"])
    same = _resume(state, 3)  # the same world again: each rank continues its own rest
    again = [item for sampler in same for item in sampler]
    last = [item for sampler in _resume(state, 1) for item in sampler]
    for rest, world in ((again, 3), (last, 1)):
        counts = Counter(taken + more + rest)
        assert set(counts) == set(range(LENGTH))
        # Repeats are only the padding that evens out each world's shares: under one per rank per world.
        assert sum(counts.values()) - LENGTH <= (2 - 1) + (3 - 1) + (world - 1)


def test_a_new_epoch_forgets_the_resume_and_nothing_started_resumes_fresh() -> None:
    _, state = _stop(_samplers(2), 3)
    sampler = _resume(state, 1)[0]
    list(sampler)
    sampler.set_epoch(1)
    assert sampler.elastic_rest is None and list(sampler) == sampler.epoch_items()
    assert "stages" not in sampler.state_dict()
    _, untouched = _stop(_samplers(2), 0)
    fresh = _resume(untouched, 1)[0]
    assert fresh.elastic_rest is None and list(fresh) == fresh.epoch_items()
    finished = _samplers(2)
    for each in finished:
        list(each)
    ended = _resume({"per_rank": [each.state_dict() for each in finished]}, 3)[0]
    assert ended.epoch == 1 and ended.elastic_rest is None


def test_whole_batches_with_drop_last() -> None:
    kwargs = {"batch_size": 4, "drop_last": True}
    taken, state = _stop(_samplers(2, **kwargs), 4)
    resumed = _resume(state, 1, **kwargs)[0]
    rest = list(resumed)
    assert len(rest) % 4 == 0 and not set(taken) & set(rest)
    assert len(taken) + len(rest) >= LENGTH - 4 * 2 + 1  # no more falls off than the cuts


def test_length_grouped_batches_resume_on_other_ranks() -> None:
    lengths = [(7 * i) % 31 + 1 for i in range(40)]
    old = [LengthGroupedBatchSampler(lengths, 4, num_replicas=2, rank=rank, seed=1) for rank in range(2)]
    taken, state = _stop(old, 2)
    new = [LengthGroupedBatchSampler(lengths, 4, num_replicas=1, rank=0, seed=1)]
    new[0].load_state_dict(own_state(state, 0, 1))
    rest = list(new[0])
    flat = [i for batch in taken + rest for i in batch]
    assert sorted(flat) == list(range(40))
    assert new[0].yielded == len(new[0]) and new[0].elastic_rest == len(rest)


def test_a_state_without_every_rank_or_a_sampler_that_cannot_deal_again_is_refused() -> None:
    from stoker.samplers import DistributedWeightedSampler

    _, state = _stop(_samplers(2), 3)
    lone = dict(state["per_rank"][0])
    with pytest.raises(ValueError, match="every rank's position is needed"):
        _samplers(1)[0].load_state_dict(lone)
    weights = [1.0] * LENGTH
    old = [DistributedWeightedSampler(range(LENGTH), weights, num_replicas=2, rank=rank) for rank in range(2)]
    _, weighted = _stop(old, 2)
    with pytest.raises(ValueError, match="num_replicas=2, this run has num_replicas=1"):
        lone_rank = DistributedWeightedSampler(range(LENGTH), weights, num_replicas=1, rank=0)
        lone_rank.load_state_dict(own_state(weighted, 0, 1))
