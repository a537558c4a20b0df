"""LengthGroupedBatchSampler: bucketing invariants, per-epoch seeding, sharding with injected ranks, resume, eval."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from stoker.data.text.lengths import padded_tokens
from stoker.samplers import LengthGroupedBatchSampler
from stoker.samplers.length_grouped import length_grouped_batches


def _lengths(n: int, seed: int = 0) -> list[int]:
    # Long-tailed like real text: mostly short, a few long.
    g = torch.Generator().manual_seed(seed)
    return (-torch.log(torch.rand(n, generator=g)) * 20 + 3).long().clamp(max=256).tolist()


def _flat(batches: list[list[int]]) -> list[int]:
    return [i for b in batches for i in b]


def test_one_rank_covers_every_index_once_in_batches_of_batch_size() -> None:
    lengths = _lengths(103)
    sampler = LengthGroupedBatchSampler(lengths, 8, num_replicas=1, rank=0, shuffle=True, seed=3)
    batches = list(sampler)
    assert isinstance(sampler, DistributedSampler)
    assert sorted(_flat(batches)) == list(range(103))
    assert len(batches) == len(sampler) == 13
    assert sorted(len(b) for b in batches)[1:] == [8] * 12  # one short batch, the rest full


def test_bucketing_pads_less_than_random_batches() -> None:
    lengths = _lengths(2000)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(2000, generator=g).tolist()
    random_batches = [perm[i : i + 32] for i in range(0, 2000, 32)]
    grouped = length_grouped_batches(lengths, 32, generator=g, mega_batch_factor=50)
    real = sum(lengths)
    # Without rounding to multiples of 8 the only padding left is the length spread inside a batch
    # (large only in the long tail of each mega-batch).
    assert real / padded_tokens(lengths, grouped, multiple=1) > 0.8
    assert real / padded_tokens(lengths, random_batches, multiple=1) < 0.5
    assert padded_tokens(lengths, grouped) < 0.6 * padded_tokens(lengths, random_batches)


def test_each_batch_is_sorted_by_length_and_the_longest_batch_comes_first() -> None:
    lengths = _lengths(500, seed=1)
    batches = length_grouped_batches(lengths, 16, generator=torch.Generator().manual_seed(0), mega_batch_factor=4)
    for batch in batches:
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)
    assert max(lengths[i] for i in batches[0]) == max(lengths)


def test_order_is_seeded_per_epoch() -> None:
    lengths = _lengths(300)
    a = LengthGroupedBatchSampler(lengths, 10, num_replicas=1, rank=0, seed=5)
    b = LengthGroupedBatchSampler(lengths, 10, num_replicas=1, rank=0, seed=5)
    first = list(a)
    assert first == list(b)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    c = LengthGroupedBatchSampler(lengths, 10, num_replicas=1, rank=0, seed=6)
    assert list(c) != first


def test_evaluation_order_is_deterministic_and_complete() -> None:
    lengths = _lengths(50)
    sampler = LengthGroupedBatchSampler(lengths, 8, num_replicas=1, rank=0, shuffle=False)
    assert list(sampler) == list(sampler)
    assert sorted(_flat(list(sampler))) == list(range(50))


@pytest.mark.parametrize("n", [0, 1, 7, 64, 101])
@pytest.mark.parametrize("world", [2, 3])
def test_ranks_are_disjoint_complete_and_equal_in_batch_count(n: int, world: int) -> None:
    lengths = _lengths(n)
    samplers = [LengthGroupedBatchSampler(lengths, 4, num_replicas=world, rank=r, seed=1) for r in range(world)]
    per_rank = [list(s) for s in samplers]
    assert len({len(b) for b in per_rank}) == 1, "every rank must run the same number of steps"
    assert all(len(b) == len(s) for b, s in zip(per_rank, samplers))
    seen = Counter(_flat([b for batches in per_rank for b in batches]))
    assert set(seen) == set(range(n))
    # Duplicates are exactly the padding batches the sampler reports (repeats of the first batches).
    global_batches = samplers[0].global_batches()
    padding = [global_batches[i % len(global_batches)] for i in range(samplers[0].padding_batches)]
    assert sum(seen.values()) - n == sum(len(batch) for batch in padding)


def test_drop_last_gives_full_disjoint_batches_on_every_rank() -> None:
    lengths = _lengths(101)
    per_rank = [list(LengthGroupedBatchSampler(lengths, 8, num_replicas=3, rank=r, drop_last=True)) for r in range(3)]
    assert [len(b) for b in per_rank] == [4, 4, 4]
    flat = _flat([b for batches in per_rank for b in batches])
    assert len(flat) == len(set(flat)) == 96
    assert all(len(b) == 8 for batches in per_rank for b in batches)


def test_rows_that_fall_off_with_drop_last_change_every_epoch() -> None:
    # 203 rows of batch 32: fewer than one mega-batch, so sorting first would drop the same shortest rows each time.
    lengths = _lengths(203)
    sampler = LengthGroupedBatchSampler(lengths, 32, num_replicas=1, rank=0, seed=4, drop_last=True)
    dropped = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        trained = _flat(list(sampler))
        assert len(trained) == len(set(trained)) == 192 and all(len(b) == 32 for b in sampler)
        dropped.append(set(range(203)) - set(trained))
    assert all(len(d) == 11 for d in dropped) and len({frozenset(d) for d in dropped}) == 3
    shortest = set(sorted(range(203), key=lambda i: lengths[i])[:11])
    assert dropped[0] != shortest
    keep_all = LengthGroupedBatchSampler(lengths, 32, num_replicas=1, rank=0, seed=4, drop_last=False)
    for epoch in range(2):
        keep_all.set_epoch(epoch)
        assert sorted(_flat(list(keep_all))) == list(range(203)), "without drop_last every row trains every epoch"


@pytest.mark.parametrize("world", [2, 3])
def test_evaluation_is_unrepeated_across_ranks(world: int) -> None:
    lengths = _lengths(37)
    per_rank = [list(LengthGroupedBatchSampler(lengths, 4, num_replicas=world, rank=r, shuffle=False, even=False))
                for r in range(world)]
    seen = Counter(_flat([b for batches in per_rank for b in batches]))
    assert seen == Counter(range(37)), "every sample exactly once, no padding"
    assert max(len(b) for b in per_rank) - min(len(b) for b in per_rank) <= 1


def test_state_dict_resumes_mid_epoch_on_exactly_the_remaining_batches() -> None:
    lengths = _lengths(200)
    sampler = LengthGroupedBatchSampler(lengths, 8, num_replicas=2, rank=1, seed=2)
    sampler.set_epoch(3)
    full = list(sampler)
    iterator = iter(sampler)
    consumed = [next(iterator) for _ in range(5)]
    state = sampler.state_dict()
    assert state == {"epoch": 3, "yielded": 5, "size": len(full), "seed": 2, "num_replicas": 2, "length": 200,
                     "batch_size": 8, "mega_batch_factor": 50}

    resumed = LengthGroupedBatchSampler(lengths, 8, num_replicas=2, rank=1, seed=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(3)  # what Lightning does at the start of the resumed epoch: keeps the resume point
    rest = list(resumed)
    assert consumed + rest == full
    assert list(resumed) == full, "the resume point applies to one iteration only"
    resumed.load_state_dict(state)
    resumed.set_epoch(4)  # a new epoch forgets it
    assert len(list(resumed)) == len(full)
    finished = LengthGroupedBatchSampler(lengths, 8, num_replicas=2, rank=1, seed=2)
    finished.load_state_dict({**state, "yielded": len(full)})  # saved at the epoch's last batch
    assert finished.epoch == 4


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_through_the_stateful_loader(workers: int) -> None:
    lengths = _lengths(120)

    def loader() -> StatefulDataLoader:
        sampler = LengthGroupedBatchSampler(lengths, 8, num_replicas=1, rank=0, seed=7)
        sampler.set_epoch(2)
        # batch_size=None: each index the sampler yields is a whole batch, fetched as one slice.
        return StatefulDataLoader(torch.arange(120), sampler=sampler, batch_size=None, num_workers=workers,
                                  collate_fn=lambda b: b.tolist())

    full = list(loader())
    first = loader()
    iterator = iter(first)
    head = [next(iterator) for _ in range(6)]
    resumed = loader()
    resumed.load_state_dict(first.state_dict())
    assert head + list(resumed) == full


def test_resume_with_other_settings_is_refused() -> None:
    sampler = LengthGroupedBatchSampler(_lengths(20), 4, num_replicas=2, rank=0, seed=1)
    with pytest.raises(ValueError, match="checkpoint has seed=9, this run has seed=1"):
        sampler.load_state_dict({"epoch": 0, "yielded": 1, "size": 3, "seed": 9, "num_replicas": 2})


def test_bad_arguments_name_the_value() -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        LengthGroupedBatchSampler([1, 2], 0)
    with pytest.raises(ValueError, match="mega_batch_factor must be a positive integer, got 0"):
        LengthGroupedBatchSampler([1, 2], 1, mega_batch_factor=0)
    with pytest.raises(ValueError, match=r"rank must be in \[0, 1\] for num_replicas=2, got 2"):
        LengthGroupedBatchSampler([1, 2], 1, num_replicas=2, rank=2)
