"""Length-grouped batches: little padding, still random, disjoint and equal across ranks.

The recipe is the one popularised by Hugging Face's ``LengthGroupedSampler`` (itself after the
bucketing of Sutskever et al., 2014, "Sequence to Sequence Learning with Neural Networks"):
shuffle all indices, cut them into mega-batches of ``mega_batch_factor * batch_size``, sort each
mega-batch by length, cut it into batches and shuffle the order of the batches. Batches then hold
texts of similar length (dynamic padding pads each batch only to its own longest text) while the
epoch stays a random draw.

Unlike ``LengthGroupedSampler`` this one is distributed: the global list of batches is built
identically on every rank from ``(seed, epoch)`` and dealt out round-robin, so ranks see disjoint
batches; in training every rank gets the same number (padded with repeats of the first batches,
or trimmed with ``drop_last``), which keeps DDP's collective calls in step, and in evaluation every
batch is seen exactly once. It resumes mid-epoch like every stoker sampler.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from stoker.samplers.base import ResumableSampler
from stoker.samplers.shard_plan import ShardMode, ShardPlan, enough_batches
from stoker.seeds import derive_seed


def length_grouped_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    generator: torch.Generator | None,
    mega_batch_factor: int = 50,
    drop_last: bool = False,
) -> list[list[int]]:
    """Batches of indices grouped by length, in random order (sorted order without a generator).

    Args:
        lengths: Length (tokens) of every sample.
        batch_size: Samples per batch.
        generator: Draws the shuffles; ``None`` gives a deterministic order (evaluation): indices
            in their natural order, sorted by length inside each mega-batch, batches in order.
        mega_batch_factor: Mega-batch size in batches. Larger sorts more globally (less padding)
            but makes batch composition less random.
        drop_last: Leave out ``len(lengths) % batch_size`` samples so every batch is full. They are
            the last ones of the epoch's random order, so which samples fall off changes every
            epoch (sorting first would drop the shortest ones every time).
    """
    n = len(lengths)
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    if drop_last:
        order = order[: n - n % batch_size]
    mega = max(1, mega_batch_factor) * batch_size
    grouped: list[int] = []
    for start in range(0, len(order), mega):
        chunk = order[start : start + mega]
        grouped.extend(sorted(chunk, key=lambda i: -lengths[i]))
    batches = [grouped[i : i + batch_size] for i in range(0, len(grouped), batch_size)]
    if generator is not None and batches:
        perm = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[i] for i in perm]
        # The longest batch goes first so that an out-of-memory error shows on step one, not hours in.
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches[0], batches[longest] = batches[longest], batches[0]
    return batches


class LengthGroupedBatchSampler(ResumableSampler):
    """Yields lists of indices (whole batches) grouped by length, sharded across ranks, resumable mid-epoch.

    Use it as the ``sampler`` of a loader with ``batch_size=None``: Lightning sees a
    ``DistributedSampler`` and does not wrap it again, and ``set_epoch`` reseeds it every epoch.
    The global list of batches of epoch ``e`` is drawn from ``(seed, "length_grouped", e)``,
    identical on every rank, and each rank takes its share of the batches by
    :class:`~stoker.samplers.ShardPlan`: in training (``even=True``) the same number on every rank
    (the first batches repeated, or the surplus cut with ``drop_last``, chosen at random by the
    shuffle); in evaluation (``even=False``) every batch exactly once. A mid-epoch checkpoint of another
    number of ranks resumes with the epoch's remaining batches dealt over this run's ranks.

    Args:
        lengths: Token length of every sample of the dataset.
        batch_size: Samples per batch.
        num_replicas: Ranks (default: the world size when ``torch.distributed`` is initialised, else 1).
        rank: This rank (default: the distributed rank, else 0).
        shuffle: Random batches each epoch; ``False`` for evaluation (still length-grouped).
        seed: Base seed shared by all ranks.
        mega_batch_factor: Mega-batch size in batches.
        drop_last: Only full batches, and only as many as divide evenly among the ranks; otherwise
            every sample is used and the first batches are repeated so every rank gets the same count.
        even: Give every rank the same number of batches (training); ``False`` for unrepeated evaluation.

    Raises:
        ValueError: A non-positive ``batch_size``/``mega_batch_factor`` or ``rank`` outside ``[0, num_replicas)``.

    Example::

        sampler = LengthGroupedBatchSampler(lengths, 32, num_replicas=2, rank=0)
        loader = StatefulDataLoader(dataset, sampler=sampler, batch_size=None, collate_fn=collate)
    """

    order_keys = ("seed", "num_replicas", "length", "batch_size", "mega_batch_factor")

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        mega_batch_factor: int = 50,
        drop_last: bool = False,
        even: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if mega_batch_factor < 1:
            raise ValueError(f"mega_batch_factor must be a positive integer, got {mega_batch_factor}")
        super().__init__(len(lengths), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.lengths = [int(x) for x in lengths]
        self.batch_size = batch_size
        self.mega_batch_factor = mega_batch_factor
        rows = len(self.lengths) - len(self.lengths) % batch_size if drop_last else len(self.lengths)
        mode: ShardMode = ("cut" if drop_last else "pad") if even else "unrepeated"
        batches = -(-rows // batch_size)
        if mode == "unrepeated":  # evaluation splits batches until every rank has one (see global_batches)
            batches = max(batches, min(rows, self.num_replicas))
        self.plan = ShardPlan(batches, self.num_replicas, mode=mode)

    @property
    def padding_batches(self) -> int:
        """Batches that appear twice per epoch so that every rank runs the same number of steps."""
        return self.plan.padding

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """Every rank's batches of an epoch, before sharding (identical on every rank).

        In evaluation there is a batch for every rank whenever there is a row for every rank
        (:func:`~stoker.samplers.shard_plan.enough_batches`), so no rank is left without a step.
        """
        epoch = self.epoch if epoch is None else epoch
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "length_grouped", epoch)) \
            if self.shuffle else None
        batches = length_grouped_batches(self.lengths, self.batch_size, generator=generator,
                                         mega_batch_factor=self.mega_batch_factor, drop_last=self.drop_last)
        return batches if self.plan.mode != "unrepeated" else enough_batches(batches, self.num_replicas)

    def rank_batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch, in order (the full list, ignoring any resume point)."""
        return self.plan.shard(self.global_batches(), self.rank)

    elastic = True

    def epoch_items(self) -> list[list[int]]:
        return self.rank_batches()

    def rest_items(self, stages: list[dict[str, Any]]) -> list[list[int]]:
        """This rank's batches of what ``stages`` left of the epoch's batches (a resume on other ranks)."""
        batches = self.global_batches()
        return [batches[position] for position in self.plan.rest_positions(stages, self.rank)]

    def __len__(self) -> int:
        return self.plan.share(self.rank)
