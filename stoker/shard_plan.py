"""How a split is cut into equal shards and batches, so every rank runs the same number of steps.

Pure arithmetic (no DALI, no Trainer): the DALI DataModule plans its epochs with it and reports
the padding it implies.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShardPlan:
    """How a split of ``num_samples`` is cut into equal shards and batches.

    The file list handed to DALI is padded (by repeating files from its start, as
    ``DistributedSampler`` does) to a multiple of ``num_shards``, so every shard has exactly
    :attr:`per_shard` samples in every epoch, whatever the reader's shuffling. DALI's reader pads
    the last batch of a shard (``pad_last_batch``); training drops that partial batch, evaluation
    trims it to its real samples.

    Attributes:
        num_samples: Samples in the split.
        num_shards: Ranks (the world size).
        batch_size: Samples per batch per rank.
        drop_last: Drop the last partial batch of a shard (training) or keep it trimmed (evaluation).
    """

    num_samples: int
    num_shards: int
    batch_size: int
    drop_last: bool

    @property
    def padded_size(self) -> int:
        """Length of the padded file list (a multiple of :attr:`num_shards`)."""
        return -(-self.num_samples // self.num_shards) * self.num_shards

    @property
    def padding(self) -> int:
        """Files that appear twice in an epoch so that the shards are equal."""
        return self.padded_size - self.num_samples

    @property
    def per_shard(self) -> int:
        """Samples each rank reads per epoch."""
        return self.padded_size // self.num_shards

    @property
    def reader_batches(self) -> int:
        """Batches DALI's reader emits per shard per epoch (the last one padded)."""
        return -(-self.per_shard // self.batch_size)

    @property
    def batches(self) -> int:
        """Batches yielded per epoch on every rank."""
        return self.per_shard // self.batch_size if self.drop_last else self.reader_batches

    @property
    def last_batch_size(self) -> int:
        """Real samples in the last yielded batch."""
        if self.drop_last:
            return self.batch_size
        return self.per_shard - (self.reader_batches - 1) * self.batch_size

    @property
    def dropped(self) -> int:
        """Samples each rank reads but does not yield per epoch (training only)."""
        return self.per_shard - self.batches * self.batch_size if self.drop_last else 0

    def padded_indices(self) -> list[int]:
        """Positions into the split for every entry of the padded list (cyclic repeats at the end)."""
        return [i % self.num_samples for i in range(self.padded_size)] if self.num_samples else []
