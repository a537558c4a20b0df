"""Length-grouped batches: little padding, still random, disjoint and equal across ranks.

The recipe is the one popularised by Hugging Face's ``LengthGroupedSampler`` (itself after the
bucketing of Sutskever et al., 2014, "Sequence to Sequence Learning with Neural Networks"):
shuffle all indices, cut them into mega-batches of ``mega_batch_factor * batch_size``, sort each
mega-batch by length, cut it into batches and shuffle the order of the batches. Batches then hold
texts of similar length (dynamic padding pads each batch only to its own longest text) while the
epoch stays a random draw.

Unlike ``LengthGroupedSampler`` this one is distributed: the global list of batches is built
identically on every rank from ``(seed, epoch)`` and dealt out round-robin, so ranks see disjoint
batches and every rank gets the same number (padded with repeats of the first batches, or trimmed
with ``drop_last``), which keeps DDP's collective calls in step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


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
        drop_last: Drop the one incomplete batch.
    """
    n = len(lengths)
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    mega = max(1, mega_batch_factor) * batch_size
    grouped: list[int] = []
    for start in range(0, n, mega):
        chunk = order[start : start + mega]
        grouped.extend(sorted(chunk, key=lambda i: -lengths[i]))
    batches = [grouped[i : i + batch_size] for i in range(0, n, batch_size)]
    if batches and len(batches[-1]) < batch_size and drop_last:
        batches.pop()
    if generator is not None and batches:
        perm = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[i] for i in perm]
        # The longest batch goes first so that an out-of-memory error shows on step one, not hours in.
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches[0], batches[longest] = batches[longest], batches[0]
    return batches


class LengthGroupedBatchSampler(DistributedSampler):
    """Yields lists of indices (whole batches) grouped by length, sharded across ranks.

    Use it as the ``sampler`` of a DataLoader with ``batch_size=None``: Lightning sees a
    ``DistributedSampler`` and does not wrap it again, and ``set_epoch`` reseeds it every epoch.

    Args:
        lengths: Token length of every sample of the dataset.
        batch_size: Samples per batch.
        num_replicas: Ranks (default: the world size when ``torch.distributed`` is initialised, else 1).
        rank: This rank (default: the distributed rank, else 0).
        shuffle: Random batches each epoch; ``False`` for evaluation (still length-grouped).
        seed: Base seed; the order of epoch ``e`` is drawn from ``seed + e``, identical on every rank.
        mega_batch_factor: Mega-batch size in batches.
        drop_last: Drop the incomplete batch and the batches that do not divide evenly among the
            ranks; otherwise the first batches are repeated so every rank gets the same count.

    Raises:
        ValueError: A non-positive ``batch_size``/``mega_batch_factor`` or ``rank`` outside ``[0, num_replicas)``.

    Example::

        sampler = LengthGroupedBatchSampler(lengths, 32, num_replicas=2, rank=0)
        loader = DataLoader(dataset, sampler=sampler, batch_size=None, collate_fn=collate)
    """

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
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if mega_batch_factor < 1:
            raise ValueError(f"mega_batch_factor must be a positive integer, got {mega_batch_factor}")
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas); got rank={rank}, num_replicas={num_replicas}")
        super().__init__(lengths, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)  # type: ignore[arg-type]
        self.lengths = [int(x) for x in lengths]
        self.batch_size = batch_size
        self.mega_batch_factor = mega_batch_factor
        self.position = 0  # batches of the current epoch already yielded (or restored from a checkpoint)
        self._resume_from = 0
        self.padding_batches = 0

    def _global_batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch) if self.shuffle else None
        return length_grouped_batches(
            self.lengths, self.batch_size, generator=generator, mega_batch_factor=self.mega_batch_factor,
            drop_last=self.drop_last,
        )

    def rank_batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch, in order (the full list, ignoring any resume point)."""
        batches = self._global_batches()
        remainder = len(batches) % self.num_replicas
        if remainder and self.drop_last:
            batches = batches[: len(batches) - remainder]
            self.padding_batches = 0
        elif remainder:
            extra = self.num_replicas - remainder
            # Repeat from the start (cycling for tiny datasets) so every rank runs the same number of steps.
            batches = batches + [batches[i % len(batches)] for i in range(extra)]
            self.padding_batches = extra
        else:
            self.padding_batches = 0
        return batches[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:  # type: ignore[override]
        batches = self.rank_batches()
        start, self._resume_from = self._resume_from, 0
        self.position = start
        for batch in batches[start:]:
            self.position += 1
            yield batch

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch_size)
        total = full + (1 if rest and not self.drop_last else 0)
        if self.drop_last:
            return total // self.num_replicas
        return -(-total // self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """Reseed for ``epoch``; a new epoch forgets any resume point of the previous one."""
        if epoch != self.epoch:
            self._resume_from = 0
            self.position = 0
        super().set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Where this rank is: ``{"epoch", "position", "seed", "num_replicas"}``."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "num_replicas": self.num_replicas}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration of epoch ``state["epoch"]`` skips its first ``position`` batches.

        Raises:
            ValueError: The state was saved with another seed or number of ranks (its order would differ).
        """
        for key in ("seed", "num_replicas"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"cannot resume LengthGroupedBatchSampler: the checkpoint has {key}={state[key]}, this run "
                    f"has {key}={getattr(self, key)}; resume with the same {key} or start the epoch afresh"
                )
        self.epoch = int(state["epoch"])
        self.position = self._resume_from = int(state["position"])
