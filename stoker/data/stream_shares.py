"""What every stoker training stream keeps the same way: whole-batch shares per worker, the epoch each
worker reads, where a resumed worker starts, and the settings a resume must match.

The streams (:class:`~stoker.data.text.streams.FixedLengthStream` for streamed text,
:class:`~stoker.data.sources.shards.stream.ShardStream` for shard sets) differ in what they read; they share
this bookkeeping, written once:

* **Shares.** A rank yields ``num_batches`` whole batches per epoch, dealt over its loader workers as
  the loader's round-robin takes them (:func:`~stoker.samplers.shard_plan.worker_batches`), so no
  worker ever emits a partial batch.
* **The epoch.** Each worker counts the iterators it starts in shared memory (so persistent and
  non-persistent workers, and the main process, agree), and that count is the epoch it reads; the
  loader's worker seeding reads it too (:attr:`WorkerShares.epoch_counter`).
* **Resume.** torchdata restores each worker's state before it starts its iterator. A worker in the
  middle of its share continues after the last sample the model received; a worker that had handed
  out its whole share yields nothing more in that epoch while other workers finish theirs (their
  shares differ by a batch), and a lone worker that had finished starts the next epoch.
* **Settings.** A state saved with other settings (seed, batch size, world size...) would resume
  other samples: it is refused with the name of the setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from stoker.data.loader import MAX_WORKERS, worker_slot
from stoker.samplers.shard_plan import worker_batches


@dataclass(frozen=True)
class Claim:
    """What a worker reads in the iteration it starts: its slot, its share, the epoch and where to begin."""

    worker: int
    workers: int
    quota: int
    epoch: int
    start: int
    resumed: dict[str, Any] | None  # the saved state it continues (None: a fresh epoch)


class _EpochCounter:
    """``.value``: the epoch the current worker reads (what :class:`stoker.seeds.WorkerSeeding` expects)."""

    def __init__(self, counts: torch.Tensor) -> None:
        self.counts = counts

    @property
    def value(self) -> int:
        return max(0, int(self.counts[worker_slot()[0]]) - 1)


class WorkerShares:
    """The bookkeeping of one training stream (see the module).

    Args:
        num_batches: Batches the rank yields per epoch.
        batch_size: Samples per batch.
        settings: What a resumed state must match, ``{name: value}`` (the stream's order-defining settings).
    """

    def __init__(self, *, num_batches: int, batch_size: int, settings: dict[str, Any]) -> None:
        self.num_batches, self.batch_size, self.settings = num_batches, batch_size, dict(settings)
        self._next_epoch = torch.zeros(MAX_WORKERS, dtype=torch.int64).share_memory_()
        self._resume: dict[str, Any] | None = None

    @property
    def epoch_counter(self) -> _EpochCounter:
        """The worker's epoch in shared memory (for :class:`~stoker.seeds.WorkerSeeding`)."""
        return _EpochCounter(self._next_epoch)

    def quota(self, worker: int, workers: int) -> int:
        """Samples worker ``worker`` yields per epoch: its whole batches."""
        return worker_batches(self.num_batches, worker, workers) * self.batch_size

    def next_epoch(self, worker: int) -> int:
        """The epoch worker ``worker`` starts next (in the main process: the loader's next epoch)."""
        return int(self._next_epoch[worker])

    def claim(self) -> Claim:
        """Start this worker's iteration: its epoch and first sample, from a restored state if there is one."""
        worker, workers = worker_slot()
        quota, resume, self._resume = self.quota(worker, workers), self._resume, None
        if resume is None:
            epoch, start = self.next_epoch(worker), 0
        else:
            epoch, yielded = int(resume["epoch"]), int(resume["yielded"])
            if 0 < yielded < quota:
                start = yielded
            elif yielded >= quota and workers > 1:
                start = quota  # this worker's share was complete; the others may still have a batch to give
            else:  # not started, or a lone worker's complete epoch: the next epoch from its start
                epoch, start, resume = epoch + (yielded >= quota), 0, None
        self._next_epoch[worker] = epoch + 1
        return Claim(worker, workers, quota, epoch, start, resume if start else None)

    def start(self, worker: int, epoch: int) -> None:
        """Worker ``worker`` reads ``epoch`` now, outside :meth:`claim` (an epoch's rest dealt again elsewhere)."""
        self._resume = None
        self._next_epoch[worker] = epoch + 1

    def forget(self, epoch: int) -> None:
        """Drop a restored state: every worker's next iteration reads ``epoch`` (its rest, dealt again)."""
        self._resume = None
        self._next_epoch.fill_(epoch)

    def state(self, position: dict[str, Any] | None) -> dict[str, Any]:
        """A worker's checkpointable state: its ``position`` (``epoch``, ``yielded``...), the workers, the settings.

        ``position=None`` (a process that iterates nothing, such as the main process of a loader with
        workers) is where the next epoch starts.
        """
        worker, workers = worker_slot()
        where = position if position is not None else {"epoch": self.next_epoch(worker), "yielded": 0}
        return {**where, "workers": workers, **self.settings}

    def restore(self, state: dict[str, Any], *, what: str) -> None:
        """Keep ``state`` for the next :meth:`claim`, after checking it was saved with these settings.

        A state saved at an epoch's boundary (before any sample of its epoch was handed out, or after its
        worker's whole share) fits any number of workers and ranks: the next epoch starts from its start
        with this run's shares. In the middle of an epoch the workers and ranks must match, since each
        worker's share and files depend on their number.

        Raises:
            ValueError: A setting differs (named), or the number of workers or ranks differs mid-epoch.
        """
        worker, workers = worker_slot()
        yielded = int(state.get("yielded", 0))
        complete = yielded > 0 and {"num_batches", "workers", "batch_size"} <= set(state) and worker < int(
            state["workers"]) and yielded >= worker_batches(int(state["num_batches"]), worker, int(state["workers"])
                                                            ) * int(state["batch_size"])
        boundary = yielded == 0 or complete
        moved = False
        for key, mine in [*self.settings.items(), ("workers", workers)]:
            if key not in state or state[key] == mine:
                continue
            if key in _WORLD_KEYS and boundary:
                moved = True
                continue
            if key in _WORLD_KEYS:
                raise ValueError(
                    f"cannot resume {what} in the middle of an epoch with other loader workers or ranks (the "
                    f"checkpoint has {key}={state[key]}, this run has {key}={mine}): a stream's position belongs to "
                    "its worker's and rank's files. Resume with the same number of ranks and workers, or from a "
                    "checkpoint written at the end of an epoch"
                )
            raise ValueError(f"cannot resume {what}: the checkpoint has {key}={state[key]}, this run has {key}={mine}. "
                             f"Resume with the same {key}")
        if moved:  # an epoch boundary under other shares: the epoch it leads to, from its start
            state = {"epoch": int(state.get("epoch", 0)) + int(complete), "yielded": 0}
        self._resume = dict(state)


class WholeBatchStream:
    """What a training stream answers from its :class:`WorkerShares`: its epoch counter, length and worker quotas.

    A base of the streams (before their dataset class), which set ``shares``, ``num_batches`` and ``batch_size``.
    """

    shares: WorkerShares
    num_batches: int
    batch_size: int

    @property
    def epoch_counter(self) -> Any:
        """The worker's epoch in shared memory (for :class:`~stoker.seeds.WorkerSeeding`)."""
        return self.shares.epoch_counter

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def quota(self, worker: int, workers: int) -> int:
        """Samples (rows) worker ``worker`` yields per epoch: its whole batches, as the loader asks for them."""
        return self.shares.quota(worker, workers)


# The settings that follow from the number of ranks and loader workers (not from the data or the seed).
_WORLD_KEYS = frozenset({"rank", "num_replicas", "num_batches", "workers"})
