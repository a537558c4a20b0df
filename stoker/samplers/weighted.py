"""A weighted sampler that is correct under DDP and resumable mid-epoch.

PyTorch has no distributed weighted sampler. Wrapping ``WeightedRandomSampler`` in Lightning's
``DistributedSamplerWrapper`` lets every rank draw its own weighted list and keep every N-th
item of it, so the ranks' shards come from different draws, are not provably disjoint and cannot
be resumed. Here every rank makes the *same* global draw from ``(seed, epoch)`` and keeps a
disjoint, equal-length slice of it, so the union of the shards is exactly the global draw.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Sized
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


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


class DistributedWeightedSampler(DistributedSampler):
    """Weighted sampling with one global draw per epoch, cut into disjoint equal shards per rank.

    Each epoch draws ``num_samples`` indices with probability proportional to ``weights`` from a
    generator seeded by ``(seed, epoch)``; every rank makes the identical draw and keeps positions
    ``rank, rank + num_replicas, ...`` of it. Without ``drop_last`` the draw is padded with its own
    first indices to a multiple of ``num_replicas`` (as ``DistributedSampler`` pads); with it, the
    tail is cut. Being a ``DistributedSampler``, Lightning does not wrap it again, and it calls
    :meth:`set_epoch` every epoch.

    The sampler is stateful: :meth:`state_dict` records the epoch, the seed and how many indices
    of the current epoch this rank has handed out; after :meth:`load_state_dict` the next
    iteration yields exactly the remaining ones. torchdata's ``StatefulDataLoader`` picks this up.

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
        drop_last: Cut the draw to a multiple of ``num_replicas`` instead of padding it.

    Raises:
        ValueError: bad weights (length, negative, NaN, all zero), ``num_samples``, or rank.

    Example::

        sampler = DistributedWeightedSampler(ds, weights, num_replicas=trainer.world_size, rank=trainer.global_rank)
        loader = DataLoader(ds, batch_size=32, sampler=sampler)
    """

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
    ) -> None:
        num_replicas, rank = _resolve_replicas(num_replicas, rank)
        # DistributedSampler only takes len(dataset), so any sized object (a label list) will do.
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=drop_last  # type: ignore[arg-type]
        )
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
        if drop_last and total < num_replicas:
            raise ValueError(
                f"num_samples={total} with drop_last=True leaves nothing for {num_replicas} ranks; "
                "draw at least num_replicas samples or set drop_last=False"
            )
        self.replacement = replacement
        self.total_draws = total
        # Per-rank count and padded/cut total, replacing DistributedSampler's dataset-length-based ones.
        self.num_samples = total // num_replicas if drop_last else -(-total // num_replicas)
        self.total_size = self.num_samples * num_replicas
        self._yielded = 0
        self._resume_at: tuple[int, int] | None = None  # (epoch, yielded) from load_state_dict

    # ----------------------------------------------------------------- the draw
    def global_draw(self, epoch: int | None = None) -> torch.Tensor:
        """Every rank's indices of an epoch, in draw order, padded or cut to ``total_size``.

        Rank ``r`` receives positions ``r::num_replicas``. Identical on every rank.
        """
        epoch = self.epoch if epoch is None else epoch
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        drawn = weighted_draw(self.weights, self.total_draws, replacement=self.replacement, generator=generator)
        if self.total_size > len(drawn):  # padding repeats the head of the draw, as DistributedSampler does
            reps = -(-self.total_size // len(drawn))
            drawn = drawn.repeat(reps)
        return drawn[: self.total_size]

    def shard(self, epoch: int | None = None) -> list[int]:
        """This rank's indices of an epoch (the whole epoch, ignoring any resume point)."""
        return self.global_draw(epoch)[self.rank : self.total_size : self.num_replicas].tolist()

    def __iter__(self) -> Iterator[int]:
        start = 0
        if self._resume_at is not None and self._resume_at[0] == self.epoch:
            start = self._resume_at[1]
        self._resume_at = None
        indices = self.shard()
        self._yielded = start
        for index in indices[start:]:
            self._yielded += 1
            yield index

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Select the draw of ``epoch`` (Lightning calls this at the start of every epoch)."""
        if epoch != self.epoch:
            self._yielded = 0
        super().set_epoch(epoch)

    # ----------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "seed", "yielded", "num_replicas", "total_draws"}``; ``yielded`` counts this rank's
        indices already handed out in the current epoch."""
        return {
            "epoch": self.epoch,
            "seed": self.seed,
            "yielded": self._yielded,
            "num_replicas": self.num_replicas,
            "total_draws": self.total_draws,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume: the next iteration yields the indices of ``state_dict["epoch"]`` not yet handed out.

        Raises:
            ValueError: a key is missing, ``yielded`` is outside ``[0, len(self)]``, or the state was
                saved with another world size or draw size (the shards would differ).
        """
        missing = {"epoch", "seed", "yielded"} - set(state_dict)
        if missing:
            raise ValueError(f"sampler state_dict lacks {sorted(missing)}; pass what state_dict() returned")
        for key, mine in (("num_replicas", self.num_replicas), ("total_draws", self.total_draws)):
            if key in state_dict and state_dict[key] != mine:
                raise ValueError(
                    f"sampler state was saved with {key}={state_dict[key]} but this sampler has {key}={mine}; "
                    "resume with the same number of ranks and num_samples, or start the epoch afresh"
                )
        yielded = int(state_dict["yielded"])
        if not 0 <= yielded <= self.num_samples:
            raise ValueError(f"sampler state has yielded={yielded}, outside [0, {self.num_samples}] for this rank")
        self.seed = int(state_dict["seed"])
        self.epoch = int(state_dict["epoch"])
        self._yielded = yielded
        self._resume_at = (self.epoch, yielded)


def _epoch_seed(seed: int, epoch: int) -> int:
    # SeedSequence mixes (seed, epoch) so that (seed=0, epoch=1) and (seed=1, epoch=0) differ,
    # unlike DistributedSampler's seed + epoch.
    state = np.random.SeedSequence([seed % 2**63, epoch]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _resolve_replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    initialized = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialized else 1
    if rank is None:
        rank = dist.get_rank() if initialized else 0
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be in [0, {num_replicas - 1}] for num_replicas={num_replicas}, got {rank}")
    return num_replicas, rank


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
