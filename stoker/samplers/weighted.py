"""A weighted sampler that is correct under DDP and resumable mid-epoch.

PyTorch has no distributed weighted sampler. Wrapping ``WeightedRandomSampler`` in Lightning's
``DistributedSamplerWrapper`` lets every rank draw its own weighted list and keep every N-th
item of it, so the ranks' shards come from different draws, are not provably disjoint and cannot
be resumed. Here every rank makes the *same* global draw from ``(seed, epoch)`` and keeps a
disjoint, equal-length slice of it, so the union of the shards is exactly the global draw.
"""

from __future__ import annotations

from collections.abc import Sequence, Sized

import torch

from stoker.samplers.base import ResumableSampler
from stoker.samplers.shard_plan import ShardPlan
from stoker.seeds import derive_seed


def weighted_draw(
    weights: torch.Tensor, num_samples: int, *, replacement: bool, generator: torch.Generator
) -> torch.Tensor:
    """Draw ``num_samples`` indices with probability proportional to ``weights``.

    ``torch.multinomial`` refuses more than 2**24 categories, so the draw is written out:
    inverse-CDF search with replacement, and exponential races (Efraimidis and Spirakis, 2006)
    without: the ``k`` smallest of ``E_i / w_i`` with ``E_i ~ Exp(1)`` are a weighted sample
    without replacement, in the order sequential draws would produce them.

    Args:
        weights: Non-negative float64 weights ``[N]`` with a positive sum.
        num_samples: Indices to draw.
        replacement: Draw with replacement.
        generator: Source of randomness (the only one used).
    """
    if replacement:
        cdf = torch.cumsum(weights, dim=0)
        points = torch.rand(num_samples, generator=generator, dtype=torch.float64) * cdf[-1]
        # right=True skips zero-weight entries: their CDF value equals their predecessor's.
        drawn = torch.searchsorted(cdf, points, right=True)
        last_positive = int(torch.nonzero(weights > 0).max())
        return drawn.clamp(max=last_positive)
    races = torch.empty(len(weights), dtype=torch.float64).exponential_(generator=generator) / weights
    return torch.topk(races, num_samples, largest=False, sorted=True).indices


class DistributedWeightedSampler(ResumableSampler):
    """Weighted sampling with one global draw per epoch, cut into disjoint equal shards per rank.

    Each epoch draws ``num_samples`` indices with probability proportional to ``weights`` from a
    generator seeded by ``(seed, "weighted", epoch)``; every rank makes the identical draw and
    takes its share of it by :class:`~stoker.samplers.ShardPlan`: positions ``rank, rank +
    num_replicas, ...``, the draw padded with its own first indices (or cut with ``drop_last``) so
    every rank gets the same count. Being a ``DistributedSampler``, Lightning does not wrap it
    again, and it calls :meth:`set_epoch` every epoch.

    It resumes mid-epoch like every stoker sampler (:class:`~stoker.samplers.ResumableSampler`):
    torchdata's ``StatefulDataLoader`` saves and restores its position.

    Attributes:
        num_samples: Indices per rank and epoch (``DistributedSampler``'s meaning; ``len(sampler)``).
        total_draws: Indices drawn globally per epoch (the ``num_samples`` argument).

    Args:
        dataset: The dataset sampled (only its length is used).
        weights: One non-negative weight per sample (need not sum to 1).
        num_samples: Indices drawn globally per epoch (default: the dataset length).
        replacement: Draw with replacement; without it ``num_samples`` may not exceed the number of
            samples with positive weight.
        num_replicas: Number of ranks (default: the process group's world size, else 1).
        rank: This rank (default: the process group's rank, else 0).
        seed: Seed shared by all ranks; the draw of an epoch depends only on ``(seed, epoch)``.
        drop_last: Cut the draw to a multiple of ``num_replicas`` and, with ``batch_size``, each
            rank's share to whole batches, instead of padding.
        batch_size: Samples per batch of the loader, for the whole-batch cut.

    Raises:
        ValueError: bad weights (length, negative, NaN, all zero), ``num_samples``, or rank.

    Example::

        sampler = DistributedWeightedSampler(ds, weights, num_replicas=trainer.world_size, rank=trainer.global_rank)
        loader = StatefulDataLoader(ds, batch_size=32, sampler=sampler)
    """

    order_keys = ("seed", "num_replicas", "length", "total_draws")

    def __init__(
        self,
        dataset: Sized,
        weights: Sequence[float] | torch.Tensor,
        *,
        num_samples: int | None = None,
        replacement: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
        drop_last: bool = False,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(len(dataset), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                         drop_last=drop_last)
        self.weights = _check_weights(weights, len(dataset))
        total = len(dataset) if num_samples is None else num_samples
        if total < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
        positive = int((self.weights > 0).sum())
        if not replacement and total > positive:
            raise ValueError(
                f"num_samples={total} exceeds the {positive} samples with positive weight, which is impossible "
                "without replacement; pass replacement=True or a smaller num_samples"
            )
        if drop_last and total < self.num_replicas:
            raise ValueError(
                f"num_samples={total} with drop_last=True leaves nothing for {self.num_replicas} ranks; "
                "draw at least num_replicas samples or set drop_last=False"
            )
        self.replacement = replacement
        self.total_draws = total
        self.plan = ShardPlan(total, self.num_replicas, mode="cut" if drop_last else "pad", batch_size=batch_size,
                              drop_last=drop_last and batch_size is not None)
        self.num_samples = self.plan.share(self.rank)
        self.total_size = self.plan.total_size

    def draw(self, epoch: int | None = None) -> torch.Tensor:
        """The global draw of an epoch (``total_draws`` indices, before padding), identical on every rank."""
        epoch = self.epoch if epoch is None else epoch
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "weighted", epoch))
        return weighted_draw(self.weights, self.total_draws, replacement=self.replacement, generator=generator)

    def global_draw(self, epoch: int | None = None) -> torch.Tensor:
        """Every rank's indices of an epoch: the draw padded or cut to the plan's ``total_size``.

        Rank ``r`` receives positions ``r::num_replicas`` of it (before any whole-batch cut).
        """
        drawn = self.draw(epoch)
        positions = torch.arange(self.plan.total_size) % max(1, len(drawn))
        return drawn[positions]

    def shard(self, epoch: int | None = None) -> list[int]:
        """This rank's indices of an epoch (the whole epoch, ignoring any resume point)."""
        return self.plan.shard(self.draw(epoch).tolist(), self.rank)

    def epoch_items(self) -> list[int]:
        return self.shard()

    def __len__(self) -> int:
        return self.num_samples


def _check_weights(weights: Sequence[float] | torch.Tensor, size: int) -> torch.Tensor:
    w = torch.as_tensor(weights, dtype=torch.float64).flatten().clone()
    if len(w) != size:
        raise ValueError(f"got {len(w)} sample weights for a dataset of {size} samples; give one weight per sample")
    bad = torch.nonzero(~torch.isfinite(w))
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"sample weight {i} is {float(w[i])}; weights must be finite numbers >= 0")
    negative = torch.nonzero(w < 0)
    if len(negative):
        i = int(negative[0])
        raise ValueError(f"sample weight {i} is negative ({float(w[i])}); weights must be >= 0")
    if not bool((w > 0).any()):
        raise ValueError(f"all {size} sample weights are zero; give at least one sample a positive weight")
    return w
