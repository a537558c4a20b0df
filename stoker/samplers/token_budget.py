"""Batches sized by tokens, not samples: planned globally per epoch, the same number of steps on every rank.

A fixed batch size wastes memory on short texts and runs out of it on long ones. With a token
budget each batch holds as many items as fit ``max_tokens`` once padded (``cost="padded"``: items
times the longest, rounded up to ``pad_multiple``) or once flattened (``cost="sum"``: the sum of
lengths, for padding-free batches). Batching by a token budget is what fairseq and the
"max_tokens" option of many translation toolkits do (Ott et al., 2019, "fairseq: A Fast,
Extensible Toolkit for Sequence Modeling").

Epoch ``e`` is planned identically on every rank from ``(seed, "token_budget", e)``: the items are
shuffled, sorted by length inside windows of ``window`` items (so a batch holds similar lengths,
little padding), cut greedily into batches under the budget, and the batches shuffled. The number
of batches of a plan varies slightly from epoch to epoch, but a DDP step is a collective and
Lightning sizes an epoch once, so every rank runs the same fixed number of steps every epoch:
``steps`` (by default the count of epoch 0's plan divided among the ranks). An epoch whose plan
has more batches leaves the surplus out, one with fewer repeats its first batches; both are
counted (:meth:`TokenBudgetBatchSampler.epoch_report`). Evaluation (``even=False``) keeps the
natural order and deals every batch exactly once. It resumes mid-epoch like every stoker sampler.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from stoker.samplers.base import ResumableSampler
from stoker.samplers.shard_plan import ShardPlan, enough_batches
from stoker.seeds import derive_seed

Cost = Literal["padded", "sum"]


def batch_cost(longest: int, count: int, total: int, *, cost: Cost, pad_multiple: int = 8) -> int:
    """Tokens a batch feeds the model: ``count`` rows padded to ``longest`` (rounded up), or ``total`` flattened."""
    if cost == "sum":
        return total
    return count * (-(-longest // pad_multiple) * pad_multiple)


def token_budget_batches(lengths: Sequence[int], max_tokens: int, *, generator: torch.Generator | None,
                         cost: Cost = "padded", pad_multiple: int = 8, window: int | None = None,
                         max_batch_size: int | None = None) -> list[list[int]]:
    """Batches of indices whose cost stays within ``max_tokens``, grouped by length.

    Args:
        lengths: Tokens of every item.
        max_tokens: The budget per batch.
        generator: Draws the shuffles; ``None`` keeps the natural order (evaluation) and sorts nothing.
        cost: ``"padded"`` or ``"sum"`` (see the module docstring).
        pad_multiple: Padding granularity of ``"padded"``.
        window: Items sorted together (``None``: all of them, the least padding; smaller: more random batches).
        max_batch_size: At most this many items per batch.
    """
    n = len(lengths)
    if generator is None:
        order, size = list(range(n)), n
    else:
        order, size = torch.randperm(n, generator=generator).tolist(), window or n
    if generator is not None:  # sorted inside each window: similar lengths share a batch
        order = [i for start in range(0, n, size)
                 for i in sorted(order[start : start + size], key=lambda i: -lengths[i])]
    batches: list[list[int]] = []
    current: list[int] = []
    longest = total = 0
    for item in order:
        length = int(lengths[item])
        grown = batch_cost(max(longest, length), len(current) + 1, total + length, cost=cost, pad_multiple=pad_multiple)
        if current and (grown > max_tokens or (max_batch_size is not None and len(current) >= max_batch_size)):
            batches.append(current)
            current, longest, total = [], 0, 0
        current.append(item)
        longest, total = max(longest, length), total + length
    if current:
        batches.append(current)
    if generator is not None and batches:
        perm = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[i] for i in perm]
        # The costliest batch first, so an out-of-memory error shows on step one, not hours in.
        heaviest = max(range(len(batches)), key=lambda b: batch_cost(
            max(lengths[i] for i in batches[b]), len(batches[b]), sum(lengths[i] for i in batches[b]), cost=cost,
            pad_multiple=pad_multiple))
        batches[0], batches[heaviest] = batches[heaviest], batches[0]
    return batches


class TokenBudgetBatchSampler(ResumableSampler):
    """Yields whole batches (lists of indices) under a token budget; equal steps per rank; resumable mid-epoch.

    Use it as the ``sampler`` of a loader with ``batch_size=None`` (the dataset receives a list of
    indices). Works for any token data: classification texts, language-model examples or packed rows.

    Args:
        lengths: Tokens of every item of the dataset.
        max_tokens: Budget per batch (padded or summed tokens, see ``cost``).
        num_replicas: Ranks (default: the process group's world size, else 1).
        rank: This rank (default: the process group's rank, else 0).
        shuffle: Re-plan randomly every epoch (training); ``False`` for evaluation.
        seed: Seed shared by all ranks.
        cost: ``"padded"`` (padded batches) or ``"sum"`` (flattened, padding-free batches).
        pad_multiple: Padding granularity of the collator (``"padded"`` cost).
        window: Items sorted by length together (``None``: the whole epoch).
        max_batch_size: At most this many items per batch.
        even: Every rank runs the same number of steps (training); ``False``: every batch once (evaluation).
        steps: Steps per rank per epoch (``even`` only); ``None``: epoch 0's batches divided among the ranks.

    Raises:
        ValueError: A non-positive budget, an item that alone exceeds the budget, or a plan too small to give
            every rank a batch.

    Example::

        sampler = TokenBudgetBatchSampler(lengths, 4096, num_replicas=2, rank=0)
        loader = StatefulDataLoader(dataset, sampler=sampler, batch_size=None, collate_fn=collate)
    """

    order_keys = ("seed", "num_replicas", "length", "max_tokens", "cost", "window", "steps")

    def __init__(self, lengths: Sequence[int], max_tokens: int, *, num_replicas: int | None = None,
                 rank: int | None = None, shuffle: bool = True, seed: int = 0, cost: Cost = "padded",
                 pad_multiple: int = 8, window: int | None = None, max_batch_size: int | None = None,
                 even: bool = True, steps: int | None = None) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive number of tokens, got {max_tokens}")
        if cost not in ("padded", "sum"):
            raise ValueError(f"cost must be 'padded' or 'sum', got {cost!r}")
        super().__init__(len(lengths), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=even)
        self.lengths = [int(x) for x in lengths]
        self.max_tokens, self.cost, self.pad_multiple = max_tokens, cost, max(1, pad_multiple)
        self.window, self.max_batch_size, self.even = window, max_batch_size, even
        single = max((batch_cost(n, 1, n, cost=cost, pad_multiple=self.pad_multiple) for n in self.lengths), default=0)
        if single > max_tokens:
            raise ValueError(f"the longest item costs {single} tokens, more than max_tokens={max_tokens}; raise "
                             "max_tokens_per_batch or lower max_length")
        self._plans: dict[int, list[list[int]]] = {}
        self.steps: int | None = None
        if even:
            self.steps = steps if steps is not None else len(self.global_batches(0)) // self.num_replicas
            if self.steps < 1:
                raise ValueError(f"the token budget gives {len(self.global_batches(0))} batch(es) per epoch, fewer "
                                 f"than the {self.num_replicas} ranks; lower max_tokens_per_batch or add data")

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """Every rank's batches of an epoch, before sharding (identical on every rank)."""
        epoch = self.epoch if epoch is None else epoch
        key = epoch if self.shuffle else -1
        if key not in self._plans:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "token_budget", epoch)) \
                if self.shuffle else None
            # Keep epoch 0's plan (it sizes the epoch) and the latest one.
            self._plans = {k: v for k, v in self._plans.items() if k == 0}
            planned = token_budget_batches(
                self.lengths, self.max_tokens, generator=generator, cost=self.cost, pad_multiple=self.pad_multiple,
                window=self.window, max_batch_size=self.max_batch_size)
            # Evaluation: a batch for every rank whenever there is an item for every rank (no rank without a step).
            self._plans[key] = planned if self.even else enough_batches(planned, self.num_replicas)
        return self._plans[key]

    def _fitted(self) -> list[list[int]]:
        """The epoch's batches cut or padded (repeating the first ones) to ``steps * num_replicas``."""
        batches = self.global_batches()
        if self.steps is None:
            return batches
        wanted = self.steps * self.num_replicas
        return [batches[i % len(batches)] for i in range(wanted)]

    def epoch_items(self) -> list[list[int]]:
        batches = self._fitted()
        plan = ShardPlan(len(batches), self.num_replicas, mode="cut" if self.even else "unrepeated")
        return plan.shard(batches, self.rank)

    def __len__(self) -> int:
        if self.steps is not None:
            return self.steps
        return ShardPlan(len(self.global_batches()), self.num_replicas, mode="unrepeated").share(self.rank)

    def epoch_report(self, epoch: int | None = None) -> dict[str, int]:
        """``{"batches", "steps_per_rank", "items_left_out", "items_repeated"}`` of an epoch (over all ranks)."""
        epoch = self.epoch if epoch is None else epoch
        batches = self.global_batches(epoch)
        wanted = len(batches) if self.steps is None else self.steps * self.num_replicas
        left_out = sum(len(b) for b in batches[wanted:])
        repeated = sum(len(batches[i % len(batches)]) for i in range(len(batches), wanted))
        return {"batches": len(batches), "steps_per_rank": len(self) if self.steps is None else self.steps,
                "items_left_out": left_out, "items_repeated": repeated}
