"""A fixed-length view of a streamed (iterable) dataset, so every DDP rank runs the same number of steps.

``datasets.distributed.split_dataset_by_node`` gives each rank whole shards when the shard count
divides the world size, else every ``world_size``-th example. Either way ranks can end up with
different amounts of data, and a rank that runs out first leaves the others waiting in an
all-reduce forever. :class:`FixedLengthStream` yields exactly ``batches * batch_size`` examples
per rank: it stops early when its shard is longer and starts its shard again (the next pass
reshuffled) when it is shorter, counting the repeats.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info


def batches_per_rank(total: int, world_size: int, batch_size: int, *, drop_last: bool) -> int:
    """Batches every rank runs: the whole split divided evenly (``drop_last``) or covered (padded)."""
    if total < 0 or world_size < 1 or batch_size < 1:
        raise ValueError(f"need total >= 0, world_size >= 1, batch_size >= 1; got {total}, {world_size}, {batch_size}")
    if drop_last:
        return total // world_size // batch_size
    per_rank = -(-total // world_size)  # ceil: the padded DistributedSampler count
    return -(-per_rank // batch_size)


class FixedLengthStream(IterableDataset):
    """Yield exactly ``num_batches * batch_size`` valid examples of a rank's stream, split among loader workers.

    Args:
        dataset: The rank's tokenized ``datasets.IterableDataset`` (already split by node). Rows whose
            ``valid`` column is False (missing or empty text) are skipped and counted in :attr:`skipped`.
        num_batches: Batches this rank must produce per epoch.
        batch_size: Samples per batch.
        columns: Columns handed to the collator (the model inputs and ``labels``).
        seed: Base of the per-pass epoch given to ``dataset.set_epoch`` (reshuffles shard order and buffer).

    Raises:
        ValueError: A pass over the shard yielded no valid example (nothing to repeat).
    """

    def __init__(self, dataset: Any, *, num_batches: int, batch_size: int, columns: list[str], seed: int = 0) -> None:
        super().__init__()
        self.dataset = dataset
        self.num_batches = num_batches
        self.batch_size = batch_size
        self.columns = columns
        self.seed = seed
        self.epoch = 0
        self.yielded = 0
        self.repeated = 0
        self.skipped = 0
        self._resume: dict[str, Any] | None = None

    def _quota(self) -> int:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        # Whole batches per worker, so that the DataLoader's per-worker batching never emits a short batch.
        batches = self.num_batches // workers + (1 if worker < self.num_batches % workers else 0)
        return batches * self.batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        quota = self._quota()
        resume, self._resume = self._resume, None
        if resume is not None:
            self.epoch, self.yielded = int(resume["epoch"]), int(resume["yielded"])
            if resume.get("dataset") is not None:
                self.dataset.load_state_dict(resume["dataset"])
        else:
            self.yielded = 0
        passes = 0
        while self.yielded < quota:
            if resume is None or passes > 0:
                self.dataset.set_epoch(self.epoch * 1000 + passes)
            produced = 0
            for row in self.dataset:
                if not row.get("valid", True):
                    self.skipped += 1
                    continue
                produced += 1
                if passes > 0:
                    self.repeated += 1
                self.yielded += 1
                yield {key: row[key] for key in self.columns}
                if self.yielded >= quota:
                    break
            if produced == 0 and self.yielded < quota:
                raise ValueError(
                    f"this rank's stream yielded no valid example in a pass ({self.skipped} skipped); it cannot "
                    f"fill {quota} samples. Check the data files, the text field, or use fewer ranks/workers"
                )
            passes += 1
        self.epoch += 1

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "yielded", "dataset"}``; ``dataset`` is the datasets stream's own state (exact with
        ``num_workers=0``; examples waiting in a shuffle buffer are lost on resume, as datasets documents)."""
        state = getattr(self.dataset, "state_dict", None)
        return {"epoch": self.epoch, "yielded": self.yielded, "dataset": state() if callable(state) else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the epoch in ``state`` at the next example on the next iteration."""
        self._resume = dict(state)

