"""TokenBudgetBatchSampler: batches within the budget, planned per epoch, equal steps per rank, exact resume."""

from __future__ import annotations

import pytest
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

from stoker.samplers.token_budget import TokenBudgetBatchSampler, batch_cost


class Items(torch.utils.data.Dataset):
    """Returns the indices it is asked for (a batch sampler hands over a list)."""

    def __len__(self) -> int:
        return 200

    def __getitem__(self, index: list[int]) -> list[int]:
        return list(index)


def lengths(n: int = 300, seed: int = 0) -> list[int]:
    return torch.randint(3, 120, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("cost", ["padded", "sum"])
def test_every_batch_fits_the_budget_and_evaluation_sees_every_item_once(cost: str) -> None:
    lens = lengths()
    sampler = TokenBudgetBatchSampler(lens, 1024, shuffle=False, even=False, cost=cost)  # type: ignore[arg-type]
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(300))
    for b in batches:
        assert batch_cost(max(lens[i] for i in b), len(b), sum(lens[i] for i in b), cost=cost) <= 1024  # type: ignore[arg-type]
    assert len(sampler) == len(batches)


def test_training_gives_every_rank_the_same_steps_over_disjoint_items_every_epoch() -> None:
    lens = lengths(500)
    samplers = [TokenBudgetBatchSampler(lens, 2048, num_replicas=3, rank=r, seed=4) for r in range(3)]
    for epoch in range(3):
        seen = []
        for s in samplers:
            s.set_epoch(epoch)
            seen.append([i for b in s for i in b])
        assert len({len(s) for s in samplers}) == 1 and all(len(list(s)) == len(samplers[0]) for s in samplers)
        flat = [i for rank in seen for i in rank]
        report = samplers[0].epoch_report()
        assert report["steps_per_rank"] == len(samplers[0])
        if report["items_repeated"] == 0:
            assert len(flat) == len(set(flat)) == 500 - report["items_left_out"], "counted leftovers only"
        else:
            assert len(set(flat)) == 500 and len(flat) == 500 + report["items_repeated"]
    first, second = samplers[0].global_batches(0), samplers[0].global_batches(1)
    assert first != second, "a new plan every epoch"


def test_the_costliest_batch_comes_first_and_bad_budgets_are_named() -> None:
    lens = lengths()
    sampler = TokenBudgetBatchSampler(lens, 1024, seed=1)
    costs = [batch_cost(max(lens[i] for i in b), len(b), 0, cost="padded") for b in sampler.global_batches()]
    assert costs[0] == max(costs)
    with pytest.raises(ValueError, match="the longest item costs 120 tokens, more than max_tokens=100"):
        TokenBudgetBatchSampler([120, 5], 100)
    with pytest.raises(ValueError, match="fewer than the 4 ranks"):
        TokenBudgetBatchSampler([10] * 4, 40, num_replicas=4, rank=0)
    with pytest.raises(ValueError, match="max_tokens must be a positive"):
        TokenBudgetBatchSampler([10], 0)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_through_the_stateful_loader(workers: int) -> None:
    lens = lengths(200)
    data = Items()

    def loader() -> StatefulDataLoader:
        sampler = TokenBudgetBatchSampler(lens, 1024, num_replicas=2, rank=1, seed=3)
        return StatefulDataLoader(data, sampler=sampler, batch_size=None, num_workers=workers,
                                  collate_fn=lambda b: list(b))

    full = loader()
    full.sampler.set_epoch(1)
    expected = [list(b) for b in full]
    first = loader()
    first.sampler.set_epoch(1)
    it = iter(first)
    head = [list(next(it)) for _ in range(3)]
    state = first.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    assert head + [list(b) for b in resumed] == expected
    with pytest.raises(ValueError, match="max_tokens"):
        TokenBudgetBatchSampler(lens, 2048, num_replicas=2, rank=1, seed=3).load_state_dict(
            {**first.sampler.state_dict(), "yielded": 1})
