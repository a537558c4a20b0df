"""DistributedWeightedSampler: the draw matches its target, shards partition it, resume is exact."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from scipy.stats import chisquare
from torch.utils.data import DataLoader, DistributedSampler

from stoker.samplers import DistributedWeightedSampler

# Five "classes" of 40, 30, 20, 8 and 2 samples; weights favour the rare ones.
SIZES = [40, 30, 20, 8, 2]
LABELS = [c for c, n in enumerate(SIZES) for _ in range(n)]
CLASS_WEIGHT = [1.0, 1.5, 2.0, 4.0, 10.0]
WEIGHTS = [CLASS_WEIGHT[c] for c in LABELS]
TARGET = [n * w for n, w in zip(SIZES, CLASS_WEIGHT, strict=True)]


def _class_counts(indices: list[int]) -> list[int]:
    counted = Counter(LABELS[i] for i in indices)
    return [counted.get(c, 0) for c in range(len(SIZES))]


def _expected(total: int) -> list[float]:
    return [total * t / sum(TARGET) for t in TARGET]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_realised_class_mix_matches_target_chi_square(seed: int) -> None:
    sampler = DistributedWeightedSampler(LABELS, WEIGHTS, num_samples=20_000, num_replicas=1, rank=0, seed=seed)
    counts = _class_counts(list(sampler))
    assert chisquare(counts, _expected(20_000)).pvalue > 1e-3
    # The same test rejects a mix that is off by a little (so the check above can fail).
    wrong = [TARGET[0] * 1.1, *TARGET[1:]]
    assert chisquare(counts, [20_000 * t / sum(wrong) for t in wrong]).pvalue < 1e-3


def test_per_sample_frequencies_match_weights_chi_square() -> None:
    sampler = DistributedWeightedSampler(LABELS, WEIGHTS, num_samples=30_000, num_replicas=1, rank=0, seed=7)
    drawn = Counter(list(sampler))
    observed = [drawn.get(i, 0) for i in range(len(LABELS))]
    expected = [30_000 * w / sum(WEIGHTS) for w in WEIGHTS]
    assert chisquare(observed, expected).pvalue > 1e-3


def test_without_replacement_first_draw_follows_weights_chi_square() -> None:
    # The first index of a sample without replacement is a single weighted draw.
    firsts = [
        LABELS[DistributedWeightedSampler(LABELS, WEIGHTS, replacement=False, num_samples=10, num_replicas=1,
                                          rank=0, seed=s).shard()[0]]
        for s in range(3000)
    ]
    counts = [firsts.count(c) for c in range(len(SIZES))]
    assert chisquare(counts, _expected(3000)).pvalue > 1e-3


@pytest.mark.parametrize("replacement", [True, False])
def test_zero_weight_samples_are_never_drawn(replacement: bool) -> None:
    weights = [0.0, 1.0, 0.0, 2.0, 0.0, 0.0, 3.0, 0.0]
    for seed in range(50):
        sampler = DistributedWeightedSampler(range(8), weights, num_samples=3, replacement=replacement,
                                             num_replicas=1, rank=0, seed=seed)
        drawn = sampler.global_draw().tolist()
        assert set(drawn) <= {1, 3, 6}
        if not replacement:
            assert sorted(drawn) == [1, 3, 6]


@pytest.mark.parametrize(("total", "replicas", "drop_last"), [(100, 3, False), (100, 3, True), (101, 4, False)])
def test_shards_are_disjoint_equal_and_make_up_the_global_draw(total: int, replicas: int, drop_last: bool) -> None:
    samplers = [
        DistributedWeightedSampler(LABELS, WEIGHTS, num_samples=total, num_replicas=replicas, rank=r, seed=3,
                                   drop_last=drop_last)
        for r in range(replicas)
    ]
    shards = [list(s) for s in samplers]
    per_rank = total // replicas if drop_last else math.ceil(total / replicas)
    assert all(len(shard) == len(s) == per_rank for shard, s in zip(shards, samplers, strict=True))
    draw = samplers[0].global_draw().tolist()
    assert all(s.global_draw().tolist() == draw for s in samplers[1:]), "every rank makes the same draw"
    # Disjoint: every position of the global draw belongs to exactly one rank; the union is the draw.
    interleaved = [shards[r][i] for i in range(per_rank) for r in range(replicas)]
    assert interleaved == draw
    unpadded = DistributedWeightedSampler(LABELS, WEIGHTS, num_samples=total, num_replicas=1, rank=0, seed=3)
    head = unpadded.global_draw().tolist()
    if drop_last:
        assert draw == head[: per_rank * replicas]
    else:
        assert draw == head + head[: per_rank * replicas - total], "padding repeats the head of the draw"


def test_without_replacement_shards_have_no_common_index() -> None:
    samplers = [DistributedWeightedSampler(LABELS, WEIGHTS, replacement=False, num_samples=60, num_replicas=3,
                                           rank=r, seed=5) for r in range(3)]
    shards = [set(s) for s in samplers]
    assert all(len(shard) == 20 for shard in shards)
    assert len(shards[0] | shards[1] | shards[2]) == 60


def test_draw_depends_on_seed_and_epoch_only() -> None:
    a = DistributedWeightedSampler(LABELS, WEIGHTS, num_replicas=2, rank=0, seed=11)
    b = DistributedWeightedSampler(LABELS, WEIGHTS, num_replicas=2, rank=1, seed=11)
    epoch0 = list(a)
    a.set_epoch(1)
    b.set_epoch(1)
    assert a.global_draw().tolist() == b.global_draw().tolist()
    assert list(a) != epoch0, "a new epoch draws anew"
    a.set_epoch(0)
    assert list(a) == epoch0, "an epoch's draw is reproducible"
    other_seed = DistributedWeightedSampler(LABELS, WEIGHTS, num_replicas=2, rank=0, seed=12)
    assert list(other_seed) != epoch0
    # (seed, epoch) = (0, 1) and (1, 0) are different draws (seed + epoch would collide).
    x = DistributedWeightedSampler(LABELS, WEIGHTS, num_replicas=1, rank=0, seed=0)
    x.set_epoch(1)
    y = DistributedWeightedSampler(LABELS, WEIGHTS, num_replicas=1, rank=0, seed=1)
    assert x.global_draw().tolist() != y.global_draw().tolist()


def test_is_a_distributed_sampler_so_lightning_keeps_it() -> None:
    # Lightning's DataConnector._requires_distributed_sampler skips loaders whose sampler is a DistributedSampler.
    sampler = DistributedWeightedSampler(LABELS, WEIGHTS, num_replicas=2, rank=1)
    assert isinstance(sampler, DistributedSampler)
    assert (sampler.num_replicas, sampler.rank, sampler.total_draws, len(sampler)) == (2, 1, 100, 50)


@pytest.mark.parametrize(("rank", "epoch", "stop"), [(0, 0, 7), (1, 2, 1), (2, 1, 0), (1, 0, 34)])
def test_resume_mid_epoch_yields_exactly_the_remaining_indices(rank: int, epoch: int, stop: int) -> None:
    def make() -> DistributedWeightedSampler:
        return DistributedWeightedSampler(LABELS, WEIGHTS, num_replicas=3, rank=rank, seed=9)

    first = make()
    first.set_epoch(epoch)
    uninterrupted = first.shard()
    iterator = iter(first)
    consumed = [next(iterator) for _ in range(stop)]
    state = first.state_dict()
    assert state == {"epoch": epoch, "yielded": stop, "size": 34, "seed": 9,
                     "num_replicas": 3, "length": 100, "total_draws": 100}

    resumed = make()
    resumed.load_state_dict(state)
    if stop == len(first):  # a checkpoint at the epoch's last batch resumes at the next epoch
        assert resumed.epoch == epoch + 1 and consumed == uninterrupted
        return
    resumed.set_epoch(epoch)  # Lightning calls this at the start of the resumed epoch; it keeps the resume point
    assert consumed + list(resumed) == uninterrupted
    resumed.set_epoch(epoch + 1)
    first.set_epoch(epoch + 1)
    assert list(resumed) == list(first), "the following epoch is whole again"


def test_resume_point_is_dropped_when_another_epoch_starts() -> None:
    sampler = DistributedWeightedSampler(LABELS, WEIGHTS, num_replicas=1, rank=0, seed=1)
    sampler.load_state_dict({"epoch": 0, "seed": 1, "yielded": 40})
    sampler.set_epoch(1)
    assert len(list(sampler)) == 100


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_through_torchdata_stateful_dataloader(num_workers: int) -> None:
    stateful = pytest.importorskip("torchdata.stateful_dataloader")

    def make_loader() -> DataLoader:
        sampler = DistributedWeightedSampler(LABELS, WEIGHTS, num_samples=60, num_replicas=2, rank=1, seed=4)
        return stateful.StatefulDataLoader(list(range(len(LABELS))), batch_size=5, sampler=sampler,
                                           num_workers=num_workers)

    uninterrupted = [batch.tolist() for batch in make_loader()]
    loader = make_loader()
    iterator = iter(loader)
    seen = [next(iterator).tolist() for _ in range(2)]
    state = loader.state_dict()
    del iterator
    resumed = make_loader()
    resumed.load_state_dict(state)
    assert seen + [batch.tolist() for batch in resumed] == uninterrupted


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": [1.0] * 99}, "got 99 sample weights for a dataset of 100 samples; give one weight per sample"),
        ({"weights": [1.0] * 50 + [-1.0] * 50}, r"sample weight 50 is negative \(-1.0\); weights must be >= 0"),
        ({"weights": [1.0, math.nan] + [1.0] * 98}, "sample weight 1 is nan; weights must be finite numbers >= 0"),
        ({"weights": [math.inf] * 100}, "sample weight 0 is inf; weights must be finite"),
        ({"weights": [0.0] * 100}, "all 100 sample weights are zero; give at least one sample a positive weight"),
        ({"num_samples": 0}, "num_samples must be a positive integer, got 0"),
        ({"weights": [1.0] * 10 + [0.0] * 90, "replacement": False},
         "num_samples=100 exceeds the 10 samples with positive weight, which is impossible without replacement"),
        ({"num_samples": 1, "drop_last": True, "num_replicas": 2, "rank": 0},
         "num_samples=1 with drop_last=True leaves nothing for 2 ranks"),
        ({"num_replicas": 0}, "num_replicas must be >= 1, got 0"),
        ({"num_replicas": 2, "rank": 2}, r"rank must be in \[0, 1\] for num_replicas=2, got 2"),
    ],
)
def test_bad_arguments_are_errors(kwargs: dict, message: str) -> None:
    arguments = {"weights": WEIGHTS, "num_replicas": 1, "rank": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        DistributedWeightedSampler(LABELS, **arguments)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"epoch": 0, "seed": 0}, r"DistributedWeightedSampler state lacks \['yielded'\]"),
        ({"epoch": 0, "seed": 0, "yielded": 1, "num_replicas": 4},
         "cannot resume DistributedWeightedSampler mid-epoch: the checkpoint has num_replicas=4, this run has "
         "num_replicas=2"),
        ({"epoch": 0, "seed": 0, "yielded": 1, "total_draws": 7},
         "the checkpoint has total_draws=7, this run has total_draws=100"),
        ({"epoch": 0, "seed": 0, "yielded": 51}, r"state has yielded=51, outside \[0, 50\] for this rank"),
    ],
)
def test_bad_state_dicts_are_errors(state: dict, message: str) -> None:
    sampler = DistributedWeightedSampler(LABELS, WEIGHTS, num_replicas=2, rank=0)
    with pytest.raises(ValueError, match=message):
        sampler.load_state_dict(state)


def test_defaults_outside_a_process_group_and_large_inputs() -> None:
    sampler = DistributedWeightedSampler(range(3), torch.tensor([1.0, 2.0, 3.0]))
    assert (sampler.num_replicas, sampler.rank, len(sampler)) == (1, 0, 3)
    # More categories than torch.multinomial accepts (2**24) still draw.
    big = torch.ones(2**24 + 10, dtype=torch.float64)
    big[-1] = 1e9
    many = DistributedWeightedSampler(big, big, num_samples=50, num_replicas=1, rank=0)
    assert Counter(many.shard()).most_common(1)[0][0] == 2**24 + 9
