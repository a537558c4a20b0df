"""How a split is cut into one share per rank: counts, padding, and what the padding repeats.

Pure arithmetic, the one place it is written: every stoker sampler, the DALI reader's file lists
and the streamed text batches take each rank's share from :class:`ShardPlan`, and the streams
deal a rank's batches over its loader workers with :func:`worker_batches`.

Three modes:

* ``"pad"`` (training, as ``DistributedSampler``): the global order is extended by repeating its
  head until its length is a multiple of the world size, then rank ``r`` takes positions
  ``r, r + R, ...``. Every rank gets the same count; :attr:`ShardPlan.padding` samples appear twice.
* ``"cut"`` (``DistributedSampler(drop_last=True)``): the tail of the order is cut instead.
* ``"unrepeated"`` (evaluation): no padding; rank ``r`` takes ``r, r + R, ...`` of the order, so
  ranks differ by at most one sample and every sample is seen exactly once.

With ``batch_size`` and ``drop_last``, each rank's share is further cut to whole batches (the
training loaders' last-batch rule), so the sampler never hands out samples that are thrown away.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

ShardMode = Literal["pad", "cut", "unrepeated"]
SHARD_MODES: tuple[str, ...] = ("pad", "cut", "unrepeated")
T = TypeVar("T")


@dataclass(frozen=True)
class ShardPlan:
    """Each rank's share of ``num_samples`` items (samples, or whole batches).

    Attributes:
        num_samples: Items in the global order of one epoch.
        num_replicas: Ranks (the world size).
        mode: ``"pad"``, ``"cut"`` or ``"unrepeated"`` (see the module docstring).
        batch_size: Items per batch, for :meth:`num_batches` and ``drop_last``.
        drop_last: Cut each rank's share to whole batches.

    Raises:
        ValueError: Negative sizes, an unknown mode, or ``drop_last`` without ``batch_size``.

    Example::

        plan = ShardPlan(10, 4)                   # pad: 12 slots, 2 repeats
        plan.shard(list("abcdefghij"), rank=1)    # ['b', 'f', 'j']
    """

    num_samples: int
    num_replicas: int = 1
    mode: ShardMode = "pad"
    batch_size: int | None = None
    drop_last: bool = False

    def __post_init__(self) -> None:
        if self.num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {self.num_samples}")
        if self.num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {self.num_replicas}")
        if self.mode not in SHARD_MODES:
            raise ValueError(f"mode must be one of {SHARD_MODES}, got {self.mode!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {self.batch_size}")
        if self.drop_last and self.batch_size is None:
            raise ValueError("drop_last cuts each rank's share to whole batches and needs batch_size")

    # ----------------------------------------------------------------- the global order
    @property
    def total_size(self) -> int:
        """Slots of the global order after padding or cutting (``num_samples`` when unrepeated)."""
        n, ranks = self.num_samples, self.num_replicas
        if self.mode == "pad":
            return -(-n // ranks) * ranks
        if self.mode == "cut":
            return n // ranks * ranks
        return n

    @property
    def padding(self) -> int:
        """Items that appear twice per epoch (padding repeats the head of the order)."""
        return self.total_size - self.num_samples if self.mode == "pad" and self.num_samples else 0

    @property
    def cut(self) -> int:
        """Items of the order's tail no rank receives in ``"cut"`` mode."""
        return self.num_samples - self.total_size if self.mode == "cut" else 0

    # ----------------------------------------------------------------- one rank
    def _check_rank(self, rank: int) -> None:
        if not 0 <= rank < self.num_replicas:
            raise ValueError(f"rank must be in [0, {self.num_replicas}), got {rank}")

    def rank_size(self, rank: int = 0) -> int:
        """Items rank ``rank`` receives before the whole-batch cut."""
        self._check_rank(rank)
        if self.mode == "unrepeated":
            return len(range(rank, self.num_samples, self.num_replicas))
        return self.total_size // self.num_replicas

    def share(self, rank: int = 0) -> int:
        """Items rank ``rank`` yields per epoch (after the whole-batch cut with ``drop_last``)."""
        size = self.rank_size(rank)
        if self.drop_last and self.batch_size:
            return size // self.batch_size * self.batch_size
        return size

    def dropped(self, rank: int = 0) -> int:
        """Items of rank ``rank``'s share left out by the whole-batch cut."""
        return self.rank_size(rank) - self.share(rank)

    def num_batches(self, rank: int = 0) -> int:
        """Batches rank ``rank`` yields per epoch (equal on every rank unless ``"unrepeated"``).

        Raises:
            ValueError: The plan has no ``batch_size``.
        """
        if self.batch_size is None:
            raise ValueError("num_batches needs a ShardPlan with batch_size")
        return -(-self.share(rank) // self.batch_size)

    def positions(self, rank: int = 0) -> list[int]:
        """Positions into the global order that rank ``rank`` yields, in order."""
        n = self.num_samples
        if n == 0:
            self._check_rank(rank)
            return []
        slots = range(rank, self.total_size, self.num_replicas)
        return [slot % n for slot in slots][: self.share(rank)]

    def shard(self, items: Sequence[T], rank: int = 0) -> list[T]:
        """Rank ``rank``'s items of one epoch's global order ``items``.

        Raises:
            ValueError: ``items`` is not ``num_samples`` long, or ``rank`` is out of range.
        """
        if len(items) != self.num_samples:
            raise ValueError(f"the plan is for {self.num_samples} items, got {len(items)}")
        return [items[p] for p in self.positions(rank)]

    def rest_positions(self, stages: Sequence[dict[str, Any]], rank: int = 0) -> list[int]:
        """Positions into the global order that rank ``rank`` yields of what ``stages`` left of the epoch.

        Each stage ``{"num_replicas": W, "yielded": [count per rank]}`` is a run on ``W`` ranks (an earlier
        part of the epoch, before a resume on another number of ranks) that cut what was left of the order
        by this plan's rule and whose rank ``r`` handed out the first ``yielded[r]`` items of its share.
        Those are removed; what remains, in its order, is cut by this plan's rule over its own ranks.
        """
        left = list(range(self.num_samples))
        for stage in stages:
            plan = replace(self, num_samples=len(left), num_replicas=int(stage["num_replicas"]))
            taken: set[int] = set()
            for stage_rank, count in enumerate(stage["yielded"]):
                taken.update(plan.shard(left, stage_rank)[: int(count)])
            left = [position for position in left if position not in taken]
        return replace(self, num_samples=len(left)).shard(left, rank)


def worker_batches(num_batches: int, worker: int, workers: int) -> int:
    """Batches loader worker ``worker`` of ``workers`` yields when a rank's ``num_batches`` are dealt round-robin.

    The DataLoader asks worker ``w`` for batches ``w, w + W, ...``, so the first ``num_batches % W``
    workers get one more.

    Raises:
        ValueError: ``worker`` outside ``[0, workers)``.
    """
    if not 0 <= worker < workers:
        raise ValueError(f"worker must be in [0, {workers}), got {worker}")
    return num_batches // workers + (1 if worker < num_batches % workers else 0)


def enough_batches(batches: Sequence[Sequence[T]], num_replicas: int) -> list[list[T]]:
    """Evaluation batches split until there is one for every rank (while any batch holds two items or more).

    Evaluation deals whole batches over the ranks, each exactly once; with fewer batches than ranks a
    rank would get none, run no validation step and leave the others waiting in the epoch-end metric
    reduction. Splitting the largest batch in two (the same way on every rank) gives every rank a batch
    as long as there are at least as many items as ranks; the order of the items is kept.
    """
    out = [list(batch) for batch in batches]
    while 0 < len(out) < num_replicas:
        largest = max(range(len(out)), key=lambda i: len(out[i]))
        if len(out[largest]) < 2:
            break
        batch = out[largest]
        out[largest:largest + 1] = [batch[: len(batch) // 2], batch[len(batch) // 2:]]
    return out
