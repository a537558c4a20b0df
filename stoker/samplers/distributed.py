"""The plain stoker sampler: a seeded order per epoch, one share per rank, resumable mid-epoch."""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

import torch

from stoker.samplers.base import ResumableSampler
from stoker.samplers.shard_plan import ShardMode, ShardPlan
from stoker.seeds import derive_seed


class ResumableDistributedSampler(ResumableSampler):
    """``DistributedSampler`` semantics with every rank's share from :class:`ShardPlan` and exact resume.

    Training (``shuffle=True``): epoch ``e`` is a permutation drawn from ``(seed, "order", e)``,
    identical on every rank; rank ``r`` takes positions ``r, r + R, ...`` of it. Every rank gets
    the same count: the permutation's head is repeated to pad it (or its tail is cut with
    ``drop_last``). Evaluation (``even=False``): the natural order, unrepeated, so every sample
    is seen exactly once over the ranks (their counts differ by at most one).

    With ``batch_size`` and ``drop_last`` each rank's share is cut to whole batches, so which
    samples fall off changes every epoch (they are the tail of that epoch's permutation).

    A mid-epoch checkpoint of another number of ranks resumes (elastic): the samples its ranks had
    handed out are left out and the rest of that epoch's permutation is dealt over this run's ranks by
    the same rule, so no sample is trained twice or skipped beyond the usual padding or cut.

    Args:
        dataset: What is sampled (only its length is used), or the length itself.
        num_replicas: Ranks (default: the process group's world size, else 1).
        rank: This rank (default: the process group's rank, else 0).
        shuffle: Draw a new permutation every epoch; ``False`` keeps the natural order.
        seed: Seed shared by all ranks.
        drop_last: Cut instead of pad, and (with ``batch_size``) cut each share to whole batches.
        batch_size: Samples per batch of the loader, for the whole-batch cut.
        even: Give every rank the same count (training); ``False`` for unrepeated evaluation.

    Example::

        sampler = ResumableDistributedSampler(dataset, num_replicas=2, rank=0, batch_size=32, drop_last=True)
        loader = StatefulDataLoader(dataset, batch_size=32, sampler=sampler)
    """

    def __init__(
        self,
        dataset: Sized | int,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        batch_size: int | None = None,
        even: bool = True,
    ) -> None:
        length = dataset if isinstance(dataset, int) else len(dataset)
        super().__init__(length, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        mode: ShardMode = ("cut" if drop_last else "pad") if even else "unrepeated"
        self.plan = ShardPlan(length, self.num_replicas, mode=mode, batch_size=batch_size,
                              drop_last=drop_last and batch_size is not None)
        self.num_samples = self.plan.share(self.rank)
        self.total_size = self.plan.total_size

    def order(self, epoch: int | None = None) -> list[int]:
        """The global order of an epoch, identical on every rank (before sharding)."""
        epoch = self.epoch if epoch is None else epoch
        if not self.shuffle:
            return list(range(self.length))
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "order", epoch))
        return torch.randperm(self.length, generator=generator).tolist()

    elastic = True

    def epoch_items(self) -> list[int]:
        return self.plan.shard(self.order(), self.rank)

    def rest_items(self, stages: list[dict[str, Any]]) -> list[int]:
        """This rank's share of the epoch's order once ``stages`` handed out its start (see the base class)."""
        order = self.order()
        return [order[position] for position in self.plan.rest_positions(stages, self.rank)]

    def __len__(self) -> int:
        return self.num_samples
